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
