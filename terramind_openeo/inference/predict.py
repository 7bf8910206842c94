"""``predict_cube``: a labelled cube through a fine-tuned TerraMind model (terratorch checkpoint), tile by tile.

The same machinery as ``embed_cube`` / ``generate_cube``: context checked first, the cube's bands mapped to the
model's inputs (the modalities and band order its config names), values checked, the model loaded once per
process (cached), tiles streamed in batches, overlaps blended with the raised-cosine weights of
:mod:`~terramind_openeo.inference.tiling`, nodata carried through. Inputs are standardised with the config's
data means/stds (``standardization='config'``) or TerraMind's pre-training statistics.

Outputs:

* segmentation / classification: band ``class``, uint8 class ids, 255 where the input has no data; with
  ``probabilities`` a float32 cube of ``class`` (NaN where no data) and ``P_<class name>`` per class. Logits
  (``blend='logits'``, as terratorch's ``tiled_inference``) or softmax probabilities are blended, then the
  arg-max is taken. A classification model's one vector per tile is spread over the tile before blending.
* regression: float32 ``prediction`` (``prediction_<i>`` for several outputs), NaN where no data.

The class names (config ``class_names``, else ``class_<i>``) travel as the cube's class scheme
(:mod:`terramind_openeo.classes`) into COGs, STAC and quicklooks.

A model with a Thinking-in-Modalities backbone that samples its TiM tokens (``backbone_tim_temps`` > 0) runs one
tile per call with a seed derived from ``seed`` and the tile's grid position, as TiM embeddings do (``seed``
null: a fresh seed per call, not reproducible); with ``backbone_tim_temps: 0`` tiles are batched as usual.

A model with terratorch's temporal wrapper reads all dates of the cube at once (as many as its
``backbone_temporal_n_timestamps``) and gives one map without ``t``; a pixel is nodata where every date is.
Any other model maps every date on its own.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
import xarray as xr

from terramind_openeo.classes import CLASS_NODATA, ClassScheme, attach, slug
from terramind_openeo.model.precision import storage_dtype

from .bands import S2_MODALITIES, layout_for
from .cache import ModelCache, ModelKey
from .context import InferenceOptions, validate_context
from .cube import build_output, check_dims, geometry, prepare_inputs, tile_grid
from .device import resolve_device, resolve_precision
from .errors import ContextError, DimensionError, InferenceError, MissingBandError, ModelOutputError
from .runner import RunStats, _per_tile, _Plan, _run, _share_token
from .tiling import OutputGrid, Stitcher, Tile
from .weights_download import resolve_weights

_log = logging.getLogger(__name__)

CLASS_BAND = "class"


class TaskModelInputError(InferenceError):
    """A fine-tuned model's config or checkpoint that does not fit the cube or cannot be loaded."""


# ------------------------------------------------------------------------------------------ the model
def _task_config(opts: InferenceOptions):
    """The fine-tuned model's config (cheap: no weights read when it is named)."""
    from terramind_openeo.model.task import TaskModelError
    from terramind_openeo.model.task.loading import as_task_config, resolve_sources

    try:
        if isinstance(opts.config, dict):  # the config itself, inline (a UDF's context)
            return as_task_config(opts.config)
        if opts.config is not None:
            return as_task_config(resolve_weights(opts.config))
        _, config = resolve_sources(resolve_weights(cast(str, opts.checkpoint)), None)
        return as_task_config(config)
    except TaskModelError as exc:
        raise TaskModelInputError(f"config of {opts.checkpoint!r}: {exc}") from None


def _load(key: ModelKey):
    from terramind_openeo.model.errors import TerraMindError
    from terramind_openeo.model.task import load_task_model

    checkpoint, config, seed = json.loads(key.name)
    dtype = key.dtype  # a precision name (model/precision.py)
    if isinstance(config, str):
        config = resolve_weights(config)
    try:
        if checkpoint == "random":
            return load_task_model(None, config, weights="random", seed=seed, device=key.device, dtype=dtype)
        return load_task_model(resolve_weights(checkpoint), config, device=key.device, dtype=dtype)
    except TerraMindError as exc:
        raise TaskModelInputError(f"checkpoint {checkpoint!r}: {exc}") from None


