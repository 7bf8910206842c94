"""Reading and writing a cube's CRS without a ``.rio`` accessor on the cube itself.

xarray caches an accessor on the object it was taken from (``array._cache``), and the accessor refers back
to the object: ``array.rio`` makes a reference cycle. Reference counting never frees a cycle; only Python's
cyclic garbage collector does, and in a process that allocates few Python objects but large arrays (a
Dask worker running the model chunk after chunk) its full collections are rare. Every chunk whose CRS was
read or written through ``.rio`` then stays in memory until one comes: measured on ``run`` over 8192^2 px,
several chunks of input pixels at once, hundreds of MB.

Both functions here go through a one-pixel stand-in that carries the cube's scalar coordinates (the grid
mapping), attributes and encoding, so the cycle holds a few bytes and the cube's values are freed as soon
as nothing refers to them. They read and write exactly what ``rio.crs`` and ``rio.write_crs`` do.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import rioxarray  # noqa: F401 - registers the .rio accessor
import xarray as xr


def _stand_in(array: xr.DataArray) -> xr.DataArray:
    scalars = {name: coord for name, coord in array.coords.items() if coord.ndim == 0}
    stand_in = xr.DataArray(np.zeros((1, 1), dtype=np.uint8), dims=("y", "x"), coords=scalars,
                            attrs=dict(array.attrs))
    stand_in.encoding = dict(array.encoding)
    return stand_in


def crs_of(array: xr.DataArray) -> Any:
    """``array.rio.crs`` (a ``rasterio.crs.CRS`` or None), without an accessor on ``array``."""
    return _stand_in(array).rio.crs


def with_crs(array: xr.DataArray, crs: Any) -> xr.DataArray:
    """``array.rio.write_crs(crs, inplace=True)`` without an accessor on ``array``: the grid-mapping
    coordinate, attributes and encoding are written on ``array`` itself (no copy of its values), which is
    returned."""
    written = _stand_in(array).rio.write_crs(crs)
    for name, coord in written.coords.items():
        if coord.ndim == 0:
            array.coords[name] = coord.variable
    array.attrs = dict(written.attrs)
    array.encoding = dict(written.encoding)
    return array
