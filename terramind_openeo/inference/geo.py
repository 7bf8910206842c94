"""Where a tile is on Earth, for TerraMind's coords modality, and per-tile values back on a cube grid.

A tile's location is the centre of its footprint on the tile grid, in the cube's CRS: the tile's first grid
pixel plus ``tile_size / 2`` pixels along each axis, whatever part of the tile lies outside the cube (and is
filled by reflection). It depends on the tile's grid position only, so a tile gets the same location in every
chunk and cube that holds it. The point is transformed with pyproj (``always_xy``) to WGS84 longitude,
latitude (EPSG:4326).

Defined behaviour at the edges of the globe:

* **Antimeridian**: the centre point is transformed, never averaged from the corners, so a tile across +-180
  degrees gets its centre's longitude (say 179.98 or -179.98); a longitude pyproj returns beyond +-180 is
  wrapped into -180..180.
* **Poles, beyond +-85 degrees**: latitudes are used as transformed, up to +-90 (the coords grid spans -90..90
  and so does the tokenizer). Where the latitude rounds to a pole on the 0.25 degree grid (|lat| >= 89.875:
  the token ``lat=+-90.00``) every meridian meets and the longitude means nothing: it is set to 0.
* **Outside the CRS's domain** (pyproj returns inf or NaN, e.g. Web Mercator's poles): an error naming the tile
  centre and the CRS.

A cube without a CRS, or without regular ``x``/``y`` coordinates, has no location: asking for ``coords`` with it
is an error naming the context key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import xarray as xr

from terramind_openeo.crs import crs_of

from .errors import ContextError
from .tiling import OutputGrid, Tile, TileGrid

POLE_LATITUDE = 89.875
"""From here the latitude rounds to +-90 on the coords grid (ties to even: 89.875 * 4 = 359.5 -> 360)."""


def cube_crs(cube: xr.DataArray):
    """The cube's CRS as a ``pyproj.CRS``; an error naming ``coords`` when the cube has none."""
    from pyproj import CRS

    try:
        crs = crs_of(cube)
    except Exception:  # noqa: BLE001 - rioxarray raises various errors on malformed grid mappings
        crs = None
    if crs is None:
        raise ContextError("coords", "the cube has no CRS (no spatial_ref/crs grid mapping), so its tiles have no "
                           "location; write one (rio.write_crs) or set coords to false")
    return CRS.from_user_input(crs.to_wkt() if hasattr(crs, "to_wkt") else crs)


def tile_centres(cube: xr.DataArray, grid: TileGrid, tiles: Iterable[Tile]) -> dict[tuple[int, int], tuple[float, float]]:
    """``{(tile row, tile col): (lon, lat)}`` in WGS84 degrees for the tiles' grid positions (see the module
    docstring); one transformation for all of them."""
    from pyproj import Transformer

    crs = cube_crs(cube)
    if "y" not in cube.coords or "x" not in cube.coords:
        raise ContextError("coords", "the cube has no x/y coordinates, so its tiles have no location")
    y, x = np.asarray(cube["y"].values, dtype=np.float64), np.asarray(cube["x"].values, dtype=np.float64)
    if y.size < 2 or x.size < 2:
        raise ContextError("coords", "the cube's x/y coordinates need at least two values each to place its tiles")
    res_y, res_x = np.diff(y).mean(), np.diff(x).mean()
    if (np.abs(np.diff(y) - res_y).max() > 1e-3 * abs(res_y) or np.abs(np.diff(x) - res_x).max() > 1e-3 * abs(res_x)
            or res_y == 0 or res_x == 0):
        raise ContextError("coords", "the cube's x/y coordinates are not regular, so its tiles cannot be placed")
    positions = sorted({(t.row, t.col) for t in tiles})
    if not positions:
        return {}
    half = (grid.tile_size - 1) / 2  # from the first pixel's centre to the tile's centre, in pixels
    rows = np.array([p[0] for p in positions], dtype=np.float64) - grid.row0 + half
    cols = np.array([p[1] for p in positions], dtype=np.float64) - grid.col0 + half
    cy, cx = y[0] + rows * res_y, x[0] + cols * res_x
    transformer = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon, lat = transformer.transform(cx, cy)
    lon, lat = np.asarray(lon, dtype=np.float64), np.asarray(lat, dtype=np.float64)
    bad = ~(np.isfinite(lon) & np.isfinite(lat))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ContextError("coords", f"the centre ({cx[i]:.3f}, {cy[i]:.3f}) of tile {positions[i]} lies outside "
                           f"what {crs.name} can place on Earth ({int(bad.sum())} tiles in all)")
    lon = np.where(np.abs(lon) > 180, (lon + 180) % 360 - 180, lon)
    lon = np.where(np.abs(lat) >= POLE_LATITUDE, 0.0, lon)
    return {p: (float(a), float(b)) for p, a, b in zip(positions, lon, lat)}


def nearest_tile_index(cells: np.ndarray, scale: int, origins: list[int], tile_size: int) -> np.ndarray:
    """For output cells ``cells`` (absolute indices in units of ``scale`` grid pixels), the index into
    ``origins`` of the tile whose centre is nearest the cell's centre (ties: the later tile)."""
    stride = origins[1] - origins[0] if len(origins) > 1 else 1
    centres = np.asarray(cells, dtype=np.float64) * scale + scale / 2
    k = np.floor((centres - tile_size / 2 - origins[0]) / stride + 0.5).astype(int)
    return np.clip(k, 0, len(origins) - 1)


def per_tile_planes(values: dict[Tile, np.ndarray], dates: int, channels: int, grid: TileGrid,
                    out: OutputGrid) -> np.ndarray:
    """``float32 [dates, channels, out.height, out.width]``: each cell holds the value of the tile whose centre
    is nearest (one value per tile, no blending: the tiles' central parts tile the plane); NaN where that tile
    was not computed (all its pixels nodata)."""
    planes = np.full((dates, channels, out.height, out.width), np.nan, dtype=np.float32)
    rows, cols = grid.row_origins, grid.col_origins
    r_index = nearest_tile_index(out.row0 + np.arange(out.height), out.scale, rows, grid.tile_size)
    c_index = nearest_tile_index(out.col0 + np.arange(out.width), out.scale, cols, grid.tile_size)
    table = np.full((dates, channels, len(rows), len(cols)), np.nan, dtype=np.float32)
    row_at, col_at = {r: i for i, r in enumerate(rows)}, {c: i for i, c in enumerate(cols)}
    for tile, value in values.items():
        table[tile.date, :, row_at[tile.row], col_at[tile.col]] = value
    planes[:] = table[:, :, r_index[:, None], c_index[None, :]]
    return planes


def great_circle_km(lon1, lat1, lon2, lat2) -> float:
    """Distance in km between two WGS84 points on a sphere of the Earth's mean radius (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(a)))
