"""Array processes (``processes/fixes_array.py``): openEO semantics for JSON arrays (null, empty arrays, element
types), and the same processes as callbacks on data cubes (numpy and dask, through the engine), where they must
give what openeo-processes-dask's implementations gave (vectorised, dask still lazy)."""

from __future__ import annotations

import json
import math

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from terramind_openeo.processes.errors import OpenEOError, ProcessParameterInvalid
from terramind_openeo.processes.graph import GraphEvaluator
from terramind_openeo.processes.registry import get_process
from terramind_openeo.processes.standard_fixes import apply_dimension

D = {"from_parameter": "data"}
X = {"from_parameter": "x"}
NAN = float("nan")


def run(process_id: str, **arguments):
    """One node evaluated as ``POST /result`` does (validated, JSON answer with NaN tokens read back)."""
    pg = {"process_graph": {"n": {"process_id": process_id, "arguments": arguments, "result": True}}}
    ev = GraphEvaluator()
    ev.validate(pg, parameters=set())
    from terramind_openeo.jsonable import to_jsonable

    return json.loads(json.dumps(to_jsonable(ev.evaluate(pg, {})), allow_nan=True))


def same(got, expected) -> bool:
    if isinstance(expected, list):
        return isinstance(got, list) and len(got) == len(expected) and all(map(same, got, expected))
    if isinstance(expected, float) and math.isnan(expected):
        return isinstance(got, float) and math.isnan(got)
    if isinstance(expected, float):
        return isinstance(got, (int, float)) and not isinstance(got, bool) and got == pytest.approx(expected)
    return type(got) is type(expected) and got == expected


