"""The same graphs on dask.distributed: 2 worker processes, and real `dask scheduler` / `dask worker` processes."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from processes_helpers import GRAPHS, REPO, SITE_BBOX, graph, load_node

from terramind_openeo.processes import execute_process_graph

SLOW_UDF = '''
import time
import xarray

def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
    time.sleep(context["sleep"])
    return cube * 2 + 1
'''


def udf_graph(sleep: float) -> dict:
    return graph(
        load=load_node(temporal=("2022-06-01", "2022-06-06")),  # 84 x 96 px, 2 dates
        nb={"process_id": "apply_neighborhood", "arguments": {
            "data": {"from_node": "load"},
            "size": [{"dimension": "x", "value": 32, "unit": "px"}, {"dimension": "y", "value": 32, "unit": "px"}],
            "overlap": [{"dimension": "x", "value": 8, "unit": "px"}, {"dimension": "y", "value": 8, "unit": "px"}],
            "context": {"sleep": sleep},
            "process": {"process_graph": {"u": {"process_id": "run_udf", "arguments": {
                "data": {"from_parameter": "data"}, "udf": SLOW_UDF, "runtime": "Python",
                "context": {"from_parameter": "context"}}, "result": True}}}}},
        save={"process_id": "save_result", "arguments": {"data": {"from_node": "nb"}, "format": "GTiff"}, "result": True})


def read_all(files) -> list[np.ndarray]:
    out = []
    for f in sorted(files):
        with rasterio.open(f) as src:
            out.append(src.read())
    return out


@pytest.fixture(scope="module")
def threaded(catalog, tmp_path_factory):
    out = tmp_path_factory.mktemp("threads")
    ndvi = execute_process_graph(json.loads((GRAPHS / "ndvi_composite.json").read_text()), out / "ndvi",
                                 catalog=catalog, parameters={"collection": "S2_BOLZANO"})
    udf = execute_process_graph(udf_graph(0), out / "udf", catalog=catalog, chunk_size=32)
    return read_all(ndvi.files), read_all(udf.files)


def test_two_worker_processes_equal_threads(catalog, threaded, tmp_path):
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        ndvi = execute_process_graph(json.loads((GRAPHS / "ndvi_composite.json").read_text()), tmp_path / "ndvi",
                                     catalog=catalog, parameters={"collection": "S2_BOLZANO"}, dask_client=client)
        udf = execute_process_graph(udf_graph(0), tmp_path / "udf", catalog=catalog, dask_client=client,
                                    chunk_size=32)
        assert len(client.scheduler_info()["workers"]) == 2
    for a, b in zip(read_all(ndvi.files) + read_all(udf.files), threaded[0] + threaded[1]):
        np.testing.assert_array_equal(a, b)


def test_local_cluster_workers_take_the_border_tiles_between_their_bands_from_each_other(catalog, tmp_path):
    """``run``'s local cluster of 2 workers: each computes a band of work tiles, and the model tiles on the
    border between the bands run on one worker only, the other takes them from the share directory
    (``inference.shared_tiles``). The map equals the threaded scheduler's; the directory, and the variable
    naming it, are gone when the cluster closes."""
    from terramind_openeo.inference.shared_tiles import SHARE_DIR_ENV
    from terramind_openeo.processes.cli import Progress, dask_scheduler
    from terramind_openeo.processes.execute import evaluate, prepare
    from terramind_openeo.processes.runner import run_save

    bbox = {**SITE_BBOX, "east": SITE_BBOX["west"] + 1600, "south": SITE_BBOX["north"] - 1600}  # 160 x 160 px
    pg = graph(load={"process_id": "load_collection", "arguments": {"id": "TM_S2L2A", "spatial_extent": bbox,
                                                                    "temporal_extent": None, "bands": None}},
               g={"process_id": "terramind_generate", "arguments": {
                   "data": {"from_node": "load"}, "model": "terramind_v1_tiny", "weights": "random",
                   "target": "LULC", "argmax": True, "timesteps": 1, "tile_size": 64, "overlap": 16}},
               save={"process_id": "save_result", "arguments": {"data": {"from_node": "g"}, "format": "GTiff"},
                     "result": True})
    [expected] = read_all(execute_process_graph(pg, tmp_path / "threads", catalog=catalog, chunk_size=12).files)
    parsed, evaluator, scope, ctx = prepare(pg, catalog=catalog, parameters={}, output_dir=tmp_path / "run",
                                            chunk_size=12)  # 48 px cores: 4 x 4 chunks, one work tile each
    evaluate(parsed, evaluator, scope, ctx)
    assert SHARE_DIR_ENV not in os.environ
    with dask_scheduler("local", 2, 1) as client:
        share = Path(os.environ[SHARE_DIR_ENV])  # the nannies export the workers' environment here
        assert share.is_dir()
        result = run_save(ctx.saves[0], tmp_path / "run", "openEO", client=client, tile_size=48, mosaic="cog",
                          signature_of=lambda cube, fmt: "test", progress_factory=lambda n, done: Progress(n, done, bar=False))
        hits = client.run(lambda: __import__("terramind_openeo.inference.tile_cache", fromlist=["x"]).TILE_CACHE.shared_hits)
    assert len(hits) == 2 and sum(hits.values()) > 0, hits
    assert SHARE_DIR_ENV not in os.environ and not share.exists()
    [values] = read_all(result.files)
    np.testing.assert_array_equal(values, expected)


INSPECT_UDF = '''
import xarray
from openeo.udf import inspect

def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
    inspect(data=[int(cube.y[0]), int(cube.x[0])], message=f"from {context['run']}")
    return cube + 1
'''


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def inspect_graph(run: str) -> dict:
    nb = udf_graph(0)["process_graph"]["nb"]
    nb["arguments"]["context"] = {"run": run}
    nb["arguments"]["process"]["process_graph"]["u"]["arguments"]["udf"] = INSPECT_UDF
    return graph(load=load_node(temporal=("2022-06-01", "2022-06-03")), nb=nb,  # one date: one GTiff
                 save={"process_id": "save_result", "arguments": {"data": {"from_node": "nb"}, "format": "GTiff"},
                       "result": True})


def test_udf_messages_from_worker_processes_reach_their_own_run(catalog, tmp_path):
    """Two runs at once on one cluster of 2 worker processes: each run's logger gets its 9 UDF messages
    (84 x 96 px in 32 px chunks: 3 x 3), none of the other run's."""
    from concurrent.futures import ThreadPoolExecutor

    from distributed import Client, LocalCluster

    loggers = {}
    for run in ("run-a", "run-b"):
        loggers[run] = logging.Logger(f"test.{run}", logging.DEBUG)
        loggers[run].addHandler(_Collect())
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(execute_process_graph, inspect_graph(run), tmp_path / run, catalog=catalog,
                                   dask_client=client, chunk_size=32, logger=loggers[run]) for run in loggers]
            for f in futures:
                f.result()
    for run, log in loggers.items():
        messages = [m for m in log.handlers[0].messages if m.startswith("UDF inspect")]
        assert len(messages) == 9, log.handlers[0].messages
        assert all(f"from {run}" in m for m in messages), messages
        assert len({m.split("[", 2)[-1] for m in messages}) == 9  # nine different chunks


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(what)


