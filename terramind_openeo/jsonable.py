"""The one conversion of process results into JSON-ready Python values.

A graph's plain result (no ``save_result``), a ``save_result`` in format JSON and the API's answers all go
through :func:`to_jsonable`. Labelled arrays become nested lists, numpy scalars Python numbers, dates ISO
strings, anything else its ``str``. Non-finite numbers: the API keeps them (its answers carry the
non-standard ``NaN``/``Infinity`` tokens that Python and the openEO client read); a JSON file holds
``null`` instead (``nan_as_null``), so that every JSON parser reads it. No numpy import: duck typing.
"""

from __future__ import annotations

import math
from typing import Any


def to_jsonable(value: Any, *, nan_as_null: bool = False) -> Any:
    """``value`` as dicts, lists, strings, numbers, booleans and None."""
    if hasattr(value, "dims") and hasattr(value, "values"):  # xarray.DataArray
        value = value.values
    if hasattr(value, "compute") and hasattr(value, "dask"):  # dask array
        value = value.compute()
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, nan_as_null=nan_as_null) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, nan_as_null=nan_as_null) for v in value]
    if isinstance(value, float):
        return None if nan_as_null and not math.isfinite(value) else value
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if hasattr(value, "root"):  # openeo-pg-parser-networkx's date types
        return to_jsonable(value.root, nan_as_null=nan_as_null)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)
