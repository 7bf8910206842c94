"""Scalar processes (``processes/fixes_scalar.py``): the openEO null/type semantics on JSON values, and the
same processes on cubes in callbacks, where they must behave exactly as the openeo-processes-dask
implementations did before (values, dtypes, laziness)."""

from __future__ import annotations

import math

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from terramind_openeo.processes import execute_process_graph
from terramind_openeo.processes import fixes_scalar as fs
from terramind_openeo.processes.errors import OpenEOError, ProcessParameterInvalid
from terramind_openeo.processes.graph import GraphEvaluator
from terramind_openeo.processes.registry import ProcessDef, get_process

INF, NAN = math.inf, math.nan
NODATA = None


def run(process_id: str, **arguments):
    """One node, as the conformance suite's HTTP runner sends it (``POST /result`` without save_result)."""
    pg = {"process_graph": {"node": {"process_id": process_id, "arguments": arguments, "result": True}}}
    return execute_process_graph(pg, None, catalog=None).value


def same(result, expected) -> bool:
    if expected is None or isinstance(expected, bool):
        return result is expected
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(result, float) and math.isnan(result)
    if isinstance(expected, (int, float)):
        return (isinstance(result, (int, float)) and not isinstance(result, bool)
                and result == pytest.approx(expected, rel=1e-9, abs=1e-12))
    return result == expected


# ------------------------------------------------------------------ JSON values, per spec (and its tests)
ARITHMETIC = [
    ("add", {"x": 1, "y": 2}, 3), ("add", {"x": NODATA, "y": 1}, None), ("add", {"x": 1, "y": NODATA}, None),
    ("add", {"x": NODATA, "y": NODATA}, None), ("add", {"x": -0.5, "y": 0.25}, -0.25),
    ("add", {"x": INF, "y": -INF}, NAN),
    ("subtract", {"x": -2, "y": 4}, -6), ("subtract", {"x": 1, "y": NODATA}, None),
    ("subtract", {"x": NODATA, "y": -1}, None),
    ("multiply", {"x": 5, "y": 2.5}, 12.5), ("multiply", {"x": NODATA, "y": 1}, None),
    ("multiply", {"x": 1, "y": NODATA}, None), ("multiply", {"x": NODATA, "y": NODATA}, None),
    ("multiply", {"x": INF, "y": 0}, NAN),
    ("divide", {"x": 2, "y": -1}, -2), ("divide", {"x": NODATA, "y": 1}, None), ("divide", {"x": 1, "y": 0}, INF),
    ("divide", {"x": -1, "y": 0}, -INF), ("divide", {"x": 0, "y": 0}, NAN),
    ("power", {"base": 3, "p": 3}, 27), ("power", {"base": 5, "p": -1}, 0.2), ("power", {"base": -3.5, "p": 5}, -525.21875),
    ("power", {"base": 1, "p": NODATA}, None), ("power", {"base": NODATA, "p": 2}, None),
    ("power", {"base": 0, "p": -1}, INF),
    ("mod", {"x": 27, "y": 5}, 2), ("mod", {"x": -27, "y": 5}, 3), ("mod", {"x": 3.14, "y": -2}, -0.86),
    ("mod", {"x": -27, "y": -5}, -2), ("mod", {"x": 2, "y": 0}, INF), ("mod", {"x": -2, "y": 0}, -INF),
    ("mod", {"x": 0, "y": 0}, NAN), ("mod", {"x": NAN, "y": 2}, NAN), ("mod", {"x": INF, "y": 2}, NAN),
    ("mod", {"x": 2, "y": INF}, 2), ("mod", {"x": 2, "y": -INF}, 2), ("mod", {"x": -INF, "y": -INF}, NAN),
    ("mod", {"x": -INF, "y": NODATA}, None), ("mod", {"x": NODATA, "y": 2}, None),
    ("mod", {"x": NODATA, "y": NODATA}, None),
    ("absolute", {"x": -2.5}, 2.5), ("absolute", {"x": NODATA}, None),
    ("sgn", {"x": -2}, -1), ("sgn", {"x": 3.5}, 1), ("sgn", {"x": 0}, 0), ("sgn", {"x": NODATA}, None),
    ("sqrt", {"x": 9}, 3), ("sqrt", {"x": -1}, NAN), ("sqrt", {"x": NODATA}, None),
    ("exp", {"p": 1}, math.e), ("exp", {"p": NODATA}, None),
    ("ln", {"x": 10}, 2.30258509301), ("ln", {"x": 0}, -INF), ("ln", {"x": NODATA}, None),
    ("log", {"x": 100, "base": 10}, 2), ("log", {"x": 2, "base": 2}, 1), ("log", {"x": NODATA, "base": 10}, None),
    ("ceil", {"x": -1.5}, -1), ("ceil", {"x": -999.99999999999}, -999), ("ceil", {"x": NODATA}, None),
    ("floor", {"x": -1.5}, -2), ("floor", {"x": NODATA}, None),
    ("int", {"x": -3.5}, -3), ("int", {"x": 4294967296}, 4294967296), ("int", {"x": NODATA}, None),
    ("round", {"x": -2.5}, -2), ("round", {"x": -3.5}, -4), ("round", {"x": 0.35, "p": 1}, 0.4),
    ("round", {"x": 1234.5, "p": -2}, 1200), ("round", {"x": NODATA}, None), ("round", {"x": 3.56, "p": 1.0}, 3.6),
    ("arctan2", {"y": 1, "x": -1}, 2.3561944902), ("arctan2", {"y": 1, "x": -INF}, math.pi),
    ("arctan2", {"y": NODATA, "x": 1}, None), ("arctan2", {"y": 1, "x": NODATA}, None),
    ("arctan2", {"y": NODATA, "x": NODATA}, None),
    ("clip", {"x": 20, "min": -10, "max": 10}, 10), ("clip", {"x": -INF, "min": -1, "max": 1}, -1),
    ("clip", {"x": NODATA, "min": -1, "max": 1}, None),
    ("linear_scale_range", {"x": 0.3, "inputMin": -1, "inputMax": 1, "outputMin": 0, "outputMax": 255}, 165.75),
    ("linear_scale_range", {"x": 25.5, "inputMin": 0, "inputMax": 255}, 0.1),
    ("linear_scale_range", {"x": INF, "inputMin": 0, "inputMax": 100}, 1),
    ("linear_scale_range", {"x": NODATA, "inputMin": 0, "inputMax": 100}, None),
    ("normalized_difference", {"x": 2, "y": 1}, 0.33333333333), ("normalized_difference", {"x": INF, "y": 1}, NAN),
    ("e", {}, math.e), ("pi", {}, math.pi),
] + [(pid, {"x": NODATA}, None) for pid in ("sin", "cos", "tan", "arcsin", "arccos", "arctan", "sinh", "cosh",
                                             "tanh", "arsinh", "arcosh", "artanh")] + [
    ("sin", {"x": 0}, 0), ("arcosh", {"x": 1}, 0), ("artanh", {"x": 1}, INF),
]

