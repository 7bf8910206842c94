# /// script
# dependencies = ["terramind-openeo"]
# ///
"""TerraMind any-to-any generation over a data cube, as an openEO UDF.

Use it with ``apply_neighborhood`` (for instance size 448 px, overlap 32 px) or ``apply`` over a cube with
dims ``(t, bands, y, x)``; band labels as the collection names them (``B01``..``B12``, ``B8A``; ``VV``,
``VH``; ``DEM``/``elevation``; also prefixed as ``S2-L2A-B04``, ``S1-SIGMA0-VV``; other bands are ignored).
Returns the generated modality on the input pixel grid: LULC as uint8 classes 0..9 (band ``LULC``, nodata
255); S2L2A (``B01``..``B12``), S1GRD/S1RTC (``VV``, ``VH`` in dB), DEM (``DEM``, m) and NDVI (``NDVI``) as
float32 in physical units, NaN where the input has no data. Chained targets or ``probabilities`` give one
float32 cube (LULC classes as numbers, bands ``LULC_P00``..``LULC_P09`` for the class scores). Target
``coords`` gives the generated location of each tile as bands ``lon``, ``lat``. Each date is generated on its
own. The ``terramind_generate`` process of the terramind-openeo back-end computes the same
numbers.

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
  <= tile_size / 2
- tile_anchor (str, default "crs"): "crs": tile grid anchored at the CRS origin, so a pixel sees the same
  tiles whatever the cube's extent or chunking; "cube": anchored at the cube's top-left pixel
- batch_size (int, default 8): tiles per model call
- device (str | null, default null): torch device ("cpu", "cuda", "cuda:1"); null: CUDA when present
- dtype (str | null, default null): float32, bfloat16, float16 or int8; null: bfloat16 on CUDA, float32 on CPU.
  On a CPU, bfloat16 needs AMX-BF16 or AVX512-BF16 (float16: AMX-FP16 or AVX512-FP16) and is refused without
  them, naming the missing support; int8 (CPU only): the linear layers in int8, the rest in float32
- target (str | list[str], default "LULC"): modality to generate (LULC, S2L2A, S1GRD, S1RTC, DEM, NDVI,
  coords); a list generates them in a chain. "coords" (geo-localisation: where on Earth the model places each
  tile) gives bands lon, lat (float32, WGS84 degrees on the 0.25 degree grid, NaN where the generated text is
  no location), one value per tile, each cell taking the tile whose centre is nearest: on the 16 x 16 px patch
  grid when coords is the only target, else on the pixel grid
- timesteps (int, default 10): decoding steps of the generation
- seed (int | null, default 0): random seed; each tile derives its own from it and its grid position, so
  results do not depend on tiling (null: not reproducible)
- temperature (number, default 1.0): sampling temperature (>= 0; 0: the most likely token, as argmax)
- top_p (number, default 0.8): nucleus sampling threshold in (0, 1]
- top_k (int, default 0): top-k sampling (0: off)
- argmax (bool, default false): take the most likely token instead of sampling
- probabilities (bool, default false): LULC: also return the per-class scores LULC_P00..LULC_P09
"""

import xarray

from terramind_openeo.inference import generate_cube, output_metadata


def apply_metadata(metadata, context: dict):
    """Band labels of the result (and the class names of a class map), for back-ends that ask before running
    the UDF."""
    return output_metadata("generate", metadata, context)


def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
    return generate_cube(cube, context)
