"""apply_neighborhood + run_udf: labelled chunks of size + 2 x overlap, once per chunk, context intact."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from processes_helpers import graph, load_node

from terramind_openeo.processes import execute_process_graph
from terramind_openeo.processes.errors import UdfError

# Records what each call saw into a file (chunks may run in worker threads), returns the chunk + context offset.
PROBE_UDF = '''
import json, os
import xarray
from openeo.udf import inspect

def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
    inspect(data=[int(cube.sizes["y"]), int(cube.sizes["x"])], message="chunk seen", level="info")
    with open(context["log"], "a") as f:
        f.write(json.dumps({"dims": list(cube.dims), "shape": [int(s) for s in cube.shape],
                            "bands": [str(b) for b in cube.bands.values], "crs": str(cube.rio.crs),
                            "y0": float(cube.y[0]), "x0": float(cube.x[0]),
                            "t": [str(t)[:10] for t in cube.t.values], "offset": context["offset"]}) + "\\n")
    return cube + context["offset"]
'''

FAILING_UDF = '''
import xarray

def helper(x):
    return x / 0 if x is None else 1 / 0

def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
    helper(1)
    return cube
'''


def neighborhood(code, size, overlap, context, t_size=None):
    sizes = [{"dimension": "x", "value": size, "unit": "px"}, {"dimension": "y", "value": size, "unit": "px"}]
    if t_size is not None:
        sizes.append({"dimension": "t", "value": t_size})
    return {"process_id": "apply_neighborhood", "arguments": {
        "data": {"from_node": "load"}, "size": sizes,
        "overlap": [{"dimension": "x", "value": overlap, "unit": "px"}, {"dimension": "y", "value": overlap, "unit": "px"}],
        "context": context,
        "process": {"process_graph": {"u": {"process_id": "run_udf", "arguments": {
            "data": {"from_parameter": "data"}, "udf": code, "runtime": "Python",
            "context": {"from_parameter": "context"}}, "result": True}}}}}


def test_chunks_labelled_once_each_overlap_cropped(catalog, tmp_path, caplog):
    import json

    log = tmp_path / "calls.jsonl"
    lo = load_node(temporal=("2022-06-01", "2022-06-08"))  # 84 x 96 px, 3 dates
    pg = graph(load=lo, nb={**neighborhood(PROBE_UDF, 32, 8, {"log": str(log), "offset": 1000}), "result": True})
    plain = execute_process_graph(graph(load={**lo, "result": True}), None, catalog=catalog).value
    with caplog.at_level(logging.INFO, logger="terramind_openeo.job"):
        out = execute_process_graph(pg, None, catalog=catalog).value
    np.testing.assert_array_equal(out.values, plain.values + 1000)
    assert out.dims == plain.dims and list(out.bands.values) == ["B04", "B08"]
    assert out.rio.crs.to_epsg() == 32632
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(calls) == 3 * 3  # 84 / 32 -> 3 chunk rows, 96 / 32 -> 3 chunk columns, all dates per call
    for c in calls:
        assert c["dims"] == ["t", "bands", "y", "x"] and c["bands"] == ["B04", "B08"]
        assert c["crs"] == "EPSG:32632" and c["offset"] == 1000
        assert c["t"] == ["2022-06-02", "2022-06-05", "2022-06-07"]
    shapes = sorted(tuple(c["shape"][2:]) for c in calls)
    assert (48, 48) in shapes  # interior chunk: 32 + 2 x 8
    assert max(shapes) == (48, 48) and min(shapes) == (28, 40)  # borders: no padding beyond the cube
    assert len({(c["y0"], c["x0"]) for c in calls}) == 9  # each chunk exactly once
    # on the run's logger (pytest also captures the channel logger, which does not propagate, itself)
    seen = [r for r in caplog.records if r.name == "terramind_openeo.job" and "UDF inspect" in r.getMessage()]
    assert len(seen) == 9 and "chunk seen" in seen[0].getMessage()


def test_time_size_gives_one_date_per_call(catalog, tmp_path):
    log = tmp_path / "calls.jsonl"
    lo = load_node(temporal=("2022-06-01", "2022-06-08"))
    pg = graph(load=lo, nb={**neighborhood(PROBE_UDF, 96, 0, {"log": str(log), "offset": 0}, t_size="P1D"),
                            "result": True})
    _ = execute_process_graph(pg, None, catalog=catalog).value.values
    assert len(log.read_text().splitlines()) == 3


def test_udf_exception_is_reported_with_trimmed_traceback(catalog, caplog):
    pg = graph(load=load_node(), nb={**neighborhood(FAILING_UDF, 64, 0, {}), "result": True})
    with caplog.at_level(logging.ERROR, logger="terramind_openeo.job"), pytest.raises(UdfError) as e:
        _ = execute_process_graph(pg, None, catalog=catalog).value.values
    msg = e.value.message
    assert "ZeroDivisionError" in msg and "helper" in msg and "Traceback (UDF frames)" in msg
    assert "dask" not in msg and "site-packages" not in msg
    assert any("UDF failed" in r.getMessage() for r in caplog.records)


def test_bad_neighborhood_arguments(catalog):
    from terramind_openeo.processes.errors import ProcessParameterInvalid

    pg = graph(load=load_node(), nb={**neighborhood(PROBE_UDF, 16, 32, {}), "result": True})
    with pytest.raises(ProcessParameterInvalid) as e:
        execute_process_graph(pg, None, catalog=catalog)
    assert "'overlap'" in e.value.message
    pg = graph(load=load_node(), u={"process_id": "run_udf", "arguments": {
        "data": {"from_node": "load"}, "udf": PROBE_UDF, "runtime": "R"}, "result": True})
    with pytest.raises(ProcessParameterInvalid) as e:
        execute_process_graph(pg, None, catalog=catalog)
    assert "'runtime'" in e.value.message


def test_sizes_in_metres(catalog, tmp_path):
    log = tmp_path / "calls.jsonl"
    node = neighborhood(PROBE_UDF, 0, 0, {"log": str(log), "offset": 0})
    node["arguments"]["size"] = [{"dimension": "x", "value": 480, "unit": "m"}, {"dimension": "y", "value": 480, "unit": "m"}]
    node["arguments"]["overlap"] = [{"dimension": "x", "value": 80, "unit": "m"}, {"dimension": "y", "value": 80, "unit": "m"}]
    _ = execute_process_graph(graph(load=load_node(), nb={**node, "result": True}), None, catalog=catalog).value.values
    import json

    # 48 px chunks (84 x 96 px cube: 2 x 2 chunks) + 8 px overlap on their inner sides
    assert sorted(tuple(json.loads(line)["shape"][2:]) for line in log.read_text().splitlines()) == \
        [(44, 56), (44, 56), (56, 56), (56, 56)]


def test_top_level_run_udf_keeps_labels(catalog):
    code = PROBE_UDF.replace('with open(context["log"], "a") as f:', 'if False:')
    pg = graph(load=load_node(), u={"process_id": "run_udf", "arguments": {
        "data": {"from_node": "load"}, "udf": code, "runtime": "Python", "context": {"offset": 5, "log": ""}},
        "result": True})
    plain = execute_process_graph(graph(load={**load_node(), "result": True}), None, catalog=catalog).value
    out = execute_process_graph(pg, None, catalog=catalog).value
    np.testing.assert_array_equal(out.values, plain.values + 5)


def test_a_udf_dropping_the_dates_is_a_clear_error(catalog):
    """apply_neighborhood keeps the cube's dimensions: a UDF that turns a chunk's 3 dates into one result
    (a model reading every date at once) is told so, instead of a cube whose declared shape is wrong."""
    code = "import xarray\n\ndef apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:\n" \
           "    return cube.mean('t')\n"
    pg = graph(load=load_node(temporal=("2022-06-01", "2022-06-08")),
               nb={**neighborhood(code, 96, 0, {}), "result": True})
    with pytest.raises(UdfError) as e:
        _ = execute_process_graph(pg, None, catalog=catalog).value.values
    assert "no dimension 't' for a chunk of 3 dates" in e.value.message and "terramind_predict" in e.value.message
