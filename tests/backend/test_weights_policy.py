"""``allowed_weights``: graphs asking TerraMind for other weights are refused before any work starts."""

from __future__ import annotations

import httpx
import pytest

from terramind_openeo.backend.settings import SettingsError, load_settings
from terramind_openeo.backend.weights import WeightsNotAllowed, check_weights, weights_allowed

from .conftest import auth_headers

API = "/openeo/1.2"
ALLOWED = ("hub", "random", "/models/terramind/", "https://models.example.org/tm/")
LOAD = {"process_id": "load_collection", "arguments": {"id": "FAKE_S2"}}


def tm_graph(weights=None, process="terramind_embed") -> dict:
    args = {"data": {"from_node": "load"}, "model": "terramind_v1_tiny"}
    if weights is not None:
        args["weights"] = weights
    return {"load": LOAD, "tm": {"process_id": process, "arguments": args},
            "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "tm"}, "format": "GTiff"},
                     "result": True}}


def udf_graph(context, outer_context=None) -> dict:
    udf = {"process_id": "run_udf", "arguments": {"data": {"from_parameter": "data"}, "udf": "x",
                                                   "runtime": "Python", "context": context}, "result": True}
    args = {"data": {"from_node": "load"}, "process": {"process_graph": {"udf": udf}},
            "size": [{"dimension": "x", "value": 64, "unit": "px"}, {"dimension": "y", "value": 64, "unit": "px"}]}
    if outer_context is not None:
        args["context"] = outer_context
    return {"load": LOAD, "nb": {"process_id": "apply_neighborhood", "arguments": args},
            "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "nb"}, "format": "GTiff"},
                     "result": True}}


@pytest.mark.parametrize("value,ok", [
    ("hub", True), ("random", True), ("/models/terramind/v1_tiny.pt", True), ("/models/terramind", True),
    ("file:///models/terramind/x.pt", True), ("https://models.example.org/tm/tiny.pt", True),
    ("/models/terramind/../../etc/passwd", False), ("/models/terramind-evil/x.pt", False),
    ("/etc/passwd", False), ("relative/x.pt", False), ("https://evil.example.org/x.pt", False),
    ("https://models.example.org/tm/../other.pt", False), ("http://169.254.169.254/latest", False),
    ("file:///etc/passwd", False), ("", False), ("HUB", False)])
def test_weights_allowed(value, ok):
    assert weights_allowed(value, ALLOWED) is ok


def test_graph_inspection_finds_weights_everywhere():
    check_weights(tm_graph(), ALLOWED, {})  # missing weights = "hub"
    check_weights(tm_graph("random", "terramind_generate"), ALLOWED, {})
    check_weights(udf_graph({"weights": "random"}), ALLOWED, {})
    check_weights(udf_graph({"from_parameter": "context"}, {"weights": "hub", "tile_size": 64}), ALLOWED, {})
    check_weights(udf_graph({"from_parameter": "context"}), ALLOWED, {})  # no context at all
    with pytest.raises(WeightsNotAllowed, match="'hub'"):
        check_weights(tm_graph(), ("random",), {})  # the default must be allowed too
    with pytest.raises(WeightsNotAllowed, match=r"'weights' in process 'terramind_embed' \(node 'tm'\)"):
        check_weights(tm_graph("https://evil.example.org/x.pt"), ALLOWED, {})
    with pytest.raises(WeightsNotAllowed, match=r"'context.weights' in process 'run_udf' \(node 'nb > udf'\)"):
        check_weights(udf_graph({"weights": "/etc/passwd"}), ALLOWED, {})
    with pytest.raises(WeightsNotAllowed, match="/root/x.pt"):
        check_weights(udf_graph({"from_parameter": "context"}, {"weights": "/root/x.pt"}), ALLOWED, {})
    with pytest.raises(WeightsNotAllowed, match="literal string"):
        check_weights(tm_graph({"from_node": "load"}), ALLOWED, {})
    with pytest.raises(WeightsNotAllowed, match="cannot be checked"):
        check_weights(udf_graph({"from_node": "load"}), ALLOWED, {})
    # through a user-defined process: the call's arguments and the parameter defaults
    udp = {"id": "embed_with", "parameters": [{"name": "w", "default": "random"}, {"name": "data"}],
           "process_graph": {"tm": {"process_id": "terramind_embed", "result": True, "arguments": {
               "data": {"from_parameter": "data"}, "weights": {"from_parameter": "w"}}}}}
    call = {"load": LOAD, "u": {"process_id": "embed_with", "arguments": {"data": {"from_node": "load"}},
                                "result": True}}
    check_weights(call, ALLOWED, {"embed_with": udp})
    call["u"]["arguments"]["w"] = "https://evil.example.org/x.pt"
    with pytest.raises(WeightsNotAllowed, match=r"node 'u > embed_with: tm'"):
        check_weights(call, ALLOWED, {"embed_with": udp})


