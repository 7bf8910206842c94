"""``embed_cube`` and ``generate_cube``: a labelled cube through TerraMind, tile batch by tile batch.

Order of work: validate the context, the dims, the band labels and the values (every error raised here
names its culprit), then load the model (cached), then stream tiles through it in batches and blend them
into the output. Memory beyond the input and output cubes is bounded by one batch of tiles.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import cast

import numpy as np
import torch
import xarray as xr

from terramind_openeo.classes import LULC_SCHEME, attach
from terramind_openeo.kernels import prepack
from terramind_openeo.model.precision import storage_dtype

from . import adapters, quantize
from .bands import CLASS_NODATA, LULC_CLASSES, MODALITY_BANDS, map_bands
from .cache import MODEL_CACHE
from .context import DIFFUSION_TARGETS, InferenceOptions, validate_context
from .cube import (
    CubeGeometry,
    ModelInputs,
    build_output,
    check_dims,
    geometry,
    patch_valid,
    prepare_inputs,
    tile_grid,
)
from .device import resolve_device, resolve_precision
from .errors import ModelOutputError
from .geo import per_tile_planes, tile_centres
from .tile_cache import TILE_CACHE
from .tiling import OutputGrid, Stitcher, Tile, TileGrid

_log = logging.getLogger(__name__)


@dataclass
class RunStats:
    """Where the time of one call went (filled in when passed as ``stats=``)."""

    tiles: int = 0
    skipped_tiles: int = 0
    cached_tiles: int = 0
    """Tiles taken from the shared tile cache (``share_tiles``) instead of the model."""
    batches: int = 0
    model_seconds: float = 0.0
    """Inside the model's ``encode``/``generate`` (the irreducible cost)."""
    total_seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def overhead(self) -> float:
        """Share of the model time spent on everything else (tiling, standardisation, stitching)."""
        return (self.total_seconds - self.model_seconds) / self.model_seconds if self.model_seconds else 0.0


@dataclass(frozen=True)
class _Plan:
    """Everything checked and prepared before the model is touched."""

    opts: InferenceOptions
    geo: CubeGeometry
    grid: TileGrid
    inputs: ModelInputs
    tiles: list[Tile]
    skipped: int
    centres: dict[tuple[int, int], tuple[float, float]] | None = None
    """WGS84 ``(lon, lat)`` per tile grid position when the context asks for ``coords``."""


def _plan(kind: str, cube: xr.DataArray, context: dict | None, allow_empty: bool = False,
          grid_origin: tuple[float, float] | None = None) -> _Plan:
    opts = validate_context(kind, context)
    check_dims(cube)
    layouts = map_bands(list(cube["bands"].values), list(opts.modalities) if opts.modalities else None,
                        missing_bands=opts.missing_bands)
    geo = geometry(cube, opts.tile_anchor, grid_origin)
    grid = tile_grid(geo, opts.tile_size, opts.overlap)
    inputs = prepare_inputs(cube, layouts, nodata=opts.nodata, s1_linear=opts.s1_linear, allow_empty=allow_empty)
    tiles = grid.tiles(geo.dates, inputs.valid)
    centres = tile_centres(cube, grid, tiles) if opts.coords else None
    every = geo.dates * len(grid.row_origins) * len(grid.col_origins)
    _log.info("%s: %d tiles of %d px over %d date(s) of %dx%d px (%d all-nodata tiles skipped)", kind,
              len(tiles), opts.tile_size, geo.dates, geo.height, geo.width, every - len(tiles))
    return _Plan(opts, geo, grid, inputs, tiles, every - len(tiles), centres)


def _model(opts: InferenceOptions, model: object | None) -> tuple[object, torch.device, torch.dtype]:
    """``(model, device, dtype of its inputs)``; a precision the device cannot run fast is refused here."""
    device = resolve_device(opts.device)
    precision = resolve_precision(opts.dtype, device)
    if model is None:
        model = MODEL_CACHE.get(opts.model, opts.weights, device, precision)
    return model, device, storage_dtype(precision)


def _batches(tiles: list[Tile], size: int) -> Iterator[list[Tile]]:
    for start in range(0, len(tiles), size):
        yield tiles[start : start + size]


