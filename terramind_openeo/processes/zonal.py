"""``aggregate_spatial``: a raster cube reduced over points, lines and polygons into a vector cube.

Each geometry is turned into the pixels it covers, on the cube's own grid: a point takes the pixel it falls
in, a polygon the pixels whose centres lie inside it, a line every pixel it touches. All pixels of all
geometries are gathered in one pointwise (``vindex``) selection of the lazy cube, padded to the largest
geometry with no-data, and the reducer runs over that axis: the result stays lazy and computing it reads
only the cube's blocks that hold a geometry, never the whole area.

Geometries that cover no pixel of the cube (a point outside it, a polygon beside it) are an error naming the
feature, raised before any pixel is read. The feature properties ride along as coordinates (``vector.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import xarray as xr
from pyproj import CRS, Transformer

from terramind_openeo.config import settings
from terramind_openeo.crs import crs_of
from terramind_openeo.processes.errors import ProcessParameterInvalid, ProcessParameterUnsupported
from terramind_openeo.processes.vector import Features, features_of, vector_cube

logger = logging.getLogger(__name__)


class _Grid:
    """The cube's pixel grid along x and y: centre of the first pixel and the signed step."""

    def __init__(self, cube: xr.DataArray):
        xs, ys = np.asarray(cube.x.values, dtype=float), np.asarray(cube.y.values, dtype=float)
        self.nx, self.ny = xs.size, ys.size
        self.x0, self.y0 = xs[0], ys[0]
        self.dx = float(xs[1] - xs[0]) if xs.size > 1 else float(cube.attrs.get("res_x", 1.0))
        self.dy = float(ys[1] - ys[0]) if ys.size > 1 else -abs(self.dx)
        for name, coords, step in (("x", xs, self.dx), ("y", ys, self.dy)):
            if coords.size > 2 and not np.allclose(np.diff(coords), step, rtol=1e-6, atol=0):
                raise ProcessParameterInvalid(f"the cube's {name} coordinates are not a regular grid",
                                              argument="data")

    def index(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Row and column of the pixels holding the points (may lie outside ``0..n-1``)."""
        col = np.floor((x - self.x0) / self.dx + 0.5).astype(np.int64)
        row = np.floor((y - self.y0) / self.dy + 0.5).astype(np.int64)
        return row, col

    def bounds(self) -> tuple[float, float, float, float]:
        xs = (self.x0 - self.dx / 2, self.x0 + self.dx * (self.nx - 0.5))
        ys = (self.y0 - self.dy / 2, self.y0 + self.dy * (self.ny - 0.5))
        return min(xs), min(ys), max(xs), max(ys)

    def window(self, geom) -> tuple[int, int, int, int]:
        """Rows ``r0:r1`` and columns ``c0:c1`` of the pixels the geometry's bounding box touches, clipped."""
        w, s, e, n = geom.bounds
        rows = sorted(self.index(np.array([w, e]), np.array([s, n]))[0])
        cols = sorted(self.index(np.array([w, e]), np.array([s, n]))[1])
        return max(rows[0], 0), min(rows[1] + 1, self.ny), max(cols[0], 0), min(cols[1] + 1, self.nx)


def _in_cube_crs(features: Features, crs: Any) -> list:
    import shapely

    target = CRS.from_user_input(crs)
    if target == features.crs:
        return list(features.geometries)
    t = Transformer.from_crs(features.crs, target, always_xy=True)
    return [shapely.transform(g, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))
            for g in features.geometries]


def _pixels_of(geom, grid: _Grid) -> np.ndarray:
    """Flat pixel indices (row * nx + col) a geometry covers, inside the cube."""
    import shapely
    from affine import Affine
    from rasterio.features import geometry_mask

    kind = geom.geom_type
    if kind in ("Point", "MultiPoint"):
        pts = shapely.get_coordinates(geom)
        row, col = grid.index(pts[:, 0], pts[:, 1])
        keep = (row >= 0) & (row < grid.ny) & (col >= 0) & (col < grid.nx)
        return np.unique(row[keep] * grid.nx + col[keep])
    r0, r1, c0, c1 = grid.window(geom)
    if r0 >= r1 or c0 >= c1:
        return np.empty(0, dtype=np.int64)
    transform = Affine(grid.dx, 0, grid.x0 + (c0 - 0.5) * grid.dx, 0, grid.dy, grid.y0 + (r0 - 0.5) * grid.dy)
    lines = kind in ("LineString", "MultiLineString")
    inside = ~geometry_mask([geom], out_shape=(r1 - r0, c1 - c0), transform=transform, all_touched=lines)
    rows, cols = np.nonzero(inside)
    return (rows + r0) * grid.nx + (cols + c0)


