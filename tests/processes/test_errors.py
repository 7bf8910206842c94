"""Bad input: openEO-style errors naming node and argument, raised before any pixel is computed."""

from __future__ import annotations

import pytest
from processes_helpers import callback, graph, load_node

from terramind_openeo.processes import execute_process_graph
from terramind_openeo.processes.errors import (
    CollectionNotFound,
    FormatUnsupported,
    NoDataAvailable,
    OpenEOError,
    OutputNotWritable,
    ProcessGraphInvalid,
    ProcessParameterInvalid,
    ProcessParameterRequired,
    ProcessUnsupported,
)

D = {"from_parameter": "data"}


def save(node: str, fmt: str = "GTiff") -> dict:
    return {"process_id": "save_result", "arguments": {"data": {"from_node": node}, "format": fmt}, "result": True}


def run(pg, catalog, tmp_path):
    return execute_process_graph(pg, tmp_path / "out", catalog=catalog)


def check(exc: OpenEOError, code: str, *words: str) -> None:
    assert exc.code == code
    for w in words:
        assert w in exc.message, exc.message
    assert exc.to_dict() == {"code": code, "message": exc.message}


def test_unknown_process(catalog, tmp_path):
    pg = graph(load=load_node(), x={"process_id": "does_not_exist", "arguments": {"data": {"from_node": "load"}}},
               s=save("x"))
    with pytest.raises(ProcessUnsupported) as e:
        run(pg, catalog, tmp_path)
    check(e.value, "ProcessUnsupported", "'x'", "does_not_exist")
    assert e.value.status == 400


def test_foreign_namespace_is_not_ignored(catalog, tmp_path):
    pg = graph(load=load_node(), x={"process_id": "absolute", "namespace": "https://example.org/ns",
                                    "arguments": {"x": 1}}, s=save("load"))
    with pytest.raises(ProcessUnsupported) as e:
        run(pg, catalog, tmp_path)
    check(e.value, "ProcessUnsupported", "namespace")


def test_unknown_collection(catalog, tmp_path):
    pg = graph(load=load_node("NOPE"), s=save("load"))
    with pytest.raises(CollectionNotFound) as e:
        run(pg, catalog, tmp_path)
    check(e.value, "CollectionNotFound", "'load'", "'id'", "NOPE")
    assert e.value.status == 404


@pytest.mark.parametrize("text", ['{"process_graph": {', "[1, 2]", '{"process_graph": {}}'])
def test_malformed_json(catalog, tmp_path, text):
    with pytest.raises(ProcessGraphInvalid):
        run(text, catalog, tmp_path)


def test_cycle(catalog, tmp_path):
    pg = graph(a={"process_id": "apply", "arguments": {"data": {"from_node": "b"}, "process": callback("absolute", x={"from_parameter": "x"})}},
               b={"process_id": "apply", "arguments": {"data": {"from_node": "a"}, "process": callback("absolute", x={"from_parameter": "x"})}},
               s=save("b"))
    with pytest.raises(ProcessGraphInvalid) as e:
        run(pg, catalog, tmp_path)
    check(e.value, "ProcessGraphInvalid", "cycle", "a -> b")


def test_dangling_reference(catalog, tmp_path):
    with pytest.raises(ProcessGraphInvalid) as e:
        run(graph(s=save("ghost")), catalog, tmp_path)
    check(e.value, "ProcessGraphInvalid", "'s'", "'data'", "ghost")


def test_missing_argument(catalog, tmp_path):
    pg = graph(load=load_node(), r={"process_id": "reduce_dimension", "arguments": {
        "data": {"from_node": "load"}, "reducer": callback("mean", data=D)}}, s=save("r"))
    with pytest.raises(ProcessParameterRequired) as e:
        run(pg, catalog, tmp_path)
    check(e.value, "ProcessParameterRequired", "'r'", "'dimension'")


def test_wrong_argument_type(catalog, tmp_path):
    pg = graph(load=load_node(), r={"process_id": "reduce_dimension", "arguments": {
        "data": {"from_node": "load"}, "dimension": 7, "reducer": callback("mean", data=D)}}, s=save("r"))
    with pytest.raises(ProcessParameterInvalid) as e:
        run(pg, catalog, tmp_path)
    check(e.value, "ProcessParameterInvalid", "'r'", "'dimension'")