# ------------------------------------------------------------------ JSON arrays, per the spec
CASES = [
    # reducers: null ignored by default, null when not ignored, null for nothing left; ints stay ints
    ("max", {"data": [1, 0, 3, 2]}, 3),
    ("max", {"data": [5, 2.5, None, -0.7]}, 5),
    ("max", {"data": [1, 0, 3, None, 2], "ignore_nodata": False}, None),
    ("max", {"data": []}, None),
    ("min", {"data": [5, 2.5, None, -0.7]}, -0.7),
    ("min", {"data": [None, None]}, None),
    ("mean", {"data": [9, 2.5, None, -2.5]}, 3.0),
    ("mean", {"data": [1, 2, None], "ignore_nodata": False}, None),
    ("mean", {"data": [None, None]}, None),
    ("mean", {"data": []}, None),
    ("median", {"data": [1, 2, 3, 4, 5, 6, 8, 9]}, 4.5),
    ("median", {"data": [-1, 0, None, 1], "ignore_nodata": False}, None),
    ("median", {"data": []}, None),
    ("sum", {"data": [None, -2, -2, 0]}, -4),
    ("sum", {"data": [-2, 4, 2.5]}, 4.5),
    ("sum", {"data": [None], "ignore_nodata": False}, None),
    ("sum", {"data": []}, None),
    ("product", {"data": [None, -2, -2.0, -2, -2.0]}, 16.0),
    ("product", {"data": [1, None], "ignore_nodata": False}, None),
    ("product", {"data": []}, None),
    ("sd", {"data": [-1, 1, 3, None]}, 2.0),
    ("sd", {"data": [-1, 1, 3, None], "ignore_nodata": False}, None),
    ("sd", {"data": []}, None),
    ("variance", {"data": [2, 3, 3, None, 4, 4, 5]}, 1.1),
    ("variance", {"data": []}, None),
    ("extrema", {"data": [5, 2.5, None, -0.7]}, [-0.7, 5]),
    ("extrema", {"data": [1, None], "ignore_nodata": False}, [None, None]),
    ("extrema", {"data": []}, [None, None]),
    ("quantiles", {"data": [2, 4, 4, 4, 5, 5, 7, 9], "probabilities": [0.005, 0.01, 0.02, 0.05, 0.1, 0.5]},
     [2.07, 2.14, 2.28, 2.7, 3.4, 4.5]),
    ("quantiles", {"data": [2, 4, 4, 4, 5, 5, 7, 9], "probabilities": 4}, [4.0, 4.5, 5.5]),
    ("quantiles", {"data": [-1, -0.5, None, 1], "probabilities": 2}, [-0.5]),
    ("quantiles", {"data": [-1, -0.5, None, 1], "probabilities": 4, "ignore_nodata": False}, [None, None, None]),
    ("quantiles", {"data": [], "probabilities": [0.1, 0.5]}, [None, None]),
    ("quantiles", {"data": [1, 2, 3], "q": 2}, [2.0]),
    # first/last/logic/count
    ("first", {"data": [None, "A", "B"]}, "A"),
    ("first", {"data": [None, 2, 3], "ignore_nodata": False}, None),
    ("first", {"data": []}, None),
    ("last", {"data": ["A", "B", None]}, "B"),
    ("last", {"data": [-1, None, None]}, -1),
    ("last", {"data": [None, None]}, None),
    ("all", {"data": [True, None]}, True),
    ("all", {"data": [True, None], "ignore_nodata": False}, None),
    ("all", {"data": [False, None], "ignore_nodata": False}, False),
    ("all", {"data": []}, None),
    ("any", {"data": [False, None], "ignore_nodata": False}, None),
    ("any", {"data": [True, None], "ignore_nodata": False}, True),
    ("any", {"data": [False, False]}, False),
    ("any", {"data": []}, None),
    ("count", {"data": []}, 0),
    ("count", {"data": ["ABC", None]}, 1),
    ("count", {"data": [False, None], "condition": True}, 2),
    ("count", {"data": [0, 1, 2, 3, 4, 5, None], "context": 2, "condition": {"process_graph": {"gt": {
        "process_id": "gt", "arguments": {"x": X, "y": {"from_parameter": "context"}}, "result": True}}}}, 3),
    ("is_valid", {"x": [None, None]}, True),
    ("is_valid", {"x": None}, False),
    ("is_valid", {"x": "Test"}, True),
    ("constant", {"x": []}, []),
    ("constant", {"x": ["2020-01-01", "2020-02-01"]}, ["2020-01-01", "2020-02-01"]),
    # array_*: element types kept
    ("array_append", {"data": [None, 2], "value": "3"}, [None, 2, "3"]),
    ("array_append", {"data": [True, False], "value": None}, [True, False, None]),
    ("array_append", {"data": ["2020-01-01"], "value": "2020-02-01"}, ["2020-01-01", "2020-02-01"]),
    ("array_concat", {"array1": [], "array2": [1]}, [1]),
    ("array_concat", {"array1": ["a", "b"], "array2": [1, 2]}, ["a", "b", 1, 2]),
    ("array_concat", {"array1": [1.5, None], "array2": [5]}, [1.5, None, 5]),
    ("array_create", {}, []),
    ("array_create", {"data": [None], "repeat": 3}, [None, None, None]),
    ("array_create", {"data": [1, "a"], "repeat": 2}, [1, "a", 1, "a"]),
    ("array_element", {"data": ["A", "B", "C"], "index": 0}, "A"),
    ("array_element", {"data": [], "index": 0, "return_nodata": True}, None),
    ("array_element", {"data": [1, 2], "index": 2, "return_nodata": True}, None),
    ("array_element", {"data": [1, None], "index": 1}, None),
    ("array_element", {"data": [1, 2, 3], "index": 2.0}, 3),
    ("array_find", {"data": [1, 2, 3, 2, 3], "value": 2, "reverse": True}, 3),
    ("array_find", {"data": ["A", "B", "C"], "value": "b"}, None),
    ("array_find", {"data": [True, True], "value": False}, None),
    ("array_find", {"data": [False, 0], "value": 0}, 1),
    ("array_find", {"data": [1, 2, 3], "value": "2"}, None),
    ("array_find", {"data": [1, None, 2], "value": None}, None),
    ("array_find", {"data": [[1, 2], [3, 4]], "value": [1, 2]}, None),
    ("array_find", {"data": [{"a": "b"}], "value": {"a": "b"}}, None),
    ("array_labels", {"data": []}, []),
    ("array_labels", {"data": [1, 2, 3, None]}, [0, 1, 2, 3]),
    ("array_interpolate_linear", {"data": [None, 1, None, 6, None, -8]}, [None, 1, 3.5, 6, -1.0, -8]),
    ("array_interpolate_linear", {"data": [None, 1, None, None]}, [None, 1, None, None]),
    ("sort", {"data": [6, -1, 2, None, 7, 4, None, 8, 3, 9, 9]}, [-1, 2, 3, 4, 6, 7, 8, 9, 9]),
    ("sort", {"data": [6, -1, None, 9], "asc": False, "nodata": True}, [9, 6, -1, None]),
    ("sort", {"data": [6, -1, None, 9], "nodata": False}, [None, -1, 6, 9]),
    ("sort", {"data": ["2020-01-01T23:00:00Z", "2020-01-02T00:00:00+02:00"]},  # by instant, not by text
     ["2020-01-02T00:00:00+02:00", "2020-01-01T23:00:00Z"]),
    ("cumsum", {"data": [1, 3, None, 3, 1]}, [1, 4, None, 7, 8]),
    ("cumsum", {"data": [1, 3, None, 3, 1], "ignore_nodata": False}, [1, 4, None, None, None]),
    ("cumproduct", {"data": [1, 2, 3, None, 3, 1]}, [1, 2, 6, None, 18, 18]),
    ("cummax", {"data": [1, 3, None, 5, 1]}, [1, 3, None, 5, 5]),
    ("cummin", {"data": [5, 3, None, 1, 5], "ignore_nodata": False}, [5, 3, None, None, None]),
    ("array_modify", {"data": ["a", "b", 4, 5], "values": [1, 2, 3], "index": 0, "length": 2}, [1, 2, 3, 4, 5]),
    ("array_modify", {"data": ["a", "c"], "values": ["b"], "index": 1}, ["a", "b", "c"]),
    ("array_modify", {"data": ["a", "b", "c"], "values": [], "index": 1, "length": 10}, ["a"]),
    ("array_apply", {"data": [1, 2, 3, 4], "process": {"process_graph": {"c": {
        "process_id": "constant", "arguments": {"x": {"from_parameter": "index"}}, "result": True}}}}, [0, 1, 2, 3]),
    ("array_apply", {"data": [1, 2.5], "context": 2.5, "process": {"process_graph": {"m": {
        "process_id": "multiply", "arguments": {"x": X, "y": {"from_parameter": "context"}}, "result": True}}}},
     [2.5, 6.25]),
    ("array_apply", {"data": [], "process": {"process_graph": {"a": {
        "process_id": "absolute", "arguments": {"x": X}, "result": True}}}}, []),
    ("array_filter", {"data": [1, 2, 3, 4], "condition": {"process_graph": {"l": {
        "process_id": "lte", "arguments": {"x": {"from_parameter": "index"}, "y": 2}, "result": True}}}}, [1, 2, 3]),
    ("array_filter", {"data": ["a", None, "b"], "condition": {"process_graph": {"v": {
        "process_id": "is_valid", "arguments": {"x": X}, "result": True}}}}, ["a", "b"]),
]