TASK_MODEL_CACHE = ModelCache(loader=_load)
"""Loaded fine-tuned models of this process (bounded like the backbone cache)."""


class _Standardizer:
    """The model's inputs standardised as its config says: ``standardize(modality, x, s2_offset)`` for
    ``adapters.batch_inputs``; ``x`` is ``[B, C, H, W]`` or ``[B, C, T, H, W]``."""

    def __init__(self, means: dict, stds: dict):
        self.means, self.stds = means, stds

    def standardize(self, modality: str, x: torch.Tensor, s2_offset: float = 0) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        mean = torch.tensor(self.means[modality], dtype=torch.float32, device=x.device).view(shape)
        std = torch.tensor(self.stds[modality], dtype=torch.float32, device=x.device).view(shape)
        if modality in S2_MODALITIES and s2_offset:
            x = x - s2_offset
        return (x - mean) / std


def _statistics(config, opts: InferenceOptions) -> tuple[dict, dict]:
    """Means and stds per input modality, in each modality's input band order."""
    if opts.standardization == "pretraining":
        from terramind_openeo.model.config import RAW_MODALITIES
        from terramind_openeo.model.standardization import MEAN, STD

        means, stds = {}, {}
        for modality, bands in config.input_bands.items():
            order = RAW_MODALITIES[modality].bands
            means[modality] = tuple(MEAN[modality][order.index(b)] for b in bands)
            stds[modality] = tuple(STD[modality][order.index(b)] for b in bands)
        return means, stds
    missing = [m for m in config.modalities if m not in config.means]
    if missing:
        raise ContextError("standardization", f"the config ({config.source}) gives no data means/stds for "
                           f"{', '.join(missing)}; set standardization='pretraining' to use TerraMind's "
                           "pre-training statistics, or add means/stds to the config")
    return dict(config.means), dict(config.stds)


# ------------------------------------------------------------------------------------------ outputs
def class_titles(config) -> list[str]:
    """The config's class names, else ``class_0``..``class_{n-1}``."""
    n = config.num_classes or 0
    return list(config.class_names) if config.class_names else [f"class_{i}" for i in range(n)]


def predicted_bands(config, probabilities: bool) -> list[str]:
    """Band labels of ``predict_cube``'s result for a model ``config``."""
    if config.task in ("regression", "scalar_regression"):
        n = config.model_args.get("num_outputs") or 1
        return ["prediction"] if n == 1 else [f"prediction_{i}" for i in range(n)]
    bands = [CLASS_BAND]
    if probabilities:
        bands += [f"P_{slug(t)}" for t in class_titles(config)]
    return bands


def class_scheme(config, probabilities: bool) -> ClassScheme | None:
    if config.task in ("regression", "scalar_regression"):
        return None
    return ClassScheme.from_names(CLASS_BAND, class_titles(config), nodata=None if probabilities else CLASS_NODATA)


def _layouts(labels: list, config) -> list:
    """Where the model's input bands sit on the cube's ``bands`` axis; every missing band named at once."""
    owner = f"the fine-tuned model ({config.source})"
    layouts, missing = [], []
    for modality, bands in config.input_bands.items():
        try:
            layouts.append(layout_for(labels, modality, bands, owner))
        except MissingBandError as exc:
            missing += [f"{b} ({modality})" for b in exc.bands]
    if missing:
        raise MissingBandError(missing, f"needed by {owner} but missing from the cube (bands "
                               f"{[str(b) for b in labels]})")
    return layouts


def _check_dates(cube: xr.DataArray, config) -> None:
    if config.temporal and config.timesteps is not None and cube.sizes.get("t", 1) != config.timesteps:
        raise DimensionError("t", f"has {cube.sizes.get('t', 1)} dates; the fine-tuned model ({config.source}) "
                             f"reads {config.timesteps} at once")