def _shared_tile_key(plan: _Plan, tile: Tile, share: tuple) -> tuple[tuple, bool] | None:
    """``(cache key, keep)`` of a tile a neighbouring chunk also computes: on the first/last row or column of
    the chunk's tiles on a side that has a neighbour, and entirely inside the chunk (no reflected pixels);
    None for every other tile. ``keep``: on two such sides (a corner: up to three neighbours need it)."""
    token, (top, bottom, left, right), _ = share
    grid = plan.grid
    rows, cols = grid.row_origins, grid.col_origins
    sides = sum((top and tile.row == rows[0], bottom and tile.row == rows[-1],
                 left and tile.col == cols[0], right and tile.col == cols[-1]))
    if not sides:
        return None
    r0, c0 = tile.row - grid.row0, tile.col - grid.col0
    if r0 < 0 or c0 < 0 or r0 + grid.tile_size > grid.height or c0 + grid.tile_size > grid.width:
        return None
    pixels = np.ascontiguousarray(plan.inputs.source[tile.date, :, r0 : r0 + grid.tile_size,
                                                     c0 : c0 + grid.tile_size])
    digest = hashlib.blake2b(pixels.view(np.uint8).data, digest_size=16).hexdigest()
    return (token, tile.row, tile.col, str(pixels.dtype), pixels.shape, digest), sides > 1


def _run(plan: _Plan, model: object, device: torch.device, dtype: torch.dtype, batch_size: int,
         compute: Callable[[object, dict[str, torch.Tensor], list[Tile]], np.ndarray],
         add: Callable[[Tile, np.ndarray], None], stats: RunStats, share: tuple | None = None,
         gather: Callable[[list[Tile]], dict[str, np.ndarray]] | None = None) -> None:
    """Stream tiles through ``compute`` (returns ``[B, channels, cells, cells]``) into ``add``.

    ``share``: a token of everything besides the input pixels that the model output depends on; border
    tiles are then taken from / kept in ``TILE_CACHE`` (see :class:`TileCache`). ``gather``: the raw tiles
    ``{modality: [B, ...]}`` of a batch (default: one date per tile, ``[B, C, tile, tile]``)."""
    keys: dict[Tile, tuple] = {}
    across = share is not None and share[2]  # the key means the same in every process
    todo = []
    for tile in plan.tiles:
        shared = _shared_tile_key(plan, tile, share) if share is not None else None
        if shared is not None:
            key, keep = shared
            value = TILE_CACHE.take(key, keep=keep, shared=across)
            if value is not None:
                add(tile, value)
                stats.cached_tiles += 1
                continue
            keys[tile] = key
        todo.append(tile)
    if len(todo) < len(plan.tiles):
        _log.info("%d of %d tiles from the shared tile cache", len(plan.tiles) - len(todo), len(plan.tiles))
    # No packed linear weights here (kernels/prepack.py): the last batch of each chunk has another row count,
    # each packs every weight anew: over a map, more than a GB more memory for no speed (docs/measurements.md).
    with prepack.linear_packing(False):
        for batch in _batches(todo, batch_size):
            raw = gather(batch) if gather is not None else {
                layout.modality: np.stack([plan.inputs.tile(plan.grid, layout, t.date, t.row, t.col) for t in batch])
                for layout in plan.inputs.layouts}
            if plan.centres is not None:  # the tiles' locations, TerraMind's coords modality
                raw["coords"] = np.array([plan.centres[(t.row, t.col)] for t in batch], dtype=np.float64)
            inputs = adapters.batch_inputs(model, raw, device=device, dtype=dtype, s2_offset=plan.opts.s2_offset)
            start = time.perf_counter()
            values = compute(model, inputs, batch)
            stats.model_seconds += time.perf_counter() - start
            for tile, value in zip(batch, values):
                add(tile, value)
                if tile in keys:
                    TILE_CACHE.put(keys[tile], value, shared=across)
            stats.batches += 1
    stats.tiles += len(plan.tiles)
    stats.skipped_tiles += plan.skipped


def _per_tile(compute_one: Callable[[object, dict[str, torch.Tensor], int | None], np.ndarray], model: object,
              inputs: dict[str, torch.Tensor], batch: list[Tile], seed: int) -> np.ndarray:
    """One model call per tile with a seed derived from the tile's grid position, so sampled results do
    not depend on batching or on the cube's extent (``model.generate`` takes one seed per call)."""
    return np.concatenate([
        compute_one(model, {m: x[i : i + 1] for m, x in inputs.items()}, adapters.tile_seed(seed, tile))
        for i, tile in enumerate(batch)
    ])


