"""The back-end's Dask cluster: its worker processes compute tiles under the heap policy of ``run``."""

from __future__ import annotations

import os

import pytest

from terramind_openeo.backend.engine import _dask_client
from terramind_openeo.processes import heap


def test_local_cluster_workers_get_the_heap_policy(monkeypatch):
    pytest.importorskip("distributed")
    for name in heap.worker_environ():  # a nanny started earlier in this process exported dask's values
        monkeypatch.delenv(name, raising=False)
    client = _dask_client("local")
    try:
        envs = client.run(lambda: {k: os.environ.get(k) for k in heap.worker_environ()})
    finally:
        cluster = client.cluster
        client.close()
        cluster.close()
    assert envs and all(env == heap.worker_environ() for env in envs.values())


def test_threads_mode_has_no_cluster():
    assert _dask_client("threads") is None


def test_job_cpu_usage_includes_the_dask_workers(tmp_path, shared_data):
    """On a cluster the tiles are computed in the worker processes: the job's CPU seconds must count them."""
    pytest.importorskip("distributed")
    import logging
    import threading

    from distributed import LocalCluster

    from terramind_openeo.backend.engine import ProcessesEngine, workers_cpu_seconds
    from terramind_openeo.backend.settings import Settings

    from .test_load_real_engine import ndvi_mean_graph

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        engine = ProcessesEngine(Settings(dask=cluster.scheduler_address, data_dir=tmp_path / "data"))
        try:
            client = engine._client_for_run()
            before = workers_cpu_seconds(client)
            outcome = engine.execute(ndvi_mean_graph("netCDF")["process_graph"], tmp_path / "out",
                                     user_processes={}, logger=logging.getLogger("test"),
                                     cancel=threading.Event(), progress=lambda f: None)
            after = workers_cpu_seconds(client)
        finally:
            engine.close()
    workers = sum(after[w] - before[w] for w in after)
    assert outcome.files and workers > 0
    assert outcome.usage["cpu"]["unit"] == "cpu-seconds" and outcome.usage["cpu"]["value"] >= round(workers, 2) - 0.01
