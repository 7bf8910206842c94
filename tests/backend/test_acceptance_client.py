"""Acceptance: the real ``openeo`` Python client against ``terramind-openeo``'s back-end with the real engine.

One server (uvicorn on a free loopback port, real ``processes`` engine, the default catalog over
``../shared/data``) serves the whole module. TerraMind parts use the tiny model with random weights.
"""

from __future__ import annotations

import time

import openeo
import pytest

from terramind_openeo.backend.settings import Settings

from .conftest import _HASHES, PASSWORDS, REPO_ROOT, live_server

BOLZANO = {"west": 679720, "south": 5151080, "east": 680680, "north": 5151920, "crs": "EPSG:32632"}
JUNE_START = ["2022-06-01", "2022-06-08"]
# the top-left 64 x 64 px of the TerraMesh tile 38D_378R_2_3 (Tanzania, 2023-06-10)
TANZANIA_64PX = {"west": 617301.8198784497, "east": 617941.8198784497, "south": 9624458.22745184,
                 "north": 9625098.22745184, "crs": "EPSG:32736"}
TM_CONTEXT = {"model": "terramind_v1_tiny", "weights": "random", "tile_size": 64, "overlap": 0, "batch_size": 4}


@pytest.fixture(scope="module")
def server(tmp_path_factory, request):
    settings = Settings(dask="threads", data_dir=tmp_path_factory.mktemp("backend") / "data", basic_users=dict(_HASHES),
                        max_running_jobs=2, max_running_jobs_per_user=2)
    with live_server(settings) as url:
        yield url


@pytest.fixture
def con(server, shared_data):
    return openeo.connect(server).authenticate_basic("alice", PASSWORDS["alice"])


def bolzano(con, bands=("B04", "B08"), dates=JUNE_START):
    return con.load_collection("SENTINEL2_L2A_BOLZANO", spatial_extent=BOLZANO, temporal_extent=list(dates),
                               bands=list(bands))


def test_metadata_through_the_client(con):
    ids = {c["id"] for c in con.list_collections()}
    assert {"SENTINEL2_L2A_BOLZANO", "TERRAMIND_S2L2A", "CGLS_SSM_1KM"} <= ids
    meta = con.describe_collection("SENTINEL2_L2A_BOLZANO")
    assert meta["cube:dimensions"]["bands"]["values"][:4] == ["B02", "B03", "B04", "B08"]
    processes = {p["id"] for p in con.list_processes()}
    assert {"load_collection", "save_result", "ndvi", "apply_neighborhood", "run_udf",
            "terramind_generate", "terramind_embed"} <= processes
    assert "netcdf" in {f.lower() for f in con.list_output_formats()}
    assert con.describe_account()["user_id"] == "alice"


def test_sync_download_of_a_standard_graph(con, tmp_path):
    import xarray as xr

    path = tmp_path / "ndvi.nc"
    bolzano(con).ndvi(nir="B08", red="B04").download(path, format="netCDF")
    with xr.open_dataset(path) as ds:
        assert ds.sizes["x"] == 96 and ds.sizes["y"] == 84
        values = ds[list(ds.data_vars)[-1]].values
        assert -1 <= float(values[~(values != values)].min()) <= float(values[~(values != values)].max()) <= 1


def test_batch_job_with_logs_and_download(con, tmp_path):
    cube = bolzano(con).reduce_dimension("t", reducer="max").save_result("GTiff")
    job = cube.execute_batch(outputfile=None, title="max over time", max_poll_interval=1)
    assert job.status() == "finished"
    logs = job.logs()
    assert any("started" in entry["message"].lower() for entry in logs)
    results = job.get_results()
    metadata = results.get_metadata()
    assert metadata["type"] == "Collection" and all("proj:shape" in a for a in metadata["assets"].values())
    assert job.describe()["usage"]["pixels"]["value"] > 0
    files = results.download_files(tmp_path / "out")
    tifs = [f for f in files if f.suffix == ".tif"]
    assert tifs and all(f.stat().st_size > 0 for f in tifs)
    import rasterio

    with rasterio.open(tifs[0]) as src:
        assert src.crs.to_epsg() == 32632 and src.count == 2


def test_failed_batch_job_reports_its_error(con):
    cube = con.datacube_from_process("load_collection", id="SENTINEL2_L2A_BOLZANO", spatial_extent=BOLZANO,
                                     temporal_extent=JUNE_START, bands=["B99"])
    with pytest.raises(openeo.rest.OpenEoApiError) as info:
        cube.download(format="netCDF")
    assert "B99" in str(info.value)
    job = cube.save_result("netCDF").create_job(title="bad band")
    with pytest.raises(openeo.rest.JobFailedException):
        job.start_and_wait(max_poll_interval=1)
    assert job.status() == "error"
    assert any("B99" in entry["message"] for entry in job.logs(level="error"))


