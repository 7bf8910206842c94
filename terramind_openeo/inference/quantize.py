"""Compact embeddings: int8 values with a per-pixel scale, and back.

Each pixel's embedding vector ``e`` (D values) is stored as D int8 codes ``q`` plus one int8 scale code
``k`` (band ``emb_scale``): ``e ~= q * 2 ** (k / 8)``. The scale is the smallest power of 2^(1/8) with
``max|e| <= 127 * scale``, so no component is clipped and every component is off by at most half a step:
``|e - q * scale| <= scale / 2 < 2 ** (1/8) / 254 * max|e|`` (0.43 % of the pixel's largest component).
All bands share one dtype (int8), so a file holds them as one multi-band raster; ``-128`` is no-data in
every band. A per-pixel scale (rather than a fixed one per band, as WorldCereal's uint8 export uses) keeps
the relative error the same for weak and strong pixels and leaves the vector's direction, which cosine
similarity and most classifiers on embeddings read, almost untouched.
"""

from __future__ import annotations

import numpy as np

SCALE_BAND = "emb_scale"
"""Band holding each pixel's scale code ``k`` (scale = 2 ** (k / 8))."""
NODATA = -128
"""No-data code in every band of a quantised cube."""
STEPS_PER_OCTAVE = 8
QMAX = 127


def quantize(values: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """float embeddings -> (int8 codes, same shape; int8 scale codes, ``axis`` removed).

    A pixel with a non-finite component is no-data (all codes ``NODATA``)."""
    values = np.asarray(values, dtype=np.float32)
    valid = np.isfinite(values).all(axis=axis)
    peak = np.max(np.abs(np.where(np.isfinite(values), values, 0)), axis=axis)
    with np.errstate(divide="ignore"):
        code = np.ceil(STEPS_PER_OCTAVE * np.log2(peak.astype(np.float64) / QMAX))
    code = np.clip(np.nan_to_num(code, neginf=-QMAX), -QMAX, QMAX)
    scale = np.exp2(code / STEPS_PER_OCTAVE)
    q = np.rint(values / np.expand_dims(scale, axis).astype(np.float32))
    q = np.clip(np.nan_to_num(q, nan=0), -QMAX, QMAX).astype(np.int8)
    q[np.broadcast_to(np.expand_dims(~valid, axis), q.shape)] = NODATA
    code = np.where(valid, code, NODATA).astype(np.int8)
    return q, code


def dequantize(codes: np.ndarray, scale_codes: np.ndarray, axis: int) -> np.ndarray:
    """(int8 codes, int8 scale codes) -> float32 embeddings, NaN where no-data."""
    scale = np.exp2(scale_codes.astype(np.float32) / STEPS_PER_OCTAVE)
    scale[scale_codes == NODATA] = np.nan
    return codes.astype(np.float32) * np.expand_dims(scale, axis)


def is_quantized(bands: list[str], dtype: np.dtype) -> bool:
    """A cube whose bands end with ``emb_scale`` and whose values are int8 holds quantised embeddings."""
    return np.dtype(dtype) == np.int8 and len(bands) > 1 and bands[-1] == SCALE_BAND
