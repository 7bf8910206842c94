"""Batch jobs, logs, results, cancel, isolation and restart against a live server with a fake engine."""

from __future__ import annotations

import time

import httpx
import pytest

from .conftest import auth_headers, live_server
from .fake_engine import FakeEngine

API = "/openeo/1.2"


def graph(*, seconds: float = 0.0, fail: bool = False, fmt: str = "GTiff", udf: bool = False) -> dict:
    nodes = {"load": {"process_id": "load_collection", "arguments": {"id": "FAKE_S2"}}}
    last = "load"
    if udf:
        nodes["udf"] = {"process_id": "run_udf", "arguments": {"data": {"from_node": last}, "udf": "x",
                                                                "runtime": "Python"}}
        last = "udf"
    if seconds:
        nodes["sleep"] = {"process_id": "sleep", "arguments": {"data": {"from_node": last}, "seconds": seconds}}
        last = "sleep"
    if fail:
        nodes["fail"] = {"process_id": "fail", "arguments": {"data": {"from_node": last}}}
        last = "fail"
    nodes["save"] = {"process_id": "save_result", "arguments": {"data": {"from_node": last}, "format": fmt},
                     "result": True}
    return {"process_graph": nodes}


def create_job(api: str, headers: dict, process: dict, **extra) -> str:
    resp = httpx.post(f"{api}/jobs", json={"process": process, **extra}, headers=headers)
    assert resp.status_code == 201, resp.text
    assert resp.headers["Location"].endswith(resp.headers["OpenEO-Identifier"])
    return resp.headers["OpenEO-Identifier"]