COMPARISON = [
    ("eq", {"x": 1, "y": 1.0}, True), ("eq", {"x": 1, "y": "1"}, False), ("eq", {"x": 0, "y": False}, False),
    ("eq", {"x": 1.02, "y": 1, "delta": 0.01}, False), ("eq", {"x": -1, "y": -1.001, "delta": 0.01}, True),
    ("eq", {"x": "Test", "y": "test"}, False), ("eq", {"x": "Ä", "y": "ä", "case_sensitive": False}, True),
    ("eq", {"x": "2018-01-01T00:00:00Z", "y": "2018-01-01T00:00:00+00:00"}, False),
    ("eq", {"x": 1, "y": NODATA}, None), ("eq", {"x": NODATA, "y": NODATA}, None),
    ("eq", {"x": NAN, "y": NAN}, False), ("eq", {"x": INF, "y": INF}, True), ("eq", {"x": INF, "y": INF, "delta": 1}, True),
    ("neq", {"x": 1, "y": "1"}, True), ("neq", {"x": 1, "y": 1.0}, False), ("neq", {"x": 1, "y": NODATA}, None),
    ("neq", {"x": NAN, "y": NAN}, True),
    ("gt", {"x": 2, "y": "1"}, False), ("gt", {"x": "b", "y": "a"}, False), ("gt", {"x": True, "y": 0}, False),
    ("gt", {"x": "2018-01-02T00:00:00Z", "y": "2018-01-01T00:00:00Z"}, False), ("gt", {"x": 1, "y": NODATA}, None),
    ("gt", {"x": NODATA, "y": NODATA}, None), ("gt", {"x": 2, "y": 1}, True), ("gt", {"x": INF, "y": -INF}, True),
    ("gte", {"x": 1, "y": 1.0}, True), ("gte", {"x": 2, "y": "1"}, False), ("gte", {"x": 1, "y": "1"}, False),
    ("gte", {"x": "b", "y": "a"}, False), ("gte", {"x": "a", "y": "a"}, True), ("gte", {"x": True, "y": False}, False),
    ("gte", {"x": True, "y": 0}, False), ("gte", {"x": 1, "y": NODATA}, None), ("gte", {"x": NAN, "y": NAN}, False),
    ("gte", {"x": INF, "y": INF}, True),
    ("lt", {"x": "1", "y": 2}, False), ("lt", {"x": "a", "y": "b"}, False), ("lt", {"x": 0, "y": True}, False),
    ("lt", {"x": False, "y": True}, False), ("lt", {"x": 1, "y": 2}, True), ("lt", {"x": NODATA, "y": 1}, None),
    ("lte", {"x": "1", "y": 2}, False), ("lte", {"x": 1, "y": "1"}, False), ("lte", {"x": "a", "y": "b"}, False),
    ("lte", {"x": "2018-01-01T00:00:00Z", "y": "2018-01-02T00:00:00Z"}, False), ("lte", {"x": 0, "y": True}, False),
    ("lte", {"x": 1, "y": NODATA}, None), ("lte", {"x": -0.6, "y": -0.5}, True),
    ("between", {"x": NODATA, "min": 0, "max": 1}, None), ("between", {"x": "0.5", "min": 0, "max": 1}, False),
    ("between", {"x": True, "min": 0, "max": 1}, False), ("between", {"x": [1, 2, 3], "min": 0, "max": 4}, False),
    ("between", {"x": 1, "min": 0, "max": 1}, True), ("between", {"x": 1, "min": 0, "max": 1, "exclude_max": True}, False),
    ("between", {"x": 0.5, "min": 1, "max": 0}, False),
]

