"""``terramind_locate``: TerraMind's geo-localisation of each tile as an openEO vector data cube.

The location is generated as ``terramind_generate`` with ``target='coords'`` generates it, chunk by chunk with
the same halo (so the numbers do not depend on chunking and memory stays bounded by the chunk): a lazy
``lon``/``lat`` raster on the 16 px patch grid, one value per tile. ``inference.locate.tile_points`` says which
tiles that raster shows and one cell of each; the vector cube picks those cells (lazily) and puts them on
points at the tiles' footprint centres, in the cube's CRS (a vector cube of ``processes/vector.py``:
``geometry`` first, then ``t`` when the cube has dates, then ``bands``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from terramind_openeo.processes.errors import ProcessParameterInvalid


def terramind_locate(data: Any, **params: Any) -> xr.DataArray:
    import shapely
    from pyproj import CRS

    from terramind_openeo.inference import InferenceError
    from terramind_openeo.inference.locate import tile_points
    from terramind_openeo.processes.terramind import _context, _run
    from terramind_openeo.processes.vector import Features, vector_cube

    for fixed in ("target", "probabilities"):
        if fixed in params:
            raise ProcessParameterInvalid("is not a parameter of terramind_locate (it generates the location "
                                          "only; terramind_generate takes it)", argument=fixed)
    raster = _run("generate", data, {**params, "target": "coords"})  # checks data and every argument
    try:
        points = tile_points(data, _context("generate", params))
    except InferenceError as exc:
        raise ProcessParameterInvalid(f"terramind_locate: {exc}", code=type(exc).__name__, argument="data") from exc
    if (raster.sizes["y"], raster.sizes["x"]) != points.shape:  # the two grids are one by construction
        raise RuntimeError(f"terramind_locate: coords raster of {raster.sizes['y']} x {raster.sizes['x']} cells, "
                           f"tile cells planned for {points.shape}")
    picked = raster.isel(y=xr.DataArray(points.cell_rows, dims="geometry"),
                         x=xr.DataArray(points.cell_cols, dims="geometry"), drop=True)
    dims = ("geometry", "t", "bands") if "t" in picked.dims else ("geometry", "bands")
    picked = picked.transpose(*dims)
    crs = CRS.from_user_input(raster.rio.crs)
    properties = [{"tile_row": r, "tile_col": c, "centre_lon": float(lon), "centre_lat": float(lat)}
                  for r, c, lon, lat in zip(points.rows, points.cols, points.lon, points.lat, strict=True)]
    features = Features(list(shapely.points(points.x, points.y)), properties, crs)
    coords = {d: picked[d].values for d in dims[1:] if d in picked.coords}
    return vector_cube(features, picked.data, dims, coords)


__all__ = ["terramind_locate", "np"]
