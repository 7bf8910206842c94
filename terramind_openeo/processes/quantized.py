"""Reading int8-quantised embeddings back (``terramind_embed(quantize="int8")``, inference/quantize.py).

Every process that reads embeddings (``aggregate_spatial``, the ``predict_*`` processes,
``terramind_similarity``) passes its cube through :func:`dequantized`: a quantised cube becomes float32
embeddings (lazily, block by block), any other cube is returned as it is.
"""

from __future__ import annotations

import numpy as np
import xarray as xr

from terramind_openeo.inference import quantize


def is_quantized(cube: xr.DataArray) -> bool:
    return "bands" in cube.dims and quantize.is_quantized([str(b) for b in cube.bands.values], cube.dtype)


def dequantized(cube: xr.DataArray) -> xr.DataArray:
    """float32 embeddings (NaN for no-data) from a quantised cube; other cubes unchanged."""
    if not is_quantized(cube):
        return cube
    codes = cube.isel(bands=slice(0, -1))
    scale = cube.isel(bands=-1, drop=True)
    factor = np.exp2(scale.astype("float32") / quantize.STEPS_PER_OCTAVE)
    out = codes.astype("float32") * factor.where(scale != quantize.NODATA)
    out.attrs = {k: v for k, v in cube.attrs.items() if k not in ("nodata", "_FillValue")}
    out.attrs["nodata"] = float("nan")
    return out.transpose(*cube.dims)


def dequantized_values(values: np.ndarray, bands: list[str], band_axis: int) -> tuple[np.ndarray, list[str]]:
    """The numpy form of :func:`dequantized` for one chunk: (values, band labels) without ``emb_scale``."""
    if not quantize.is_quantized(bands, values.dtype):
        return values, bands
    codes = np.take(values, np.arange(len(bands) - 1), axis=band_axis)
    scale = np.take(values, len(bands) - 1, axis=band_axis)
    return quantize.dequantize(codes, scale, band_axis), bands[:-1]
