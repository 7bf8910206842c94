"""Standard processes whose openeo-processes-dask implementation is wrong for us, replaced or wrapped.

Registered in ``registry.OWN_PROCESSES`` (same ids, the standard specs); each fixes a failure of the
openEO conformance suite (``tests/backend/conformance/KNOWN_FAILURES.md``):

- ``apply_dimension``: keeps the source labels when the callback returns as many values (the package
  compares instead of assigning them), hands the callback the dimension labels (``array_element(label=...)``
  works), and supports ``target_dimension`` (the package asks the callback for ``keepdims`` and gets an
  extra axis back);
- ``rename_labels``: any target labels on the temporal dimension (the package parses them as dates);
- ``order``: arrays of any dimensionality, along the ``axis`` an ``apply_dimension`` callback is given.

``reduce_dimension`` and ``apply_dimension`` also hand a callback that is a single ``predict_*`` node over
``bands`` to the chunked prediction of ``ml/predict.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np
import pandas as pd
import xarray as xr

from terramind_openeo.crs import crs_of, with_crs
from terramind_openeo.processes.errors import ProcessParameterInvalid


class DimensionLabels(np.ndarray):
    """Labels handed to callbacks as ``dim_labels``: an array (``array_element`` compares it with a label)
    that is true when not empty (``array_labels``/``array_find_label`` test it with ``if dim_labels``)."""

    def __bool__(self) -> bool:
        return self.size > 0


def _labels(cube: xr.DataArray, dimension: str) -> np.ndarray | None:
    return np.asarray(cube[dimension].values) if dimension in cube.coords else None


def _dimension_not_available(dimension: str, cube: xr.DataArray) -> Exception:
    from openeo_processes_dask.process_implementations.exceptions import (
        DimensionNotAvailable,
    )

    return DimensionNotAvailable(f"Provided dimension ({dimension}) not found in data.dims: {cube.dims}")


def reduce_dimension(data: xr.DataArray, reducer: Callable, dimension: str, context: Any = None) -> xr.DataArray:
    """The package's ``reduce_dimension``, except that a reducer which is a single ``predict_*`` node over
    ``bands`` runs chunk by chunk with the model (``ml/predict.py``)."""
    from openeo_processes_dask.process_implementations.cubes.reduce import reduce_dimension as standard

    from terramind_openeo.processes.ml.predict import cube_prediction

    if isinstance(data, xr.DataArray) and dimension in data.dims:
        predict = cube_prediction(reducer, context, dimension, "reduce")
        if predict is not None:
            return predict(data)
    return standard(data=data, reducer=reducer, dimension=dimension, context=context)


def apply_dimension(data: xr.DataArray, process: Callable, dimension: str, target_dimension: str | None = None,
                    context: dict | None = None) -> xr.DataArray:
    if dimension not in data.dims:
        raise _dimension_not_available(dimension, data)
    from terramind_openeo.processes.ml.predict import cube_prediction

    predict = cube_prediction(process, context, dimension, "apply")
    if predict is not None:  # a model over the bands (ml/predict.py): class labels become the new labels
        out = predict(data)
        return out if target_dimension in (None, dimension) else out.rename({dimension: target_dimension})
    context = {} if context is None else context
    target = dimension if target_dimension is None else target_dimension
    if target != dimension and target in data.dims and data.sizes[target] != 1:
        raise ProcessParameterInvalid(
            f"target dimension '{target}' already exists with {data.sizes[target]} labels: apply_dimension can "
            f"replace the source dimension '{dimension}' only by a new dimension or one with a single label "
            "(drop or reduce it first)", argument="target_dimension")
    if target != dimension and target in data.dims:
        data = data.isel({target: 0}, drop=True)
    src = data.transpose(..., dimension)
    labels = _labels(src, dimension)
    axis = src.ndim - 1
    out = process(src.data, positional_parameters={"data": 0}, named_parameters={"context": context},
                  axis=axis, keepdims=False, source_transposed_axis=data.get_axis_num(dimension),
                  dim_labels=None if labels is None else labels.view(DimensionLabels), context=context)
    if isinstance(out, xr.DataArray):
        out = out.data
    if not hasattr(out, "ndim"):
        out = np.asarray(out)
    if out.ndim == 0:  # one value for all: broadcast below
        out = out.reshape(1)
    elif out.ndim == src.ndim - 1:  # the callback reduced the values to one
        out = out[..., None]
    other = src.shape[:-1]
    if out.ndim != src.ndim or tuple(out.shape[:-1]) != other:
        out = (da if isinstance(out, da.Array) else np).broadcast_to(out, other + (out.shape[-1],))
    n = out.shape[-1]
    keep = target == dimension and labels is not None and n == labels.size
    new_labels = labels if keep else np.arange(n)
    dims = src.dims[:-1] + (target,)
    coords = {k: v for k, v in src.coords.items() if dimension not in v.dims}
    coords[target] = new_labels
    result = xr.DataArray(out, dims=dims, coords=coords, attrs=dict(data.attrs), name=data.name)
    result = result.transpose(*[target if d == dimension else d for d in data.dims])
    crs = crs_of(data)
    return result if crs is None else with_crs(result, crs)  # fresh: no copy, no cycle (terramind_openeo/crs.py)


def _is_temporal(cube: xr.DataArray, dimension: str) -> bool:
    return dimension in cube.coords and np.issubdtype(cube[dimension].dtype, np.datetime64)


def _as_label(value: Any, temporal: bool) -> Any:
    if hasattr(value, "root"):  # pg-parser date types
        value = value.root
    if temporal and not isinstance(value, (int, float)):
        try:
            stamp = pd.Timestamp(str(value))
        except (ValueError, TypeError):
            return value
        return stamp.tz_convert("UTC").tz_localize(None) if stamp.tzinfo else stamp
    return value


def _label_error(code: str, message: str) -> ProcessParameterInvalid:
    return ProcessParameterInvalid(message, code=code)


def rename_labels(data: xr.DataArray, dimension: str, target: list, source: list | None = None) -> xr.DataArray:
    """Labels renamed; on the temporal dimension, dates match by instant and targets need not be dates."""
    if dimension not in data.dims:
        raise _dimension_not_available(dimension, data)
    temporal = _is_temporal(data, dimension)
    current = list(data[dimension].values) if dimension in data.coords else list(range(data.sizes[dimension]))
    if temporal:
        current = [pd.Timestamp(v) for v in current]
    target = [_as_label(v, temporal) for v in target]
    source = [_as_label(v, temporal) for v in (source or [])]
    if source:
        if len(source) != len(target):
            raise _label_error('LabelMismatch', "The number of labels in the parameters `source` and `target` don't match.")
        missing = [s for s in source if s not in current]
        if missing:
            raise _label_error('LabelNotAvailable', f"A label with the specified name does not exist: {missing[0]}")
        mapping = dict(zip(source, target))
        new = [mapping.get(v, v) for v in current]
    elif len(target) == len(current):
        new = list(target)
    elif len(target) < len(current) and current == list(range(len(current))):
        new = list(target) + current[len(target):]
    elif len(target) < len(current):
        raise _label_error('LabelsNotEnumerated', "The dimension labels are not enumerated.")
    else:
        raise _label_error('LabelMismatch', "The number of labels in the parameters `source` and `target` don't match.")
    if len({str(v) for v in new}) != len(new):
        raise _label_error('LabelExists', "A label with the specified name exists.")
    if all(isinstance(v, pd.Timestamp) for v in new):
        values = pd.DatetimeIndex(new).values
    elif any(isinstance(v, str) for v in new):  # not all dates: labels as text
        values = np.array([v.isoformat() if isinstance(v, pd.Timestamp) else str(v) for v in new], dtype=object)
    else:
        values = np.asarray(new)
    return data.assign_coords({dimension: values})


def _order_nd(values: np.ndarray, asc: bool, nodata: bool | None, axis: int) -> np.ndarray:
    values = np.asarray(values)
    if asc:
        idx = np.argsort(values, kind="stable", axis=axis)
    else:  # descending, equal values keep their order, nodata still last
        rev = np.flip(values, axis=axis)
        idx = values.shape[axis] - 1 - np.flip(np.argsort(rev, kind="stable", axis=axis), axis=axis)
        nan_last = np.take_along_axis(pd.isnull(values), idx, axis=axis)
        idx = np.take_along_axis(idx, np.argsort(nan_last, kind="stable", axis=axis), axis=axis)
    if nodata is False:  # nodata first
        nan_sorted = np.take_along_axis(pd.isnull(values), idx, axis=axis)
        idx = np.take_along_axis(idx, np.argsort(~nan_sorted, kind="stable", axis=axis), axis=axis)
    return idx


def order(data: Any, asc: bool = True, nodata: bool | None = None, axis: int | None = None, **_: Any) -> Any:
    """Indices that sort ``data`` along ``axis``. With ``nodata=None`` a 1-D array loses its nodata
    positions (openEO); along an axis of a larger array they are kept and put last, so every position
    keeps the same number of values."""
    if isinstance(data, xr.DataArray):
        data = data.data
    if isinstance(data, list):
        data = np.asarray(data, dtype=object if any(v is None for v in data) else None)
        data = np.where(pd.isnull(data), np.nan, data).astype(float) if data.dtype == object else data
    if data.ndim <= 1:
        if data.size == 0:
            return np.asarray(data, dtype=int)
        values = np.asarray(data)
        idx = _order_nd(values, asc, nodata if nodata is not None else True, 0)
        return idx[~pd.isnull(values[idx])] if nodata is None else idx
    axis = data.ndim - 1 if axis is None else axis
    if isinstance(data, da.Array):
        data = data.rechunk({axis: -1})
        return data.map_blocks(_order_nd, asc, nodata, axis, dtype=np.int64)
    return _order_nd(data, asc, nodata, axis)
