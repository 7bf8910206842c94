"""An exception from a dependency never reaches a user as an empty message (issue 17, problem 1).

A bare ``assert`` deep in a dependency (odc-geo did this on the README's collection) raises an
``AssertionError`` whose text is empty. The user gets a message naming where it was raised; the traceback
goes to the server's log (the operator's) and to the synchronous request's or batch job's log (the
user's), as ``data.traceback`` of the error entry. The real engine runs in server threads here, so the
failure can be injected with monkeypatch; a second test goes through the execution worker process.
"""

from __future__ import annotations

import json
import logging
import re
import time

import httpx
import pytest

from terramind_openeo.backend.settings import Settings

from .conftest import _HASHES, auth_headers, live_server

API = "/openeo/1.2"
CATALOG = {"collections": [{"id": "SYNTH", "type": "synthetic", "bands": ["B01"],
                            "extent": {"bbox": [16.0, 48.0, 16.2, 48.1], "crs": 4326, "resolution": 0.01,
                                       "dates": ["2020-01-01"]}}]}
GRAPH = {"load": {"process_id": "load_collection", "arguments": {"id": "SYNTH", "spatial_extent": None,
                                                                 "temporal_extent": None}},
         "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "load"}, "format": "netCDF"},
                  "result": True}}
EXPECTED = "AssertionError raised without a message in _broken()"


def _broken(*args, **kwargs):
    raise AssertionError  # what odc-geo's bare ``assert x1 >= x0`` raised


@pytest.fixture
def server(tmp_path, monkeypatch):
    from terramind_openeo.processes import load

    monkeypatch.setattr(load, "_load_synthetic", _broken)
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps(CATALOG))
    settings = Settings(dask="threads", isolation="thread", data_dir=tmp_path / "data", catalog=str(catalog),
                        basic_users=dict(_HASHES))
    with live_server(settings) as url:
        yield url


def _error_entry(logs: list[dict]) -> dict:
    errors = [e for e in logs if e["level"] == "error"]
    assert errors, logs
    return errors[-1]


def test_a_sync_request_gets_a_message_and_its_log_the_traceback(server, caplog):
    caplog.set_level(logging.ERROR)
    headers = auth_headers(server + API)
    resp = httpx.post(f"{server}{API}/result", json={"process": {"process_graph": GRAPH}}, headers=headers,
                      timeout=60)
    assert resp.status_code == 500, resp.text
    assert EXPECTED in resp.json()["message"], resp.json()
    assert "Traceback" not in resp.json()["message"]  # internals stay in the logs
    link = re.match(r"<([^>]+)>", resp.headers["link"]).group(1)
    entry = _error_entry(httpx.get(link, headers=headers).json()["logs"])
    assert EXPECTED in entry["message"]
    assert "Traceback" in entry["data"]["traceback"] and "_broken" in entry["data"]["traceback"]
    server_log = "\n".join(r.getMessage() for r in caplog.records)
    assert EXPECTED in server_log and "_broken" in server_log, server_log


def test_a_batch_job_log_keeps_the_traceback(server, caplog):
    caplog.set_level(logging.ERROR)
    headers = auth_headers(server + API)
    resp = httpx.post(f"{server}{API}/jobs", json={"process": {"process_graph": GRAPH}}, headers=headers)
    job = resp.headers["openeo-identifier"]
    httpx.post(f"{server}{API}/jobs/{job}/results", headers=headers).raise_for_status()
    deadline = time.monotonic() + 60
    while httpx.get(f"{server}{API}/jobs/{job}", headers=headers).json()["status"] not in ("error", "finished"):
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.2)
    entry = _error_entry(httpx.get(f"{server}{API}/jobs/{job}/logs", headers=headers).json()["logs"])
    assert EXPECTED in entry["message"]
    assert "_broken" in entry["data"]["traceback"]
    assert any("_broken" in r.getMessage() for r in caplog.records)


def test_the_execution_worker_process_passes_the_traceback_on(tmp_path, caplog):
    """``isolation = "process"``: an unexpected error in the execution worker (a netCDF file that is not
    one, opened by xarray there) reaches the server's log and the request's log with its traceback."""
    caplog.set_level(logging.ERROR)
    broken = tmp_path / "broken.nc"
    broken.write_text("not a netCDF file")
    catalog = tmp_path / "catalog.json"
    catalog.write_text(json.dumps({"collections": [{"id": "SYNTH", "type": "netcdf", "path": str(broken)}]}))
    settings = Settings(dask="threads", data_dir=tmp_path / "data", catalog=str(catalog), basic_users=dict(_HASHES))
    with live_server(settings) as url:
        headers = auth_headers(url + API)
        resp = httpx.post(f"{url}{API}/result", json={"process": {"process_graph": GRAPH}}, headers=headers,
                          timeout=120)
        assert resp.status_code == 500 and "load_collection" in resp.json()["message"], resp.text
        link = re.match(r"<([^>]+)>", resp.headers["link"]).group(1)
        entry = _error_entry(httpx.get(link, headers=headers).json()["logs"])
    assert "Traceback" in entry["data"]["traceback"] and "xarray" in entry["data"]["traceback"]
    assert any("Traceback" in r.getMessage() and "xarray" in r.getMessage() for r in caplog.records)
