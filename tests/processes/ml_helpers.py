"""Helpers of the vector / machine-learning tests: a small synthetic embedding cube with known classes,
labelled points on it, and graphs over it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import xarray as xr
from pyproj import Transformer

CRS = "EPSG:32632"
X0, Y0, RES = 500005.0, 5000475.0, 10.0  # centre of the top-left pixel; y descends
H = W = 48
D = 16
CLASSES = 4


def class_map() -> np.ndarray:
    """Four classes in quadrants, with a diagonal stripe of class 0 across them."""
    rows, cols = np.mgrid[0:H, 0:W]
    classes = (rows >= H // 2) * 2 + (cols >= W // 2)
    classes[np.abs(rows - cols) < 3] = 0
    return classes.astype(np.int64)


def embedding_values(seed: int = 0) -> np.ndarray:
    """float32 ``[D, H, W]``: a centre per class plus noise (classes overlap a little)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLASSES, D)) * 1.5
    values = centres[class_map()].transpose(2, 0, 1) + rng.normal(size=(D, H, W))
    return values.astype(np.float32)


def embedding_cube(seed: int = 0, chunk: int | None = 16) -> xr.DataArray:
    """``(bands, y, x)`` with CRS, dask-chunked ``chunk`` px (None: numpy)."""
    cube = xr.DataArray(embedding_values(seed), dims=("bands", "y", "x"),
                        coords={"bands": [f"emb_{i:03d}" for i in range(D)], "y": Y0 - RES * np.arange(H),
                                "x": X0 + RES * np.arange(W)})
    cube = cube.rio.write_crs(CRS)
    return cube.chunk({"bands": -1, "y": chunk, "x": chunk}) if chunk else cube


def pixel_lonlat(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = Transformer.from_crs(CRS, 4326, always_xy=True)
    return t.transform(X0 + RES * cols, Y0 - RES * rows)


def labelled_points(per_class: int, seed: int = 1, label: str = "target",
                    names: list[str] | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    """GeoJSON points (lon/lat) on pixel centres, ``per_class`` of each class; and their rows, cols."""
    rng = np.random.default_rng(seed)
    classes = class_map()
    rows, cols = [], []
    for c in range(CLASSES):
        r, k = np.nonzero(classes == c)
        pick = rng.choice(r.size, per_class, replace=False)
        rows += list(r[pick])
        cols += list(k[pick])
    rows, cols = np.asarray(rows), np.asarray(cols)
    lon, lat = pixel_lonlat(rows, cols)
    features = []
    for i, (x, y) in enumerate(zip(lon, lat)):
        value = int(classes[rows[i], cols[i]])
        features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [float(x), float(y)]},
                         "properties": {label: names[value] if names else value, "id": i}})
    return {"type": "FeatureCollection", "features": features}, rows, cols


def write_collection(tmp: Path, cube: xr.DataArray, name: str = "emb.nc") -> dict:
    """The cube as a netCDF file (one date) and its catalog entry."""
    ds = cube.expand_dims(t=[np.datetime64("2021-07-23")]).to_dataset(dim="bands")
    ds = ds.rio.write_crs(CRS)
    path = tmp / name
    ds.to_netcdf(path)
    return {"id": "EMB", "type": "netcdf", "path": str(path), "crs": CRS, "bands": [str(b) for b in cube.bands.values]}


def catalog_for(tmp: Path, *entries: dict):
    from terramind_openeo.processes import Catalog

    path = tmp / "catalog.json"
    path.write_text(json.dumps({"collections": list(entries)}))
    return Catalog.from_file(path)


def mean_reducer() -> dict:
    return {"process_graph": {"m": {"process_id": "mean", "arguments": {"data": {"from_parameter": "data"}},
                                    "result": True}}}


def predict_reducer(process_id: str = "predict_random_forest") -> dict:
    return {"process_graph": {"p": {"process_id": process_id, "arguments": {
        "data": {"from_parameter": "data"}, "model": {"from_parameter": "context"}}, "result": True}}}


def fit_graph(points: dict, fit: str = "fit_class_random_forest", collection: str = "EMB", **fit_args) -> dict:
    """load -> aggregate_spatial at the points -> fit -> predict over the cube (no save: the value)."""
    return {"process_graph": {
        "load": {"process_id": "load_collection", "arguments": {"id": collection, "spatial_extent": None,
                                                                "temporal_extent": None, "bands": None}},
        "agg": {"process_id": "aggregate_spatial", "arguments": {"data": {"from_node": "load"}, "geometries": points,
                                                                 "reducer": mean_reducer()}},
        "fit": {"process_id": fit, "arguments": {"predictors": {"from_node": "agg"}, "target": points, **fit_args}},
        "pred": {"process_id": "reduce_dimension", "arguments": {"data": {"from_node": "load"}, "dimension": "bands",
                                                                  "reducer": predict_reducer(),
                                                                  "context": {"from_node": "fit"}}, "result": True},
    }}
