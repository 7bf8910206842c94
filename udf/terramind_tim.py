# /// script
# dependencies = ["terramind-openeo"]
# ///
"""TerraMind "Thinking-in-Modalities" (TiM) embeddings of a data cube, as an openEO UDF.

The model first generates the modalities named in ``tim`` (default ["LULC"]) from the cube's own, then
encodes inputs and generated tokens together; the result has the same form as ``terramind_embed.py``
(bands ``emb_000``..; patch or pixel grid; NaN where the input has no data). Each date on its own.

Context keys: those of ``terramind_embed.py`` (model, weights, modalities, missing_bands, nodata, s2_offset,
s1_linear, coords, tile_size, overlap, tile_anchor, batch_size, device, dtype, layer, merge, resolution, quantize,
seed),
plus

- tim (list[str], default ["LULC"]): modalities to generate first (LULC, S2L2A, S1GRD, S1RTC, DEM, NDVI)

An unknown key is an error listing the valid ones.
"""

import xarray

from terramind_openeo.inference import embed_cube, output_bands

DEFAULT_TIM = ["LULC"]


def _context(context: dict) -> dict:
    context = dict(context or {})
    if context.get("tim") is None:
        context["tim"] = DEFAULT_TIM
    return context


def apply_metadata(metadata, context: dict):
    """Band labels of the result, for back-ends that ask before running the UDF."""
    labels = output_bands("embed", _context(context), metadata.band_names)
    return metadata.rename_labels(dimension="bands", target=labels)


def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
    return embed_cube(cube, _context(context))
