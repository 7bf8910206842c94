"""Standard scalar processes (arithmetic, comparison, logic, math, text) with the openEO null and type
semantics that the openeo-processes-dask implementations lack.

Registered through ``FIXES`` (see ``registry.FIX_MODULES``); the standard specs are kept.

Every replacement dispatches on its arguments:

- **arrays** (numpy arrays of one or more dimensions, dask arrays, xarray objects: what ``apply``,
  ``reduce_dimension``, ``apply_dimension`` ... hand their callbacks, or cubes given directly) go to the
  openeo-processes-dask implementation, unchanged (lazy, same dtypes); the only difference is that a
  ``null`` next to an array is given to it as NaN (the package raised ``TypeError`` on ``array + None``).
  The one deliberate change on arrays is ``is_nodata``, which answered a single ``false`` for a whole
  array and now marks its no-data (NaN) elements;
- **JSON values** (``null``, booleans, numbers, strings, and numpy scalars or 0-d arrays of them) follow
  the openEO specs: ``null`` in gives ``null`` out for arithmetic and math, comparisons are strictly typed
  (numbers only for ``gt``/``lt``..., strings and dates never compare as numbers), ``and``/``or`` follow the
  three-valued truth tables, ``mod`` by zero or by infinity as specified, ``is_nan`` is true for
  everything that is not a number, ``text_concat`` separates with ``""`` by default;
- anything else (dates typed by a caller, ...) goes to the package's implementation as before.

A value of the wrong type is a ``ProcessParameterInvalid`` naming the argument, not a ``TypeError``.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from terramind_openeo.processes.errors import ProcessParameterInvalid

_ARRAYS = (da.Array, xr.DataArray, xr.Dataset)
_SCALARS = (type(None), bool, int, float, str)  # JSON values that are not arrays or objects
_JSON = (*_SCALARS, list, tuple, dict)
_EMPTY = inspect.Parameter.empty


@functools.lru_cache(maxsize=1)
def _package() -> dict[str, Callable]:
    from terramind_openeo.processes.registry import _standard_implementations

    return _standard_implementations()


def _standard(pid: str) -> Callable:
    """The openeo-processes-dask implementation of ``pid``."""
    return _package()[pid]


# ------------------------------------------------------------------ values
def _is_array(value: Any) -> bool:
    return isinstance(value, _ARRAYS) or (isinstance(value, np.ndarray) and value.ndim > 0)


def _plain(value: Any) -> Any:
    """numpy booleans, numbers and strings (scalars, 0-d arrays) as Python values; the rest unchanged."""
    if (isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0)) \
            and value.dtype.kind in "biufU":
        return value.item()
    return value


def _json(*values: Any) -> bool:
    """True when no value is an array and all are JSON values (or numpy scalars): the openEO semantics
    apply; False for arrays (and other objects, such as typed dates): the package's implementation."""
    return not any(_is_array(v) for v in values) and all(isinstance(_plain(v), _JSON) for v in values)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {value!r:.40}"
    if isinstance(value, (list, tuple)):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"{type(value).__name__} {value!r:.40}"


def _invalid(pid: str, name: str, expected: str, value: Any) -> ProcessParameterInvalid:
    return ProcessParameterInvalid(f"process '{pid}': '{name}' must be {expected}, got {_describe(value)}",
                                   argument=name)


def _nulls_as_nan(arguments: dict, nullable: tuple[str, ...]) -> dict:
    """Arguments for the package's array implementation: a ``null`` beside an array is NaN."""
    if not any(_is_array(v) for v in arguments.values()):
        return arguments
    return {k: (np.nan if v is None and k in nullable else v) for k, v in arguments.items()}


def _signature(params: str) -> inspect.Signature:
    """``"x p=0"`` -> ``(x, p=0)``."""
    out = []
    for item in params.split():
        name, _, default = item.partition("=")
        out.append(inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                     default=_EMPTY if not default else float(default) if "." in default
                                     else int(default)))
    return inspect.Signature(out)