@pytest.mark.parametrize("process_id, arguments, expected", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_json_arrays_per_spec(process_id, arguments, expected):
    got = run(process_id, **arguments)
    assert same(got, expected), f"{process_id}({arguments}) = {got!r}, expected {expected!r}"


@pytest.mark.parametrize("process_id, arguments, code", [
    ("array_element", {"data": [1, 2], "index": 2}, "ArrayElementNotAvailable"),
    ("array_element", {"data": [1, 2], "index": -1}, "ArrayElementNotAvailable"),
    ("array_element", {"data": [1]}, "ArrayElementParameterMissing"),
    ("array_element", {"data": [1], "index": 0, "label": 0}, "ArrayElementParameterConflict"),
    ("array_element", {"data": [1], "label": "B01"}, "ArrayNotLabeled"),
    ("array_append", {"data": [1, 2, 3], "value": 4, "label": "B01"}, "ArrayNotLabeled"),
    ("array_modify", {"data": [1], "values": [2], "index": 2}, "ArrayElementNotAvailable"),
    ("quantiles", {"data": [1, 2]}, "QuantilesParameterMissing"),
    ("quantiles", {"data": [1, 2], "probabilities": [0.5], "q": 2}, "QuantilesParameterConflict"),
])
def test_json_array_errors(process_id, arguments, code):
    with pytest.raises(OpenEOError) as info:
        run(process_id, **arguments)
    assert info.value.code == code


@pytest.mark.parametrize("process_id, arguments, argument", [
    ("mean", {"data": [1, "a"]}, "data"),
    ("max", {"data": [1, [2]]}, "data"),
    ("sum", {"data": [True, 1]}, "data"),
    ("all", {"data": [True, "yes"]}, "data"),
    ("quantiles", {"data": [1, 2], "probabilities": [1.5]}, "probabilities"),
    ("array_create", {"data": [1], "repeat": 0}, "repeat"),
    ("sort", {"data": [1, "a"]}, "data"),
])
def test_bad_json_arrays_name_the_argument(process_id, arguments, argument):
    with pytest.raises(ProcessParameterInvalid) as info:
        run(process_id, **arguments)
    assert f"'{argument}'" in info.value.message and info.value.code == "ProcessParameterInvalid"


def test_replacements_registered_with_the_standard_specs():
    for pid in ("max", "mean", "quantiles", "array_find", "array_element", "first", "count", "sort"):
        proc = get_process(pid)
        assert not proc.standard and proc.implementation.__module__.endswith("fixes_array")
        assert proc.spec["id"] == pid and proc.spec["parameters"]


# ------------------------------------------------------------------ the same processes on data cubes
def cube(lazy: bool, nt: int = 5) -> xr.DataArray:
    rng = np.random.default_rng(1)
    values = rng.uniform(-10, 100, (nt, 2, 6, 7))
    values[1, 0, :2] = np.nan  # some no-data
    values[:, 1, 5, 6] = np.nan  # a pixel that is no-data at every date
    data = da.from_array(values, chunks=(nt, 1, 3, 7)) if lazy else values
    return xr.DataArray(data, dims=("t", "bands", "y", "x"), coords={
        "t": pd.date_range("2022-06-01", periods=nt), "bands": ["B04", "B08"],
        "y": 5151915.0 - 10 * np.arange(6), "x": 679725.0 + 10 * np.arange(7)})


def reduce(c: xr.DataArray, dimension: str, **nodes) -> xr.DataArray:
    pg = {"process_graph": {
        "r": {"process_id": "reduce_dimension", "arguments": {
            "data": {"from_parameter": "cube"}, "dimension": dimension,
            "reducer": {"process_graph": nodes}}, "result": True}}}
    ev = GraphEvaluator()
    ev.validate(pg, parameters={"cube"})
    return ev.evaluate(pg, {"cube": c})


def package(name: str):
    """openeo-processes-dask's own implementation (what the engine ran before the replacement)."""
    from terramind_openeo.processes.registry import _standard_implementations

    return _standard_implementations()[name]


REDUCERS = ["max", "min", "mean", "median", "sd", "variance", "sum", "product", "first", "last"]


@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
@pytest.mark.parametrize("pid", REDUCERS)
@pytest.mark.parametrize("ignore_nodata", [True, False])
def test_reducers_on_cubes_as_before(pid, lazy, ignore_nodata):
    c = cube(lazy)
    out = reduce(c, "t", n={"process_id": pid, "arguments": {"data": D, "ignore_nodata": ignore_nodata},
                             "result": True})
    assert out.dims == ("bands", "y", "x")
    if lazy and pid not in ("first", "last"):
        assert isinstance(out.data, da.Array)  # still lazy
    expected = c.reduce(package(pid), dim="t", ignore_nodata=ignore_nodata)
    np.testing.assert_allclose(np.asarray(out.values, dtype=float), np.asarray(expected.values, dtype=float),
                               rtol=1e-12, equal_nan=True)
    if ignore_nodata and pid in ("max", "mean", "median", "sum"):  # and what numpy says
        ref = {"max": np.nanmax, "mean": np.nanmean, "median": np.nanmedian, "sum": np.nansum}[pid]
        with _no_check():
            np.testing.assert_allclose(out.values, ref(np.asarray(c.values), axis=0), rtol=1e-12, equal_nan=True)


class _no_check:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
def test_reducers_over_bands_and_extrema_quantiles_on_cubes(lazy):
    c = cube(lazy)
    for pid in ("all", "any"):
        b = (c > 40).astype(float).where(~np.isnan(c))
        out = reduce(b, "bands", n={"process_id": pid, "arguments": {"data": D}, "result": True})
        expected = b.reduce(package(pid), dim="bands")
        np.testing.assert_array_equal(out.values, expected.values)
    q = apply_dimension(c, GraphEvaluator().make_callback({"process_graph": {"q": {
        "process_id": "quantiles", "arguments": {"data": D, "probabilities": [0.25, 0.5, 0.75]}, "result": True}}},
        {}, "t"), "t", target_dimension="q")
    with _no_check():
        ref = np.nanquantile(np.asarray(c.values), [0.25, 0.5, 0.75], axis=0)
    np.testing.assert_allclose(q.transpose("q", ...).values, ref, equal_nan=True)
    top = apply_dimension(c, GraphEvaluator().make_callback({"process_graph": {"q": {
        "process_id": "quantiles", "arguments": {"data": D, "probabilities": [1]}, "result": True}}}, {}, "t"),
        "t", target_dimension="q")  # [1]: the probability 1 (the package read it as q=1, no quantile at all)
    with _no_check():
        np.testing.assert_allclose(top.isel(q=0).values, np.nanmax(np.asarray(c.values), axis=0), equal_nan=True)


@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
def test_array_element_and_count_in_cube_callbacks(lazy):
    c = cube(lazy)
    red = reduce(c, "bands", n={"process_id": "array_element", "arguments": {"data": D, "label": "B04"},
                                "result": True})
    np.testing.assert_array_equal(red.values, c.sel(bands="B04").values)
    by_index = reduce(c, "bands", n={"process_id": "array_element", "arguments": {"data": D, "index": 1},
                                     "result": True})
    np.testing.assert_array_equal(by_index.values, c.sel(bands="B08").values)
    day = reduce(c, "t", n={"process_id": "array_element", "arguments": {
        "data": D, "label": "2022-06-03T00:00:00Z"}, "result": True})  # a date label on the temporal dimension
    np.testing.assert_array_equal(day.values, c.isel(t=2).values)
    missing = reduce(c, "bands", n={"process_id": "array_element", "arguments": {
        "data": D, "index": -1, "return_nodata": True}, "result": True})
    assert missing.shape == red.shape and bool(np.isnan(missing.values).all())
    with pytest.raises(OpenEOError, match="ArrayElementNotAvailable"):
        reduce(c, "bands", n={"process_id": "array_element", "arguments": {"data": D, "index": 2}, "result": True})

    valid = reduce(c, "t", n={"process_id": "count", "arguments": {"data": D}, "result": True})
    np.testing.assert_array_equal(valid.values, (~np.isnan(np.asarray(c.values))).sum(axis=0))
    over = reduce(c, "t", n={"process_id": "count", "arguments": {"data": D, "context": 50, "condition": {
        "process_graph": {"g": {"process_id": "gt", "arguments": {"x": X, "y": {"from_parameter": "context"}},
                                "result": True}}}}, "result": True})
    np.testing.assert_array_equal(over.values, (np.asarray(c.values) > 50).sum(axis=0))
    every = reduce(c, "t", n={"process_id": "count", "arguments": {"data": D, "condition": {"process_graph": {
        "k": {"process_id": "constant", "arguments": {"x": True}, "result": True}}}}, "result": True})
    assert every.shape == valid.shape and bool((every.values == c.sizes["t"]).all())


@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
def test_array_find_apply_labels_interpolate_in_apply_dimension(lazy):
    c = cube(lazy).isel(x=slice(0, 3))
    values = np.asarray(c.values)

    def callback(**nodes):
        return GraphEvaluator().make_callback({"process_graph": nodes}, {}, "test")

    # array_find: index along the dimension, NaN (null) where not found (the package gave 999999)
    target = float(values[3, 1, 2, 1])
    found = reduce(c, "t", n={"process_id": "array_find", "arguments": {"data": D, "value": target},
                              "result": True})
    assert float(found.sel(bands="B08").values[2, 1]) == 3
    assert np.isnan(found.sel(bands="B04").values).all()
    # array_apply with index: one vectorised call, labels of the dimension kept
    shifted = apply_dimension(c, callback(a={"process_id": "array_apply", "arguments": {"data": D, "process": {
        "process_graph": {"a": {"process_id": "add", "arguments": {"x": X, "y": {"from_parameter": "index"}},
                                "result": True}}}}, "result": True}), "t")
    assert list(shifted.t.values) == list(c.t.values)
    np.testing.assert_allclose(shifted.values, values + np.arange(5)[:, None, None, None], equal_nan=True)
    # array_labels: the dimension labels
    labels = apply_dimension(c, callback(a={"process_id": "array_labels", "arguments": {"data": D}, "result": True}),
                             "bands", target_dimension="labels")
    assert labels.sizes["labels"] == 2
    # array_interpolate_linear fills the no-data date between two valid ones
    filled = apply_dimension(c, callback(i={"process_id": "array_interpolate_linear", "arguments": {"data": D},
                                            "result": True}), "t")
    np.testing.assert_allclose(filled.values[1, 0, 0], (values[0, 0, 0] + values[2, 0, 0]) / 2)
    # array_concat / array_append on the callback's array, as before
    more = apply_dimension(c, callback(a={"process_id": "array_append", "arguments": {"data": D, "value": 1},
                                          "result": True}), "bands")
    assert more.sizes["bands"] == 3 and float(more.isel(bands=2).max()) == 1


def test_json_array_inside_a_cube_callback_keeps_list_semantics():
    """A literal array in a reduce_dimension callback gets the callback's axis/labels: it must ignore them."""
    c = cube(False)
    out = reduce(c, "bands",
                 k={"process_id": "array_element", "arguments": {"data": [10, None, 30], "index": 2}},
                 m={"process_id": "max", "arguments": {"data": D}},
                 a={"process_id": "add", "arguments": {"x": {"from_node": "k"}, "y": {"from_node": "m"}},
                    "result": True})
    with _no_check():
        np.testing.assert_allclose(out.values, 30 + np.nanmax(c.values, axis=1), equal_nan=True)


@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
@pytest.mark.parametrize("asc, nodata", [(True, None), (False, None), (True, True), (False, False)])
def test_sort_along_a_cube_dimension(lazy, asc, nodata):
    """Sorted per pixel along the dimension (the package sorted the flattened array for nodata=None)."""
    c = cube(lazy)
    out = apply_dimension(c, GraphEvaluator().make_callback({"process_graph": {"s": {
        "process_id": "sort", "arguments": {"data": D, "asc": asc, "nodata": nodata}, "result": True}}}, {}, "t"), "t")
    assert out.dims == c.dims and isinstance(out.data, da.Array) == lazy
    values = np.asarray(c.values)
    for b, y, x in [(0, 0, 0), (0, 3, 2), (1, 5, 6)]:
        column = values[:, b, y, x]
        valid = np.sort(column[~np.isnan(column)])
        valid = valid if asc else valid[::-1]
        missing = [np.nan] * int(np.isnan(column).sum())
        expected = (missing + list(valid)) if nodata is False else (list(valid) + missing)
        np.testing.assert_array_equal(out.values[:, b, y, x], expected)