def test_setting_from_env_and_its_checks():
    env = {"TERRAMIND_OPENEO_ALLOWED_WEIGHTS": '["hub", "/models/"]'}
    assert load_settings(env=env).allowed_weights == ("hub", "/models/")
    assert load_settings(env={}).allowed_weights == ("hub", "random")
    with pytest.raises(SettingsError, match="allowed_weights"):
        load_settings(env={"TERRAMIND_OPENEO_ALLOWED_WEIGHTS": '["models/relative"]'})


def test_api_refuses_other_weights_before_any_work(fake_server):
    url, engine = fake_server
    api = url + API
    h = auth_headers(api)
    bad = [tm_graph("https://evil.example.org/x.pt"), tm_graph("/etc/passwd", "terramind_generate"),
           udf_graph({"weights": "/work/secret.pt"}),
           udf_graph({"from_parameter": "context"}, {"weights": "http://127.0.0.1:1/x.pt"})]
    for pg in bad:
        for method, path in (("POST", "/result"), ("POST", "/jobs")):
            resp = httpx.request(method, f"{api}{path}", json={"process": {"process_graph": pg}}, headers=h)
            assert resp.status_code == 400, resp.text
            body = resp.json()
            assert body["code"] == "ProcessParameterInvalid" and "weights" in body["message"], body
            assert "node '" in body["message"] and body["id"]
        errors = httpx.post(f"{api}/validation", json={"process_graph": pg}, headers=h).json()["errors"]
        assert [e["code"] for e in errors] == ["ProcessParameterInvalid"]
    ok = [tm_graph(), tm_graph("random"), udf_graph({"weights": "random", "tile_size": 64})]
    for pg in ok:
        assert httpx.post(f"{api}/validation", json={"process_graph": pg}, headers=h).json()["errors"] == []
    assert engine.executions == 0
    assert httpx.get(f"{api}/jobs", headers=h).json()["jobs"] == []
    # a stored process can not smuggle the weights in either
    udp = {"parameters": [{"name": "w", "schema": {"type": "string"}}], "process_graph": {
        "tm": {"process_id": "terramind_embed", "result": True, "arguments": {
            "data": None, "weights": {"from_parameter": "w"}}}}}
    assert httpx.put(f"{api}/process_graphs/embed_w", json=udp, headers=h).status_code == 200
    call = {"u": {"process_id": "embed_w", "arguments": {"w": "/etc/shadow"}, "result": True}}
    resp = httpx.post(f"{api}/result", json={"process": {"process_graph": call}}, headers=h)
    assert resp.status_code == 400 and "embed_w: tm" in resp.json()["message"]
    assert engine.executions == 0


