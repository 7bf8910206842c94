"""Attack 1: a stored process called under another namespace slipped past the UDF policy and the weights
allow-list, which looked inside stored processes for namespace ``None``/``"user"`` only, while the engine
ran the stored process for ``"backend"``, ``"predefined"`` and ``""`` as well."""

from __future__ import annotations

import pytest

from terramind_openeo.backend.store import Store

from .conftest import LOAD_20PX, LOAD_TINY, base_settings, clients, serve

UDF_ADD_ONE = """
import xarray
def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
    return cube + 1
"""
# None and "user" are controls: the policies looked inside stored processes for these before issue 15 too
# (they pass on the old code by design); the attack is the other three.
NAMESPACES = [pytest.param(None, id="control-None"), pytest.param("user", id="control-user"),
              "backend", "predefined", ""]


def udf_process() -> dict:
    return {"parameters": [{"name": "data", "schema": {}, "description": "cube"}], "process_graph": {
        "udf": {"process_id": "run_udf", "arguments": {"data": {"from_parameter": "data"}, "udf": UDF_ADD_ONE,
                                                         "runtime": "Python"}, "result": True}}}


def weights_process(url: str) -> dict:
    tm = {"process_id": "terramind_embed", "arguments": {
        "data": {"from_parameter": "data"}, "model": "terramind_v1_tiny", "weights": url, "tile_size": 16,
        "overlap": 0, "modalities": ["S2L2A"], "missing_bands": "mean"}, "result": True}
    return {"parameters": [{"name": "data", "schema": {}, "description": "cube"}], "process_graph": {"tm": tm}}


def call(pid: str, namespace, load: dict = LOAD_TINY) -> dict:
    node = {"process_id": pid, "arguments": {"data": {"from_node": "load"}}, "result": True}
    if namespace is not None:
        node["namespace"] = namespace
    return {"load": load, "call": node}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("ns") / "data"
    with serve(base_settings(data_dir, udf_policy="users", udf_users=("alice",))) as root:
        yield root, data_dir


def test_storing_a_udf_process_needs_udf_rights(server):
    root, _ = server
    _, bob = clients(root)
    resp = bob.put("/process_graphs/evil_udf", json=udf_process())
    assert resp.status_code == 403, resp.text
    assert resp.json()["code"] == "PermissionsInsufficient"
    assert bob.get("/process_graphs/evil_udf").status_code == 404


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_a_stored_udf_process_runs_under_no_namespace_without_udf_rights(server, namespace):
    """The process was stored before (e.g. under another policy): the run is checked again. The
    ``control-*`` cases held before issue 15 too (control: held before issue 15 too)."""
    root, data_dir = server
    _, bob = clients(root)
    store = Store(data_dir / "jobs.sqlite")
    store.put_udp("bob", "old_udf", {"id": "old_udf", **udf_process()})
    store.close()
    resp = bob.result(call("old_udf", namespace))
    assert resp.status_code in (400, 403), resp.text[:300]
    assert resp.json()["code"] in ("PermissionsInsufficient", "ProcessUnsupported"), resp.text


def test_storing_a_process_with_weights_outside_the_allow_list_is_refused(server, recorder):
    root, _ = server
    _, bob = clients(root)
    resp = bob.put("/process_graphs/evil_weights", json=weights_process(f"{recorder.url}/w.pt"))
    assert recorder.hits == [], resp.text[:300]
    assert resp.status_code == 400, resp.text


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_stored_weights_url_is_refused_under_every_namespace(server, recorder, namespace):
    """Before: under "backend", "predefined" and "" the weights were fetched from the loopback recorder.
    The ``control-*`` cases held before issue 15 too (control: held before issue 15 too)."""
    root, data_dir = server
    alice, _ = clients(root)
    store = Store(data_dir / "jobs.sqlite")
    store.put_udp("alice", "old_weights", {"id": "old_weights", **weights_process(f"{recorder.url}/w.pt")})
    store.close()
    resp = alice.result(call("old_weights", namespace, LOAD_20PX))
    assert recorder.hits == [], (recorder.hits, resp.text[:300])  # the attack itself first
    assert 400 <= resp.status_code < 500, resp.text[:300]
