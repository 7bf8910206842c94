"""Geo-localisation as vector data: where TerraMind places each tile, as a GeoJSON FeatureCollection.

``locate_tiles(cube, context)`` generates the ``coords`` target (as :func:`generate_cube` does, same context
keys; ``target`` defaults to ``"coords"``) and returns one Point feature per computed tile and date, in RFC 7946
GeoJSON (WGS84 longitude, latitude):

* ``geometry``: the generated location (``null`` where the generated text reads as no location);
* ``properties``: ``t`` (the date label, or null for a cube without ``t``), ``tile_row`` / ``tile_col`` (the
  tile's first pixel on the tile grid), ``lon`` / ``lat`` (generated, or null), and, when the cube has a CRS,
  ``centre_lon`` / ``centre_lat`` (where the tile really is: the centre of its footprint, see
  :mod:`terramind_openeo.inference.geo`) and ``error_km`` (great-circle distance between the two).

This is the per-tile result the raster bands ``lon``/``lat`` of :func:`generate_cube` spread over cells.
:func:`tile_points` goes the other way for a chunked coords raster: which tiles it shows, one cell of each, and
where each tile is (the ``terramind_locate`` process builds its vector cube from them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import xarray as xr

from .adapters import PATCH
from .context import validate_context
from .cube import geometry, tile_grid
from .errors import ContextError
from .geo import great_circle_km, nearest_tile_index, tile_centres
from .runner import RunStats, _generate
from .tiling import OutputGrid, Tile


def _date_label(cube: xr.DataArray, date: int) -> str | None:
    if "t" not in cube.dims:
        return None
    value = cube["t"].values[date] if "t" in cube.coords else date
    if isinstance(value, np.datetime64):
        return str(np.datetime_as_string(value, unit="s"))
    return str(value)


def locate_tiles(cube: xr.DataArray, context: dict | None = None, *, model: object | None = None,
                 stats: RunStats | None = None) -> dict:
    """GeoJSON FeatureCollection of the generated location of every tile (see the module docstring)."""
    context = dict(context or {})
    context.setdefault("target", "coords")
    opts = validate_context("generate", context)
    if "coords" not in opts.target:
        raise ContextError("target", f"locate_tiles generates the location: target must include 'coords', got "
                           f"{list(opts.target)}")
    _, located, plan = _generate(cube, context, model, stats, False, False)
    try:
        centres = tile_centres(cube, plan.grid, located)
    except ContextError:  # no CRS (or no regular grid): the generated location only
        centres = None
    features = []
    for tile in sorted(located, key=lambda t: (t.date, t.row, t.col)):
        lon, lat = (float(v) for v in located[tile])
        found = math.isfinite(lon) and math.isfinite(lat)
        props: dict = {"t": _date_label(cube, tile.date), "tile_row": tile.row, "tile_col": tile.col,
                       "lon": lon if found else None, "lat": lat if found else None}
        if centres is not None:
            c_lon, c_lat = centres[(tile.row, tile.col)]
            props.update(centre_lon=c_lon, centre_lat=c_lat,
                         error_km=great_circle_km(lon, lat, c_lon, c_lat) if found else None)
        features.append({"type": "Feature",
                         "geometry": {"type": "Point", "coordinates": [lon, lat]} if found else None,
                         "properties": props})
    return {"type": "FeatureCollection", "features": features}


@dataclass(frozen=True)
class TilePoints:
    """The tiles that the ``lon``/``lat`` bands of a coords generation show (one value per tile, each 16 px cell
    taking the tile whose centre is nearest): one entry per tile nearest to at least one cell of the cube."""

    rows: tuple[int, ...]
    """Grid row of each tile's first pixel (as :class:`~.tiling.Tile`)."""
    cols: tuple[int, ...]
    cell_rows: np.ndarray
    """A cell of the coords raster (row index into its ``y``) that holds the tile's value."""
    cell_cols: np.ndarray
    x: np.ndarray
    """The tile's footprint centre in the cube's CRS."""
    y: np.ndarray
    lon: np.ndarray
    """The same centre in WGS84 (see :mod:`.geo`)."""
    lat: np.ndarray
    shape: tuple[int, int]
    """``(y, x)`` size of the coords raster these cells index."""


def tile_points(cube: xr.DataArray, context: dict | None = None) -> TilePoints:
    """Where the tiles of a coords generation of ``cube`` are, for turning its ``lon``/``lat`` raster (the
    16 px patch grid of :func:`generate_cube` with ``target='coords'``) into one point per tile. Reads only the
    cube's coordinates; an error naming ``coords`` when the cube has no CRS or no regular x/y grid."""
    opts = validate_context("generate", {**(context or {}), "target": "coords"})
    geo = geometry(cube, opts.tile_anchor)
    grid = tile_grid(geo, opts.tile_size, opts.overlap)
    out = OutputGrid.for_cube(grid, PATCH)
    r_index = nearest_tile_index(out.row0 + np.arange(out.height), out.scale, grid.row_origins, grid.tile_size)
    c_index = nearest_tile_index(out.col0 + np.arange(out.width), out.scale, grid.col_origins, grid.tile_size)
    r_tiles, r_cells = np.unique(r_index, return_index=True)  # each tile row once, with its first raster row
    c_tiles, c_cells = np.unique(c_index, return_index=True)
    rows = [grid.row_origins[i] for i in r_tiles for _ in c_tiles]
    cols = [grid.col_origins[j] for _ in r_tiles for j in c_tiles]
    centres = tile_centres(cube, grid, [Tile(0, r, c) for r, c in zip(rows, cols, strict=True)])
    half = (grid.tile_size - 1) / 2  # as tile_centres: from the first pixel's centre to the tile's centre
    return TilePoints(
        tuple(rows), tuple(cols), np.repeat(r_cells, len(c_tiles)), np.tile(c_cells, len(r_tiles)),
        geo.x0 + (np.asarray(cols, dtype=np.float64) - grid.col0 + half) * geo.res_x,
        geo.y0 + (np.asarray(rows, dtype=np.float64) - grid.row0 + half) * geo.res_y,
        np.array([centres[(r, c)][0] for r, c in zip(rows, cols, strict=True)]),
        np.array([centres[(r, c)][1] for r, c in zip(rows, cols, strict=True)]), (out.height, out.width))