# ------------------------------------------------------------------ arithmetic and math
def _mod(x: float, y: float) -> float:
    """openEO ``mod``: the sign of the divisor; by 0: +-infinity (NaN for 0); by +-infinity: ``x``."""
    if y == 0:
        return x / y  # numpy float64 (errors ignored): inf, -inf or nan
    if math.isinf(y) and math.isfinite(x):
        return x
    return np.mod(x, y)


def _round(x: float, p: float) -> float:
    """``round`` to ``p`` decimals (half to even); ``p`` given as an integral float (``1.0``) is accepted."""
    if not float(p).is_integer():
        raise _invalid("round", "p", "an integer", p)
    return np.around(x, int(p))


# id -> (parameters, nullable parameters, how numbers are handed over, how results are typed)
#   exact: Python ints stay ints (exact integer arithmetic), otherwise all numbers become float64
#   int_result: "spec" (the spec returns integers), "ints" (an integral result of integer inputs is an
#   int), None (as computed)
_NUMERIC: dict[str, tuple[str, tuple[str, ...], bool, str | None, Callable | None]] = {}


def _numeric_table() -> None:
    unary = ("sqrt", "exp", "ln", "sin", "cos", "tan", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
             "arsinh", "arcosh", "artanh")
    for pid in unary:
        param = "p" if pid == "exp" else "x"
        _NUMERIC[pid] = (param, (param,), False, None, None)
    for pid in ("absolute", "sgn"):
        _NUMERIC[pid] = ("x", ("x",), True, None, None)
    for pid in ("ceil", "floor", "int"):
        _NUMERIC[pid] = ("x", ("x",), True, "spec", None)
    _NUMERIC["round"] = ("x p=0", ("x",), True, None, _round)
    _NUMERIC["log"] = ("x base", ("x", "base"), False, None, None)
    for pid in ("add", "subtract", "multiply"):
        _NUMERIC[pid] = ("x y", ("x", "y"), True, None, None)
    _NUMERIC["divide"] = ("x y", ("x", "y"), False, None, None)
    _NUMERIC["power"] = ("base p", ("base", "p"), False, "ints", None)
    _NUMERIC["mod"] = ("x y", ("x", "y"), False, "ints", _mod)
    _NUMERIC["arctan2"] = ("y x", ("y", "x"), False, None, None)
    # the spec types x and y as numbers only, its tests pass null: propagated like everywhere else
    _NUMERIC["normalized_difference"] = ("x y", ("x", "y"), False, None, None)
    _NUMERIC["clip"] = ("x min max", ("x",), True, None, None)
    _NUMERIC["linear_scale_range"] = ("x inputMin inputMax outputMin=0 outputMax=1", ("x",), False, None, None)


_numeric_table()


def _numeric(pid: str) -> Callable:
    params, nullable, exact, int_result, scalar = _NUMERIC[pid]
    sig = _signature(params)

    def process(*args: Any, **kwargs: Any) -> Any:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        if not _json(*arguments.values()):
            return _standard(pid)(**_nulls_as_nan(arguments, nullable))
        arguments = {k: _plain(v) for k, v in arguments.items()}
        for name, value in arguments.items():
            if value is None and name not in nullable:
                raise _invalid(pid, name, "a number", value)
            if value is not None and not isinstance(value, (int, float)):  # booleans count as 0/1, as on arrays
                raise _invalid(pid, name, "a number or null" if name in nullable else "a number", value)
        if any(arguments[name] is None for name in nullable):
            return None
        ints = all(isinstance(v, int) for v in arguments.values())
        if not exact:
            arguments = {k: np.float64(v) for k, v in arguments.items()}
        with np.errstate(all="ignore"):
            result = _plain((scalar or _standard(pid))(**arguments))
        if isinstance(result, bool):  # numpy keeps booleans in (int of true): numbers out
            return int(result)
        if isinstance(result, float) and math.isfinite(result) and result.is_integer() and (
                int_result == "spec" or (int_result == "ints" and ints and abs(result) < 2 ** 53)):
            return int(result)
        return result

    process.__signature__ = sig
    process.__name__ = process.__qualname__ = f"{pid}_"
    process.__doc__ = f"openEO ``{pid}``: null in, null out on JSON values; arrays as openeo-processes-dask."
    return process