def test_real_scheduler_and_workers_with_a_killed_worker(catalog_file, threaded, tmp_path):
    """`run --scheduler ADDRESS`; one of two workers is killed mid-way; a rerun resumes to the same result."""
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    bindir = os.path.dirname(sys.executable)
    procs = [subprocess.Popen([os.path.join(bindir, "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen([os.path.join(bindir, "dask"), "worker", address, "--nthreads", "1",
                                           "--no-nanny", "--no-dashboard"], env=env, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=60)
        path = tmp_path / "graph.json"
        path.write_text(json.dumps(udf_graph(0.4)))
        out = tmp_path / "out"
        args = [sys.executable, "-m", "terramind_openeo.cli", "run", str(path), "--output", str(out), "--scheduler",
                address, "--tile-size", "32", "--chunk-size", "32", "--catalog", str(catalog_file),
                "--no-progress"]
        run = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        manifest = out / ".tiles/openEO/manifest.jsonl"
        _wait_for(lambda: manifest.exists() and len(manifest.read_text().splitlines()) >= 2, 120, "first tiles")
        procs[1].send_signal(signal.SIGKILL)  # a worker dies mid-way
        first_log = run.communicate(timeout=240)[0]
        if run.returncode != 0:  # tasks lost with the worker: a rerun resumes from the finished tiles
            assert "already done" not in first_log
            second = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
            assert second.returncode == 0, second.stderr[-2000:]
            assert "already done" in second.stderr
        files = sorted(out.glob("openEO_*.tif"))
        assert [f.name for f in files] == ["openEO_2022-06-02.tif", "openEO_2022-06-05.tif"]
        for a, b in zip(read_all(files), threaded[1]):
            np.testing.assert_array_equal(a, b)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
