# /// script
# dependencies = ["terramind-openeo"]
# ///
"""TerraMind encoder embeddings of a data cube, as an openEO UDF.

Use it with ``apply_neighborhood`` (for instance size 448 px, overlap 32 px) and the context
``{"resolution": "pixel"}`` (``apply_neighborhood`` keeps the pixel grid: at the default patch resolution
it is refused before any work), or ``apply`` over a cube with dims ``(t, bands, y, x)``; band labels as the
collection names them (``B01``..``B12``, ``B8A``; ``VV``, ``VH``; ``DEM``/``elevation``; also prefixed as
``S2-L2A-B04``, ``S1-SIGMA0-VV``; other bands are ignored).
Returns bands ``emb_000``..``emb_{D-1}`` (D = 192/384/768/1024 for tiny/small/base/large; times the number of
modalities for ``merge="concat"``), one value per 16 x 16 px patch with coordinates at patch centres (or per
pixel with ``resolution="pixel"``); NaN where the input has no data. Each date is embedded on its own. The
``terramind_embed`` process of the terramind-openeo back-end computes the same numbers.

Context keys (all optional; an unknown key is an error listing the valid ones):

- model (str, default "terramind_v1_base"): model size, one of terramind_v1_tiny, terramind_v1_small,
  terramind_v1_base, terramind_v1_large
- weights (str, default "hub"): "hub" (official checkpoint, cached), a local path or URL, or "random"
  (seeded random weights, for tests only)
- modalities (list[str] | str | null, default null): modalities the cube's bands form, in the order fed to
  the model (S2L2A, S2L1C, S2RGB, S1GRD, S1RTC, DEM); null: inferred from band labels (Sentinel-1 bands
  need it: S1GRD or S1RTC)
- missing_bands (str, default "error"): "error": a modality lacking bands is an error naming them; "mean":
  fill missing bands with the pre-training mean (results degrade)
- nodata (number | null, default null): input value meaning "no data" besides NaN (null: the cube's own
  nodata attribute, if any)
- s2_offset (number, default 0): radiometric offset to subtract from Sentinel-2 digital numbers (1000 for
  processing baseline >= 04.00 data that still carries it)
- s1_linear (bool, default false): Sentinel-1 bands are linear power; converted to dB (values <= 0 become
  nodata)
- coords (bool, default false): feed each tile's location as TerraMind's coords modality: the centre of the
  tile's footprint, transformed from the cube's CRS to WGS84 longitude/latitude and rounded to the model's
  0.25 degree grid; the cube needs a CRS and regular x/y coordinates (across the antimeridian: the centre
  point's longitude; at the poles, |lat| >= 89.875: longitude 0)
- tile_size (int, default 224): tile edge in pixels, a multiple of 16
- overlap (int, default 32): overlap of neighbouring tiles in pixels (raised-cosine blending), 0 <= overlap
  <= tile_size / 2; a multiple of 16 for patch-resolution embeddings
- tile_anchor (str, default "crs"): "crs": tile grid anchored at the CRS origin, so a pixel sees the same
  tiles whatever the cube's extent or chunking; "cube": anchored at the cube's top-left pixel
- batch_size (int, default 8): tiles per model call
- device (str | null, default null): torch device ("cpu", "cuda", "cuda:1"); null: CUDA when present
- dtype (str | null, default null): float32, bfloat16, float16 or int8; null: bfloat16 on CUDA, float32 on CPU.
  On a CPU, bfloat16 needs AMX-BF16 or AVX512-BF16 (float16: AMX-FP16 or AVX512-FP16) and is refused without
  them, naming the missing support; int8 (CPU only): the linear layers in int8, the rest in float32
- layer (int, default -1): encoder layer whose output is returned (negative counts from the last)
- merge (str, default "mean"): how tokens of several input modalities are merged per patch: "mean", "max"
  or "concat"
- resolution (str, default "patch"): "patch" (16 px grid) or "pixel" (bilinearly upsampled to the input grid:
  what apply_neighborhood, which keeps the pixel grid, needs)
- quantize (str | null, default null): "int8": int8 codes plus a per-pixel scale code in band emb_scale
  (value = code * 2 ** (emb_scale / 8); -128 = no data), a quarter of the float32 size; null: float32
- tim (list[str] | null, default null): Thinking-in-Modalities: modalities generated first and then encoded
- seed (int | null, default 0): random seed of TiM generation; each tile derives its own from it and its
  grid position, so results do not depend on tiling (null: not reproducible)
"""

import xarray

from terramind_openeo.inference import embed_cube, output_metadata


def apply_metadata(metadata, context: dict):
    """Band labels (and, at patch resolution, the 16 times larger x/y step) of the result, for back-ends
    that ask before running the UDF."""
    return output_metadata("embed", metadata, context)


def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
    return embed_cube(cube, context)
