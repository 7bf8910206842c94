"""STAC Collection + Items describing the files a run wrote."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from pyproj import CRS

from terramind_openeo.classes import CLASSES_ATTR, scheme_of
from terramind_openeo.files import write_text
from terramind_openeo.processes.extents import BBox
from terramind_openeo.processes.writers import MEDIA_TYPES, cube_transform

_PROJECTION_EXT = "https://stac-extensions.github.io/projection/v1.1.0/schema.json"
_CLASSIFICATION_EXT = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"
_MEDIA_BY_SUFFIX = {".tif": MEDIA_TYPES["GTiff"], ".nc": MEDIA_TYPES["netCDF"], ".zarr": MEDIA_TYPES["Zarr"],
                    ".json": MEDIA_TYPES["JSON"], ".geojson": MEDIA_TYPES["GeoJSON"], ".png": "image/png",
                    ".vrt": "application/xml"}


def _footprint(cube: xr.DataArray | None) -> tuple[list[float], int | None, list[int] | None]:
    if cube is not None and cube.dims and cube.dims[0] == "geometry":  # a vector cube: its geometries' bounds
        return _vector_bbox(cube), None, None
    if cube is None or cube.rio.crs is None or "x" not in cube.dims:
        return [-180.0, -90.0, 180.0, 90.0], None, None
    t = cube_transform(cube)
    w, n = t.c, t.f
    e, s = w + t.a * cube.sizes["x"], n + t.e * cube.sizes["y"]
    crs = CRS.from_user_input(cube.rio.crs)
    b = BBox(min(w, e), min(s, n), max(w, e), max(s, n), crs).to_crs(4326)
    return [round(v, 7) for v in b.as_tuple()], crs.to_epsg(), [cube.sizes["y"], cube.sizes["x"]]


def _vector_bbox(cube: xr.DataArray) -> list[float]:
    import shapely
    import shapely.geometry
    import shapely.ops
    from pyproj import Transformer

    from terramind_openeo.processes.vector import features_of

    features = features_of(cube, "data")
    to_wgs84 = Transformer.from_crs(features.crs, "EPSG:4326", always_xy=True)
    w, s, e, n = shapely.total_bounds([shapely.ops.transform(to_wgs84.transform, g) for g in features.geometries])
    if not all(np.isfinite([w, s, e, n])):
        return [-180.0, -90.0, 180.0, 90.0]
    return [round(float(v), 7) for v in (w, s, e, n)]


def _date_of(path: Path, cube: xr.DataArray | None) -> str | None:
    stem = path.stem
    for part in reversed(stem.split("_")):
        try:
            return pd.Timestamp(part).strftime("%Y-%m-%dT%H:%M:%SZ")
        except Exception:  # noqa: BLE001
            continue
    return None


def _as_dates(labels) -> pd.DatetimeIndex | None:
    try:
        return pd.DatetimeIndex(np.atleast_1d(labels))
    except (ValueError, TypeError, pd.errors.ParserError):
        return None


def build_stac(files: list[Path], out_dir: Path, cubes: dict[Path, Any], collection_id: str = "openeo-result",
               write: bool = True) -> dict:
    """STAC Collection dict with one Item per file (also written beside them as JSON when ``write``)."""
    items = []
    all_bbox = None
    dates = []
    summaries: dict[str, Any] = {}
    for path in files:
        cube = cubes.get(path)
        bbox, epsg, shape = _footprint(cube if isinstance(cube, xr.DataArray) else None)
        when = _date_of(path, cube)
        start = end = when
        if when is None and isinstance(cube, xr.DataArray) and "t" in cube.coords and cube.t.size:
            ts = _as_dates(cube.t.values)
            if ts is not None:  # None: rename_labels gave t labels that are not dates (an open interval)
                start, end = ts.min().strftime("%Y-%m-%dT%H:%M:%SZ"), ts.max().strftime("%Y-%m-%dT%H:%M:%SZ")
        dates += [d for d in (start, end) if d]
        props: dict[str, Any] = {"datetime": when if when else None}
        if when is None:
            props["start_datetime"] = start or "1970-01-01T00:00:00Z"
            props["end_datetime"] = end or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if epsg:
            props["proj:epsg"] = epsg
            props["proj:shape"] = shape
        if isinstance(cube, xr.DataArray) and "bands" in cube.coords:
            props["eo:bands"] = [{"name": str(b)} for b in np.atleast_1d(cube.bands.values)]
        rel = os.path.relpath(path, out_dir)
        w, s, e, n = bbox
        asset = {"href": rel, "type": _MEDIA_BY_SUFFIX.get(path.suffix, "application/octet-stream"),
                 "roles": ["data"], "title": path.name}
        extensions = [_PROJECTION_EXT]
        classes = _classes(cube, asset)
        if classes:
            extensions.append(_CLASSIFICATION_EXT)
            summaries[CLASSES_ATTR] = classes
        items.append({
            "type": "Feature", "stac_version": "1.0.0", "id": path.name,
            "stac_extensions": extensions,
            "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
            "bbox": bbox, "properties": props, "collection": collection_id,
            "assets": {"data": asset},
            "links": [{"rel": "collection", "href": "./collection.json", "type": "application/json"}],
        })
        all_bbox = bbox if all_bbox is None else [min(all_bbox[0], w), min(all_bbox[1], s),
                                                  max(all_bbox[2], e), max(all_bbox[3], n)]
    interval = [min(dates), max(dates)] if dates else [None, None]
    collection = {
        "type": "Collection", "stac_version": "1.0.0", "id": collection_id,
        "description": "Results of an openEO process graph run by terramind-openeo",
        "license": "proprietary", "stac_extensions": [_CLASSIFICATION_EXT] if summaries else [],
        "extent": {"spatial": {"bbox": [all_bbox or [-180.0, -90.0, 180.0, 90.0]]},
                   "temporal": {"interval": [interval]}},
        "links": [{"rel": "item", "href": f"./{p.name}.stac.json", "type": "application/json"} for p in files],
        "assets": {os.path.relpath(p, out_dir): {"href": os.path.relpath(p, out_dir),
                                                  "type": _MEDIA_BY_SUFFIX.get(p.suffix, "application/octet-stream"),
                                                  "roles": ["data"]} for p in files},
        "features": items,
    }
    if summaries:
        collection["summaries"] = summaries
    if write:
        for path, item in zip(files, items):
            _write_json(out_dir / f"{path.name}.stac.json", item)
        _write_json(out_dir / "collection.json", {k: v for k, v in collection.items() if k != "features"})
    return collection


def _classes(cube: Any, asset: dict) -> list[dict] | None:
    """The STAC ``classification:classes`` of a class map (``terramind_openeo.classes``), put on ``asset``: on the
    asset itself when the class band is its only band, else on the class band's ``raster:bands`` entry."""
    if not isinstance(cube, xr.DataArray):
        return None
    scheme = scheme_of(cube)
    if scheme is None:
        return None
    classes = scheme.stac_classes()
    bands = [str(b) for b in np.atleast_1d(cube.bands.values)] if "bands" in cube.coords else [scheme.band]
    if len(bands) == 1:
        asset[CLASSES_ATTR] = classes
    else:
        asset["raster:bands"] = [{CLASSES_ATTR: classes} if b == scheme.band else {} for b in bands]
    return classes


def _write_json(path: Path, data: dict) -> None:
    write_text(path, json.dumps(data, indent=1), durable=True)
