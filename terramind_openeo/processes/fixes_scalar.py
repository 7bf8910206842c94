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
import math
import operator
from collections.abc import Callable
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from terramind_openeo.processes.errors import ProcessParameterInvalid
from terramind_openeo.processes.values import is_number, plain

_ARRAYS = (da.Array, xr.DataArray, xr.Dataset)
_SCALARS = (type(None), bool, int, float, str)  # JSON values that are not arrays or objects
_JSON = (*_SCALARS, list, tuple, dict)


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


def _json(*values: Any) -> bool:
    """True when no value is an array and all are JSON values (or numpy scalars): the openEO semantics
    apply; False for arrays (and other objects, such as typed dates): the package's implementation."""
    return not any(_is_array(v) for v in values) and all(isinstance(plain(v), _JSON) for v in values)


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


def _numeric(pid: str, arguments: dict[str, Any], nullable: tuple[str, ...], exact: bool = False,
             int_result: str | None = None, scalar: Callable | None = None) -> Any:
    """One numeric process on ``arguments`` (by parameter name): arrays to openeo-processes-dask, JSON values
    by the spec. ``nullable``: the parameters whose null gives null; ``exact``: Python ints stay ints (exact
    integer arithmetic), otherwise numbers become float64; ``int_result``: "spec" (the spec returns
    integers), "ints" (an integral result of integer inputs is an int) or None (as computed); ``scalar``:
    the implementation for JSON numbers where it is not the package's."""
    if not _json(*arguments.values()):
        return _standard(pid)(**_nulls_as_nan(arguments, nullable))
    arguments = {k: plain(v) for k, v in arguments.items()}
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
        result = plain((scalar or _standard(pid))(**arguments))
    if isinstance(result, bool):  # numpy keeps booleans in (int of true): numbers out
        return int(result)
    if isinstance(result, float) and math.isfinite(result) and result.is_integer() and (
            int_result == "spec" or (int_result == "ints" and ints and abs(result) < 2 ** 53)):
        return int(result)
    return result


# One function per process, parameters named as in its spec: null in, null out on JSON values, arrays as
# openeo-processes-dask. A trailing "_" where the id is a Python builtin or keyword.
def absolute(x: Any) -> Any:
    return _numeric("absolute", {"x": x}, ("x",), exact=True)


def sgn(x: Any) -> Any:
    return _numeric("sgn", {"x": x}, ("x",), exact=True)


def sqrt(x: Any) -> Any:
    return _numeric("sqrt", {"x": x}, ("x",))


def exp(p: Any) -> Any:
    return _numeric("exp", {"p": p}, ("p",))


def ln(x: Any) -> Any:
    return _numeric("ln", {"x": x}, ("x",))


def log(x: Any, base: Any) -> Any:
    return _numeric("log", {"x": x, "base": base}, ("x", "base"))


def sin(x: Any) -> Any:
    return _numeric("sin", {"x": x}, ("x",))


def cos(x: Any) -> Any:
    return _numeric("cos", {"x": x}, ("x",))


def tan(x: Any) -> Any:
    return _numeric("tan", {"x": x}, ("x",))


def arcsin(x: Any) -> Any:
    return _numeric("arcsin", {"x": x}, ("x",))


def arccos(x: Any) -> Any:
    return _numeric("arccos", {"x": x}, ("x",))


def arctan(x: Any) -> Any:
    return _numeric("arctan", {"x": x}, ("x",))


def sinh(x: Any) -> Any:
    return _numeric("sinh", {"x": x}, ("x",))


def cosh(x: Any) -> Any:
    return _numeric("cosh", {"x": x}, ("x",))


def tanh(x: Any) -> Any:
    return _numeric("tanh", {"x": x}, ("x",))


def arsinh(x: Any) -> Any:
    return _numeric("arsinh", {"x": x}, ("x",))


def arcosh(x: Any) -> Any:
    return _numeric("arcosh", {"x": x}, ("x",))


def artanh(x: Any) -> Any:
    return _numeric("artanh", {"x": x}, ("x",))


def arctan2(y: Any, x: Any) -> Any:
    return _numeric("arctan2", {"y": y, "x": x}, ("y", "x"))


