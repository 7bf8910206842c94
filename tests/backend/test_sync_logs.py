"""Logs of synchronous requests: the ``monitor`` link of ``POST /result`` (openEO API 1.2), per user."""

from __future__ import annotations

import re
import time

import httpx

from terramind_openeo.backend.store import Store, sync_log_key

from .conftest import auth_headers

API = "/openeo/1.2"
MONITOR = re.compile(r'^<([^>]+)>;\s?rel="monitor"$')  # the pattern openeo-api's openapi.yaml gives


def _post(url: str, graph: dict, user: str = "alice") -> httpx.Response:
    return httpx.post(f"{url}{API}/result", json={"process": {"process_graph": graph}},
                      headers=auth_headers(url + API, user), timeout=30)


def _monitor_link(resp: httpx.Response) -> str:
    match = MONITOR.match(resp.headers.get("link", ""))
    assert match, f"no monitor link in {dict(resp.headers)}"
    return match.group(1)


UDF_GRAPH = {"load": {"process_id": "load_collection", "arguments": {"id": "FAKE_S2"}},
             "udf": {"process_id": "run_udf", "arguments": {"data": 3, "udf": "x", "runtime": "Python"},
                     "result": True}}


def test_a_successful_request_links_its_log(fake_server):
    url, _ = fake_server
    resp = _post(url, UDF_GRAPH)
    assert resp.status_code == 200 and resp.json() == 3
    link = _monitor_link(resp)
    logs = httpx.get(link, headers=auth_headers(url + API)).json()
    messages = [e["message"] for e in logs["logs"]]
    assert messages[0] == "Synchronous processing started." and messages[-1] == "Synchronous processing finished."
    assert {"message": "udf says hello", "data": {"x": 1}}.items() <= next(
        e for e in logs["logs"] if e["message"] == "udf says hello").items()
    assert [int(e["id"]) for e in logs["logs"]] == sorted(int(e["id"]) for e in logs["logs"])


def test_a_failed_request_links_a_log_with_its_error(fake_server):
    url, _ = fake_server
    resp = _post(url, {"f": {"process_id": "fail", "arguments": {"data": 1}, "result": True}})
    assert resp.status_code == 400 and resp.json()["code"] == "ProcessFailed"
    logs = httpx.get(_monitor_link(resp), headers=auth_headers(url + API)).json()["logs"]
    errors = [e for e in logs if e["level"] == "error"]
    assert errors and errors[-1]["code"] == "ProcessFailed"
    assert "failed on purpose" in errors[-1]["message"]


def test_a_log_is_its_owners_only(fake_server):
    url, _ = fake_server
    link = _monitor_link(_post(url, UDF_GRAPH))
    other = httpx.get(link, headers=auth_headers(url + API, "bob"))
    assert other.status_code == 404 and other.json()["code"] == "NotFound"
    assert httpx.get(link).status_code == 401
    unknown = httpx.get(f"{url}{API}/result/logs/0123456789abcdef0123", headers=auth_headers(url + API))
    assert unknown.status_code == 404


def test_an_invalid_request_gets_no_log(fake_server):
    url, _ = fake_server
    resp = httpx.post(f"{url}{API}/result", content=b"{", headers={**auth_headers(url + API),
                                                                    "Content-Type": "application/json"})
    assert resp.status_code == 400 and "link" not in resp.headers


def test_expired_sync_logs_are_dropped_and_job_logs_are_untouched(tmp_path):
    store = Store(tmp_path / "db.sqlite")
    job = store.create_job("alice", {"process_graph": {}})
    store.add_log(job.id, "info", "job line")
    old = store.create_sync_log("alice", ttl_s=3600)
    store.add_log(sync_log_key(old), "info", "old line")
    time.sleep(0.05)
    new = store.create_sync_log("alice", ttl_s=0.01)  # drops every log older than 10 ms: ``old``
    assert not store.has_sync_log("alice", old) and store.logs(sync_log_key(old)) == []
    assert store.has_sync_log("alice", new) and not store.has_sync_log("bob", new)
    assert [e["message"] for e in store.logs(job.id)] == ["job line"]