_TRUTH = {"and": [[None, False, None], [False, False, False], [None, False, True]],
          "or": [[None, None, True], [None, False, True], [True, True, True]],
          "xor": [[None, None, None], [None, False, True], [None, True, False]]}
LOGIC = [(pid, {"x": x, "y": y}, table[i][j]) for pid, table in _TRUTH.items()
         for i, x in enumerate((None, False, True)) for j, y in enumerate((None, False, True))] + [
    ("not", {"x": NODATA}, None), ("not", {"x": False}, True), ("not", {"x": True}, False),
    ("if", {"value": True, "accept": "A", "reject": "B"}, "A"), ("if", {"value": NODATA, "accept": "A", "reject": "B"}, "B"),
    ("if", {"value": False, "accept": [1, 2, 3], "reject": [4, 5, 6]}, [4, 5, 6]),
    ("if", {"value": True, "accept": 123}, 123), ("if", {"value": False, "accept": 1}, None),
]

TYPES_AND_TEXT = [
    ("is_nan", {"x": 1}, False), ("is_nan", {"x": NAN}, True), ("is_nan", {"x": INF}, False),
    ("is_nan", {"x": True}, True), ("is_nan", {"x": "NaN"}, True), ("is_nan", {"x": []}, True),
    ("is_nan", {"x": {}}, True), ("is_nan", {"x": [NAN]}, True), ("is_nan", {"x": NODATA}, True),
    ("is_nodata", {"x": NODATA}, True), ("is_nodata", {"x": 1}, False), ("is_nodata", {"x": "Test"}, False),
    ("is_nodata", {"x": [NODATA, NODATA]}, False),
    ("is_infinite", {"x": -INF}, True), ("is_infinite", {"x": "inf"}, False), ("is_infinite", {"x": NODATA}, False),
    ("text_concat", {"data": ["Hello", "World"], "separator": " "}, "Hello World"),
    ("text_concat", {"data": [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]}, "1234567890"),
    ("text_concat", {"data": [NODATA, True, False, 1, -1.5, "ß"], "separator": "\n"}, "null\ntrue\nfalse\n1\n-1.5\nß"),
    ("text_concat", {"data": [2, 0], "separator": 1}, "210"), ("text_concat", {"data": []}, ""),
    ("text_begins", {"data": "Lorem ipsum", "pattern": "lorem", "case_sensitive": False}, True),
    ("text_begins", {"data": NODATA, "pattern": "null"}, None), ("text_begins", {"data": "", "pattern": ""}, True),
    ("text_ends", {"data": "Ä", "pattern": "ä", "case_sensitive": False}, True),
    ("text_contains", {"data": "ÄÖÜ", "pattern": "ö", "case_sensitive": False}, True),
    ("text_contains", {"data": NODATA, "pattern": "null"}, None),
]


