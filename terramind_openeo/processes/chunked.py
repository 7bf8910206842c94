"""Run a function on labelled spatial chunks of a dask cube, each with a halo, and crop the halo after.

``map_chunks`` is the engine under ``apply_neighborhood`` and the ``terramind_*`` processes: the cube is
cut into core chunks (per date when asked), each chunk is handed to the function as a labelled
``xarray.DataArray`` (``t, bands, y, x``, coordinates, CRS, attrs) extended by the halo, once per chunk,
and the function's result is cropped back to the core by grid index. Output shape and band labels must be
known up front (``out_bands``, ``scale``), so the result stays a lazy dask cube.
"""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from math import gcd
from typing import Any

import dask
import dask.array as da
import numpy as np
import rioxarray  # noqa: F401 - registers the .rio accessor (also in dask workers)
import xarray as xr
from dask.highlevelgraph import HighLevelGraph

from terramind_openeo.crs import with_crs
from terramind_openeo.inference.tiling import anchor_index as _anchor
from terramind_openeo.inference.tiling import cell_centres, cell_index, regular_step

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkPlan:
    """How a cube is cut: core boundaries (cube indices) and halo per side, in pixels."""

    row_bounds: tuple[int, ...]
    col_bounds: tuple[int, ...]
    halo_before: int
    halo_after: int
    scale: int = 1  # input pixels per output cell (16: patch-resolution embeddings)
    row0: int = 0  # anchor index of the cube's first row / column (CRS-anchored grids)
    col0: int = 0


@dataclass(frozen=True)
class AxisGrid:
    """One axis of the input pixel grid: the first pixel's centre, the signed step and its grid index."""

    first: float
    step: float
    index0: int


def axis_grid(coords: np.ndarray, anchored: bool = True) -> AxisGrid:
    """The pixel grid of a coordinate, anchored at the CRS origin as ``inference`` anchors its tiles."""
    coords = np.asarray(coords)
    step = regular_step(coords)
    if step is None:
        step = float(coords[1] - coords[0]) if coords.size > 1 and np.issubdtype(coords.dtype, np.number) else 1.0
    first = float(coords[0]) if coords.size and np.issubdtype(coords.dtype, np.number) else 0.0
    return AxisGrid(first, step, _anchor(first, step) if anchored and step else 0)


def anchor_index(coords: np.ndarray) -> int:
    """Index of the first pixel from the CRS origin (``inference.tiling.anchor_index``)."""
    return axis_grid(coords).index0


