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
"""

from __future__ import annotations

import math

import numpy as np
import xarray as xr

from .context import validate_context
from .errors import ContextError
from .geo import great_circle_km, tile_centres
from .runner import RunStats, _generate


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