@pytest.mark.parametrize(("process_id", "arguments", "expected"), ARITHMETIC + COMPARISON + LOGIC + TYPES_AND_TEXT,
                         ids=lambda v: v if isinstance(v, str) else "")
def test_json_values_through_the_engine(process_id, arguments, expected):
    result = run(process_id, **arguments)
    assert same(result, expected), f"{process_id}({arguments}) = {result!r}, expected {expected!r}"


def test_integers_stay_integers():
    assert type(run("add", x=1, y=2)) is int and type(run("multiply", x=3, y=-4)) is int
    assert type(run("mod", x=27, y=5)) is int and type(run("power", base=2, p=10)) is int
    assert type(run("ceil", x=1.5)) is int and type(run("int", x=-3.5)) is int
    assert type(run("add", x=1, y=2.0)) is float and type(run("divide", x=4, y=2)) is float


def test_numpy_scalars_count_as_json_values():
    """What array_element hands a callback on a 1-D array: numpy scalars and 0-d arrays."""
    assert fs.add(np.float32(1.5), None) is None
    assert fs.gt(np.int64(2), np.array(1.0)) is True and fs.gt(np.str_("b"), "a") is False
    assert fs.and_(np.bool_(True), None) is None and fs.or_(np.float64(NAN), np.bool_(True)) is True
    assert fs.is_nan(np.float32("nan")) is True and fs.is_nan(np.int16(3)) is False
    assert fs.text_concat(np.array(["a", "b"]), "-") == "a-b"


def test_normalized_difference_null_outside_the_spec_schema():
    """The spec types x and y as numbers (no null) while its tests pass null: validation follows the schema,
    the implementation propagates a null that reaches it (from a parameter or another node)."""
    with pytest.raises(ProcessParameterInvalid, match="argument 'x'"):
        run("normalized_difference", x=None, y=1)
    assert fs.normalized_difference(x=None, y=1) is None
    pg = {"process_graph": {"node": {"process_id": "normalized_difference",
                                     "arguments": {"x": {"from_parameter": "v"}, "y": 1}, "result": True}}}
    assert execute_process_graph(pg, None, catalog=None, parameters={"v": None}).value is None


@pytest.mark.parametrize(("process_id", "arguments", "argument"), [
    ("add", {"x": "a", "y": 1}, "x"), ("power", {"base": 2, "p": [1]}, "p"), ("sqrt", {"x": {"a": 1}}, "x"),
    ("clip", {"x": 1, "min": None, "max": 2}, "min"), ("and", {"x": True, "y": "yes"}, "y"),
    ("between", {"x": 1, "min": "0", "max": 2}, "min"), ("text_concat", {"data": "abc"}, "data"),
    ("text_begins", {"data": 1, "pattern": "1"}, "data"), ("if", {"value": "yes", "accept": 1}, "value"),
    ("round", {"x": 1.5, "p": 0.5}, "p"),
])
def test_wrong_types_are_openeo_errors_naming_the_argument(process_id, arguments, argument):
    """Values that pass validation only because they come from a parameter (not a literal)."""
    pg = {"process_graph": {"node": {"process_id": process_id, "result": True, "arguments": {
        k: {"from_parameter": k} for k in arguments}}}}
    with pytest.raises(ProcessParameterInvalid) as err:
        execute_process_graph(pg, None, catalog=None, parameters=arguments)
    assert err.value.argument == argument and f"argument '{argument}'" in str(err.value)
    assert err.value.status == 400


def test_clip_min_max_swapped_is_still_an_error():
    with pytest.raises(OpenEOError) as err:
        run("clip", x=1, min=2, max=1)
    assert err.value.code == "MinMaxSwapped" and err.value.status == 400


