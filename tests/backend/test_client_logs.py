"""Warnings reach the logs the client reads (issue 17, problem 7): random weights said in the sync log (the
``monitor`` link of ``POST /result``) and in the batch job's log, not only in a worker's stderr."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from terramind_openeo.backend.settings import Settings

from .conftest import _HASHES, auth_headers, live_server

API = "/openeo/1.2"
TANZANIA_64PX = {"west": 617301.8198784497, "east": 617941.8198784497, "south": 9624458.22745184,
                 "north": 9625098.22745184, "crs": "EPSG:32736"}
GRAPH = {"load": {"process_id": "load_collection", "arguments": {"id": "TERRAMIND_S2L2A", "spatial_extent": TANZANIA_64PX,
                                                                 "temporal_extent": None}},
         "gen": {"process_id": "terramind_generate", "arguments": {
             "data": {"from_node": "load"}, "model": "terramind_v1_tiny", "weights": "random", "tile_size": 64,
             "overlap": 0, "timesteps": 2, "argmax": True}},
         "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "gen"}, "format": "GTiff"},
                  "result": True}}


@pytest.fixture(scope="module")
def server(tmp_path_factory, shared_data):
    settings = Settings(dask="threads", data_dir=tmp_path_factory.mktemp("logs") / "data", basic_users=dict(_HASHES))
    with live_server(settings) as url:
        yield url


def _random_weights_warning(logs: list[dict]) -> dict:
    found = [e for e in logs if e["level"] == "warning" and "RANDOM weights" in e["message"]]
    assert found, [e["message"] for e in logs]
    return found[0]


def test_the_sync_log_says_the_weights_are_random(server):
    headers = auth_headers(server + API)
    resp = httpx.post(f"{server}{API}/result", json={"process": {"process_graph": GRAPH}}, headers=headers,
                      timeout=600)
    assert resp.status_code == 200, resp.text
    link = re.match(r"<([^>]+)>", resp.headers["link"]).group(1)
    entry = _random_weights_warning(httpx.get(link, headers=headers).json()["logs"])
    assert "terramind_generate" in entry["message"] and "mean nothing" in entry["message"]


def test_the_job_log_says_the_weights_are_random(server):
    headers = auth_headers(server + API)
    job = httpx.post(f"{server}{API}/jobs", json={"process": {"process_graph": GRAPH}},
                     headers=headers).headers["openeo-identifier"]
    httpx.post(f"{server}{API}/jobs/{job}/results", headers=headers).raise_for_status()
    deadline = time.monotonic() + 600
    while (status := httpx.get(f"{server}{API}/jobs/{job}", headers=headers).json()["status"]) not in ("finished",
                                                                                                        "error"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    logs = httpx.get(f"{server}{API}/jobs/{job}/logs", headers=headers).json()["logs"]
    assert status == "finished", logs
    _random_weights_warning(logs)