def test_queued_job_is_checked_again_when_it_runs(fake_server, settings):
    """Changing a called user-defined process while the job waits must not smuggle weights in."""
    from .test_jobs import create_job, graph, wait_status

    url, engine = fake_server
    api = url + API
    h = auth_headers(api)
    udp = {"parameters": [{"name": "x", "schema": {}}], "process_graph": {
        "tm": {"process_id": "terramind_embed", "result": True, "arguments": {"data": None, "weights": "random"}}}}
    assert httpx.put(f"{api}/process_graphs/wrap", json=udp, headers=h).status_code == 200
    blockers = [create_job(api, h, graph(seconds=3.0)) for _ in range(2)]  # the per-user limit is 2
    for job_id in blockers:
        assert httpx.post(f"{api}/jobs/{job_id}/results", headers=h).status_code == 202
    job_id = create_job(api, h, {"process_graph": {"u": {"process_id": "wrap", "arguments": {"x": -1},
                                                         "result": True}}})
    assert httpx.post(f"{api}/jobs/{job_id}/results", headers=h).status_code == 202
    assert httpx.get(f"{api}/jobs/{job_id}", headers=h).json()["status"] == "queued"
    udp["process_graph"]["tm"]["arguments"]["weights"] = "https://evil.example.org/x.pt"
    assert httpx.put(f"{api}/process_graphs/wrap", json=udp, headers=h).status_code == 400  # checked when stored
    # ... so change it behind the API's back (as a policy change between storing and running would)
    from terramind_openeo.backend.store import Store

    store = Store(settings.db_path)
    store.put_udp("alice", "wrap", {"id": "wrap", **udp})
    store.close()
    job = wait_status(api, h, job_id, ("finished", "error"), timeout=30)
    assert job["status"] == "error", job
    errors = httpx.get(f"{api}/jobs/{job_id}/logs", params={"level": "error"}, headers=h).json()["logs"]
    assert any("evil.example.org" in e["message"] for e in errors), errors
    assert engine.executions == 2  # only the blockers ran


def predict_graph(**args) -> dict:
    return {"load": LOAD, "p": {"process_id": "terramind_predict", "arguments": {"data": {"from_node": "load"},
                                                                                   **args}},
            "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "p"}, "format": "GTiff"},
                     "result": True}}


def test_fine_tuned_checkpoints_and_configs_are_checked():
    """``terramind_predict``'s checkpoint and config, and the predict UDF's context keys, obey the same list;
    a hub repo id is allowed only when listed (as ``hub:owner/name``)."""
    allowed = (*ALLOWED, "hub:ibm-esa-geospatial/TerraMind-base-Flood")
    check_weights(predict_graph(checkpoint="ibm-esa-geospatial/TerraMind-base-Flood"), allowed, {})
    check_weights(predict_graph(checkpoint="/models/terramind/flood.ckpt", config="/models/terramind/f.yaml"),
                  allowed, {})
    check_weights(predict_graph(checkpoint="random", config=None), allowed, {})
    with pytest.raises(WeightsNotAllowed, match=r"'checkpoint' in process 'terramind_predict' \(node 'p'\)"):
        check_weights(predict_graph(checkpoint="someone/Other-Model"), allowed, {})
    with pytest.raises(WeightsNotAllowed, match=r"'config' in process 'terramind_predict'.*/etc/x.yaml"):
        check_weights(predict_graph(checkpoint="random", config="/etc/x.yaml"), allowed, {})
    with pytest.raises(WeightsNotAllowed, match=r"'checkpoint'.*literal string"):
        check_weights(predict_graph(), allowed, {})
    with pytest.raises(WeightsNotAllowed, match=r"'context.checkpoint' in process 'run_udf'"):
        check_weights(udf_graph({"checkpoint": "https://evil.example.org/x.ckpt"}), allowed, {})
    with pytest.raises(WeightsNotAllowed, match=r"'context.config' in process 'run_udf'"):
        check_weights(udf_graph({"checkpoint": "random", "config": "/root/c.yaml"}), allowed, {})
    check_weights(udf_graph({"checkpoint": "random", "config": None}), allowed, {})


def test_hub_repo_ids_are_valid_entries():
    from terramind_openeo.backend.settings import Settings

    Settings(allowed_weights=("hub", "hub:ibm-esa-geospatial/TerraMind-base-Flood"))
    for bad in ("ibm-esa-geospatial/TerraMind-base-Flood", "hub:../x", "hub:a/b/c"):
        with pytest.raises(SettingsError, match="allowed_weights"):
            Settings(allowed_weights=(bad,))
    assert not weights_allowed("ibm-esa-geospatial/TerraMind-base-Flood", ("hub", "random"))