def test_registered_replacements():
    assert set(fs.FIXES) >= {"add", "mod", "eq", "gt", "between", "and", "or", "xor", "not", "if", "is_nan",
                             "is_nodata", "text_concat", "e", "normalized_difference", "linear_scale_range"}
    for pid in fs.FIXES:
        proc = get_process(pid)
        assert not proc.standard and proc.implementation.__module__ == fs.__name__
        params = {p["name"] for p in proc.spec["parameters"]}
        assert proc.accepted_kwargs == params, pid  # spec parameters, none of the callback specials


# ------------------------------------------------------------------ the same processes on cubes
class StandardEvaluator(GraphEvaluator):
    """The engine with openeo-processes-dask's implementations of the replaced processes: how it was."""

    def resolve(self, node_name, node):
        target = super().resolve(node_name, node)
        if isinstance(target, ProcessDef) and target.id in fs.FIXES and target.id != "e":
            return ProcessDef(target.id, target.spec, fs._standard(target.id), standard=True)
        return target


def make_cube() -> xr.DataArray:
    rng = np.random.default_rng(1)
    values = rng.uniform(-60, 60, (3, 2, 6, 5)).astype("float32")
    values[0, 0, 0, :3] = np.nan
    values[1, 1, 2, 2] = 0
    data = da.from_array(values, chunks=(1, 2, 3, 5))
    return xr.DataArray(data, dims=("t", "bands", "y", "x"), coords={
        "t": pd.date_range("2022-06-01", periods=3), "bands": ["B04", "B08"],
        "y": 5151915.0 - 10 * np.arange(6), "x": 679725.0 + 10 * np.arange(5)})


X = {"from_parameter": "x"}
D = {"from_parameter": "data"}


def node(process_id, **arguments):
    return {"process_id": process_id, "arguments": arguments}


def ref(name):
    return {"from_node": name}


def _apply(**nodes):
    last = list(nodes)[-1]
    nodes[last] = {**nodes[last], "result": True}
    return {"process_graph": {"a": {"process_id": "apply", "arguments": {
        "data": {"from_parameter": "cube"}, "process": {"process_graph": nodes}}, "result": True}}}


def _reduce(dimension, **nodes):
    last = list(nodes)[-1]
    nodes[last] = {**nodes[last], "result": True}
    return {"process_graph": {"r": {"process_id": "reduce_dimension", "arguments": {
        "data": {"from_parameter": "cube"}, "dimension": dimension, "reducer": {"process_graph": nodes}},
        "result": True}}}


def _unary(pid, **extra):
    arg = "p" if pid == "exp" else "x"
    return {"n": node(pid, **{arg: X}, **extra)}


B04 = node("array_element", data=D, label="B04")
B08 = node("array_element", data=D, label="B08")
CUBE_GRAPHS = {
    **{f"apply_{pid}": _apply(**_unary(pid)) for pid in (
        "absolute", "sgn", "sqrt", "exp", "ln", "ceil", "floor", "int", "round", "sin", "cos", "tan", "arcsin",
        "arccos", "arctan", "sinh", "cosh", "tanh", "arsinh", "arcosh", "artanh", "is_nan", "is_infinite", "not")},
    "apply_round_p": _apply(n=node("round", x=X, p=1)),
    "apply_log": _apply(n=node("log", x=X, base=10)),
    **{f"apply_{pid}": _apply(n=node(pid, x=X, y=3)) for pid in (
        "add", "subtract", "multiply", "divide", "mod", "normalized_difference", "eq", "neq", "gt", "gte", "lt",
        "lte")},
    "apply_add_int_first": _apply(n=node("add", x=2, y=X)),
    "apply_eq_delta": _apply(n=node("eq", x=X, y=3, delta=20)),
    "apply_power": _apply(n=node("power", base=X, p=2)),
    "apply_arctan2": _apply(n=node("arctan2", y=X, x=-1)),
    "apply_clip": _apply(n=node("clip", x=X, min=-10, max=10)),
    "apply_linear_scale_range": _apply(n=node("linear_scale_range", x=X, inputMin=-60, inputMax=60, outputMin=0,
                                              outputMax=255)),
    "apply_between": _apply(n=node("between", x=X, min=-10, max=10)),
    "apply_logic": _apply(g=node("gt", x=X, y=-20), l=node("lt", x=X, y=20), a=node("and", x=ref("g"), y=ref("l")),
                          o=node("or", x=ref("a"), y=ref("g")), n=node("xor", x=ref("o"), y=ref("l"))),
    "apply_if": _apply(g=node("gt", x=X, y=0), n=node("if", value=ref("g"), accept=X, reject=0)),
    "apply_if_default": _apply(g=node("gt", x=X, y=0), n=node("if", value=ref("g"), accept=X)),
    "reduce_ndvi": _reduce("bands", r=B04, n=B08, s=node("subtract", x=ref("n"), y=ref("r")),
                           a=node("add", x=ref("n"), y=ref("r")), d=node("divide", x=ref("s"), y=ref("a"))),
    "reduce_normalized_difference": _reduce("bands", r=B04, n=B08, d=node("normalized_difference", x=ref("n"),
                                                                          y=ref("r"))),
    "reduce_compare_bands": _reduce("bands", r=B04, n=B08, d=node("gte", x=ref("n"), y=ref("r"))),
    "reduce_first_minus_last": _reduce("t", f=node("array_element", data=D, index=0),
                                       l=node("array_element", data=D, index=2), d=node("mod", x=ref("f"), y=ref("l"))),
}


