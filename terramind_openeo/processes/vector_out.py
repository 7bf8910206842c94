"""``save_result`` format GeoJSON: a vector data cube (``processes/vector.py``) as an RFC 7946 FeatureCollection.

One feature per geometry and date (a cube without ``t``: per geometry), geometries transformed from the cube's
CRS to WGS84 longitude/latitude; properties: the cube's per-geometry coordinates (``tile_row``, a training
point's ``label`` ...), ``t`` (ISO date) where the cube has dates, and one property per label of ``bands`` or
``properties`` (``value`` when the cube has neither); NaN is written as null. The file is published whole
(written under a temporary name, then renamed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from terramind_openeo.errors import FormatUnsuitable
from terramind_openeo.files import write_text
from terramind_openeo.jsonable import to_jsonable

LABEL_DIMS = ("bands", "properties")
"""Dimensions whose labels become property names."""


def is_vector_cube(data: Any) -> bool:
    return isinstance(data, xr.DataArray) and bool(data.dims) and data.dims[0] == "geometry"


def _date(value: Any) -> Any:
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value, unit="s")) + "Z"
    return to_jsonable(value)


def to_feature_collection(cube: xr.DataArray) -> dict:
    """``cube`` (a vector cube) as a GeoJSON FeatureCollection dict (see the module docstring)."""
    import shapely
    import shapely.geometry
    import shapely.ops
    from pyproj import Transformer

    from terramind_openeo.processes.vector import features_of

    if not is_vector_cube(cube):
        raise FormatUnsuitable("GeoJSON needs a vector data cube (first dimension 'geometry'), got dimensions "
                               f"{list(cube.dims) if isinstance(cube, xr.DataArray) else type(cube).__name__}",
                               argument="data")
    other = [d for d in cube.dims[1:] if d != "t" and d not in LABEL_DIMS]
    if other:
        raise FormatUnsuitable(f"GeoJSON cannot hold dimension '{other[0]}' of the vector cube (only geometry, t, "
                               "bands, properties)", argument="data")
    label_dims = [d for d in cube.dims if d in LABEL_DIMS]
    order = ["geometry", *(["t"] if "t" in cube.dims else []), *label_dims]
    values = np.asarray(cube.transpose(*order).values)
    values = values.reshape(values.shape[0], cube.sizes.get("t", 1), -1)  # [geometry, date, label]
    if label_dims:
        names = [str(label) for d in label_dims for label in np.atleast_1d(cube[d].values)]
        if len(label_dims) > 1:  # both: bands x properties, named band:property
            names = [f"{b}:{p}" for b in cube["bands"].values for p in cube["properties"].values]
    else:
        names = ["value"]
    dates = [_date(v) for v in cube["t"].values] if "t" in cube.dims and "t" in cube.coords else [None]
    features = features_of(cube, "data")
    to_wgs84 = Transformer.from_crs(features.crs, "EPSG:4326", always_xy=True)
    geometries = [shapely.geometry.mapping(shapely.ops.transform(to_wgs84.transform, g))
                  for g in features.geometries]
    out = []
    for i, (geometry, props) in enumerate(zip(geometries, features.properties, strict=True)):
        for k, date in enumerate(dates):
            row = dict(props)
            if "t" in cube.dims:
                row["t"] = date
            row.update(zip(names, values[i, k].tolist(), strict=True))
            out.append({"type": "Feature", "geometry": geometry, "properties": row})
    return to_jsonable({"type": "FeatureCollection", "features": out}, nan_as_null=True)


def write_geojson(data: Any, out_dir: Path, basename: str, **_: Any) -> list[Path]:
    path = Path(out_dir) / f"{basename}.geojson"
    write_text(path, json.dumps(to_feature_collection(data)), durable=True)
    return [path]