def test_multi_backend_job_manager_runs_several_jobs(con, tmp_path):
    import pandas as pd
    from openeo.extra.job_management import CsvJobDatabase, MultiBackendJobManager

    manager = MultiBackendJobManager(poll_sleep=1, root_dir=tmp_path)
    manager.add_backend("terramind", connection=con, parallel_jobs=2)
    dates = pd.DataFrame({"start": ["2022-06-01", "2022-06-10", "2022-06-20"],
                          "end": ["2022-06-08", "2022-06-18", "2022-06-28"]})

    def start_job(row, connection, **_):
        cube = bolzano(connection, dates=(row["start"], row["end"])).reduce_dimension("t", reducer="mean")
        return cube.create_job(title=f"mean {row['start']}", out_format="netCDF")

    job_db = CsvJobDatabase(tmp_path / "jobs.csv").initialize_from_df(dates)
    started = time.monotonic()
    manager.run_jobs(job_db=job_db, start_job=start_job)
    assert time.monotonic() - started < 240
    df = job_db.read()
    assert list(df["status"]) == ["finished"] * 3, df[["id", "status"]]
    assert len(list(tmp_path.glob("job_*/*.nc"))) == 3


def test_terramind_generate_sync_and_batch(con, tmp_path):
    import rasterio

    cube = con.load_collection("TERRAMIND_S2L2A", temporal_extent=["2023-06-01", "2023-06-30"],
                               spatial_extent=TANZANIA_64PX)
    lulc = cube.process("terramind_generate", data=cube, target="LULC", timesteps=2, **TM_CONTEXT)
    path = tmp_path / "lulc.tif"
    lulc.download(path, format="GTiff")
    with rasterio.open(path) as src:
        data = src.read()
        assert src.width in (64, 65) and src.height in (64, 65)
        assert data.min() >= 0 and data.max() <= 9
    job = lulc.save_result("GTiff").execute_batch(max_poll_interval=1, title="lulc")
    assert job.status() == "finished"
    assert job.logs() and job.get_results().download_files(tmp_path / "batch")


def test_apply_neighborhood_with_the_embed_udf_file(con, tmp_path):
    import xarray as xr

    udf_file = REPO_ROOT / "udf" / "terramind_embed.py"
    if not udf_file.is_file():
        pytest.skip(f"{udf_file} is absent")
    udf = openeo.UDF.from_file(udf_file, context={**TM_CONTEXT, "resolution": "pixel"})
    cube = con.load_collection("TERRAMIND_S2L2A", temporal_extent=["2023-06-01", "2023-06-30"])
    emb = cube.apply_neighborhood(udf, size=[{"dimension": "x", "value": 112, "unit": "px"},
                                             {"dimension": "y", "value": 112, "unit": "px"}],
                                  overlap=[{"dimension": "x", "value": 16, "unit": "px"},
                                           {"dimension": "y", "value": 16, "unit": "px"}])
    job = emb.save_result("netCDF").execute_batch(max_poll_interval=1, title="embed udf")
    assert job.status() == "finished"
    files = job.get_results().download_files(tmp_path / "emb")
    with xr.open_dataset([f for f in files if f.suffix == ".nc"][0]) as ds:
        assert any(str(v).startswith("emb_") for v in ds.data_vars) or "emb_000" in str(ds)



UDF_INSPECT = '''
from openeo.udf import inspect
import xarray


def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
    inspect(data=[context["factor"]], message="hello from the udf")
    if context.get("fail"):
        raise RuntimeError("udf failed on purpose")
    return cube * context["factor"]
'''


@pytest.mark.parametrize("fail", [False, True])
def test_udf_inspect_messages_and_errors_reach_the_job_logs(con, fail):
    udf = openeo.UDF(UDF_INSPECT, runtime="Python", context={"factor": 2, "fail": fail})
    cube = bolzano(con, dates=["2022-06-01", "2022-06-03"]).apply_neighborhood(
        udf, size=[{"dimension": "x", "value": 64, "unit": "px"}, {"dimension": "y", "value": 64, "unit": "px"}],
        overlap=[])
    job = cube.save_result("netCDF").create_job(title=f"udf fail={fail}")
    if fail:
        with pytest.raises(openeo.rest.JobFailedException):
            job.start_and_wait(max_poll_interval=1)
        errors = job.logs(level="error")
        assert any("udf failed on purpose" in e["message"] for e in errors), errors
    else:
        job.start_and_wait(max_poll_interval=1)
        assert any("hello from the udf" in e["message"] for e in job.logs()), job.logs()