def check_predict_cube(cube: xr.DataArray, opts: InferenceOptions) -> None:
    """What can be checked on a lazy cube before any work: the config, the bands it needs, the dates."""
    config = _task_config(opts)
    _layouts(list(cube["bands"].values), config)
    _check_dates(cube, config)
    if opts.standardization == "config":
        _statistics(config, opts)


def predict_plan(cube: xr.DataArray, context: dict | None, allow_empty: bool = False,
                 grid_origin: tuple[float, float] | None = None):
    """``(options, task config, plan, valid)``: everything checked before the model is touched."""
    opts = validate_context("predict", context)
    check_dims(cube)
    config = _task_config(opts)
    if config.task in ("segmentation", "classification") and not config.num_classes:
        raise TaskModelInputError(f"config {config.source}: model_args.num_classes is missing")
    layouts = _layouts(list(cube["bands"].values), config)
    _check_dates(cube, config)
    temporal = config.temporal
    geo = geometry(cube, opts.tile_anchor, grid_origin)
    grid = tile_grid(geo, opts.tile_size, opts.overlap)
    inputs = prepare_inputs(cube, layouts, nodata=opts.nodata, s1_linear=opts.s1_linear, allow_empty=allow_empty)
    valid = inputs.valid.any(axis=0, keepdims=True) if temporal else inputs.valid
    tiles = grid.tiles(valid.shape[0], cast(np.ndarray, valid))
    every = valid.shape[0] * len(grid.row_origins) * len(grid.col_origins)
    _log.info("predict: %d tiles of %d px over %d map(s) of %dx%d px (%d all-nodata tiles skipped)", len(tiles),
              opts.tile_size, valid.shape[0], geo.height, geo.width, every - len(tiles))
    return opts, config, _Plan(opts, geo, grid, inputs, tiles, every - len(tiles)), valid


@dataclass
class _Gather:
    """Raw model tiles of a batch: per date, or all dates stacked (``[B, C, T, h, w]``) for a temporal model."""

    plan: _Plan
    temporal: bool

    def __call__(self, batch: list[Tile]) -> dict[str, np.ndarray]:
        p = self.plan
        if not self.temporal:
            return {lay.modality: np.stack([p.inputs.tile(p.grid, lay, t.date, t.row, t.col) for t in batch])
                    for lay in p.inputs.layouts}
        dates = p.inputs.source.shape[0]
        return {lay.modality: np.stack([np.stack([p.inputs.tile(p.grid, lay, d, t.row, t.col) for d in range(dates)],
                                                 axis=1) for t in batch])
                for lay in p.inputs.layouts}