def ceil(x: Any) -> Any:
    return _numeric("ceil", {"x": x}, ("x",), exact=True, int_result="spec")


def floor(x: Any) -> Any:
    return _numeric("floor", {"x": x}, ("x",), exact=True, int_result="spec")


def int_(x: Any) -> Any:
    return _numeric("int", {"x": x}, ("x",), exact=True, int_result="spec")


def round_(x: Any, p: Any = 0) -> Any:
    return _numeric("round", {"x": x, "p": p}, ("x",), exact=True, scalar=_round)


def add(x: Any, y: Any) -> Any:
    return _numeric("add", {"x": x, "y": y}, ("x", "y"), exact=True)


def subtract(x: Any, y: Any) -> Any:
    return _numeric("subtract", {"x": x, "y": y}, ("x", "y"), exact=True)


def multiply(x: Any, y: Any) -> Any:
    return _numeric("multiply", {"x": x, "y": y}, ("x", "y"), exact=True)


def divide(x: Any, y: Any) -> Any:
    return _numeric("divide", {"x": x, "y": y}, ("x", "y"))


def power(base: Any, p: Any) -> Any:
    return _numeric("power", {"base": base, "p": p}, ("base", "p"), int_result="ints")


def mod(x: Any, y: Any) -> Any:
    return _numeric("mod", {"x": x, "y": y}, ("x", "y"), int_result="ints", scalar=_mod)


def normalized_difference(x: Any, y: Any) -> Any:
    # the spec types x and y as numbers only, its tests pass null: propagated like everywhere else
    return _numeric("normalized_difference", {"x": x, "y": y}, ("x", "y"))


def clip(x: Any, min: Any, max: Any) -> Any:  # noqa: A002 - the spec's parameter names
    return _numeric("clip", {"x": x, "min": min, "max": max}, ("x",), exact=True)


def linear_scale_range(x: Any, inputMin: Any, inputMax: Any, outputMin: Any = 0,  # noqa: N803 - spec names
                       outputMax: Any = 1) -> Any:  # noqa: N803
    return _numeric("linear_scale_range", {"x": x, "inputMin": inputMin, "inputMax": inputMax,
                                           "outputMin": outputMin, "outputMax": outputMax}, ("x",))


def e() -> float:
    return math.e


# ------------------------------------------------------------------ comparisons
def _equal(x: Any, y: Any, delta: float | None, case_sensitive: bool) -> bool:
    """openEO ``eq`` of two non-null JSON values: strictly typed, IEEE 754 for NaN."""
    if is_number(x) and is_number(y):
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
    x, y = plain(x), plain(y)
    if x is None or y is None:
        return None
    return _equal(x, y, delta, case_sensitive)


def neq(x: Any, y: Any, delta: float | None = None, case_sensitive: bool = True) -> Any:
    if not _json(x, y):
        return _standard("neq")(**_nulls_as_nan({"x": x, "y": y}, ("x", "y")), delta=delta,
                                case_sensitive=case_sensitive)
    result = eq(x, y, delta, case_sensitive)
    return None if result is None else not result


def _compare(pid: str, x: Any, y: Any, op: Callable[[Any, Any], bool]) -> Any:
    """openEO ``gt``/``gte``/``lt``/``lte``: numbers only (others false), null in, null out on JSON values."""
    if not _json(x, y):
        return _standard(pid)(**_nulls_as_nan({"x": x, "y": y}, ("x", "y")))
    x, y = plain(x), plain(y)
    if x is None or y is None:
        return None
    if pid in ("gte", "lte") and _equal(x, y, None, True):  # equal values of any type
        return True
    if not (is_number(x) and is_number(y)):  # strings (dates too) and booleans: false
        return False
    return bool(op(x, y))


def gt(x: Any, y: Any) -> Any:
    return _compare("gt", x, y, operator.gt)


def gte(x: Any, y: Any) -> Any:
    return _compare("gte", x, y, operator.ge)


def lt(x: Any, y: Any) -> Any:
    return _compare("lt", x, y, operator.lt)


def lte(x: Any, y: Any) -> Any:
    return _compare("lte", x, y, operator.le)


