"""A land-cover graph through the API, synchronous and as a batch job, as a client sees it (issue 17).

- warnings reach the logs the client reads (problem 7): random weights said in the sync log (the ``monitor``
  link of ``POST /result``) and in the batch job's log, not only in a worker's stderr;
- the results name their classes (problem 4) and carry a value range (problem 8): the GeoTIFF's colour table,
  band metadata and GDAL statistics, the batch result's STAC ``classification:classes``.
"""

from __future__ import annotations

import re
import time

import httpx
import pytest

from terramind_openeo.backend.settings import Settings

from .conftest import _HASHES, PASSWORDS, live_server

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


def _headers(url: str) -> dict:
    token = httpx.get(f"{url}{API}/credentials/basic", auth=("alice", PASSWORDS["alice"]), timeout=120).json()
    return {"Authorization": f"Bearer basic//{token['access_token']}"}


def _random_weights_warning(logs: list[dict]) -> dict:
    found = [e for e in logs if e["level"] == "warning" and "RANDOM weights" in e["message"]]
    assert found, [e["message"] for e in logs]
    return found[0]


def _check_lulc_geotiff(path) -> None:
    import rasterio

    from terramind_openeo.classes import GTIFF_TAG

    with rasterio.open(path) as src:
        tags = src.tags(1)
        assert src.descriptions[0] == "LULC"
        assert "Water" in tags[GTIFF_TAG] and "Rangeland" in tags[GTIFF_TAG]  # the 10 Esri/IO classes, named
        assert src.colormap(1)[1][:3] == (0x31, 0x71, 0xAD)  # class 1 (water) in TerraMind's colour
        assert 0 <= float(tags["STATISTICS_MINIMUM"]) <= float(tags["STATISTICS_MAXIMUM"]) <= 9


def test_the_sync_result_and_log(server, tmp_path):
    headers = _headers(server)
    resp = httpx.post(f"{server}{API}/result", json={"process": {"process_graph": GRAPH}}, headers=headers,
                      timeout=600)
    assert resp.status_code == 200, resp.text
    link = re.match(r"<([^>]+)>", resp.headers["link"]).group(1)
    entry = _random_weights_warning(httpx.get(link, headers=headers, timeout=120).json()["logs"])
    assert "terramind_generate" in entry["message"] and "mean nothing" in entry["message"]
    (tmp_path / "lulc.tif").write_bytes(resp.content)
    _check_lulc_geotiff(tmp_path / "lulc.tif")


def test_the_batch_result_and_log(server, tmp_path):
    headers = _headers(server)
    job = httpx.post(f"{server}{API}/jobs", json={"process": {"process_graph": GRAPH}},
                     headers=headers, timeout=120).headers["openeo-identifier"]
    httpx.post(f"{server}{API}/jobs/{job}/results", headers=headers, timeout=120).raise_for_status()
    deadline = time.monotonic() + 600
    while (status := httpx.get(f"{server}{API}/jobs/{job}", headers=headers,
                               timeout=120).json()["status"]) not in ("finished", "error"):
        assert time.monotonic() < deadline
        time.sleep(0.5)
    logs = httpx.get(f"{server}{API}/jobs/{job}/logs", headers=headers, timeout=120).json()["logs"]
    assert status == "finished", logs
    _random_weights_warning(logs)
    results = httpx.get(f"{server}{API}/jobs/{job}/results", headers=headers, timeout=120).json()
    tifs = {name: asset for name, asset in results["assets"].items() if name.endswith(".tif")}
    assert tifs, results["assets"]
    for name, asset in tifs.items():
        titles = [c["title"] for c in asset["classification:classes"]]
        assert titles[:3] == ["No data", "Water", "Trees"] and titles[9] == "Rangeland", titles
        assert any("classification" in ext for ext in results["stac_extensions"])
        (tmp_path / name).write_bytes(httpx.get(asset["href"], timeout=120).content)
        _check_lulc_geotiff(tmp_path / name)