def test_unknown_argument(catalog, tmp_path):
    pg = graph(load=load_node(), s={"process_id": "save_result", "arguments": {
        "data": {"from_node": "load"}, "format": "GTiff", "colour": "red"}, "result": True})
    with pytest.raises(OpenEOError) as e:
        run(pg, catalog, tmp_path)
    check(e.value, "ProcessParameterUnsupported", "'s'", "'colour'")


def test_extent_outside(catalog, tmp_path):
    pg = graph(load=load_node(bbox={"west": 0, "east": 1, "south": 0, "north": 1}), s=save("load"))
    with pytest.raises(NoDataAvailable) as e:
        run(pg, catalog, tmp_path)
    check(e.value, "NoDataAvailable", "'load'", "'spatial_extent'", "outside")


@pytest.mark.parametrize("temporal", [("2022-06-10", "2022-06-10"), ("2022-06-20", "2022-06-01"),
                                      ("2023-01-01", "2023-02-01")])
def test_empty_temporal_range(catalog, tmp_path, temporal):
    pg = graph(load=load_node(temporal=temporal), s=save("load"))
    with pytest.raises(NoDataAvailable) as e:
        run(pg, catalog, tmp_path)
    check(e.value, "NoDataAvailable", "'temporal_extent'")


def test_unknown_band(catalog, tmp_path):
    pg = graph(load=load_node(bands=["B04", "B99"]), s=save("load"))
    with pytest.raises(ProcessParameterInvalid) as e:
        run(pg, catalog, tmp_path)
    check(e.value, "ProcessParameterInvalid", "'bands'", "B99")


def test_unsupported_format(catalog, tmp_path):
    with pytest.raises(FormatUnsupported) as e:
        run(graph(load=load_node(), s=save("load", "JPEG2000")), catalog, tmp_path)
    check(e.value, "FormatUnsupported", "'s'", "'format'", "JPEG2000")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_unwritable_output_dir(catalog, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(OutputNotWritable) as e:
        execute_process_graph(graph(load=load_node(), s=save("load")), blocker / "out", catalog=catalog)
    assert e.value.code == "OutputNotWritable" and "a_file" in e.value.message


def test_undefined_parameter(catalog, tmp_path):
    pg = graph(load=load_node(), a={"process_id": "apply", "arguments": {
        "data": {"from_node": "load"}, "process": callback("add", x={"from_parameter": "x"}, y={"from_parameter": "nope"})}},
        s=save("a"))
    with pytest.raises(OpenEOError) as e:
        run(pg, catalog, tmp_path)
    assert e.value.code == "ProcessGraphParameterMissing" and "nope" in e.value.message


def test_errors_come_before_heavy_work(catalog, tmp_path, monkeypatch):
    """A bad node late in the graph fails before load_collection reads anything."""
    import terramind_openeo.processes.load as load

    called = []
    monkeypatch.setattr(load, "_load_dataset_file", lambda *a, **k: called.append(1))
    pg = graph(load=load_node(), x={"process_id": "nope", "arguments": {}}, s=save("load"))
    with pytest.raises(ProcessUnsupported):
        run(pg, catalog, tmp_path)
    assert called == []


def test_cancel_stops_before_writing_and_progress_reaches_one(catalog, tmp_path):
    from terramind_openeo.processes.errors import JobCanceled

    pg = graph(load=load_node(), s=save("load"))
    with pytest.raises(JobCanceled):
        execute_process_graph(pg, tmp_path / "c", catalog=catalog, cancel=lambda: True)
    assert not list((tmp_path / "c").glob("*.tif"))
    seen = []
    execute_process_graph(pg, tmp_path / "p", catalog=catalog, progress=seen.append)
    assert seen and seen[-1] == 1.0 and seen == sorted(seen)


def test_errors_keep_code_status_and_location_through_pickle():
    """Errors raised on Dask workers come back pickled: nothing of what they say may be lost."""
    import pickle

    from terramind_openeo.processes.errors import OpenEOError, ProcessParameterInvalid

    err = ProcessParameterInvalid("band 'B05' is missing", argument="data").locate("lulc")
    custom = OpenEOError("the band B04 is missing", code="MissingBandError", status=400)
    for original in (err, custom):
        copy = pickle.loads(pickle.dumps(original))
        assert type(copy) is type(original)
        assert (copy.code, copy.status, copy.message, copy.node, copy.argument) == (
            original.code, original.status, original.message, original.node, original.argument)
        assert str(copy) == str(original)
    assert copy.code == "MissingBandError" and copy.status == 400
