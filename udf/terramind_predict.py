# /// script
# dependencies = ["terramind-openeo"]
# ///
"""A fine-tuned TerraMind model (a terratorch task checkpoint) over a data cube, as an openEO UDF.

Use it with ``apply_neighborhood`` (for instance size 448 px, overlap 32 px) or ``apply`` over a cube with
dims ``(t, bands, y, x)`` whose band labels hold the bands the model's config asks for (``B01``..``B12``,
``B8A``; ``VV``, ``VH``; ``DEM``; also prefixed as ``S2-L2A-B04``, ``S1-SIGMA0-VV``; other bands are ignored).
The checkpoint is what ``terratorch fit`` writes (Lightning ``.ckpt``, or a state dict) with its YAML config
(``model.init_args.model_args``, ``class_names``, the datamodule's ``means``/``stds``), e.g. the hub repo
``ibm-esa-geospatial/TerraMind-base-Flood``. Returns band ``class`` (uint8 class ids, 255 where the input has no
data), with ``probabilities`` also ``P_<class name>`` per class (float32, class ids as numbers), or
``prediction`` values of a regression model. A model that reads several dates at once (terratorch's temporal
wrapper) gives one map without ``t`` (so not inside ``apply_neighborhood``, whose result keeps the cube's
dimensions: on an openEO back-end run such a model with the ``terramind_predict`` process); any other maps each
date. The ``terramind_predict`` process of the
terramind-openeo back-end computes the same numbers.

Context keys (``checkpoint`` required; an unknown key is an error listing the valid ones):

- checkpoint (str | null, default null): the fine-tuned model: a terratorch checkpoint (Lightning .ckpt or state
  dict) as a hub repo id (e.g. ibm-esa-geospatial/TerraMind-base-Flood), a local path or a URL; "random": seeded
  random weights for the config's model (tests only)
- config (str | object | null, default null): the checkpoint's terratorch YAML (or the same as JSON) as a path,
  URL or object (inline): backbone, necks, decoder, head, classes, input bands and means/stds; null: the one
  beside the checkpoint or in its hub repo
- standardization (str, default "config"): input statistics: "config" (the config's data means/stds; an error
  if it gives none) or "pretraining" (TerraMind's pre-training statistics)
- blend (str, default "logits"): what overlapping tiles average before the arg-max: "logits" (as terratorch's
  tiled_inference) or "probabilities" (softmax first)
- probabilities (bool, default false): also return the per-class probabilities P_<class name>
- nodata (number | null, default null): input value meaning "no data" besides NaN (null: the cube's own
  nodata attribute, if any)
- s2_offset (number, default 0): radiometric offset to subtract from Sentinel-2 digital numbers (1000 for
  processing baseline >= 04.00 data that still carries it)
- s1_linear (bool, default false): Sentinel-1 bands are linear power; converted to dB (values <= 0 become
  nodata)
- tile_size (int, default 224): tile edge in pixels, a multiple of 16
- overlap (int, default 32): overlap of neighbouring tiles in pixels (raised-cosine blending), 0 <= overlap
  <= tile_size / 2
- tile_anchor (str, default "crs"): "crs": tile grid anchored at the CRS origin, so a pixel sees the same
  tiles whatever the cube's extent or chunking; "cube": anchored at the cube's top-left pixel
- batch_size (int, default 8): tiles per model call
- device (str | null, default null): torch device ("cpu", "cuda", "cuda:1"); null: CUDA when present
- dtype (str | null, default null): float32, bfloat16, float16 or int8; null: bfloat16 on CUDA, float32 on CPU.
  On a CPU, bfloat16 needs AMX-BF16 or AVX512-BF16 (float16: AMX-FP16 or AVX512-FP16) and is refused without
  them, naming the missing support; int8 (CPU only): the backbone's linear layers in int8, the rest in float32
- seed (int | null, default 0): seed of checkpoint="random" weights, and of the sampled TiM tokens of a
  Thinking-in-Modalities backbone (terramind_v1_*_tim): each tile derives its own from it and its position, so
  results do not depend on tiling (null: not reproducible)
"""

import xarray

from terramind_openeo.inference import output_metadata, predict_cube


def apply_metadata(metadata, context: dict):
    """Band labels of the result (and the class names of a class map), for back-ends that ask before running
    the UDF."""
    return output_metadata("predict", metadata, context)


def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
    return predict_cube(cube, context)
