"""``apply_neighborhood``: the child process (typically ``run_udf``) once per chunk of size + 2 x overlap.

Sizes and overlaps are given per dimension as the openEO spec and real back-ends do:
``[{"dimension": "x", "value": 128, "unit": "px"}, ...]``; ``unit`` ``m`` is converted with the cube's
resolution. ``t`` with value ``null`` (or absent) hands every date to each chunk; any other ``t`` size
processes one date per call. The child gets a labelled, numpy-backed cube with its coordinates and CRS,
called exactly once per chunk (never cached: see ``graph.py``), and the overlap is cropped from its result.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import xarray as xr

from terramind_openeo.processes import context as _ctx
from terramind_openeo.processes.chunked import ChunkPlan, aligned_bounds, map_chunks
from terramind_openeo.processes.errors import ProcessParameterInvalid
from terramind_openeo.processes.udf import (
    check_runtime,
    class_output,
    udf_chunk_fn,
    udf_code,
    udf_output_metadata,
    with_classes,
)

logger = logging.getLogger(__name__)


def _pixels(entries: Any, cube: xr.DataArray, argument: str, default: int | None) -> dict[str, int | None]:
    out: dict[str, int | None] = {"x": default, "y": default, "t": None}
    if entries is None:
        return out
    if not isinstance(entries, list):
        raise ProcessParameterInvalid("must be a list of {dimension, value, unit} objects", argument=argument)
    for e in entries:
        if not isinstance(e, dict) or "dimension" not in e:
            raise ProcessParameterInvalid(f"entry {e!r:.80} needs 'dimension' and 'value'", argument=argument)
        dim, value, unit = e["dimension"], e.get("value"), e.get("unit") or "px"
        if dim not in ("x", "y", "t", "bands"):
            raise ProcessParameterInvalid(f"dimension '{dim}' does not exist (x, y, t, bands)", argument=argument)
        if dim in ("t", "bands"):
            out[dim] = value
            continue
        if value is None:
            out[dim] = cube.sizes[dim]
            continue
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise ProcessParameterInvalid(f"{dim}: value {value!r} must be a number >= 0", argument=argument)
        if unit == "m":
            coords = cube[dim].values
            res = abs(float(coords[1] - coords[0])) if coords.size > 1 else 1.0
            value = value / res
        elif unit != "px":
            raise ProcessParameterInvalid(f"{dim}: unit '{unit}' is not 'px' or 'm'", argument=argument)
        if abs(value - round(value)) > 1e-6:
            raise ProcessParameterInvalid(f"{dim}: {e['value']} {unit} is not a whole number of pixels",
                                          argument=argument)
        out[dim] = int(round(value))
    return out


def _child_udf(process: Callable) -> dict | None:
    """The ``run_udf`` node's arguments when the child graph is a single ``run_udf``."""
    graph = getattr(process, "process_graph", None)
    nodes = graph.get("process_graph", {}) if isinstance(graph, dict) else {}
    if len(nodes) == 1:
        node = next(iter(nodes.values()))
        if node.get("process_id") == "run_udf":
            return node.get("arguments", {})
    return None


def _resolve(value: Any, scope: dict) -> Any:
    if isinstance(value, dict) and set(value) == {"from_parameter"}:
        return scope.get(value["from_parameter"])
    if isinstance(value, dict):
        return {k: _resolve(v, scope) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, scope) for v in value]
    return value


_KEEP_GRID_HINT = ('for TerraMind embeddings give the context {"resolution": "pixel"} (embeddings upsampled to '
                   'the pixels), or compute patch embeddings with terramind_embed on the whole cube')


def _steps(cube: xr.DataArray) -> tuple[float, float] | None:
    """The cube's (x, y) pixel size, None where a dimension has a single label."""
    if cube.sizes["x"] < 2 or cube.sizes["y"] < 2:
        return None
    return (abs(float(cube.x[1] - cube.x[0])), abs(float(cube.y[1] - cube.y[0])))


def _check_same_grid(steps, out_steps, terramind: bool) -> None:
    """apply_neighborhood puts each chunk's result back on the input's pixels: a UDF whose ``apply_metadata``
    declares another pixel size (TerraMind's embedding UDF at its default patch resolution) is refused
    here, before any work, instead of failing in the first chunk."""
    if steps is None or out_steps is None:
        return
    if all(abs(a - b) <= 1e-9 * max(abs(a), 1.0) for a, b in zip(steps, out_steps)):
        return
    hint = f"; {_KEEP_GRID_HINT}" if terramind else ""
    raise ProcessParameterInvalid(
        f"the UDF returns cells of {out_steps[0]:g} x {out_steps[1]:g} (its apply_metadata says so), but "
        f"apply_neighborhood keeps the input's {steps[0]:g} x {steps[1]:g} pixels{hint}", argument="process")