def _share_token(kind: str, opts: InferenceOptions, model: object | None, device: torch.device,
                 dtype: torch.dtype, deterministic: bool, share_tiles: bool | Sequence[bool]) -> tuple | None:
    """``(what besides its pixels a tile's output depends on, the chunk's sides that have a neighbour,
    whether that holds in every process)``; None: no sharing (off, or sampled without seed).

    ``model``: the one the caller passed, or None for the cached model of ``opts.model``/``opts.weights``,
    which every worker process loads the same: only then may tiles go to other processes."""
    if share_tiles is None or share_tiles is False or not deterministic:
        return None
    sides = (True,) * 4 if share_tiles is True else tuple(bool(v) for v in share_tiles)
    if len(sides) != 4:
        raise ValueError(f"share_tiles: True, False or (top, bottom, left, right), got {share_tiles!r}")
    which = ("cached", opts.model, opts.weights) if model is None else ("object", id(model))
    return (kind, repr(opts), which, str(device), str(dtype)), sides, model is None


def embed_cube(cube: xr.DataArray, context: dict | None = None, *, model: object | None = None,
               stats: RunStats | None = None, allow_empty: bool = False,
               share_tiles: bool | Sequence[bool] = False,
               grid_origin: tuple[float, float] | None = None) -> xr.DataArray:
    """TerraMind encoder features of every date of ``cube``: bands ``emb_000..``, NaN where no data.

    ``resolution='patch'`` gives one value per 16 px patch of the tile grid (coordinates at patch centres);
    ``'pixel'`` upsamples each tile's patch grid bilinearly before blending. ``model`` overrides the cached
    model (tests, benchmarks). Dates without data give NaN; a cube without any data is an error unless
    ``allow_empty`` (a chunk of a larger cube), which gives an all-NaN result without touching the model.
    ``share_tiles`` (chunks of one larger cube, in any order): border tiles go through ``TILE_CACHE``, so
    a tile that two neighbouring chunks both need runs through the model once per process. ``True``: every
    side of the chunk may have a neighbour; ``(top, bottom, left, right)`` (array order): which sides do
    (tiles on the cube's outer edge then stay out of the cache, where no chunk would ever take them).
    ``grid_origin``: with ``tile_anchor='cube'``, the first pixel centre ``(y, x)`` of the whole cube this one
    is a chunk of (see :func:`~terramind_openeo.inference.cube.geometry`).
    """
    start = time.perf_counter()
    stats = stats if stats is not None else RunStats()
    plan = _plan("embed", cube, context, allow_empty, grid_origin)
    opts = plan.opts
    scale = adapters.PATCH if opts.resolution == "patch" else 1
    out = OutputGrid.for_cube(plan.grid, scale)
    if not plan.tiles:
        from .metadata import output_bands

        stats.skipped_tiles += plan.skipped
        bands = output_bands("embed", context, [str(b) for b in cube["bands"].values])
        if opts.quantize:
            empty = np.full((plan.geo.dates, len(bands), out.height, out.width), quantize.NODATA, dtype=np.int8)
            return build_output(cube, plan.geo, empty, bands, out, nodata=quantize.NODATA)
        empty = np.full((plan.geo.dates, len(bands), out.height, out.width), np.nan, dtype=np.float32)
        return build_output(cube, plan.geo, empty, bands, out)
    given = model  # None: the cached model (see _share_token)
    model, device, dtype = _model(opts, model)
    stitchers: list[Stitcher] = []  # made at the first tile, when the merged width is known

    def add(tile: Tile, value: np.ndarray) -> None:
        if not stitchers:
            stitchers.append(Stitcher(plan.geo.dates, value.shape[0], out, plan.grid))
        stitchers[0].add(tile, value)

    def compute_one(model: object, inputs: dict[str, torch.Tensor], seed: int | None) -> np.ndarray:
        grid = adapters.encode_grid(model, inputs, tile_size=opts.tile_size, layer=opts.layer,
                                    merge=opts.merge, tim=opts.tim, seed=seed)  # [B, D', h, w]
        if scale == 1:
            grid = torch.nn.functional.interpolate(grid.float(), size=(opts.tile_size,) * 2, mode="bilinear",
                                                   align_corners=False)
        return grid.float().cpu().numpy()

    def compute(model: object, inputs: dict[str, torch.Tensor], batch: list[Tile]) -> np.ndarray:
        if opts.tim and opts.seed is not None:  # TiM samples tokens: a seed per tile, as in generation
            return _per_tile(compute_one, model, inputs, batch, opts.seed)
        return compute_one(model, inputs, None)

    share = _share_token("embed", opts, given, device, dtype, not opts.tim or opts.seed is not None, share_tiles)
    _run(plan, model, device, dtype, opts.batch_size, compute, add, stats, share)
    data = stitchers[0].result()
    channels = data.shape[1]
    valid = plan.inputs.valid if scale == 1 else patch_valid(plan.inputs.valid, plan.geo, out)
    data[np.broadcast_to(~valid[:, None], data.shape)] = np.nan
    bands = [f"emb_{i:03d}" for i in range(channels)]
    if opts.quantize:  # int8 codes + a per-pixel scale code (inference/quantize.py)
        codes, scales = quantize.quantize(data, axis=1)
        data = np.concatenate([codes, scales[:, None]], axis=1)
        result = build_output(cube, plan.geo, data, bands + [quantize.SCALE_BAND], out, nodata=quantize.NODATA)
    else:
        result = build_output(cube, plan.geo, data, bands, out)
    stats.total_seconds += time.perf_counter() - start
    return result


