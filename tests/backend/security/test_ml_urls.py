"""Attack: the few-shot processes as a way in. ``load_url`` and ``load_ml_model`` with a URL are two more
doors to internal addresses (they must go through the URL rules: a loopback recorder records no hit); a
model file is a way to run code if it were ever unpickled (a pickle that would write a canary file must
be refused and write nothing); another user's job id must not lend its model."""

from __future__ import annotations

import pickle

import pytest

from .conftest import LOAD_TINY, base_settings, canary, clients, serve


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("ml")
    with serve(base_settings(base / "data")) as root:
        yield root, base


@pytest.mark.parametrize("graph", [
    lambda url: {"u": {"process_id": "load_url", "arguments": {"url": url, "format": "GeoJSON"}, "result": True}},
    lambda url: {"m": {"process_id": "load_ml_model", "arguments": {"id": url}, "result": True}},
], ids=["load_url", "load_ml_model"])
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0x7f000001", "[::ffff:127.0.0.1]"])
def test_url_loaders_never_reach_loopback(server, recorder, graph, host):
    root, _ = server
    alice, _ = clients(root)
    resp = alice.result(graph(f"http://{host}:{recorder.port}/x.json"))
    assert recorder.hits == [], resp.text[:300]  # the attack itself first, then how it was answered
    assert 400 <= resp.status_code < 500, resp.text[:300]
    assert "not allowed" in resp.json()["message"]


class _Canary:
    """Unpickling this writes a file: proof that code ran."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickled_model_in_a_job_is_never_unpickled(server, tmp_path):
    root, base = server
    alice, bob = clients(root)
    points = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [10.005 + 0.006 * i, 46.005 + 0.01 * (i % 3)]},
         "properties": {"target": i % 2}} for i in range(6)]}
    graph = {"load": LOAD_TINY,
             "agg": {"process_id": "aggregate_spatial", "arguments": {"data": {"from_node": "load"}, "geometries": points,
                     "reducer": {"process_graph": {"m": {"process_id": "mean", "arguments": {
                         "data": {"from_parameter": "data"}}, "result": True}}}}},
             "fit": {"process_id": "terramind_fit_class_logistic", "arguments": {
                 "predictors": {"from_node": "agg"}, "target": points}},
             "save": {"process_id": "save_ml_model", "arguments": {"data": {"from_node": "fit"}}, "result": True}}
    job_id = alice.create_job(graph).headers["OpenEO-Identifier"]
    assert alice.post(f"/jobs/{job_id}/results").status_code == 202
    assert alice.wait_job(job_id)["status"] == "finished"
    use = {"m": {"process_id": "load_ml_model", "arguments": {"id": job_id}},
           "p": {"process_id": "save_ml_model", "arguments": {"data": {"from_node": "m"}, "name": "again"},
                 "result": True}}
    assert alice.result(use).status_code == 200  # the genuine model loads
    # bob cannot borrow it by its id
    resp = bob.result(use)
    assert resp.status_code == 400 and f"no finished batch job '{job_id}' of yours" in resp.json()["message"]
    # swap the model file for a pickle whose loading would create a file
    target = tmp_path / canary()
    results = next((base / "data").rglob(f"{job_id}/results"))
    (results / "model.zip").write_bytes(pickle.dumps(_Canary(str(target))))
    resp = alice.result(use)
    assert not target.exists(), "the pickle was loaded: its code ran"
    assert resp.status_code == 400, resp.text[:300]
    assert "it looks like a Python pickle, which is never loaded" in resp.json()["message"]
