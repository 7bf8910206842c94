"""Load with the real engine: 20 concurrent synchronous requests and 5 batch jobs, every result checked.

The real server (uvicorn on a free loopback port, the real ``processes`` engine with its default
isolation, one forked worker process per execution) runs a small standard-process graph over a tiny
subset of the Bolzano collection: ``load_collection -> ndvi -> reduce_dimension(t, mean) -> save_result``.
Every result must open and equal one reference computation made in-process (itself checked against
NDVI computed with numpy from the raw bands); the server must stay healthy throughout.
"""

from __future__ import annotations

import concurrent.futures
import io
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from terramind_openeo.backend.settings import Settings

from .conftest import _HASHES, auth_headers, live_server

API = "/openeo/1.2"
# 32 x 24 px of the Bolzano scene, 7 dates in the first half of June 2022
EXTENT = {"west": 679720, "south": 5151680, "east": 680040, "north": 5151920, "crs": "EPSG:32632"}
LOAD = {"process_id": "load_collection", "arguments": {
    "id": "SENTINEL2_L2A_BOLZANO", "spatial_extent": EXTENT, "temporal_extent": ["2022-06-01", "2022-06-20"],
    "bands": ["B04", "B08"]}}


def ndvi_mean_graph(fmt: str) -> dict:
    mean = {"m": {"process_id": "mean", "arguments": {"data": {"from_parameter": "data"}}, "result": True}}
    return {"process_graph": {
        "load": LOAD,
        "ndvi": {"process_id": "ndvi", "arguments": {"data": {"from_node": "load"}, "nir": "B08", "red": "B04"}},
        "mean": {"process_id": "reduce_dimension", "arguments": {"data": {"from_node": "ndvi"}, "dimension": "t",
                                                                 "reducer": {"process_graph": mean}}},
        "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "mean"}, "format": fmt},
                 "result": True}}}


def netcdf_values(content: bytes, tmp: Path) -> np.ndarray:
    import xarray as xr

    path = tmp / f"r{time.monotonic_ns()}.nc"
    path.write_bytes(content)
    with xr.open_dataset(path) as ds:
        names = [n for n in ds.data_vars if ds[n].dims[-2:] == ("y", "x")]
        assert len(names) == 1, ds
        return ds[names[0]].values.squeeze()


def gtiff_values(content: bytes) -> np.ndarray:
    import rasterio

    with rasterio.open(io.BytesIO(content)) as src:
        assert src.crs.to_epsg() == 32632 and src.count == 1
        return src.read(1)


@pytest.fixture(scope="module")
def reference(shared_data, tmp_path_factory) -> np.ndarray:
    """The mean NDVI computed once in-process by the engine, checked against numpy on the raw bands."""
    from terramind_openeo.processes import Catalog, execute_process_graph

    catalog = Catalog.default()
    tmp = tmp_path_factory.mktemp("reference")
    result = execute_process_graph(ndvi_mean_graph("netCDF")["process_graph"], tmp / "ndvi", catalog=catalog)
    values = netcdf_values(result.files[0].read_bytes(), tmp)
    raw_graph = {"load": LOAD, "save": {"process_id": "save_result", "result": True,
                                        "arguments": {"data": {"from_node": "load"}, "format": "netCDF"}}}
    raw = execute_process_graph(raw_graph, tmp / "raw", catalog=catalog)
    import xarray as xr

    with xr.open_dataset(raw.files[0]) as ds:
        red, nir = ds["B04"].values.astype("float64"), ds["B08"].values.astype("float64")
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.nanmean((nir - red) / (nir + red), axis=0)
    assert values.shape == expected.shape == (24, 32)
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-6, equal_nan=True)
    assert np.isfinite(values).mean() > 0.9 and np.nanmax(np.abs(values)) <= 1
    return values


@pytest.fixture(scope="module")
def server(tmp_path_factory, shared_data):
    settings = Settings(dask="threads", data_dir=tmp_path_factory.mktemp("load") / "data",
                        basic_users=dict(_HASHES), max_running_jobs=3, max_running_jobs_per_user=2,
                        max_sync_requests=4, max_sync_requests_per_user=20)  # capacity, not the per-user bound
    with live_server(settings) as url:
        yield url


def test_20_concurrent_sync_requests_and_5_batch_jobs_with_the_real_engine(server, reference, tmp_path):
    api = server + API
    users = {"alice": auth_headers(api, "alice"), "bob": auth_headers(api, "bob")}
    started = time.monotonic()

    def owner(i: int) -> str:
        return "alice" if i % 2 else "bob"

    job_ids = []
    for i in range(5):
        resp = httpx.post(f"{api}/jobs", json={"process": ndvi_mean_graph("GTiff"), "title": f"load {i}"},
                          headers=users[owner(i)])
        assert resp.status_code == 201, resp.text
        job_ids.append(resp.headers["OpenEO-Identifier"])
        assert httpx.post(f"{api}/jobs/{job_ids[-1]}/results", headers=users[owner(i)]).status_code == 202

    def sync(i: int) -> httpx.Response:
        return httpx.post(f"{api}/result", json={"process": ndvi_mean_graph("netCDF")},
                          headers=users[owner(i)], timeout=120)

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(sync, range(20)))
    for resp in responses:
        assert resp.status_code == 200, resp.text[:300]
        assert resp.headers["content-type"] == "application/x-netcdf"
        np.testing.assert_array_equal(netcdf_values(resp.content, tmp_path), reference)

    for i, job_id in enumerate(job_ids):
        h = users[owner(i)]
        deadline = time.monotonic() + 90
        while (job := httpx.get(f"{api}/jobs/{job_id}", headers=h).json())["status"] not in ("finished", "error"):
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert job["status"] == "finished", httpx.get(f"{api}/jobs/{job_id}/logs", headers=h).json()
        assert job["progress"] == 100 and job["usage"]["pixels"]["value"] > 0
        assets = httpx.get(f"{api}/jobs/{job_id}/results", headers=h).json()["assets"]
        tifs = [a["href"] for name, a in assets.items() if name.endswith(".tif")]
        assert len(tifs) == 1, assets
        download = httpx.get(tifs[0], timeout=30)
        assert download.status_code == 200
        np.testing.assert_allclose(gtiff_values(download.content), reference, rtol=1e-6, equal_nan=True)
        other = users["bob" if owner(i) == "alice" else "alice"]
        assert httpx.get(f"{api}/jobs/{job_id}", headers=other).status_code == 404

    # still healthy: metadata, listing, one more execution
    assert httpx.get(f"{api}/").status_code == 200
    assert len(httpx.get(f"{api}/jobs", headers=users["alice"]).json()["jobs"]) == 2
    np.testing.assert_array_equal(netcdf_values(sync(0).content, tmp_path), reference)
    assert time.monotonic() - started < 120
