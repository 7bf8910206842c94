"""Attacks 6 and 9: one stored job that stops the server from starting, and the smaller ways a request
reached a 500 or a non-standard answer (wrong types, deep JSON, NaN, forged Host headers, leftovers)."""

from __future__ import annotations

import httpx
import pytest

from terramind_openeo.backend.store import Store

from .conftest import API, base_settings, clients, serve


def deep(n: int):
    value: list = []
    for _ in range(n):
        value = [value]
    return value


def test_a_stored_job_nested_2000_deep_does_not_stop_the_server(tmp_path):
    data_dir = tmp_path / "data"
    store = Store(data_dir / "jobs.sqlite")
    bad = store.create_job("alice", {"process_graph": {"a": {"process_id": "add", "arguments": {"x": 1, "y": 1},
                                                              "result": True}}})
    nested = "[" * 2000 + "]" * 2000  # as the old API stored it (too deep for json.dumps to write here)
    text = '{"process_graph": {"a": {"process_id": "add", "arguments": {"x": ' + nested + ', "y": 1}, "result": true}}}'
    store._exec("UPDATE jobs SET process = ?, status = 'queued' WHERE id = ?", (text, bad.id))
    broken = store.create_job("alice", {"process_graph": {"a": {"process_id": "add", "arguments": {"x": 1, "y": 2},
                                                                 "result": True}}})
    store._exec("UPDATE jobs SET process = ?, status = 'running' WHERE id = ?", ("{not json", broken.id))
    store.close()
    with serve(base_settings(data_dir)) as root:  # "Application startup failed" before
        alice, _ = clients(root)
        listing = alice.get("/jobs")
        assert listing.status_code == 200, listing.text[:300]
        assert {j["id"] for j in listing.json()["jobs"]} >= {bad.id, broken.id}
        for job_id in (bad.id, broken.id):
            assert alice.wait_job(job_id, timeout=60)["status"] == "error"
            assert alice.get(f"/jobs/{job_id}").status_code == 200


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve(base_settings(tmp_path_factory.mktemp("robust") / "data")) as root:
        yield root


@pytest.mark.parametrize("field,value", [("title", 12), ("title", {"a": 1}), ("description", ["x"]),
                                         ("plan", 3.5), ("budget", "a lot"), ("budget", -1),
                                         pytest.param("log_level", 7, id="control-log_level-7")])
def test_job_metadata_of_the_wrong_type_is_a_400(server, field, value):
    """Before issue 15 only ``log_level`` was checked: ``control-log_level-7`` is a control (control: held
    before issue 15 too)."""
    alice, _ = clients(server)
    resp = alice.create_job({"a": {"process_id": "add", "arguments": {"x": 1, "y": 2}, "result": True}},
                            **{field: value})
    assert resp.status_code == 400, resp.text[:300]
    assert field in resp.json()["message"]


@pytest.mark.parametrize("depth", [200, 200_000])
def test_deeply_nested_json_is_a_400(server, depth):
    alice, _ = clients(server)
    body = b'{"process": {"process_graph": {"a": {"process_id": "add", "arguments": {"x": ' + b"[" * depth \
        + b"]" * depth + b', "y": 1}, "result": true}}}}'
    resp = alice.http.post(f"{alice.api}/result", content=body,
                           headers={**alice.headers, "Content-Type": "application/json"})
    assert resp.status_code in (400, 413), resp.text[:300]
    assert resp.json()["code"] in ("JsonInvalid", "PayloadTooLarge")


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_non_standard_numbers_are_refused(server, number):
    alice, _ = clients(server)
    body = b'{"process": {"process_graph": {"a": {"process_id": "add", "arguments": {"x": ' + number \
        + b', "y": 1}, "result": true}}}}'
    resp = alice.http.post(f"{alice.api}/result", content=body,
                           headers={**alice.headers, "Content-Type": "application/json"})
    assert resp.status_code == 400, resp.text[:300]
    assert resp.json()["code"] == "JsonInvalid"


def test_links_never_name_a_host_the_client_chose(server):
    alice, _ = clients(server)
    job_id = alice.create_job({"a": {"process_id": "add", "arguments": {"x": 1, "y": 2}, "result": True}}
                              ).headers["OpenEO-Identifier"]
    for forged in ("evil.example.org", "evil.example.org:8080", "127.0.0.1@evil.example.org"):
        resp = httpx.get(f"{server}{API}/jobs", headers={**alice.headers, "Host": forged})
        assert resp.status_code == 200, resp.text[:200]
        assert "evil" not in resp.text, resp.text[:300]
        resp = httpx.get(f"{server}{API}/", headers={"Host": forged})
        assert "evil" not in resp.text
    assert job_id


def test_scratch_and_partial_directories_are_swept_at_start_up(tmp_path):
    data_dir = tmp_path / "data"
    leftovers = [data_dir / "sync" / "abc123" / "out", data_dir / "jobs" / "j1" / "partial-deadbeef",
                 data_dir / "tmpq1w2e3"]
    for path in leftovers:
        path.mkdir(parents=True)
        (path / "half-written.tif").write_bytes(b"II*\x00")
    (data_dir / "jobs" / "j1" / "results").mkdir()
    with serve(base_settings(data_dir)):
        pass
    assert not any(p.exists() for p in leftovers)
    assert (data_dir / "jobs" / "j1" / "results").is_dir()  # published results stay