def wait_status(api: str, headers: dict, job_id: str, statuses: tuple[str, ...], timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = httpx.get(f"{api}/jobs/{job_id}", headers=headers).json()
        if job["status"] in statuses or time.monotonic() > deadline:
            return job
        time.sleep(0.05)


def test_job_lifecycle_logs_results_download(fake_server):
    url, _ = fake_server
    api = url + API
    h = auth_headers(api)
    job_id = create_job(api, h, graph(udf=True), title="t1", log_level="info")
    job = httpx.get(f"{api}/jobs/{job_id}", headers=h).json()
    assert job["status"] == "created" and job["title"] == "t1"
    assert httpx.get(f"{api}/jobs/{job_id}/results", headers=h).json()["code"] == "JobNotFinished"
    partial = httpx.get(f"{api}/jobs/{job_id}/results", params={"partial": "true"}, headers=h).json()
    assert partial["openeo:status"] == "running" and partial["assets"] == {}
    assert httpx.patch(f"{api}/jobs/{job_id}", json={"title": "t2"}, headers=h).status_code == 204
    assert httpx.post(f"{api}/jobs/{job_id}/results", headers=h).status_code == 202
    job = wait_status(api, h, job_id, ("finished", "error"))
    assert job["status"] == "finished" and job["progress"] == 100 and job["title"] == "t2"
    assert job["usage"]["cpu"]["unit"] == "cpu-seconds"
    assert [j["id"] for j in httpx.get(f"{api}/jobs", headers=h).json()["jobs"]] == [job_id]
    logs = httpx.get(f"{api}/jobs/{job_id}/logs", headers=h).json()["logs"]
    assert any(e["message"] == "udf says hello" and e["data"] == {"x": 1} for e in logs)
    after = httpx.get(f"{api}/jobs/{job_id}/logs", params={"offset": logs[0]["id"]}, headers=h).json()["logs"]
    assert [e["id"] for e in after] == [e["id"] for e in logs[1:]]
    assert httpx.get(f"{api}/jobs/{job_id}/logs", params={"level": "error"}, headers=h).json()["logs"] == []
    results = httpx.get(f"{api}/jobs/{job_id}/results", headers=h).json()
    assert results["type"] == "Collection" and results["openeo:status"] == "finished"
    (name, asset), = results["assets"].items()
    assert name == "result.tif" and asset["type"].startswith("image/tiff")
    body = httpx.get(asset["href"])  # signed link: no auth header needed
    assert body.status_code == 200 and b'"format": "gtiff"' in body.content
    head = httpx.head(asset["href"])  # the size before the download, no body
    assert head.status_code == 200 and int(head.headers["content-length"]) == len(body.content) and not head.content
    assert httpx.head(asset["href"][:-5] + "X.tif").status_code == 410
    forged = asset["href"].replace("/result.tif", "/../../jobs.sqlite")
    assert httpx.get(forged).status_code in (404, 410)
    tampered = httpx.get(asset["href"][:-5] + "X.tif")
    assert tampered.status_code == 410
    assert httpx.get(f"{api}/jobs/{job_id}/estimate", headers=h).json()["costs"] == 0
    assert httpx.delete(f"{api}/jobs/{job_id}", headers=h).status_code == 204
    assert httpx.get(f"{api}/jobs/{job_id}", headers=h).status_code == 404
    assert httpx.get(asset["href"]).status_code == 404


def test_failed_job_reports_error_and_424(fake_server):
    url, _ = fake_server
    api = url + API
    h = auth_headers(api)
    job_id = create_job(api, h, graph(fail=True))
    httpx.post(f"{api}/jobs/{job_id}/results", headers=h)
    assert wait_status(api, h, job_id, ("finished", "error"))["status"] == "error"
    resp = httpx.get(f"{api}/jobs/{job_id}/results", headers=h)
    assert resp.status_code == 424 and "on purpose" in resp.json()["message"]
    errors = httpx.get(f"{api}/jobs/{job_id}/logs", params={"level": "error"}, headers=h).json()["logs"]
    assert errors[-1]["code"] == "ProcessFailed"


def test_an_unexpected_engine_failure_is_an_internal_error_with_its_traceback_in_the_log(fake_server):
    url, _ = fake_server
    api = url + API
    h = auth_headers(api)
    nodes = {"load": {"process_id": "load_collection", "arguments": {"id": "FAKE_S2"}},
             "crash": {"process_id": "crash", "arguments": {"data": {"from_node": "load"}}, "result": True}}
    job_id = create_job(api, h, {"process_graph": nodes})
    httpx.post(f"{api}/jobs/{job_id}/results", headers=h)
    assert wait_status(api, h, job_id, ("finished", "error"))["status"] == "error"
    resp = httpx.get(f"{api}/jobs/{job_id}/results", headers=h)
    assert resp.status_code == 424 and "RuntimeError" in resp.json()["message"]
    [entry] = httpx.get(f"{api}/jobs/{job_id}/logs", params={"level": "error"}, headers=h).json()["logs"]
    assert entry["code"] == "Internal" and "crashed on purpose" in entry["message"]
    assert "fake_engine.py" in entry["data"]["traceback"]  # where it was raised, for the operator and the user


def test_cancel_stops_work_and_publishes_nothing(fake_server, settings):
    url, _ = fake_server
    api = url + API
    h = auth_headers(api)
    job_id = create_job(api, h, graph(seconds=10))
    httpx.post(f"{api}/jobs/{job_id}/results", headers=h)
    assert wait_status(api, h, job_id, ("running",))["status"] == "running"
    assert httpx.patch(f"{api}/jobs/{job_id}", json={"title": "x"}, headers=h).json()["code"] == "JobLocked"
    assert httpx.delete(f"{api}/jobs/{job_id}/results", headers=h).status_code == 204
    assert wait_status(api, h, job_id, ("canceled",))["status"] == "canceled"
    time.sleep(0.3)
    assert httpx.get(f"{api}/jobs/{job_id}", headers=h).json()["status"] == "canceled"
    assert not (settings.data_dir / "jobs" / job_id / "results").exists()
    assert not list((settings.data_dir / "jobs" / job_id).glob("partial-*"))
    assert httpx.get(f"{api}/jobs/{job_id}/results", headers=h).json()["code"] == "JobNotFinished"


def test_other_users_get_404_and_change_nothing(fake_server):
    url, _ = fake_server
    api = url + API
    alice, bob = auth_headers(api, "alice"), auth_headers(api, "bob")
    job_id = create_job(api, alice, graph(), title="mine")
    for method, path, body in [("GET", "", None), ("PATCH", "", {"title": "stolen"}), ("DELETE", "", None),
                               ("GET", "/logs", None), ("GET", "/results", None), ("POST", "/results", None),
                               ("DELETE", "/results", None), ("GET", "/estimate", None)]:
        resp = httpx.request(method, f"{api}/jobs/{job_id}{path}", json=body, headers=bob)
        assert resp.status_code == 404 and resp.json()["code"] == "JobNotFound", (method, path)
    assert httpx.get(f"{api}/jobs", headers=bob).json()["jobs"] == []
    job = httpx.get(f"{api}/jobs/{job_id}", headers=alice).json()
    assert job["title"] == "mine" and job["status"] == "created"
    udp = {"process_graph": {"abs": {"process_id": "absolute", "arguments": {"x": -1}, "result": True}}}
    assert httpx.put(f"{api}/process_graphs/my_abs", json=udp, headers=alice).status_code == 200
    assert httpx.get(f"{api}/process_graphs/my_abs", headers=bob).status_code == 404
    assert httpx.get(f"{api}/process_graphs", headers=bob).json()["processes"] == []


def test_user_defined_processes_are_usable(fake_server):
    url, _ = fake_server
    api = url + API
    h = auth_headers(api)
    udp = {"summary": "abs", "parameters": [{"name": "x", "schema": {}}],
           "process_graph": {"abs": {"process_id": "absolute", "arguments": {"x": {"from_parameter": "x"}},
                                     "result": True}}}
    assert httpx.put(f"{api}/process_graphs/my_abs", json=udp, headers=h).status_code == 200
    assert httpx.put(f"{api}/process_graphs/bad-id", json=udp, headers=h).status_code == 400
    assert httpx.get(f"{api}/process_graphs", headers=h).json()["processes"][0]["id"] == "my_abs"
    assert httpx.get(f"{api}/process_graphs/my_abs", headers=h).json()["process_graph"] == udp["process_graph"]
    pg = {"process_graph": {"u": {"process_id": "my_abs", "arguments": {"x": -3}, "result": True}}}
    resp = httpx.post(f"{api}/result", json={"process": pg}, headers=h)
    assert resp.status_code == 200 and resp.json() == 3
    assert httpx.post(f"{api}/validation", json=pg, headers=h).json() == {"errors": []}
    assert httpx.delete(f"{api}/process_graphs/my_abs", headers=h).status_code == 204
    errors = httpx.post(f"{api}/validation", json=pg, headers=h).json()["errors"]
    assert errors[0]["code"] == "ProcessUnsupported"


def test_restart_marks_running_job_error_and_keeps_others(settings):
    engine = FakeEngine()
    with live_server(settings, engine) as url:
        api = url + API
        h = auth_headers(api)
        done = create_job(api, h, graph())
        httpx.post(f"{api}/jobs/{done}/results", headers=h)
        assert wait_status(api, h, done, ("finished",))["status"] == "finished"
        running = create_job(api, h, graph(seconds=30))
        httpx.post(f"{api}/jobs/{running}/results", headers=h)
        assert wait_status(api, h, running, ("running",))["status"] == "running"
        # simulate a crash: the store row stays 'running' as if the process had died
        state = None
    from terramind_openeo.backend.store import Store

    store = Store(settings.db_path)
    store.set_status(running, "running")
    store.close()
    with live_server(settings, FakeEngine()) as url:
        api = url + API
        job = httpx.get(f"{api}/jobs/{running}", headers=h).json()
        assert job["status"] == "error"
        logs = httpx.get(f"{api}/jobs/{running}/logs", headers=h).json()["logs"]
        assert "server stopped" in logs[-1]["message"]
        assert httpx.get(f"{api}/jobs/{done}", headers=h).json()["status"] == "finished"
        assert httpx.get(f"{api}/jobs/{done}/results", headers=h).status_code == 200
    del state


@pytest.mark.parametrize("policy,user,allowed", [("off", "alice", False), ("users", "alice", True),
                                                  ("users", "bob", False), ("authenticated", "bob", True)])
def test_udf_policy(settings, policy, user, allowed):
    with live_server(settings.replace(udf_policy=policy, udf_users=("alice",)), FakeEngine()) as url:
        api = url + API
        h = auth_headers(api, user)
        resp = httpx.post(f"{api}/result", json={"process": graph(udf=True, fmt="JSON")}, headers=h)
        assert (resp.status_code == 200) is allowed, resp.text
        if not allowed:
            assert resp.json()["code"] == "PermissionsInsufficient"
            assert httpx.post(f"{api}/jobs", json={"process": graph(udf=True)}, headers=h).status_code == 403


def test_concurrency_limit_keeps_extra_jobs_queued(settings):
    with live_server(settings.replace(max_running_jobs=1, max_running_jobs_per_user=1), FakeEngine()) as url:
        api = url + API
        h = auth_headers(api)
        first, second = create_job(api, h, graph(seconds=1.5)), create_job(api, h, graph(seconds=0.1))
        httpx.post(f"{api}/jobs/{first}/results", headers=h)
        httpx.post(f"{api}/jobs/{second}/results", headers=h)
        assert wait_status(api, h, first, ("running",))["status"] == "running"
        assert httpx.get(f"{api}/jobs/{second}", headers=h).json()["status"] == "queued"
        assert wait_status(api, h, second, ("finished",))["status"] == "finished"
        assert httpx.get(f"{api}/jobs/{first}", headers=h).json()["status"] == "finished"


def test_serve_command_starts_and_stops(tmp_path):
    import signal
    import subprocess
    import sys

    from .conftest import free_port

    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "terramind_openeo.cli", "serve", "--port", str(port),
                             "--data-dir", str(tmp_path / "data")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                versions = httpx.get(f"http://127.0.0.1:{port}/.well-known/openeo").json()["versions"]
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            pytest.fail("serve did not answer within 60 s")
        assert versions[0]["url"] == f"http://127.0.0.1:{port}/openeo/1.2/"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    assert (tmp_path / "data" / "jobs.sqlite").is_file()