COORDS_BANDS = ("lon", "lat")
"""Bands of the ``coords`` target: WGS84 longitude, latitude in degrees."""


def _target_bands(target: str) -> tuple[str, ...]:
    return COORDS_BANDS if target == "coords" else tuple(MODALITY_BANDS[target])


def generated_bands(targets: tuple[str, ...] | list[str], probabilities: bool) -> list[str]:
    """Output band labels of a generation: the target's band names, prefixed where targets share them."""
    names = [band for target in targets for band in _target_bands(target)]
    labels = []
    for target in targets:
        for band in _target_bands(target):
            labels.append(band if names.count(band) == 1 else f"{target}_{band}")
        if target == "LULC" and probabilities:
            labels.extend(f"LULC_P{c:02d}" for c in range(LULC_CLASSES))
    return labels


def generate_cube(cube: xr.DataArray, context: dict | None = None, *, model: object | None = None,
                  stats: RunStats | None = None, allow_empty: bool = False,
                  share_tiles: bool | Sequence[bool] = False,
                  grid_origin: tuple[float, float] | None = None) -> xr.DataArray:
    """Generate ``target`` (one modality or a chain) from the cube's modalities, on the input pixel grid.

    A lone LULC target gives ``uint8`` classes with nodata 255; every other output is ``float32`` in
    physical units with NaN for nodata (LULC classes then as floats). Overlaps are blended; LULC blends
    class scores (or one-hot votes) and takes the arg-max afterwards. ``coords`` (the generated location, one
    per tile) gives bands ``lon``, ``lat``: each cell takes the value of the tile whose centre is nearest, on the
    16 px patch grid when coords is the only target, else on the pixel grid. Dates without data give nodata; a
    cube without any data is an error unless ``allow_empty`` (then all nodata, the model untouched).
    ``share_tiles``: as in :func:`embed_cube` (not for sampling without a seed: nothing to share);
    ``grid_origin`` as there.
    """
    return _generate(cube, context, model, stats, allow_empty, share_tiles, grid_origin)[0]