@pytest.mark.parametrize("name", sorted(CUBE_GRAPHS))
def test_cube_callbacks_behave_as_before(name):
    pg = CUBE_GRAPHS[name]
    with np.errstate(all="ignore"):
        new = GraphEvaluator().evaluate(pg, {"cube": make_cube()})
        old = StandardEvaluator().evaluate(pg, {"cube": make_cube()})
    assert isinstance(new, xr.DataArray) and isinstance(new.data, da.Array), "still a lazy cube"
    assert new.dims == old.dims and new.dtype == old.dtype and new.chunks == old.chunks
    for dim in new.dims:
        np.testing.assert_array_equal(new[dim].values, old[dim].values)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(new.values, old.values)


def test_null_beside_a_cube_is_nan():
    """The package raised TypeError on ``array + None``; a null now propagates as no-data (NaN)."""
    cube = make_cube()
    for pid in ("add", "multiply", "gt", "eq", "arctan2"):
        args = {"y": X, "x": None} if pid == "arctan2" else {"x": X, "y": None}
        out = GraphEvaluator().evaluate(_apply(n=node(pid, **args)), {"cube": cube})
        assert isinstance(out.data, da.Array) and np.isnan(out.values).all(), pid
    both = GraphEvaluator().evaluate(_apply(g=node("gt", x=X, y=0), n=node("and", x=ref("g"), y=None)),
                                     {"cube": cube}).values
    positive = cube.values > 0
    assert np.isnan(both[positive]).all() and (both[~positive & ~np.isnan(cube.values)] == 0).all()


def test_is_nodata_on_a_cube_is_element_wise():
    """The package answered one ``false`` for a whole array; no-data in our cubes is NaN."""
    cube = make_cube()
    out = GraphEvaluator().evaluate(_apply(n=node("is_nodata", x=X)), {"cube": cube})
    assert isinstance(out.data, da.Array) and out.dtype == bool
    np.testing.assert_array_equal(out.values, np.isnan(cube.values))
    np.testing.assert_array_equal(fs.is_nodata(cube).values, np.isnan(cube.values))
    np.testing.assert_array_equal(fs.is_nodata(cube.values), np.isnan(cube.values))


def test_if_with_a_single_condition_returns_the_cube_itself():
    cube = make_cube()
    assert fs.if_(True, cube, 0) is cube and fs.if_(np.bool_(False), 0, cube) is cube


def test_array_arguments_go_to_the_package_unchanged():
    """Direct calls with numpy, dask and xarray arrays: same values, dtype and type as the package."""
    cube = make_cube()
    for x in (cube, cube.data, cube.values, np.arange(-3, 4), np.array([-1.5, 2.5], dtype="float32")):
        for pid, kwargs in (("add", {"y": 2}), ("mod", {"y": 3}), ("sgn", {}), ("int", {}), ("absolute", {})):
            with np.errstate(all="ignore"):
                new = getattr(fs, "int_" if pid == "int" else pid)(x=x, **kwargs)  # int_: not the builtin's name
                old = fs._standard(pid)(x=x, **kwargs)
            assert type(new) is type(old) and new.dtype == old.dtype, (pid, type(x))
            np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
        for pid in ("eq", "gt", "lte"):
            new, old = getattr(fs, pid)(x=x, y=1), fs._standard(pid)(x=x, y=1)
            assert type(new) is type(old) and new.dtype == old.dtype
            np.testing.assert_array_equal(np.asarray(new), np.asarray(old))