def e() -> float:
    return math.e


# ------------------------------------------------------------------ comparisons
def _equal(x: Any, y: Any, delta: float | None, case_sensitive: bool) -> bool:
    """openEO ``eq`` of two non-null JSON values: strictly typed, IEEE 754 for NaN."""
    if _is_number(x) and _is_number(y):
        if x == y:
            return True
        return bool(delta) and abs(x - y) <= delta
    if isinstance(x, bool) and isinstance(y, bool):
        return x == y
    if isinstance(x, str) and isinstance(y, str):
        return x == y if case_sensitive else x.lower() == y.lower()
    return False


def eq(x: Any, y: Any, delta: float | None = None, case_sensitive: bool = True) -> Any:
    if not _json(x, y):
        return _standard("eq")(**_nulls_as_nan({"x": x, "y": y}, ("x", "y")), delta=delta,
                               case_sensitive=case_sensitive)
    x, y = _plain(x), _plain(y)
    if x is None or y is None:
        return None
    return _equal(x, y, delta, case_sensitive)


def neq(x: Any, y: Any, delta: float | None = None, case_sensitive: bool = True) -> Any:
    if not _json(x, y):
        return _standard("neq")(**_nulls_as_nan({"x": x, "y": y}, ("x", "y")), delta=delta,
                                case_sensitive=case_sensitive)
    result = eq(x, y, delta, case_sensitive)
    return None if result is None else not result


_ORDER = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b,
          "lte": lambda a, b: a <= b}


def _ordering(pid: str) -> Callable:
    op = _ORDER[pid]

    def process(x: Any, y: Any) -> Any:
        if not _json(x, y):
            return _standard(pid)(**_nulls_as_nan({"x": x, "y": y}, ("x", "y")))
        x, y = _plain(x), _plain(y)
        if x is None or y is None:
            return None
        if pid in ("gte", "lte") and _equal(x, y, None, True):  # equal values of any type
            return True
        if not (_is_number(x) and _is_number(y)):  # strings (dates too) and booleans: false
            return False
        return bool(op(x, y))

    process.__name__ = process.__qualname__ = pid
    process.__doc__ = f"openEO ``{pid}``: numbers only (others false), null in, null out on JSON values."
    return process


gt, gte, lt, lte = (_ordering(pid) for pid in ("gt", "gte", "lt", "lte"))


def between(x: Any, min: float, max: float, exclude_max: bool = False) -> Any:
    if not _json(x, min, max):
        return _standard("between")(**_nulls_as_nan({"x": x, "min": min, "max": max}, ("x", "min", "max")),
                                    exclude_max=exclude_max)
    x, lo, hi = _plain(x), _plain(min), _plain(max)
    if x is None or lo is None or hi is None:
        return None
    for name, value in (("min", lo), ("max", hi)):
        if not _is_number(value):
            raise _invalid("between", name, "a number", value)
    if not _is_number(x) or lo > hi:
        return False
    return bool(lo <= x and (x < hi if exclude_max else x <= hi))


# ------------------------------------------------------------------ logic
def _truth(pid: str, name: str, value: Any) -> bool | None:
    """A logical operand: ``None`` for no-data (null or NaN), numbers by their truth value as on arrays."""
    value = _plain(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bool, int, float)):
        return bool(value)
    raise _invalid(pid, name, "a boolean or null", value)


def _logic(pid: str, scalar: Callable[[bool | None, bool | None], bool | None]) -> Callable:
    def process(x: Any, y: Any) -> Any:
        if not _json(x, y):
            return _standard(pid)(**_nulls_as_nan({"x": x, "y": y}, ("x", "y")))
        return scalar(_truth(pid, "x", x), _truth(pid, "y", y))

    process.__name__ = process.__qualname__ = f"{pid}_"
    process.__doc__ = f"openEO ``{pid}``: the spec's truth table with no-data on JSON values."
    return process


def _and3(x: bool | None, y: bool | None) -> bool | None:
    if x is False or y is False:
        return False
    return None if x is None or y is None else True


def _or3(x: bool | None, y: bool | None) -> bool | None:
    if x is True or y is True:
        return True
    return None if x is None or y is None else False


