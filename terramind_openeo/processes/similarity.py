"""``terramind_similarity``: how much every pixel's embedding points the way the examples' embeddings do.

The reference is the mean embedding of the examples (points or polygons; a polygon counts once, with the
mean of its pixels), per date; the result is the cosine similarity of each pixel's embedding with it, a
float map in [-1, 1] (band ``similarity``; NaN where the pixel has no data). The examples' pixels are
gathered and averaged when the graph is evaluated (a few blocks of the cube); the map runs chunk by chunk
through ``chunked.map_chunks``. int8-quantised embeddings are read back on the fly.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import xarray as xr

from terramind_openeo.processes.errors import ProcessParameterInvalid
from terramind_openeo.processes.quantized import dequantized, dequantized_values

logger = logging.getLogger(__name__)

BAND = "similarity"
SLAB_VALUES = 8 * 2**20


def reference_embedding(data: xr.DataArray, examples: Any) -> np.ndarray:
    """Mean embedding of the examples, ``[t, bands]`` (``t`` = 1 without a temporal dimension)."""
    from terramind_openeo.processes.ml.training import compute
    from terramind_openeo.processes.vector import features_of
    from terramind_openeo.processes.zonal import gather_pixels

    features = features_of(examples, "examples")
    values, _ = gather_pixels(dequantized(data), features)
    cube = values if "t" in values.dims else values.expand_dims("t")
    pixels = compute(cube.transpose("t", "bands", "geometry", "pixel").data)  # only the examples' blocks
    with np.errstate(invalid="ignore"), _quiet():
        per_example = np.nanmean(pixels, axis=-1)  # [t, bands, geometry]
        usable = np.isfinite(per_example).all(axis=1)  # an example counts where all its bands have data
        per_example = np.where(usable[:, None, :], per_example, np.nan)
        reference = np.nanmean(per_example, axis=-1)  # [t, bands]
    if not np.isfinite(reference).all():
        raise ProcessParameterInvalid("no example has data in every band on some date", argument="examples")
    return reference.astype(np.float32)


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": NaN is the answer

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


def cosine_to(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine similarity of ``values [bands, ...]`` with ``reference [bands]`` (float32, NaN for no-data)."""
    unit = reference / np.linalg.norm(reference)
    flat = values.reshape(values.shape[0], -1)
    dot = np.tensordot(unit.astype(np.float32), flat.astype(np.float32, copy=False), axes=(0, 0))
    norm = np.sqrt(np.einsum("bn,bn->n", flat, flat, dtype=np.float32))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(norm > 0, dot / norm, 0.0).astype(np.float32)
    out[~np.isfinite(flat).all(axis=0)] = np.nan
    return out.reshape(values.shape[1:])


class SimilarityFn:
    """Picklable chunk function: cosine similarity of a labelled chunk with the per-date reference."""

    def __init__(self, reference: np.ndarray, t_labels: list | None):
        self.reference, self.t_labels = reference, t_labels
        self.token = ("similarity", reference.tobytes().hex()[:64], reference.shape, str(t_labels))

    def __call__(self, chunk: xr.DataArray) -> xr.DataArray:
        has_t = "t" in chunk.dims
        cube = chunk.transpose("t", "bands", "y", "x") if has_t else chunk.transpose("bands", "y", "x").expand_dims("t")
        values, _ = dequantized_values(cube.values, [str(b) for b in cube.bands.values], 1)
        out = np.empty((values.shape[0], 1) + values.shape[2:], dtype=np.float32)
        rows = max(1, SLAB_VALUES // max(values.shape[1] * values.shape[3], 1))
        for i in range(values.shape[0]):
            ref = self.reference[self._date_index(cube, i)]
            for r0 in range(0, values.shape[2], rows):
                out[i, 0, r0:r0 + rows] = cosine_to(values[i, :, r0:r0 + rows], ref)
        result = xr.DataArray(out, dims=("t", "bands", "y", "x"),
                              coords={"t": cube.t.values if "t" in cube.coords else [0], "bands": [BAND],
                                      "y": cube.y.values, "x": cube.x.values})
        return result if has_t else result.isel(t=0, drop=True)

    def _date_index(self, cube: xr.DataArray, i: int) -> int:
        if self.t_labels is None or "t" not in cube.coords:
            return 0
        return self.t_labels.index(cube.t.values[i])


def terramind_similarity(data: xr.DataArray, examples: Any) -> xr.DataArray:
    from terramind_openeo.processes.chunked import map_chunks
    from terramind_openeo.processes.ml.predict import chunk_plan

    if not isinstance(data, xr.DataArray) or not {"bands", "y", "x"} <= set(data.dims):
        raise ProcessParameterInvalid("needs a raster data cube of embeddings with dimensions bands, y, x",
                                      argument="data")
    extra = [d for d in data.dims if d not in ("t", "bands", "y", "x")]
    if extra:
        raise ProcessParameterInvalid(f"cannot compare over dimension(s) {extra}", argument="data")
    reference = reference_embedding(data, examples)
    t_labels = list(data.t.values) if "t" in data.dims and "t" in data.coords else None
    out = map_chunks(data, SimilarityFn(reference, t_labels), chunk_plan(data), [BAND], "float32", per_date=True,
                     name="terramind_similarity")
    out.attrs = {"nodata": float("nan")}
    return out