def between(x: Any, min: float, max: float, exclude_max: bool = False) -> Any:
    if not _json(x, min, max):
        return _standard("between")(**_nulls_as_nan({"x": x, "min": min, "max": max}, ("x", "min", "max")),
                                    exclude_max=exclude_max)
    x, lo, hi = plain(x), plain(min), plain(max)
    if x is None or lo is None or hi is None:
        return None
    for name, value in (("min", lo), ("max", hi)):
        if not is_number(value):
            raise _invalid("between", name, "a number", value)
    if not is_number(x) or lo > hi:
        return False
    return bool(lo <= x and (x < hi if exclude_max else x <= hi))


# ------------------------------------------------------------------ logic
def _truth(pid: str, name: str, value: Any) -> bool | None:
    """A logical operand: ``None`` for no-data (null or NaN), numbers by their truth value as on arrays."""
    value = plain(value)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bool, int, float)):
        return bool(value)
    raise _invalid(pid, name, "a boolean or null", value)


def _logic(pid: str, x: Any, y: Any, table: Callable[[bool | None, bool | None], bool | None]) -> Any:
    """openEO ``and``/``or``/``xor``: the spec's truth table with no-data on JSON values."""
    if not _json(x, y):
        return _standard(pid)(**_nulls_as_nan({"x": x, "y": y}, ("x", "y")))
    return table(_truth(pid, "x", x), _truth(pid, "y", y))


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


def and_(x: Any, y: Any) -> Any:
    return _logic("and", x, y, _and3)


def or_(x: Any, y: Any) -> Any:
    return _logic("or", x, y, _or3)


def xor(x: Any, y: Any) -> Any:
    return _logic("xor", x, y, _xor3)


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
    x = plain(x)
    if is_number(x):
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
    value = plain(value)
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
        if not isinstance(plain(item), _SCALARS):
            raise _invalid("text_concat", "data", "an array of strings, numbers, booleans or null", item)
    if not isinstance(plain(separator), _SCALARS):
        raise _invalid("text_concat", "separator", "a string, number, boolean or null", separator)
    return _text(separator).join(_text(v) for v in data)


def _text_test(pid: str, data: Any, pattern: Any, case_sensitive: bool, test: Callable[[str, str], bool]) -> Any:
    """openEO ``text_begins``/``text_ends``/``text_contains``: null data gives null (an empty text is a text)."""
    data, pattern = plain(data), plain(pattern)
    if data is None:
        return None
    if not isinstance(data, str):
        raise _invalid(pid, "data", "a string or null", data)
    if not isinstance(pattern, str):
        raise _invalid(pid, "pattern", "a string", pattern)
    if not case_sensitive:
        data, pattern = data.lower(), pattern.lower()
    return test(data, pattern)


def text_begins(data: Any, pattern: Any, case_sensitive: bool = True) -> Any:
    return _text_test("text_begins", data, pattern, case_sensitive, str.startswith)


def text_ends(data: Any, pattern: Any, case_sensitive: bool = True) -> Any:
    return _text_test("text_ends", data, pattern, case_sensitive, str.endswith)


def text_contains(data: Any, pattern: Any, case_sensitive: bool = True) -> Any:
    return _text_test("text_contains", data, pattern, case_sensitive, lambda text, part: part in text)


# ------------------------------------------------------------------ registration
# id -> "module:function"
FIXES: dict[str, str] = {pid: f"{__name__}:{pid}_" if pid in ("and", "or", "not", "if", "int", "round") else
                         f"{__name__}:{pid}" for pid in sorted((
                             "absolute", "sgn", "sqrt", "exp", "ln", "log", "sin", "cos", "tan", "arcsin", "arccos",
                             "arctan", "sinh", "cosh", "tanh", "arsinh", "arcosh", "artanh", "arctan2", "ceil",
                             "floor", "int", "round", "add", "subtract", "multiply", "divide", "power", "mod",
                             "normalized_difference", "clip", "linear_scale_range", "e", "eq", "neq", "gt", "gte",
                             "lt", "lte", "between", "and", "or", "xor", "not", "if", "is_nan", "is_nodata",
                             "text_concat", "text_begins", "text_ends", "text_contains"))}