@pytest.mark.parametrize("fail", [False, True])
def test_udf_inspect_messages_and_errors_of_a_sync_request_reach_its_monitor_log(con, fail):
    import requests

    udf = openeo.UDF(UDF_INSPECT, runtime="Python", context={"factor": 3, "fail": fail})
    cube = bolzano(con, bands=["B04"], dates=["2022-06-01", "2022-06-03"]).apply_neighborhood(
        udf, size=[{"dimension": "x", "value": 64, "unit": "px"}, {"dimension": "y", "value": 64, "unit": "px"}],
        overlap=[])
    graph = cube.save_result("netCDF").flat_graph()
    resp = requests.post(con.build_url("/result"), json={"process": {"process_graph": graph}},
                         headers={"Authorization": f"Bearer {con.auth.bearer}"}, timeout=300)
    assert resp.status_code == (400 if fail else 200), resp.text[:300]
    if fail:
        assert resp.json()["code"] == "UdfError"
    link = resp.links["monitor"]["url"]
    logs = requests.get(link, headers={"Authorization": f"Bearer {con.auth.bearer}"}, timeout=30).json()["logs"]
    messages = [e["message"] for e in logs]
    assert any("hello from the udf" in m for m in messages), messages
    if fail:
        assert any(e["level"] == "error" and "udf failed on purpose" in e["message"] for e in logs), logs


# The load test with the real engine (20 concurrent sync requests + 5 batch jobs, every result compared
# with a reference computation) is tests/backend/test_load_real_engine.py.


UDF_CRASH = '''
import os, signal, subprocess, time, xarray


def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
    if context.get("marker"):  # a process the test can find from outside the sandbox
        subprocess.Popen(["/bin/sh", "-c", "sleep 300; true", context["marker"]])
    if context["how"] == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(120)
    return cube
'''


def _udf_cube(con, how: str, **context):
    udf = openeo.UDF(UDF_CRASH, runtime="Python", context={"how": how, **context})
    return bolzano(con, bands=["B04"], dates=["2022-06-01", "2022-06-03"]).apply_neighborhood(
        udf, size=[{"dimension": "x", "value": 128, "unit": "px"}, {"dimension": "y", "value": 128, "unit": "px"}],
        overlap=[])


def test_a_crashing_execution_fails_alone_and_the_server_stays_up(con):
    with pytest.raises(openeo.rest.OpenEoApiError) as info:
        _udf_cube(con, "crash").download(format="netCDF")
    # the UDF runs in its sandbox: the sandbox dies, the run fails as the UDF's error
    assert info.value.http_status_code == 400 and "sandbox ended" in info.value.message, info.value.message
    assert "signal 9" in info.value.message
    assert con.execute({"a": {"process_id": "add", "arguments": {"x": 1, "y": 2}, "result": True}}) == 3


def test_cancel_stops_a_running_execution(con):
    job = _udf_cube(con, "sleep").save_result("netCDF").create_job(title="sleepy")
    job.start()
    deadline = time.monotonic() + 60
    while job.status() != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # let the UDF start sleeping inside the worker
    job.stop()
    started = time.monotonic()
    while job.status() != "canceled" and time.monotonic() - started < 10:
        time.sleep(0.2)
    assert job.status() == "canceled"
    time.sleep(1.0)
    assert job.status() == "canceled"
    with pytest.raises(openeo.rest.OpenEoApiError):
        job.get_results().get_metadata()


def test_user_defined_process_runs_on_the_real_engine(con):
    from openeo.api.process import Parameter

    double = {"m": {"process_id": "multiply", "arguments": {"x": {"from_parameter": "x"}, "y": 2}, "result": True}}
    con.save_user_defined_process("double_it", double, parameters=[Parameter.number("x", description="x")])
    assert "double_it" in [p["id"] for p in con.list_user_defined_processes()]
    graph = {"d": {"process_id": "double_it", "namespace": "user", "arguments": {"x": 4}, "result": True}}
    assert con.execute(graph) == 8
    con.user_defined_process("double_it").delete()
    with pytest.raises(openeo.rest.OpenEoApiError):
        con.execute(graph)


def test_a_client_that_disconnects_stops_its_sync_execution(con, server, tmp_path):
    import secrets
    import subprocess

    import httpx

    marker = "udf-marker-" + secrets.token_hex(6)
    graph = _udf_cube(con, "sleep", marker=marker).save_result("netCDF").flat_graph()
    headers = {"Authorization": f"Bearer {con.auth.bearer}"}

    def running() -> bool:
        out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        return any(marker in line and line.startswith("/bin/sh") for line in out.splitlines())

    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server}/openeo/1.2/result", json={"process": {"process_graph": graph}}, headers=headers,
                   timeout=8)
    deadline = time.monotonic() + 60
    while not running() and time.monotonic() < deadline:  # the UDF (in its sandbox) may start late
        time.sleep(0.2)
    deadline = time.monotonic() + 20
    while running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not running(), "the UDF sandbox of the disconnected request still runs"