def _generate(cube: xr.DataArray, context: dict | None, model: object | None, stats: RunStats | None,
              allow_empty: bool, share_tiles: bool | Sequence[bool],
              grid_origin: tuple[float, float] | None = None) -> tuple[xr.DataArray, dict, _Plan]:
    """:func:`generate_cube`, plus ``{tile: generated (lon, lat)}`` (when coords is a target) and the plan."""
    start = time.perf_counter()
    stats = stats if stats is not None else RunStats()
    plan = _plan("generate", cube, context, allow_empty, grid_origin)
    opts = plan.opts
    given = model  # None: the cached model (see _share_token)
    model, device, dtype = _model(opts, model) if plan.tiles else (None, None, None)
    targets = opts.target
    images = [t for t in targets if t != "coords"]
    located: dict[Tile, np.ndarray] = {}  # the coords target: (lon, lat) per tile
    widths = [LULC_CLASSES if t == "LULC" else len(MODALITY_BANDS[t]) for t in images]
    out = OutputGrid.for_cube(plan.grid, adapters.PATCH if not images else 1)
    stitcher = Stitcher(plan.geo.dates, sum(widths), out, plan.grid) if images else None
    options = dict(timesteps=opts.timesteps, temperature=opts.temperature, top_p=opts.top_p, top_k=opts.top_k,
                   argmax=opts.argmax)

    def compute_one(model: object, inputs: dict[str, torch.Tensor], seed: int | None) -> np.ndarray:
        rasters = adapters.generate_rasters(model, inputs, targets, seed, **options)
        parts = []
        for target, width in zip(images, widths):
            value = rasters[target]
            value = adapters.lulc_scores(value) if target == "LULC" else value.float()
            if value.shape[1] != width or value.shape[-1] != opts.tile_size:
                raise ModelOutputError(f"{target}: generated shape {tuple(value.shape)}, expected "
                                       f"[B, {width}, {opts.tile_size}, {opts.tile_size}]")
            parts.append(value)
        if "coords" in rasters:  # two more channels per tile, constant over it (add() takes them off again)
            where = rasters["coords"].float()[:, :, None, None]  # [B, 2, 1, 1]
            if parts:
                where = where.to(parts[0]).expand(-1, -1, *parts[0].shape[-2:])
            parts.append(where)
        return torch.cat(parts, dim=1).cpu().numpy()

    def add(tile: Tile, value: np.ndarray) -> None:
        if "coords" in targets:
            located[tile] = value[-2:, 0, 0].copy()
            value = value[:-2]
        if stitcher is not None:
            stitcher.add(tile, value)

    # arg-max tokens decoded without diffusion (LULC, coords) draw no random numbers: whole batches are safe
    deterministic = opts.argmax and not set(targets) & set(DIFFUSION_TARGETS)

    def compute(model: object, inputs: dict[str, torch.Tensor], batch: list[Tile]) -> np.ndarray:
        if opts.seed is None or deterministic:
            return compute_one(model, inputs, opts.seed)
        return _per_tile(compute_one, model, inputs, batch, opts.seed)

    share = _share_token("generate", opts, given, device, dtype, deterministic or opts.seed is not None,
                         share_tiles)
    _run(plan, model, device, dtype, opts.batch_size, compute, add, stats, share)
    unread = sum(bool(np.isnan(v).any()) for v in located.values())
    if unread:
        _log.warning("coords: %d of %d tiles generated text that reads as no location (NaN)", unread, len(located))
        stats.extra["coords_unread_tiles"] = stats.extra.get("coords_unread_tiles", 0) + unread
    if targets == ("LULC",) and not opts.probabilities:  # classes straight from the scores: no float copies
        classes = cast(Stitcher, stitcher).argmax(~plan.inputs.valid, CLASS_NODATA)  # LULC: a stitcher exists
        result = attach(build_output(cube, plan.geo, classes[:, None], generated_bands(targets, False), out,
                                     nodata=CLASS_NODATA), LULC_SCHEME)
        stats.total_seconds += time.perf_counter() - start
        return result, located, plan
    blended = stitcher.result() if stitcher is not None else None  # [dates, channels, h, w]
    valid = plan.inputs.valid if out.scale == 1 else patch_valid(plan.inputs.valid, plan.geo, out)
    parts, offset = [], 0
    for target in targets:
        if target == "coords":
            parts.append(per_tile_planes(located, plan.geo.dates, 2, plan.grid, out))
            continue
        width = widths[images.index(target)]
        block = cast(np.ndarray, blended)[:, offset : offset + width]  # image targets: blended exists
        offset += width
        if target == "LULC":
            classes = np.nan_to_num(block, nan=-1.0).argmax(axis=1)[:, None].astype(np.float32)
            parts.append(classes)
            if opts.probabilities:
                parts.append(block / np.maximum(block.sum(axis=1, keepdims=True), 1e-12))
        else:
            parts.append(block)
    data = np.concatenate(parts, axis=1)
    data[np.broadcast_to(~valid[:, None], data.shape)] = np.nan
    bands = generated_bands(targets, opts.probabilities)
    result = build_output(cube, plan.geo, data.astype(np.float32, copy=False), bands, out)
    if "LULC" in bands:  # class ids as floats, NaN where no data
        attach(result, replace(LULC_SCHEME, nodata=None))
    stats.total_seconds += time.perf_counter() - start
    return result, located, plan
