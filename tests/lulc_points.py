"""Labelled points sampled from a land-cover raster of the sample tiles (the few-shot tests' training data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from pyproj import Transformer


def lulc_points(raster: Path, window, names: dict[int, str], per_class: int, seed: int) -> dict:
    """``per_class`` random pixel centres of each class in ``window`` of ``raster`` (fewer where a class has
    fewer pixels), as a GeoJSON FeatureCollection of WGS84 points with the property ``target`` = the class name."""
    with rasterio.open(raster) as src:
        lulc = src.read(1, window=window)
        transform, crs = src.window_transform(window), src.crs
    to_lonlat = Transformer.from_crs(crs, 4326, always_xy=True)
    rng = np.random.default_rng(seed)
    features = []
    for value in np.unique(lulc):
        rows, cols = np.nonzero(lulc == value)
        for i in rng.choice(rows.size, min(per_class, rows.size), replace=False):
            lon, lat = to_lonlat.transform(*(transform @ (cols[i] + 0.5, rows[i] + 0.5)))
            features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
                             "properties": {"target": names[int(value)]}})
    return {"type": "FeatureCollection", "features": features}