def _xor3(x: bool | None, y: bool | None) -> bool | None:
    return None if x is None or y is None else x != y


and_ = _logic("and", _and3)
or_ = _logic("or", _or3)
xor = _logic("xor", _xor3)


def not_(x: Any) -> Any:
    if not _json(x):
        return _standard("not")(x=np.nan if x is None else x)
    value = _truth("not", "x", x)
    return None if value is None else not value


def if_(value: Any, accept: Any, reject: Any = None) -> Any:
    """``accept`` if ``value`` is true, else ``reject`` (default null), returned as they are; an array of
    conditions selects element-wise as the package does (``reject`` NaN by default there)."""
    if _is_array(value):
        return _standard("if")(value=value, accept=accept, reject=np.nan if reject is None else reject)
    return accept if _truth("if", "value", value) is True else reject


# ------------------------------------------------------------------ is_*
def is_nan(x: Any) -> Any:
    """True for NaN and for everything that is not a number (null, booleans, strings, arrays, objects)."""
    if _is_array(x):
        return _standard("is_nan")(x=x)
    x = _plain(x)
    if _is_number(x):
        return isinstance(x, float) and math.isnan(x)
    if isinstance(x, (type(None), bool, str, list, tuple, dict)):
        return True
    return _standard("is_nan")(x=x)


def is_nodata(x: Any) -> Any:
    """True for null; on an array, element-wise for its no-data values (NaN in our cubes)."""
    if isinstance(x, (xr.DataArray, xr.Dataset)):
        return x.isnull()
    if _is_array(x):
        from openeo_processes_dask.process_implementations.cubes.utils import isnull

        return isnull(x)
    return x is None


# ------------------------------------------------------------------ text
def _text(value: Any) -> str:
    """Text representation of a JSON value as ``text_concat`` specifies (lower case null/true/false)."""
    value = _plain(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def text_concat(data: Any, separator: Any = "") -> str:
    if isinstance(data, (np.ndarray, da.Array, xr.DataArray)):
        data = np.asarray(data).tolist()
    if not isinstance(data, (list, tuple)):
        raise _invalid("text_concat", "data", "an array", data)
    for item in data:
        if not isinstance(_plain(item), _SCALARS):
            raise _invalid("text_concat", "data", "an array of strings, numbers, booleans or null", item)
    if not isinstance(_plain(separator), _SCALARS):
        raise _invalid("text_concat", "separator", "a string, number, boolean or null", separator)
    return _text(separator).join(_text(v) for v in data)


def _text_test(pid: str, test: Callable[[str, str], bool]) -> Callable:
    def process(data: Any, pattern: Any, case_sensitive: bool = True) -> Any:
        data, pattern = _plain(data), _plain(pattern)
        if data is None:
            return None
        if not isinstance(data, str):
            raise _invalid(pid, "data", "a string or null", data)
        if not isinstance(pattern, str):
            raise _invalid(pid, "pattern", "a string", pattern)
        if not case_sensitive:
            data, pattern = data.lower(), pattern.lower()
        return test(data, pattern)

    process.__name__ = process.__qualname__ = pid
    process.__doc__ = f"openEO ``{pid}``: null data gives null (an empty text is a text)."
    return process


text_begins = _text_test("text_begins", str.startswith)
text_ends = _text_test("text_ends", str.endswith)
text_contains = _text_test("text_contains", lambda data, pattern: pattern in data)


# ------------------------------------------------------------------ registration
for _pid in _NUMERIC:
    globals()[f"{_pid}_"] = _numeric(_pid)

_BY_NAME = {**{pid: f"{pid}_" for pid in _NUMERIC},
            **{pid: pid for pid in ("e", "eq", "neq", "gt", "gte", "lt", "lte", "between", "xor", "is_nan",
                                    "is_nodata", "text_concat", "text_begins", "text_ends", "text_contains")},
            "and": "and_", "or": "or_", "not": "not_", "if": "if_"}

# id -> "module:function"
FIXES: dict[str, str] = {pid: f"{__name__}:{name}" for pid, name in sorted(_BY_NAME.items())}
