"""Bad requests get openEO errors and change nothing; the server stays up under concurrent load."""

from __future__ import annotations

import concurrent.futures
import json

import httpx

from .conftest import auth_headers, live_server
from .fake_engine import FakeEngine
from .test_jobs import create_job, graph, wait_status

API = "/openeo/1.2"


def test_bad_requests_get_openeo_errors_and_change_nothing(fake_server):
    url, engine = fake_server
    api = url + API
    h = auth_headers(api)
    job_id = create_job(api, h, graph(), title="keep")
    before = httpx.get(f"{api}/jobs/{job_id}", headers=h).json()

    def post(path: str, content: bytes, ctype: str = "application/json", method: str = "POST"):
        return httpx.request(method, f"{api}{path}", content=content, headers={**h, "Content-Type": ctype})

    cases = [
        (post("/result", b"{not json"), 400, "JsonInvalid"),
        (post("/jobs", b"[1, 2]"), 400, "JsonInvalid"),
        (post("/result", b""), 400, "JsonInvalid"),
        (post("/result", b'{"process": {}}'), 400, "ProcessGraphMissing"),
        (post("/result", json.dumps({"process": {"process_graph": {"a": {"arguments": {}}}}}).encode()), 400,
         "ProcessGraphInvalid"),
        (post("/result", json.dumps({"process": {"process_graph": {
            "a": {"process_id": "no_such_process", "arguments": {}, "result": True}}}}).encode()), 400,
         "ProcessUnsupported"),
        (post("/result", json.dumps({"process": {"process_graph": {
            "a": {"process_id": "load_collection", "arguments": {"id": "NOPE"}, "result": True}}}}).encode()),
         404, "CollectionNotFound"),
        (post("/result", json.dumps({"process": graph()}).encode(), "text/plain"), 415, "ContentTypeInvalid"),
        (post("/result", b'{"process": "' + b"x" * 70_000 + b'"}'), 413, "PayloadTooLarge"),
        (post(f"/jobs/{job_id}", b"{broken", method="PATCH"), 400, "JsonInvalid"),
        (post(f"/jobs/{job_id}", b'{"log_level": "loud"}', method="PATCH"), 400, "BadRequest"),
        (post("/jobs", json.dumps({"process": graph(fail=True), "log_level": "loud"}).encode()), 400, "BadRequest"),
        (httpx.get(f"{api}/jobs/does-not-exist", headers=h), 404, "JobNotFound"),
        (httpx.get(f"{api}/jobs/{job_id}/logs", params={"level": "loud"}, headers=h), 400, "BadRequest"),
        (httpx.get(f"{api}/jobs", params={"limit": "x"}, headers=h), 400, "BadRequest"),
        (httpx.delete(f"{api}/collections", headers=h), 405, "MethodNotAllowed"),
        (httpx.get(f"{api}/download/{job_id}/9999999999/abc/..%2F..%2Fjobs.sqlite"), 410, "ResultLinkExpired"),
        (httpx.get(f"{api}/download/{job_id}/1/abc/result.tif"), 410, "ResultLinkExpired"),
        (httpx.get(f"{api}/process_graphs/..%2Fx", headers=h), 404, "NotFound"),
    ]
    for resp, status, code in cases:
        assert resp.status_code == status, (code, resp.status_code, resp.text[:200])
        body = resp.json()
        assert body["code"] == code and body["message"] and body["id"], body
    assert engine.executions == 0
    assert httpx.get(f"{api}/jobs/{job_id}", headers=h).json() == before
    assert httpx.get(f"{api}/jobs", headers=h).json()["jobs"][0]["id"] == job_id


def test_path_traversal_in_result_names(fake_server, settings):
    from terramind_openeo.backend.errors import FileNotFound
    from terramind_openeo.backend.routers.results import safe_child

    root = settings.data_dir / "jobs" / "j" / "results"
    root.mkdir(parents=True)
    (root / "ok.tif").write_bytes(b"x")
    assert safe_child(root, "ok.tif") == (root / "ok.tif").resolve()
    for bad in ("../../jobs.sqlite", "/etc/passwd", "a/../../x", "..", "", "a\\..\\b", "x\x00y"):
        try:
            safe_child(root, bad)
        except FileNotFound:
            continue
        raise AssertionError(f"{bad!r} was accepted")


def test_20_concurrent_sync_requests_and_5_batch_jobs(settings):
    """Server capacity (the per-user bound of concurrent requests is raised: two users send all 20)."""
    engine = FakeEngine()
    with live_server(settings.replace(max_sync_requests_per_user=20), engine) as url:
        _twenty_requests(url, engine)


def _twenty_requests(url, engine):
    api = url + API
    h = auth_headers(api)
    h_bob = auth_headers(api, "bob")

    def sync(i: int):
        pg = {"process_graph": {"add": {"process_id": "add", "arguments": {"x": i, "y": 0.5}, "result": True}}}
        return httpx.post(f"{api}/result", json={"process": pg}, headers=h, timeout=60)

    def sync_file(i: int):
        return httpx.post(f"{api}/result", json={"process": graph(seconds=0.2, fmt="netCDF")},
                          headers=h_bob, timeout=60)

    jobs = [create_job(api, h if i % 2 else h_bob, graph(seconds=0.3)) for i in range(5)]
    for i, job_id in enumerate(jobs):
        assert httpx.post(f"{api}/jobs/{job_id}/results", headers=h if i % 2 else h_bob).status_code == 202
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        values = list(pool.map(sync, range(10)))
        files = list(pool.map(sync_file, range(10)))
    assert [r.json() for r in values] == [i + 0.5 for i in range(10)]
    assert all(r.status_code == 200 and r.headers["content-type"] == "application/x-netcdf" for r in files)
    for i, job_id in enumerate(jobs):
        job = wait_status(api, h if i % 2 else h_bob, job_id, ("finished", "error"), timeout=60)
        assert job["status"] == "finished", job
    assert httpx.get(f"{api}/").status_code == 200
