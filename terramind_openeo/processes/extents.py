"""Spatial and temporal extents as openEO gives them, checked and converted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyproj import CRS, Transformer

from terramind_openeo.processes.errors import NoDataAvailable, ProcessParameterInvalid


@dataclass(frozen=True)
class BBox:
    west: float
    south: float
    east: float
    north: float
    crs: CRS

    @classmethod
    def from_bounds(cls, bounds: Any, crs: CRS) -> BBox:
        """From any ``(west, south, east, north)`` sequence (rasterio's bounds, a STAC bbox, shapely's)."""
        west, south, east, north = bounds
        return cls(west, south, east, north, crs)

    def to_crs(self, crs: Any) -> BBox:
        crs = CRS.from_user_input(crs)
        if crs == self.crs:
            return self
        t = Transformer.from_crs(self.crs, crs, always_xy=True)
        w, s, e, n = t.transform_bounds(self.west, self.south, self.east, self.north, densify_pts=21)
        return BBox(w, s, e, n, crs)

    def intersects(self, other: BBox) -> bool:
        o = other.to_crs(self.crs)
        return not (o.east <= self.west or o.west >= self.east or o.north <= self.south or o.south >= self.north)

    def as_tuple(self) -> tuple[float, float, float, float]:
        return (self.west, self.south, self.east, self.north)


def parse_spatial_extent(extent: Any, argument: str = "spatial_extent") -> BBox | None:
    """openEO bounding box (``west``/``south``/``east``/``north``, optional ``crs``) or None."""
    if extent is None:
        return None
    if hasattr(extent, "west") and hasattr(extent, "crs"):  # pg-parser BoundingBox
        extent = {"west": extent.west, "south": extent.south, "east": extent.east, "north": extent.north,
                  "crs": extent.crs}
    if isinstance(extent, dict) and extent.get("type") in ("Polygon", "MultiPolygon", "Feature", "FeatureCollection"):
        import shapely.geometry

        geom = extent.get("geometry", extent)
        if extent.get("type") == "FeatureCollection":
            geoms = [shapely.geometry.shape(f["geometry"]) for f in extent["features"]]
            bounds = shapely.geometry.GeometryCollection(geoms).bounds
        else:
            bounds = shapely.geometry.shape(geom).bounds
        return BBox.from_bounds(bounds, CRS.from_epsg(4326))
    if not isinstance(extent, dict) or not all(k in extent for k in ("west", "south", "east", "north")):
        raise ProcessParameterInvalid(f"must be a bounding box with west, south, east, north, got {extent!r:.100}",
                                      argument=argument)
    try:
        w, s, e, n = (float(extent[k]) for k in ("west", "south", "east", "north"))
        crs = CRS.from_user_input(extent.get("crs") or 4326)
    except Exception as exc:  # noqa: BLE001
        raise ProcessParameterInvalid(f"invalid bounding box {extent!r:.100}: {exc}", argument=argument) from exc
    if not (w < e and s < n):
        raise ProcessParameterInvalid(f"bounding box is empty (west {w} >= east {e} or south {s} >= north {n})",
                                      argument=argument)
    return BBox(w, s, e, n, crs)


def parse_temporal_extent(extent: Any, argument: str = "temporal_extent") -> tuple[pd.Timestamp | None, pd.Timestamp | None] | None:
    """``[start, end)`` as UTC-naive timestamps; either side may be open. None means no filter."""
    if extent is None:
        return None
    if hasattr(extent, "root"):  # pg-parser TemporalInterval
        extent = [None if v is None else str(v.root if hasattr(v, "root") else v) for v in extent.root]
    if not isinstance(extent, (list, tuple)) or len(extent) != 2:
        raise ProcessParameterInvalid(f"must be [start, end], got {extent!r:.100}", argument=argument)

    def ts(value: Any) -> pd.Timestamp | None:
        if value is None:
            return None
        try:
            t = pd.Timestamp(str(value))
        except Exception as exc:  # noqa: BLE001
            raise ProcessParameterInvalid(f"'{value}' is not a date or date-time", argument=argument) from exc
        return t.tz_convert("UTC").tz_localize(None) if t.tzinfo is not None else t

    start, end = ts(extent[0]), ts(extent[1])
    if start is None and end is None:
        raise ProcessParameterInvalid("start and end of the temporal extent cannot both be null", argument=argument)
    if start is not None and end is not None and end <= start:
        raise NoDataAvailable(f"the temporal range [{extent[0]}, {extent[1]}) is empty", argument=argument)
    return start, end


def select_times(times: np.ndarray, interval) -> np.ndarray:
    """Boolean mask of ``times`` inside ``[start, end)``."""
    t = pd.DatetimeIndex(times)
    keep = np.ones(len(t), bool)
    if interval is None:
        return keep
    start, end = interval
    if start is not None:
        keep &= np.asarray(t >= start)
    if end is not None:
        keep &= np.asarray(t < end)
    return keep
