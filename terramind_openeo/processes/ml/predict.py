"""``predict_random_forest`` and ``predict_probabilities``: an ml-model applied to every pixel, chunk by chunk.

The openEO client writes a prediction as ``reduce_dimension(cube, dimension="bands", reducer=
predict_random_forest(data, model=context), context=model)`` (probabilities: ``apply_dimension`` with
``predict_probabilities``). ``reduce_dimension`` and ``apply_dimension`` hand a reducer that is exactly
such a node to :func:`cube_prediction`, which runs the model through ``chunked.map_chunks``, the engine
under the ``terramind_*`` processes: each chunk of the (lazy) cube is read inside its own task, predicted in
slabs of rows, and written into a lazy result, so no whole-area array exists and a prediction stacked on
``terramind_embed`` computes the embeddings chunk by chunk as it goes. The model's input bands are matched
to the cube's band labels (by name, any order) before any pixel is read. int8-quantised embeddings are
read back per chunk (``quantized.py``).

Called any other way (inside a larger child graph), the processes work on the plain array their caller
hands them, block by block with ``dask.array.map_blocks``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from terramind_openeo.processes import context as _ctx
from terramind_openeo.processes.errors import ProcessParameterInvalid
from terramind_openeo.processes.ml.model import MLModel
from terramind_openeo.processes.quantized import dequantized_values, is_quantized

logger = logging.getLogger(__name__)

PREDICTORS = {"predict_random_forest": "value", "predict_probabilities": "proba"}
"""Reducer processes that ``reduce_dimension``/``apply_dimension`` route to :func:`cube_prediction`."""
SLAB_VALUES = 8 * 2**20
"""Input values (pixels x bands) predicted at once within a chunk: bounds the per-slab copies."""
OUTPUT_NAME = "prediction"


def _model(model: Any) -> MLModel:
    if not isinstance(model, MLModel):
        raise ProcessParameterInvalid(f"must be an ml-model (from fit_* or load_ml_model), got {type(model).__name__}",
                                      argument="model")
    return model


def check_bands(model: MLModel, cube_bands: list[str]) -> list[int]:
    """Positions of the model's input bands among the cube's; an error naming the missing ones."""
    missing = [b for b in model.bands if b not in cube_bands]
    if missing:
        shown = ", ".join(missing[:8]) + (f" ... ({len(missing)} in all)" if len(missing) > 8 else "")
        have = ", ".join(cube_bands[:8]) + (" ..." if len(cube_bands) > 8 else "")
        raise ProcessParameterInvalid(
            f"the model was trained on {len(model.bands)} bands ({', '.join(model.bands[:4])}...) and reads bands "
            f"{shown} that the data cube lacks (its {len(cube_bands)} bands: {have})", argument="model")
    return [cube_bands.index(b) for b in model.bands]


def output_coding(model: MLModel, mode: str) -> tuple[list[str], str, Any]:
    """Band labels, dtype and no-data value of the prediction."""
    if mode == "proba":
        if not model.is_classifier:
            raise ProcessParameterInvalid("a regression model has no class probabilities", argument="model")
        return [str(c) for c in model.classes or ()], "float32", float("nan")
    if model.is_classifier:
        _, dtype, nodata = model.class_codes()
        return [OUTPUT_NAME], dtype, nodata
    return [OUTPUT_NAME], "float32", float("nan")


def predict_rows(model: MLModel, x: np.ndarray, mode: str) -> np.ndarray:
    """``[n, bands]`` -> ``[n, outputs]`` in the output coding (class values, regression values or
    probabilities), no-data where any input is."""
    if mode == "proba":
        return model.predict_proba(x).astype(np.float32)
    if model.is_classifier:
        values, dtype, nodata = model.class_codes()
        codes = model.predict_codes(x)
        lookup = np.append(values, np.asarray(nodata, dtype=dtype)).astype(dtype)
        return lookup[codes][:, None]  # code -1 (no-data) takes the last entry
    return model.predict_codes(x).astype(np.float32)[:, None]


class PredictFn:
    """Picklable chunk function: the model over a labelled chunk ``(t?, bands, y, x)``."""

    def __init__(self, model: MLModel, mode: str, cube_bands: list[str]):
        self.model, self.mode, self.cube_bands = model, mode, list(cube_bands)
        self.token = ("predict", model.digest(), mode, tuple(cube_bands))

    def __call__(self, chunk: xr.DataArray) -> xr.DataArray:
        has_t = "t" in chunk.dims
        cube = chunk.transpose("t", "bands", "y", "x") if has_t else chunk.transpose("bands", "y", "x").expand_dims("t")
        values, bands = dequantized_values(cube.values, [str(b) for b in cube.bands.values], 1)
        index = check_bands(self.model, bands)
        labels, dtype, _ = output_coding(self.model, self.mode)
        n_t, _, h, w = values.shape
        out = np.empty((n_t, len(labels), h, w), dtype=dtype)
        rows = max(1, SLAB_VALUES // max(w * len(index), 1))
        for t in range(n_t):
            for r0 in range(0, h, rows):
                slab = values[t, index, r0:r0 + rows]  # [bands, rows, w]
                x = np.moveaxis(slab, 0, -1).reshape(-1, len(index))
                pred = predict_rows(self.model, x, self.mode)  # [rows * w, outputs]
                out[t, :, r0:r0 + rows] = pred.T.reshape(len(labels), -1, w)
        result = xr.DataArray(out, dims=("t", "bands", "y", "x"),
                              coords={"t": cube.t.values if "t" in cube.coords else [0], "bands": labels,
                                      "y": cube.y.values, "x": cube.x.values})
        return result if has_t else result.isel(t=0, drop=True)


def chunk_plan(cube: xr.DataArray):
    """Chunks as the cube's own dask chunks along y and x (a prediction needs no halo)."""
    from terramind_openeo.processes.chunked import ChunkPlan, aligned_bounds

    if isinstance(cube.data, da.Array):
        ys = cube.chunks[cube.get_axis_num("y")]
        xs = cube.chunks[cube.get_axis_num("x")]
        return ChunkPlan(tuple(np.cumsum((0,) + ys).tolist()), tuple(np.cumsum((0,) + xs).tolist()), 0, 0)
    size = _ctx.current().chunk_size
    return ChunkPlan(aligned_bounds(0, cube.sizes["y"], size), aligned_bounds(0, cube.sizes["x"], size), 0, 0)