def predict_cube(cube: xr.DataArray, context: dict | None = None, *, model: Any = None,
                 stats: RunStats | None = None, allow_empty: bool = False,
                 share_tiles: bool | Sequence[bool] = False,
                 grid_origin: tuple[float, float] | None = None) -> xr.DataArray:
    """The fine-tuned model of ``context['checkpoint']`` over ``cube`` (see the module docstring).

    ``model`` overrides the cached one (tests, benchmarks). A cube without any valid pixel is an error unless
    ``allow_empty`` (a chunk of a larger cube: nodata output, the model untouched). ``share_tiles``: as in
    :func:`~terramind_openeo.inference.embed_cube`, and so is ``grid_origin``.
    """
    start = time.perf_counter()
    stats = stats if stats is not None else RunStats()
    opts, config, plan, valid = predict_plan(cube, context, allow_empty, grid_origin)
    bands = predicted_bands(config, opts.probabilities)
    scheme = class_scheme(config, opts.probabilities)
    out = OutputGrid.for_cube(plan.grid, 1)
    geo = plan.geo if not config.temporal else _without_time(plan.geo)
    source = cube if not config.temporal else cube.isel(t=0, drop=True) if "t" in cube.dims else cube
    if not plan.tiles:
        stats.skipped_tiles += plan.skipped
        if bands == [CLASS_BAND]:
            empty = np.full((valid.shape[0], 1, out.height, out.width), CLASS_NODATA, np.uint8)
            return attach(build_output(source, geo, empty, bands, out, nodata=CLASS_NODATA), cast(ClassScheme, scheme))
        empty = np.full((valid.shape[0], len(bands), out.height, out.width), np.nan, np.float32)
        result = build_output(source, geo, empty, bands, out)
        return attach(result, scheme) if scheme else result
    device = resolve_device(opts.device)
    precision = resolve_precision(opts.dtype, device)
    dtype = storage_dtype(precision)
    given = model
    if model is None:
        seed = opts.seed if opts.seed is not None else 0
        name = json.dumps([opts.checkpoint, opts.config, seed], sort_keys=True)
        model = TASK_MODEL_CACHE.get(name, "task", device, precision)
    means, stds = _statistics(config, opts)
    runner = _Standardizer(means, stds)
    classes = config.task in ("segmentation", "classification")
    width = config.num_classes if classes else len(bands)
    stitcher = Stitcher(valid.shape[0], width, out, plan.grid)
    size = opts.tile_size

    sampled = bool(getattr(model, "samples", False))  # a TiM backbone that samples its tokens

    def compute(_runner: object, inputs: dict[str, torch.Tensor], batch: list[Tile]) -> np.ndarray:
        if sampled and opts.seed is not None:  # a seed per tile: results independent of batching and extent
            return _per_tile(compute_one, _runner, inputs, batch, opts.seed)
        return compute_one(_runner, inputs, None)

    def compute_one(_runner: object, inputs: dict[str, torch.Tensor], seed: int | None) -> np.ndarray:
        with torch.inference_mode():
            value = (model(inputs) if seed is None else model(inputs, seed=seed)).float()
        if value.dim() == 2:  # one vector per tile (classification): the same over the tile
            value = value[:, :, None, None].expand(-1, -1, size, size)
        elif value.dim() == 3:  # one regression output, squeezed as terratorch squeezes it
            value = value[:, None]
        if value.shape[1] != width or tuple(value.shape[-2:]) != (size, size):
            raise ModelOutputError(f"fine-tuned model returned {tuple(value.shape)}, expected "
                                   f"[B, {width}, {size}, {size}] ({config.source})")
        if classes and opts.blend == "probabilities":
            value = value.softmax(dim=1)
        return value.cpu().numpy()

    # a temporal model's tile depends on every date; the shared-tile key digests one date only: no sharing
    share = None if config.temporal else _share_token("predict", opts, given, device, dtype,
                                                      not sampled or opts.seed is not None, share_tiles)
    _run(plan, runner, device, dtype, opts.batch_size, compute, stitcher.add, stats, share,
         gather=_Gather(plan, config.temporal))
    invalid = ~valid
    if classes and not opts.probabilities:
        data = stitcher.argmax(invalid, CLASS_NODATA)[:, None]
        result = attach(build_output(source, geo, data, bands, out, nodata=CLASS_NODATA), cast(ClassScheme, scheme))
    else:
        blended = stitcher.result()
        if classes:
            if opts.blend == "logits":
                probs = torch.from_numpy(blended).softmax(dim=1).numpy()
            else:
                probs = blended / np.maximum(blended.sum(axis=1, keepdims=True), 1e-12)
            ids = np.nan_to_num(blended, nan=-np.inf).argmax(axis=1)[:, None].astype(np.float32)
            blended = np.concatenate([ids, probs.astype(np.float32)], axis=1)
        blended[np.broadcast_to(invalid[:, None], blended.shape)] = np.nan
        result = build_output(source, geo, blended.astype(np.float32, copy=False), bands, out)
        if scheme is not None:
            attach(result, scheme)
    stats.total_seconds += time.perf_counter() - start
    return result


def _without_time(geo):
    from dataclasses import replace

    return replace(geo, dates=1, has_time=False)
