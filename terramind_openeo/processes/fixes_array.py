"""Standard array processes (array_*, reducers, first/last, sort, quantiles ...) with the openEO semantics
for null, empty arrays and non-numeric elements that the openeo-processes-dask implementations lack.

Registered through ``FIXES`` (see ``registry.FIX_MODULES``); the standard specs are kept. A replacement
registered by us gets the arguments as plain JSON values (no pg-parser typing, which turned arrays of two
date-like strings - and ``[]`` - into ``TemporalIntervals``) and its result is returned as is.

Two kinds of input, one process each:

- a JSON array (a Python ``list``, or a 1-D numpy array outside a cube callback, i.e. without ``axis``):
  openEO's array semantics done here in plain Python. ``null`` is the no-data value (a ``NaN`` of a numpy
  array counts as ``null``, that is how the engine's arrays carry no-data), ``NaN`` of a JSON array is a
  number; element types are kept (ints stay ints, strings stay strings, ``null`` stays ``null``); results
  are plain Python values with ``None`` where the spec says null (the JSON answer would otherwise carry
  ``NaN`` tokens);
- the arrays of data-cube callbacks (numpy/dask/xarray with ``axis``, from ``reduce_dimension``,
  ``apply_dimension`` ...): handed on to the openeo-processes-dask implementation (vectorised, dask stays
  lazy), except where that implementation is wrong: ``array_element`` (negative indices counted from the
  end, date labels), ``array_find`` (999999 for "not found", now NaN), ``count`` callbacks (``context``),
  ``array_apply`` (no ``index``/``label``; now one vectorised call), ``sort`` (flattened for
  ``nodata=null``; now per position along the axis, as ``order``), ``quantiles`` (``[1]`` read as q=1)
  and ``array_interpolate_linear`` (temporal labels).
"""

from __future__ import annotations

import itertools
import math
import operator
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from terramind_openeo.processes.errors import ProcessParameterInvalid
from terramind_openeo.processes.values import is_number, plain

# id -> "module:function"
FIXES: dict[str, str] = {pid: f"terramind_openeo.processes.fixes_array:{func}" for pid, func in {
    "all": "all_", "any": "any_", "array_append": "array_append", "array_apply": "array_apply",
    "array_concat": "array_concat", "array_create": "array_create", "array_element": "array_element",
    "array_filter": "array_filter", "array_find": "array_find",
    "array_interpolate_linear": "array_interpolate_linear", "array_labels": "array_labels",
    "array_modify": "array_modify", "constant": "constant", "count": "count", "cummax": "cummax",
    "cummin": "cummin", "cumproduct": "cumproduct", "cumsum": "cumsum", "extrema": "extrema", "first": "first",
    "is_valid": "is_valid", "last": "last", "max": "max_", "mean": "mean", "median": "median", "min": "min_",
    "product": "product", "quantiles": "quantiles", "sd": "sd", "sort": "sort", "sum": "sum_", "variance": "variance",
}.items()}


# ------------------------------------------------------------------ helpers
def _pkg(module: str):
    """An openeo-processes-dask implementation module (imported on first use, like the registry does)."""
    import importlib

    return importlib.import_module(f"openeo_processes_dask.process_implementations.{module}")


def _exc(name: str):
    return getattr(_pkg("exceptions"), name)


def _as_list(data: Any, axis: int | None) -> list | None:
    """``data`` as a plain list when it is a JSON array, else None (a cube callback's array).

    A 1-D numpy array given without ``axis`` (the result of another process, not a cube callback) counts
    as a JSON array with its ``NaN`` as no-data."""
    if isinstance(data, (list, tuple)):
        return list(data)
    if axis is None and type(data) is np.ndarray and data.ndim == 1:
        return [None if _is_nan(v) else v for v in (plain(v) for v in data)]
    return None


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, (bool, np.bool_)):
        return "boolean"
    if is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (list, tuple, np.ndarray)):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _numbers(data: list, argument: str = "data") -> list:
    """The elements of an array of numbers and nulls, or a clear error naming the argument."""
    out = []
    for i, v in enumerate(data):
        v = plain(v)
        if v is not None and not is_number(v):
            raise ProcessParameterInvalid(f"'{argument}' must be an array of numbers and nulls, but element {i} "
                                          f"is of type {_json_type(v)}", argument=argument)
        out.append(v)
    return out


def _number(value: float, ints: bool) -> int | float:
    """A computed number as int when all inputs were integers and it is integral, else float."""
    value = float(value)
    if ints and math.isfinite(value) and value.is_integer():
        return int(value)
    return value