def aligned_bounds(start: int, length: int, step: int) -> tuple[int, ...]:
    """Cut ``[0, length)`` where the anchor index ``start + i`` is a multiple of ``step``."""
    first = -(-start // step) * step - start  # first aligned cube index >= 0
    cuts = list(range(first, length, step))
    return tuple(sorted({0, *[c for c in cuts if 0 < c < length], length}))


def plan_for(cube: xr.DataArray, core: int, align: int, halo_before: int, halo_after: int, scale: int = 1,
             anchored: bool = True) -> ChunkPlan:
    step = max(align, (core // align) * align) if align else core
    row0 = anchor_index(cube.y.values) if anchored else 0
    col0 = anchor_index(cube.x.values) if anchored else 0
    return ChunkPlan(aligned_bounds(row0, cube.sizes["y"], step), aligned_bounds(col0, cube.sizes["x"], step),
                     halo_before, halo_after, scale, row0, col0)


def lcm(a: int, b: int) -> int:
    return a * b // gcd(a, b)


def _cells(start: int, stop: int, row0: int, scale: int) -> tuple[int, int]:
    """Output cells ``[k0, k1)`` (anchor space) owned by cube pixels ``[start, stop)``."""
    if scale == 1:
        return row0 + start, row0 + stop
    return (row0 + start) // scale, -(-(row0 + stop) // scale)


def _out_coords(coords: np.ndarray, grid: AxisGrid, k0: int, k1: int, scale: int) -> np.ndarray:
    if scale == 1:
        return coords[k0 - grid.index0:k1 - grid.index0]
    return cell_centres(grid.first, grid.step, grid.index0, np.arange(k0, k1), scale)


class ChunkInput:
    """A chunk's input pixels as a lazy dask array, read inside the chunk's own task.

    Passed to a task as it is, the input would be a dependency: dask reads its blocks as separate tasks,
    keeps all of them in the worker's memory until the chunk's function returns, and may read the blocks
    of later chunks before running earlier ones. Read here, the blocks are a temporary of one chunk at a
    time: only the assembled chunk stays while the function runs. The graph is culled to the chunk's blocks
    (a few kB to pickle, not the whole cube's graph).
    """

    def __init__(self, array: da.Array):
        keys = set(dask.core.flatten(array.__dask_keys__()))
        graph = HighLevelGraph.from_collections(array.name, dict(array.__dask_graph__().cull(keys)),
                                                dependencies=())
        self.array = da.Array(graph, array.name, array.chunks, meta=array._meta)

    def load(self) -> np.ndarray:
        return np.asarray(dask.compute(self.array, scheduler="synchronous")[0])


def _run_block(block: np.ndarray | ChunkInput, *args: Any, **kwargs: Any) -> np.ndarray:
    """One chunk (``args``: those of :func:`_chunk_values` after the block), freed when it is done.

    The chunk's arrays are checked once ``_chunk_values``' frame is gone, the last reference of ours."""
    held: list[weakref.ref] = []  # the chunk's own arrays, which must not outlive it
    if isinstance(block, ChunkInput):
        block = block.load()
        held.append(weakref.ref(block))
    try:
        return _chunk_values(block, *args, held=held, **kwargs)
    finally:
        del block
        _collect_if_held(held)


def _collect_if_held(refs: list[weakref.ref]) -> None:
    """A full garbage collection when a chunk's arrays outlive the chunk.

    Whatever still holds them then is normally a reference cycle through an accessor that xarray cached on
    a DataArray (``cube.rio`` in a chunk function: see ``terramind_openeo/crs.py``). Only Python's cyclic
    collector frees those, and in a worker its full collections are rare, so chunk after chunk would stay
    in memory. A full collection takes about 0.2 s with torch loaded, so it runs only when needed.
    """
    if any(ref() is not None for ref in refs):
        logger.debug("a chunk's arrays outlived it (a reference cycle): full garbage collection")
        gc.collect()


def _chunk_values(block: np.ndarray, fn: Callable, t_coords, band_coords, y_coords, x_coords, attrs: dict,
                  crs: Any, has_t: bool, crop: tuple[int, int, int, int], scale: int, out_dtype: str,
                  out_bands: list[str] | None, grids: tuple[AxisGrid, AxisGrid], *, held: list[weakref.ref],
                  reduces_t: bool = False) -> np.ndarray:
    """Labelled cube in, cropped numpy ``[t, bands, y, x]`` out; the arrays to check go into ``held``.
    ``reduces_t``: the function turns all dates of the chunk into one result without ``t``."""
    cube = xr.DataArray(block, dims=("t", "bands", "y", "x"),
                        coords={"t": t_coords, "bands": band_coords, "y": y_coords, "x": x_coords}, attrs=dict(attrs))
    if crs is not None:
        with_crs(cube, crs)  # no copy of the chunk, no reference cycle through .rio (terramind_openeo/crs.py)
    if not has_t:
        cube = cube.isel(t=0, drop=True)
    out = fn(cube)
    if not isinstance(out, xr.DataArray):
        raise TypeError(f"the chunk function returned {type(out).__name__}, not an xarray.DataArray")
    if isinstance(out.data, np.ndarray):
        held.append(weakref.ref(out.data))
    if reduces_t and "t" in out.dims:
        raise ValueError(f"the chunk function returned dimension 't' ({out.sizes['t']} dates), expected one result "
                         "for all dates")
    if not reduces_t and has_t and len(t_coords) > 1 and "t" not in out.dims:
        raise ValueError(f"the chunk function returned no dimension 't' for a chunk of {len(t_coords)} dates "
                         "(the cube's dimensions must stay)")
    if "t" not in out.dims:
        out = out.expand_dims(t=t_coords[:1] if has_t else [0])
    if "bands" not in out.dims:
        out = out.expand_dims(bands=[out.name or "band_1"])
    out = out.transpose("t", "bands", "y", "x")
    if out_bands is not None and list(map(str, out.bands.values)) != list(out_bands):
        if out.sizes["bands"] == len(out_bands):
            pass  # positional match; labels come from the declared ones
        else:
            raise ValueError(f"the chunk function returned bands {list(out.bands.values)}, expected {out_bands}")
    k_rows = cell_index(out.y.values, grids[0].first, grids[0].step, grids[0].index0, scale)
    k_cols = cell_index(out.x.values, grids[1].first, grids[1].step, grids[1].index0, scale)
    r_sel = (k_rows >= crop[0]) & (k_rows < crop[1])
    c_sel = (k_cols >= crop[2]) & (k_cols < crop[3])
    values = np.asarray(out.values)[:, :, r_sel][:, :, :, c_sel]
    want = (crop[1] - crop[0], crop[3] - crop[2])
    if values.shape[2:] != want:
        raise ValueError(f"chunk result covers {values.shape[2:]} cells of the core, expected {want}")
    return values.astype(out_dtype, copy=False)


def map_chunks(cube: xr.DataArray, fn: Callable[[xr.DataArray], xr.DataArray], plan: ChunkPlan,
               out_bands: list[str], out_dtype: str, per_date: bool = True, name: str = "chunk",
               reduces_t: bool = False) -> xr.DataArray:
    """Lazy cube of ``fn`` applied chunk by chunk; labels ``out_bands``; grid scaled by ``plan.scale``.

    ``per_date``: ``fn`` gets one date at a time, else all dates of the chunk at once. ``reduces_t`` (with all
    dates at once): ``fn`` returns one result without ``t`` (a fine-tuned model that reads every date), which
    the lazy cube holds as its only date, labelled with the first."""
    has_t = "t" in cube.dims
    if not has_t:
        cube = cube.expand_dims("t")
    cube = cube.transpose("t", "bands", "y", "x")
    lazy = isinstance(cube.data, da.Array)  # lazy inputs are read inside each chunk's task (ChunkInput)
    data = cube.data if lazy else da.from_array(cube.data, chunks=(1, -1, 512, 512))
    t_vals = cube.t.values if "t" in cube.coords else np.array([0])
    ys, xs, bands = cube.y.values, cube.x.values, cube.bands.values
    attrs = {k: v for k, v in cube.attrs.items() if np.isscalar(v) or v is None}
    crs = cube.rio.crs
    H, W = cube.sizes["y"], cube.sizes["x"]
    # crops are in grid-index space: the CRS-anchored pixel (or cell) index of the coordinates, from the
    # input pixel grid (an output with one cell along an axis has no step of its own)
    gy, gx = axis_grid(ys), axis_grid(xs)
    if plan.scale > 1:
        gy, gx = AxisGrid(gy.first, gy.step, plan.row0), AxisGrid(gx.first, gx.step, plan.col0)
    row0, col0 = gy.index0, gx.index0
    if reduces_t and per_date:
        raise ValueError("map_chunks: reduces_t needs per_date=False")
    t_groups = [[i] for i in range(cube.sizes["t"])] if per_date else [list(range(cube.sizes["t"]))]
    token = dask.base.tokenize(data, plan, out_bands, out_dtype, name, reduces_t, getattr(fn, "token", id(fn)))
    rows = []
    for tg in t_groups:
        row_blocks = []
        for r in range(len(plan.row_bounds) - 1):
            a, b = plan.row_bounds[r], plan.row_bounds[r + 1]
            ra, rb = max(a - plan.halo_before, 0), min(b + plan.halo_after, H)
            kr = _cells(a, b, row0, plan.scale)
            col_blocks = []
            for c in range(len(plan.col_bounds) - 1):
                a2, b2 = plan.col_bounds[c], plan.col_bounds[c + 1]
                ca, cb = max(a2 - plan.halo_before, 0), min(b2 + plan.halo_after, W)
                kc = _cells(a2, b2, col0, plan.scale)
                piece = data[tg[0]:tg[-1] + 1, :, ra:rb, ca:cb]
                if lazy:
                    piece = ChunkInput(piece)
                task = dask.delayed(_run_block, pure=True)(
                    piece, fn, t_vals[tg[0]:tg[-1] + 1], bands, ys[ra:rb], xs[ca:cb], attrs, crs, has_t,
                    (kr[0], kr[1], kc[0], kc[1]), plan.scale, out_dtype, out_bands, (gy, gx),
                    reduces_t=reduces_t, dask_key_name=f"{name}-{token}-{tg[0]}-{r}-{c}")
                shape = (1 if reduces_t else len(tg), len(out_bands), kr[1] - kr[0], kc[1] - kc[0])
                col_blocks.append(da.from_delayed(task, shape=shape, dtype=out_dtype))
            row_blocks.append(col_blocks)
        rows.append(row_blocks)
    arr = da.block([[[list(rb) for rb in tb]] for tb in rows])  # [t][bands][y][x]
    k_r0, k_r1 = _cells(0, H, row0, plan.scale)
    k_c0, k_c1 = _cells(0, W, col0, plan.scale)
    out = xr.DataArray(arr, dims=("t", "bands", "y", "x"), coords={
        "t": (t_vals[:1] if reduces_t else t_vals) if "t" in cube.coords else [0], "bands": list(out_bands),
        "y": _out_coords(ys, gy, k_r0, k_r1, plan.scale),
        "x": _out_coords(xs, gx, k_c0, k_c1, plan.scale)}, attrs=dict(attrs))
    if "t" not in cube.coords:
        out = out.drop_vars("t")
    if not has_t:
        out = out.isel(t=0, drop=True)
    if crs is not None:
        out = out.rio.write_crs(crs)
    return out