def _outside_error(features: Features, empty: list[int], grid: _Grid) -> ProcessParameterInvalid:
    w, s, e, n = grid.bounds()
    first = empty[0]
    geom = features.geometries[first]
    where = f"({geom.x:.6f}, {geom.y:.6f})" if geom.geom_type == "Point" else f"bounds {tuple(round(v, 6) for v in geom.bounds)}"
    more = f" and {len(empty) - 1} more ({empty[1:6]}{'...' if len(empty) > 6 else ''})" if len(empty) > 1 else ""
    return ProcessParameterInvalid(
        f"feature {first}{more}: {geom.geom_type} {where} (CRS {features.crs.to_string()}) covers no pixel of the "
        f"data cube, which spans x {w:.2f}..{e:.2f}, y {s:.2f}..{n:.2f} in its CRS", argument="geometries")


def gather_pixels(data: xr.DataArray, features: Features) -> tuple[xr.DataArray, np.ndarray]:
    """Lazy pixel values ``(..., geometry, pixel)`` of every geometry (no-data padded) and the pixel counts.

    Raises before any pixel is read when a geometry covers no pixel of the cube."""
    crs = crs_of(data)
    if crs is None:
        raise ProcessParameterInvalid("the data cube has no CRS: its pixels cannot be located", argument="data")
    grid = _Grid(data)
    pixels = [_pixels_of(g, grid) for g in _in_cube_crs(features, crs)]
    counts = np.array([p.size for p in pixels], dtype=np.int64)
    empty = [i for i, c in enumerate(counts) if c == 0]
    if empty:
        raise _outside_error(features, empty, grid)
    width = int(counts.max())
    limit = settings().aggregate_max_pixels
    if width * len(pixels) > limit:
        raise ProcessParameterInvalid(
            f"the geometries cover up to {width} pixels each, {width * len(pixels)} positions in all, over the "
            f"limit of {limit}: use smaller polygons or fewer of them", argument="geometries")
    flat = np.zeros((len(pixels), width), dtype=np.int64)
    valid = np.zeros((len(pixels), width), dtype=bool)
    for i, p in enumerate(pixels):
        flat[i, :p.size], valid[i, :p.size] = p, True
    rows = xr.DataArray(flat // grid.nx, dims=("geometry", "pixel"))
    cols = xr.DataArray(flat % grid.nx, dims=("geometry", "pixel"))
    if not np.issubdtype(data.dtype, np.floating):
        data = data.astype("float32")
    values = data.isel(y=rows, x=cols)  # a pointwise (vindex) selection: only the blocks holding pixels
    values = values.drop_vars([c for c in ("x", "y", "spatial_ref") if c in values.coords])
    values = values.where(xr.DataArray(valid, dims=("geometry", "pixel")))
    return values, counts


def aggregate_spatial(data: xr.DataArray, geometries: Any, reducer: Callable, target_dimension: str | None = None,
                      context: Any = None) -> xr.DataArray:
    from terramind_openeo.processes.quantized import dequantized

    if not isinstance(data, xr.DataArray) or not {"x", "y"} <= set(data.dims):
        raise ProcessParameterInvalid("needs a raster data cube with x and y dimensions", argument="data")
    if target_dimension is not None:
        raise ProcessParameterUnsupported("only null is supported: the statistics form the cube's values",
                                          argument="target_dimension")
    features = features_of(geometries, "geometries")
    data = dequantized(data)
    values, counts = gather_pixels(data, features)
    other = [d for d in values.dims if d not in ("geometry", "pixel")]
    values = values.transpose(*other, "geometry", "pixel")
    reduced = reducer(values.data, positional_parameters={"data": 0}, named_parameters={"context": context},
                      axis=values.ndim - 1, keepdims=False, context=context)
    if isinstance(reduced, xr.DataArray):
        reduced = reduced.data
    if getattr(reduced, "shape", None) != values.shape[:-1]:
        raise ProcessParameterInvalid(f"the reducer must return one value per geometry, got shape "
                                      f"{getattr(reduced, 'shape', None)}", argument="reducer")
    order = ("geometry", *other)
    reduced = np.moveaxis(reduced, len(other), 0) if other else reduced
    coords = {d: values[d].values for d in other if d in values.coords}
    cube = vector_cube(features, reduced, order, coords)
    cube.attrs.update({"pixels_per_geometry": counts.tolist() if counts.size <= 10_000 else None,
                       "source_crs": str(crs_of(data))})
    logger.info("aggregate_spatial: %d geometries, %d pixels gathered", len(features), int(counts.sum()))
    return cube