def _valid_numbers(data: list, ignore_nodata: bool) -> list | None:
    """Non-null numbers of ``data``; None when the result is no-data (a null not ignored, nothing left)."""
    values = _numbers(data)
    if any(v is None for v in values):
        if not ignore_nodata:
            return None
        values = [v for v in values if v is not None]
    return values or None


def _all_ints(values: list) -> bool:
    return all(isinstance(v, (int, np.integer)) for v in values)


def _quiet(func: Callable, *args, **kwargs):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return func(*args, **kwargs)


def _call(process: Callable, **parameters) -> Any:
    """A callback (engine convention) called with named parameters."""
    return process(positional_parameters={}, named_parameters=parameters)


def _truthy(value: Any, argument: str) -> bool:
    value = plain(value)
    if value is None or _is_nan(value):
        return False
    if isinstance(value, (bool, int, float)):
        return bool(value)
    raise ProcessParameterInvalid(f"the '{argument}' callback must return a boolean, got {_json_type(value)}",
                                  argument=argument)


def _integer(value: Any, argument: str, minimum: int | None = None) -> int:
    """An integer argument (an integral float like ``2.0`` accepted), or a clear error naming it."""
    value = plain(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        at_least = "" if minimum is None else f" of at least {minimum}"
        raise ProcessParameterInvalid(f"'{argument}' must be an integer{at_least}, got {value!r}", argument=argument)
    return value


# ------------------------------------------------------------------ reducers over numbers
def _reduce(data: Any, ignore_nodata: bool, axis: int | None, keepdims: bool, package: tuple[str, str],
            compute: Callable[[list], Any], ints: bool | None) -> Any:
    """A reducer over numbers: JSON arrays here (null/empty -> null), cube arrays by openeo-processes-dask
    (``package``: its module and function). ``ints``: an integral result of integers as int; None:
    ``compute`` returns the value as it is."""
    values = _as_list(data, axis)
    if values is None:
        module, name = package
        return getattr(_pkg(module), name)(data, ignore_nodata=ignore_nodata, axis=axis, keepdims=keepdims)
    values = _valid_numbers(values, ignore_nodata)
    if values is None:
        return None
    result = _quiet(compute, values)
    return result if ints is None else _number(result, ints and _all_ints(values))


def _sum(values: list) -> Any:
    return sum(values) if _all_ints(values) else float(np.sum(np.asarray(values, dtype=float)))


def _product(values: list) -> Any:
    return math.prod(values) if _all_ints(values) else float(np.prod(np.asarray(values, dtype=float)))


def _f(func: Callable) -> Callable[[list], float]:
    return lambda values: func(np.asarray(values, dtype=float))


def _extreme(pick: Callable) -> Callable[[list], Any]:
    """The smallest/largest element itself (an int stays an int); NaN when there is one."""
    return lambda values: math.nan if any(_is_nan(v) for v in values) else plain(pick(values))


def max_(data: Any, ignore_nodata: bool = True, axis: int | None = None, keepdims: bool = False) -> Any:
    return _reduce(data, ignore_nodata, axis, keepdims, ("math", "_max"), _extreme(max), ints=None)


def min_(data: Any, ignore_nodata: bool = True, axis: int | None = None, keepdims: bool = False) -> Any:
    return _reduce(data, ignore_nodata, axis, keepdims, ("math", "_min"), _extreme(min), ints=None)


def mean(data: Any, ignore_nodata: bool = True, axis: int | None = None, keepdims: bool = False) -> Any:
    return _reduce(data, ignore_nodata, axis, keepdims, ("math", "mean"), _f(np.mean), ints=False)


def median(data: Any, ignore_nodata: bool = True, axis: int | None = None, keepdims: bool = False) -> Any:
    return _reduce(data, ignore_nodata, axis, keepdims, ("math", "median"), _f(np.median), ints=False)


def sd(data: Any, ignore_nodata: bool = True, axis: int | None = None, keepdims: bool = False) -> Any:
    return _reduce(data, ignore_nodata, axis, keepdims, ("math", "sd"), _f(lambda a: np.std(a, ddof=1)), ints=False)


def variance(data: Any, ignore_nodata: bool = True, axis: int | None = None, keepdims: bool = False) -> Any:
    return _reduce(data, ignore_nodata, axis, keepdims, ("math", "variance"), _f(lambda a: np.var(a, ddof=1)),
                   ints=False)


def sum_(data: Any, ignore_nodata: bool = True, axis: int | None = None, keepdims: bool = False) -> Any:
    return _reduce(data, ignore_nodata, axis, keepdims, ("math", "_sum"), _sum, ints=True)


def product(data: Any, ignore_nodata: bool = True, axis: int | None = None, keepdims: bool = False) -> Any:
    return _reduce(data, ignore_nodata, axis, keepdims, ("math", "product"), _product, ints=True)


def extrema(data: Any, ignore_nodata: bool = True, axis: int | None = None, keepdims: bool = False) -> Any:
    values = _as_list(data, axis)
    if values is None:
        return _pkg("math").extrema(data, ignore_nodata=ignore_nodata, axis=axis, keepdims=keepdims)
    values = _valid_numbers(values, ignore_nodata)
    if values is None:
        return [None, None]
    return [_extreme(min)(values), _extreme(max)(values)]


def quantiles(data: Any, probabilities: Any = None, q: int | None = None, ignore_nodata: bool = True,
              axis: int | None = None, keepdims: bool = False) -> Any:
    if probabilities is not None and q is not None:
        raise _exc("QuantilesParameterConflict")(
            "The process `quantiles` only allows that either the `probabilities` or the `q` parameter is set.")
    if probabilities is None and q is None:
        raise _exc("QuantilesParameterMissing")(
            "The process `quantiles` requires either the `probabilities` or `q` parameter to be set.")
    probs = _probabilities(probabilities if probabilities is not None else q,
                           "probabilities" if probabilities is not None else "q")
    values = _as_list(data, axis)
    if values is None:
        return _pkg("math").quantiles(data, probabilities=np.asarray(probs, dtype=float), ignore_nodata=ignore_nodata,
                                      axis=axis, keepdims=keepdims)
    values = _valid_numbers(values, ignore_nodata)
    if values is None:
        return [None] * len(probs)
    result = _quiet(np.quantile, np.asarray(values, dtype=float), probs, method="linear")
    return [float(v) for v in result]


def _probabilities(value: Any, argument: str) -> list[float]:
    if isinstance(value, (list, tuple, np.ndarray)):
        probs = _numbers(list(value), argument)
        if any(p is None or not 0 <= p <= 1 for p in probs):
            raise ProcessParameterInvalid(f"'{argument}' must be probabilities between 0 and 1, got {list(value)}",
                                          argument=argument)
        return [float(p) for p in probs]
    value = plain(value)
    if not is_number(value) or float(value) != int(value) or int(value) < 2:
        raise ProcessParameterInvalid(f"'{argument}' must be an integer of at least 2 (q-quantiles) or a list of "
                                      f"probabilities, got {value!r}", argument=argument)
    n = int(value)
    return [i / n for i in range(1, n)]


# ------------------------------------------------------------------ first, last, logic, count
def first(data: Any, ignore_nodata: bool = True, axis: int | None = None) -> Any:
    values = _as_list(data, axis)
    if values is None:
        return _pkg("arrays").first(data, ignore_nodata=ignore_nodata, axis=axis)
    return _first(values, ignore_nodata)


def last(data: Any, ignore_nodata: bool = True, axis: int | None = None) -> Any:
    values = _as_list(data, axis)
    if values is None:
        return _pkg("arrays").last(data, ignore_nodata=ignore_nodata, axis=axis)
    return _first(values[::-1], ignore_nodata)


def _first(values: list, ignore_nodata: bool) -> Any:
    if not ignore_nodata:
        return plain(values[0]) if values else None
    return next((plain(v) for v in values if v is not None), None)


def _booleans(data: list) -> list[bool | None]:
    out: list[bool | None] = []
    for i, v in enumerate(data):
        v = plain(v)
        if v is None or _is_nan(v):
            out.append(None)
        elif isinstance(v, bool) or is_number(v):
            out.append(bool(v))
        else:
            raise ProcessParameterInvalid(f"'data' must be an array of booleans and nulls, but element {i} is of "
                                          f"type {_json_type(v)}", argument="data")
    return out


def all_(data: Any, ignore_nodata: bool = True, axis: int | None = None) -> Any:
    values = _as_list(data, axis)
    if values is None:
        return _pkg("logic")._all(data, ignore_nodata=ignore_nodata, axis=axis)
    return _logic(_booleans(values), ignore_nodata, decisive=False)


def any_(data: Any, ignore_nodata: bool = True, axis: int | None = None) -> Any:
    values = _as_list(data, axis)
    if values is None:
        return _pkg("logic")._any(data, ignore_nodata=ignore_nodata, axis=axis)
    return _logic(_booleans(values), ignore_nodata, decisive=True)


def _logic(values: list, ignore_nodata: bool, decisive: bool) -> bool | None:
    """``all`` (decisive False) / ``any`` (decisive True): the decisive value wins over no-data."""
    known = [v for v in values if v is not None]
    if not known:  # empty, or only no-data
        return None
    if decisive in known:
        return decisive
    if len(known) < len(values) and not ignore_nodata:
        return None
    return not decisive


def count(data: Any, condition: Any = None, context: Any = None, axis: int | None = None,
          keepdims: bool = False) -> Any:
    values = _as_list(data, axis)
    if values is None:
        if callable(condition):
            hits = _call(condition, x=data, context=context)
            if np.ndim(hits) < np.ndim(data):  # a condition that ignores x: the same for every element
                hits = _array_module(data).broadcast_to(hits, data.shape)
            return np.nansum(hits, axis=axis, keepdims=keepdims)
        return _pkg("arrays").count(data, condition=condition, context=context, axis=axis, keepdims=keepdims)
    if condition is None:
        return sum(1 for v in values if is_valid(v))
    if condition is True:
        return len(values)
    if callable(condition):
        return sum(1 for v in values if _truthy(_call(condition, x=v, context=context), "condition"))
    raise ProcessParameterInvalid(f"'condition' must be a process graph, true or null, got {condition!r:.40}",
                                  argument="condition")


def is_valid(x: Any) -> Any:
    """Arrays, objects and strings are valid whatever their content; numbers when finite; null is not."""
    x = plain(x)
    if x is None:
        return False
    if isinstance(x, float):
        return math.isfinite(x)
    if isinstance(x, (bool, int, str, list, tuple, dict)):
        return True
    return _pkg("comparison").is_valid(x)


def constant(x: Any) -> Any:
    return x


# ------------------------------------------------------------------ array_* processes
def array_element(data: Any, index: int | None = None, label: Any = None, return_nodata: bool = False,
                  axis: int | None = None, context: Any = None, dim_labels: Any = None) -> Any:
    if index is None and label is None:
        raise _exc("ArrayElementParameterMissing")(
            "The process `array_element` requires either the `index` or `labels` parameter to be set.")
    if index is not None and label is not None:
        raise _exc("ArrayElementParameterConflict")(
            "The process `array_element` only allows that either the `index` or the `labels` parameter is set.")
    if index is not None:
        index = _integer(index, "index")
    values = _as_list(data, axis)
    if values is not None:
        if label is not None:
            raise _exc("ArrayNotLabeled")(
                "The array is not a labeled array, but the `label` parameter is set. Use the `index` instead.")
        if index is not None and 0 <= index < len(values):  # (label is None here: index is set)
            return plain(values[index])
        return _not_available(index, return_nodata)
    if index is not None and hasattr(data, "shape") and not hasattr(data, "dims"):
        size = data.shape[0 if axis is None else axis]
        if not 0 <= index < size:  # numpy would count a negative index from the end
            _not_available(index, return_nodata)
            shape = tuple(np.delete(data.shape, 0 if axis is None else axis))
            return _array_module(data).full(shape, np.nan)
    if label is not None and dim_labels is not None:
        label = _label_like(label, dim_labels)
    return _pkg("arrays").array_element(data, index=index, label=label, return_nodata=return_nodata, axis=axis,
                                        dim_labels=dim_labels)


def _not_available(which: Any, return_nodata: bool) -> None:
    """None (no-data) with ``return_nodata``, else the openEO error."""
    if not return_nodata:
        raise _exc("ArrayElementNotAvailable")(
            f"The array has no element with the specified index or label: {which}")


def _label_like(label: Any, labels: Any) -> Any:
    """A date label (string) as the datetime64 of a temporal dimension's labels."""
    if isinstance(label, str) and np.issubdtype(np.asarray(labels).dtype, np.datetime64):
        try:
            stamp = pd.Timestamp(label)
        except (ValueError, TypeError):
            return label
        if stamp.tzinfo is not None:
            stamp = stamp.tz_convert("UTC").tz_localize(None)
        return stamp.to_datetime64()
    return label


def array_labels(data: Any, axis: int | None = None, dim_labels: Any = None) -> Any:
    values = _as_list(data, axis)
    if values is not None:
        return list(range(len(values)))
    if dim_labels is not None and len(dim_labels) > 0:
        return np.asarray(dim_labels)
    if axis is not None and hasattr(data, "shape") and not hasattr(data, "dims"):
        return np.arange(data.shape[axis])
    return _pkg("arrays").array_labels(data, axis=axis)


def array_concat(array1: Any, array2: Any, axis: int | None = None) -> Any:
    one, two = _as_list(array1, axis), _as_list(array2, axis)
    if one is not None and two is not None:
        return one + two
    return _pkg("arrays").array_concat(array1, array2, axis=axis)


def array_append(data: Any, value: Any, label: Any = None, dim_labels: Any = None, axis: int | None = None) -> Any:
    values = _as_list(data, axis)
    if values is not None:
        if label is not None:
            raise _exc("ArrayNotLabeled")("The array is not a labeled array, but the `label` parameter is set.")
        return values + [value]
    return _pkg("arrays").array_append(data, value, label=label, dim_labels=dim_labels, axis=axis)


def array_create(data: Any = None, repeat: int = 1) -> Any:
    repeat = _integer(repeat, "repeat", minimum=1)
    if data is None:
        return []
    values = _as_list(data, None)
    if values is not None:
        return values * int(repeat)
    return _pkg("arrays").array_create(data, repeat=repeat)


def array_find(data: Any, value: Any, reverse: bool = False, axis: int | None = None) -> Any:
    values = _as_list(data, axis)
    if values is not None:
        kind = _json_type(value)
        if kind not in ("number", "boolean", "string"):  # null, arrays and objects are never found
            return None
        order = range(len(values) - 1, -1, -1) if reverse else range(len(values))
        for i in order:
            v = plain(values[i])
            if _json_type(v) == kind and v == value:
                return i
        return None
    # a cube callback's array: index along axis, NaN (no-data) where not found
    xp = _array_module(data)
    if axis is None:
        data, axis = data.reshape(-1), 0
    if value is None or _is_nan(value):
        return xp.full(np.delete(data.shape, axis), np.nan)
    eq = data == value
    if reverse:
        eq = xp.flip(eq, axis=axis)
    idx = xp.argmax(eq, axis=axis)
    if reverse:
        idx = data.shape[axis] - 1 - idx
    return xp.where(xp.any(eq, axis=axis), idx, np.nan)


def _array_module(data: Any):
    import dask.array as da

    return da if isinstance(data, da.Array) else np


def array_interpolate_linear(data: Any, axis: int | None = None, dim_labels: Any = None) -> Any:
    values = _as_list(data, axis)
    if values is None:
        if dim_labels is not None:  # dates as numbers (the package interpolates on the labels, or fails on dates)
            from terramind_openeo.processes.standard_fixes import DimensionLabels

            labels = np.asarray(dim_labels)
            if np.issubdtype(labels.dtype, np.datetime64):
                labels = labels.astype("datetime64[ns]").astype(np.int64).astype(float)
            dim_labels = labels.view(DimensionLabels)
        return _pkg("arrays").array_interpolate_linear(data, axis=axis, dim_labels=dim_labels)
    values = _numbers(values)
    out = list(values)
    known = [i for i, v in enumerate(values) if v is not None and not _is_nan(v)]
    for a, b in itertools.pairwise(known):
        va, vb = float(values[a]), float(values[b])
        for i in range(a + 1, b):
            out[i] = _between(va, vb, (i - a) / (b - a))
    return out


def _between(a: float, b: float, t: float) -> float:
    if math.isinf(a) or math.isinf(b):
        if math.isinf(a) and math.isinf(b):
            return a if a == b else math.nan
        return a if math.isinf(a) else b
    return a + (b - a) * t


def array_apply(data: Any, process: Callable, context: Any = None, axis: int | None = None,
                dim_labels: Any = None) -> Any:
    values = _as_list(data, axis)
    if values is not None:
        return [plain(_call(process, x=v, index=i, label=None, context=context)) for i, v in enumerate(values)]
    if hasattr(data, "dims") or not hasattr(data, "shape"):
        return _pkg("arrays").array_apply(data, process, context=context)
    # a cube callback's array: one vectorised call, index (and label) broadcast along the axis
    axis = 0 if axis is None else axis
    shape = [1] * data.ndim
    shape[axis] = data.shape[axis]
    index = np.arange(data.shape[axis]).reshape(shape)
    label = None if dim_labels is None else np.asarray(dim_labels).reshape(shape)
    out = _call(process, x=data, index=index, label=label, context=context)
    if getattr(out, "shape", None) != data.shape:
        out = _array_module(data).broadcast_to(out, data.shape)
    return out


def array_filter(data: Any, condition: Callable, context: Any = None, axis: int | None = None) -> Any:
    values = _as_list(data, axis)
    if values is None:
        return _pkg("arrays").array_filter(data, condition, context=context, axis=axis)
    return [v for i, v in enumerate(values)
            if _truthy(_call(condition, x=v, index=i, label=None, context=context), "condition")]


def sort(data: Any, asc: bool = True, nodata: bool | None = None, axis: int | None = None) -> Any:
    values = _as_list(data, axis)
    if values is None:
        return _sort_along(data, asc, nodata, axis)
    present, missing = [], []
    for v in values:
        v = plain(v)
        (missing if v is None or _is_nan(v) else present).append(v)
    kinds = {_json_type(v) for v in present}
    if kinds - {"number", "string"} or len(kinds) > 1:
        raise ProcessParameterInvalid("'data' must be an array of numbers (or of dates) and nulls, got "
                                      f"{', '.join(sorted(kinds))}", argument="data")
    key = _date_key if kinds == {"string"} else None
    ordered = sorted(present, key=key, reverse=not asc)
    if nodata is None:
        return ordered
    return ordered + missing if nodata else missing + ordered


def _date_key(value: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(value)
    except (ValueError, TypeError):
        raise ProcessParameterInvalid(f"'data' must be an array of numbers or dates, got the string {value!r}",
                                      argument="data") from None
    return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo is not None else stamp


def _sort_along(data: Any, asc: bool, nodata: bool | None, axis: int | None) -> Any:
    """A cube callback's array sorted along ``axis`` with ``order``'s rules (no-data last for
    ``nodata=None`` too, so every position keeps as many values; dask stays lazy)."""
    if hasattr(data, "dims") or not hasattr(data, "ndim") or data.ndim <= 1:
        return _pkg("arrays").sort(data, asc=asc, nodata=nodata, axis=axis)
    from terramind_openeo.processes.standard_fixes import _order_nd

    axis = data.ndim - 1 if axis is None else axis

    def block(values: np.ndarray) -> np.ndarray:
        return np.take_along_axis(values, _order_nd(values, asc, nodata, axis), axis=axis)

    if _array_module(data) is np:
        return block(np.asarray(data))
    return data.rechunk({axis: -1}).map_blocks(block, dtype=data.dtype)


# ------------------------------------------------------------------ cumulative processes, array_modify
def _cumulate(pid: str, data: Any, ignore_nodata: bool, axis: int | None, step: Callable[[Any, Any], Any]) -> Any:
    """A cumulative process: JSON arrays here (null stays null), cube arrays by openeo-processes-dask."""
    values = _as_list(data, axis)
    if values is None:
        return getattr(_pkg("math"), pid)(data, ignore_nodata=ignore_nodata, axis=axis)
    out, acc, broken = [], None, False
    for v in _numbers(values):
        if v is None or broken:
            out.append(None)
            broken = broken or not ignore_nodata
            continue
        acc = v if acc is None else _quiet(step, acc, v)
        out.append(acc)
    return out


def _nan_aware(pick: Callable) -> Callable:
    return lambda a, b: math.nan if _is_nan(a) or _is_nan(b) else pick(a, b)


def cumsum(data: Any, ignore_nodata: bool = True, axis: int | None = None) -> Any:
    return _cumulate("cumsum", data, ignore_nodata, axis, operator.add)


def cumproduct(data: Any, ignore_nodata: bool = True, axis: int | None = None) -> Any:
    return _cumulate("cumproduct", data, ignore_nodata, axis, operator.mul)


def cummax(data: Any, ignore_nodata: bool = True, axis: int | None = None) -> Any:
    return _cumulate("cummax", data, ignore_nodata, axis, _nan_aware(max))


def cummin(data: Any, ignore_nodata: bool = True, axis: int | None = None) -> Any:
    return _cumulate("cummin", data, ignore_nodata, axis, _nan_aware(min))


def array_modify(data: Any, values: Any, index: int, length: int = 0, axis: int | None = None) -> Any:
    items, new = _as_list(data, axis), _as_list(values, axis)
    if items is None or new is None:
        return _pkg("arrays").array_modify(data, values, index, length=length, axis=axis)
    index, length = _integer(index, "index", minimum=0), _integer(length, "length", minimum=0)
    if index > len(items):
        raise _exc("ArrayElementNotAvailable")(
            "The array can't be modified as the given index is larger than the number of elements in the array.")
    return items[:index] + new + items[index + length:]