def predict_cube(cube: xr.DataArray, model: MLModel, mode: str, keep_bands: bool) -> xr.DataArray:
    """The lazy prediction over a raster cube; ``keep_bands=False``: the ``bands`` dimension reduced away."""
    from terramind_openeo.processes.chunked import map_chunks

    model = _model(model)
    if not isinstance(cube, xr.DataArray) or not {"bands", "y", "x"} <= set(cube.dims):
        raise ProcessParameterInvalid("needs a raster data cube with dimensions bands, y, x", argument="data")
    extra = [d for d in cube.dims if d not in ("t", "bands", "y", "x")]
    if extra:
        raise ProcessParameterInvalid(f"cannot predict over a cube with dimension(s) {extra}", argument="data")
    bands = [str(b) for b in cube.bands.values]
    check_bands(model, bands[:-1] if is_quantized(cube) else bands)  # before any pixel is read
    labels, dtype, nodata = output_coding(model, mode)
    out = map_chunks(cube, PredictFn(model, mode, bands), chunk_plan(cube), labels, dtype, per_date=True,
                     name=f"predict-{mode}")
    out.attrs = {"nodata": nodata}
    scheme = model.class_scheme(OUTPUT_NAME) if model.is_classifier and mode != "proba" else None
    if scheme is not None:  # class names and colours for the writers (terramind_openeo/classes.py)
        from terramind_openeo.classes import attach

        attach(out, scheme)
    logger.info("prediction of a %s over %s px", model.kind, "x".join(str(cube.sizes[d]) for d in ("y", "x")))
    if keep_bands:
        return out
    return out.isel(bands=0, drop=True).rename(OUTPUT_NAME)


# ---------------------------------------------------------------------------------------------- callbacks
def _resolve(value: Any, scope: dict) -> Any:
    if isinstance(value, dict) and set(value) == {"from_parameter"}:
        return scope.get(value["from_parameter"])
    return value


def cube_prediction(process: Callable, context: Any, dimension: str, mode_wanted: str) -> Callable | None:
    """``cube -> prediction`` when ``process`` is a single predict node reading ``data`` along ``dimension``
    (``"bands"``); None otherwise (the caller runs the callback as usual)."""
    graph = getattr(process, "process_graph", None)
    nodes = graph.get("process_graph", {}) if isinstance(graph, dict) else {}
    if dimension != "bands" or len(nodes) != 1:
        return None
    node = next(iter(nodes.values()))
    if node.get("namespace") not in (None, "", "backend", "predefined"):  # a stored process of that name
        return None
    mode = PREDICTORS.get(node.get("process_id"))
    args = node.get("arguments", {})
    if mode is None or args.get("data") != {"from_parameter": "data"}:
        return None
    if mode_wanted == "reduce" and mode == "proba":
        raise ProcessParameterInvalid("predict_probabilities returns several values per pixel: use it in "
                                      "apply_dimension, not reduce_dimension", argument="reducer")
    scope = dict(getattr(process, "scope", {}))
    scope["context"] = context
    model = _model(_resolve(args.get("model"), scope))
    return lambda cube: predict_cube(cube, model, mode, keep_bands=mode == "proba")


def _array_predict(data: Any, model: MLModel, mode: str, axis: int | None) -> Any:
    model = _model(model)
    if isinstance(data, xr.DataArray):
        if {"bands", "y", "x"} <= set(data.dims):
            return predict_cube(data, model, mode, keep_bands=mode == "proba")
        data = data.data
    if isinstance(data, list):
        data = np.asarray([np.nan if v is None else v for v in data], dtype=np.float64)
    axis = (np.ndim(data) - 1) if axis is None else axis
    n_out = len(model.classes or ()) if mode == "proba" else 1
    if np.shape(data)[axis] != len(model.bands):
        raise ProcessParameterInvalid(f"the model reads {len(model.bands)} values per pixel, the data has "
                                      f"{np.shape(data)[axis]}", argument="data")

    def block(values: np.ndarray) -> np.ndarray:
        moved = np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1)
        pred = predict_rows(model, moved.reshape(-1, moved.shape[-1]), mode).astype(np.float64)
        pred = pred.reshape(moved.shape[:-1] + (n_out,))
        return np.moveaxis(pred, -1, axis) if mode == "proba" else pred[..., 0]

    if isinstance(data, da.Array):
        data = data.rechunk({axis: -1})
        if mode == "proba":
            return data.map_blocks(block, dtype=np.float64, chunks=data.chunks[:axis] + ((n_out,),) + data.chunks[axis + 1:])
        return data.map_blocks(block, dtype=np.float64, drop_axis=axis)
    result = block(np.asarray(data))
    return result.item() if np.ndim(result) == 0 else result


def predict_random_forest(data: Any, model: Any, axis: int | None = None) -> Any:
    return _array_predict(data, model, "value", axis)


def predict_probabilities(data: Any, model: Any, axis: int | None = None) -> Any:
    return _array_predict(data, model, "proba", axis)