def _check_child_keeps_grid(process: Callable, context: Any, in_bands: list[str]) -> list[str]:
    """A ``terramind_*`` node in the child graph must keep the pixel grid (``terramind_embed`` at pixel
    resolution); returns the child's output bands (a ``terramind_*`` result node's, else the input's)."""
    from terramind_openeo.inference import CONTEXT_KEYS, InferenceError, output_bands, output_scale

    graph = getattr(process, "process_graph", None)
    nodes = graph.get("process_graph", {}) if isinstance(graph, dict) else {}
    scope = {**dict(getattr(process, "scope", {})), "context": context}
    bands = in_bands
    for node in nodes.values():
        if not isinstance(node, dict) or node.get("process_id") not in ("terramind_embed", "terramind_generate"):
            continue
        kind = node["process_id"].removeprefix("terramind_")
        args = node.get("arguments", {}) if isinstance(node.get("arguments"), dict) else {}
        values = {k: _resolve(v, scope) for k, v in args.items() if k in CONTEXT_KEYS}
        try:
            scale = output_scale(kind, values)
            out = output_bands(kind, values, in_bands)
        except InferenceError:
            continue  # the node's own validation names the bad value
        if scale != 1 and kind == "embed":
            raise ProcessParameterInvalid(
                f"terramind_embed returns one value per {scale} x {scale} px patch (resolution "
                f"'{values.get('resolution', 'patch')}'), but apply_neighborhood keeps the input's pixels; give "
                'terramind_embed the argument resolution="pixel" there, or call terramind_embed on the whole '
                "cube", argument="process")
        if scale != 1:
            raise ProcessParameterInvalid(
                f"terramind_generate with the only target 'coords' returns one value per {scale} x {scale} px "
                "patch, but apply_neighborhood keeps the input's pixels; add an image target (e.g. "
                'target=["LULC", "coords"]) or call terramind_generate on the whole cube', argument="process")
        if node.get("result"):
            bands = out
    return bands


class _CallbackChunkFn:
    """Picklable chunk function evaluating the child process graph afresh per chunk."""

    def __init__(self, process: Callable, context: Any):
        self.process, self.context = process, context
        self.token = ("callback", repr(getattr(process, "process_graph", id(process))), repr(context))

    def __call__(self, chunk: xr.DataArray) -> xr.DataArray:
        return self.process(data=chunk, context=self.context)


def apply_neighborhood(data: xr.DataArray, process: Callable, size: list, overlap: list | None = None,
                       context: Any = None) -> xr.DataArray:
    if not isinstance(data, xr.DataArray) or not {"x", "y"} <= set(data.dims):
        raise ProcessParameterInvalid("needs a raster data cube with x and y dimensions", argument="data")
    cube = data if "bands" in data.dims else data.expand_dims(bands=["band_1"])
    sizes = _pixels(size, cube, "size", None)
    overlaps = _pixels(overlap, cube, "overlap", 0)
    px: dict[str, int] = {}  # x and y sizes and the overlap, checked
    for dim in ("x", "y"):
        size_px, overlap_px = sizes[dim], overlaps[dim] or 0
        if not size_px:
            raise ProcessParameterInvalid(f"needs a size > 0 for dimension '{dim}'", argument="size")
        if overlap_px > size_px:
            raise ProcessParameterInvalid(f"overlap {overlap_px} px along '{dim}' exceeds the size "
                                          f"{size_px} px", argument="overlap")
        px[dim], px["overlap"] = size_px, overlap_px
    if overlaps["x"] != overlaps["y"]:
        raise ProcessParameterInvalid("different overlaps along x and y are not supported", argument="overlap")
    in_bands = [str(b) for b in cube.bands.values]
    udf_args = _child_udf(process)
    if udf_args is not None:
        scope = dict(getattr(process, "scope", {}))
        scope["context"] = context
        check_runtime(_resolve(udf_args.get("runtime"), scope))
        code = udf_code(_resolve(udf_args.get("udf"), scope), _ctx.current().policy.udf_roots)
        udf_context = _resolve(udf_args.get("context"), scope)
        fn: Callable = udf_chunk_fn(code, udf_context)
        steps = _steps(cube)
        bands, scheme, out_steps = udf_output_metadata(code, in_bands, udf_context, steps)
        _check_same_grid(steps, out_steps, "embed_cube" in code)
    else:
        fn = _CallbackChunkFn(process, context)
        bands, scheme = _check_child_keeps_grid(process, context, in_bands), None
    float_in = np.issubdtype(cube.dtype, np.floating)
    dtype = str(cube.dtype) if bands == in_bands and float_in else "float32"
    fn, dtype = class_output(fn, scheme, bands, dtype)
    plan = ChunkPlan(aligned_bounds(0, cube.sizes["y"], px["y"]), aligned_bounds(0, cube.sizes["x"], px["x"]),
                     px["overlap"], px["overlap"])
    per_date = sizes["t"] is not None and "t" in cube.dims
    logger.info("apply_neighborhood: %d x %d chunks of %d x %d px + %d px overlap", len(plan.row_bounds) - 1,
                len(plan.col_bounds) - 1, sizes["y"], sizes["x"], overlaps["x"])
    _ctx.current()  # the context must exist before tasks are built
    out = with_classes(map_chunks(cube, fn, plan, bands, dtype, per_date=per_date, name="apply_neighborhood"),
                       scheme)
    if "bands" not in data.dims and bands == in_bands:
        out = out.isel(bands=0, drop=True)
    return out
