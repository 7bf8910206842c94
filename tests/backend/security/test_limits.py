"""Attack 7: no limits. Synchronous requests without a time or pixel budget, unbounded context keys,
unlimited jobs and result storage per user. Each limit answers a clear 4xx."""

from __future__ import annotations

import sqlite3
import threading
import time
from contextlib import closing

import pytest

from terramind_openeo.backend.settings import Settings

from .conftest import LOAD_20PX, LOAD_TINY, base_settings, clients, serve

WHOLE = {"process_id": "load_collection", "arguments": {"id": "CGLS_SSM_1KM", "spatial_extent": None,
                                                         "temporal_extent": None}}


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    settings = base_settings(tmp_path_factory.mktemp("limits") / "data", isolation="thread",
                             max_active_jobs_per_user=2, max_sync_requests_per_user=1)
    with serve(settings) as root:
        yield root, settings


@pytest.fixture
def server(limited):
    return limited[0]


def sync_requests_started(settings: Settings, owner: str) -> int:
    """How many synchronous requests of ``owner`` have taken their slot (each writes its log row inside it),
    read from the server's store through a separate read-only connection."""
    with closing(sqlite3.connect(f"file:{settings.db_path}?mode=ro", uri=True, timeout=30)) as db:
        return db.execute("SELECT count(*) FROM sync_logs WHERE owner = ?", (owner,)).fetchone()[0]


def test_defaults_bound_time_pixels_jobs_and_storage():
    s = Settings()
    assert 0 < s.job_timeout_s <= 24 * 3600 and 0 < s.sync_timeout_s <= 3600
    assert 0 < s.sync_max_pixels <= 100_000_000 and s.max_active_jobs_per_user > 0
    assert s.max_result_mb_per_user > 0 and s.result_ttl_s > 0 and s.max_sync_requests_per_user > 0


def test_a_whole_collection_is_refused_synchronously_with_a_hint_to_use_a_batch_job(server):
    alice, _ = clients(server)
    graph = {"load": WHOLE, "save": {"process_id": "save_result", "arguments": {
        "data": {"from_node": "load"}, "format": "netCDF"}, "result": True}}
    t0 = time.monotonic()
    resp = alice.result(graph)
    assert resp.status_code == 400, resp.headers.get("content-type")
    assert "batch job" in resp.json()["message"], resp.text[:300]
    assert time.monotonic() - t0 < 60  # refused on the lazy shape, nothing computed


@pytest.mark.parametrize("key,value", [("timesteps", 1000), ("tile_size", 1 << 20), ("batch_size", 10**6),
                                       ("top_k", 10**12), ("temperature", 1e300), ("seed", 2**80)])
def test_numeric_context_keys_are_bounded(server, key, value):
    """A cube TerraMind accepts (20 x 20 px, missing S-2 bands filled with their means), so that the key's
    bound is the only thing that can refuse the request. Before: each value was taken as it came and the
    run went ahead (200; 500 for ``temperature``). ``timesteps`` already had a late cap of 1000 (the DDIM
    training steps, checked after the encoder ran), so the test asks for 1000 steps: accepted before."""
    alice, _ = clients(server)
    args = {"data": {"from_node": "load"}, "model": "terramind_v1_tiny", "weights": "random",
            "missing_bands": "mean", key: value}
    graph = {"load": LOAD_20PX, "tm": {"process_id": "terramind_generate", "arguments": args, "result": True}}
    resp = alice.result(graph)
    assert resp.status_code == 400, resp.text[:300]
    assert key in resp.json()["message"]


SLOW = {"load": {"process_id": "load_collection", "arguments": {"id": "CGLS_SSM_1KM", "spatial_extent": None,
                                                             "temporal_extent": None}},
        "r": {"process_id": "reduce_dimension", "arguments": {"data": {"from_node": "load"}, "dimension": "t",
              "reducer": {"process_graph": {"m": {"process_id": "median", "arguments": {
                  "data": {"from_parameter": "data"}}, "result": True}}}}},
        "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "r"}, "format": "netCDF"},
                 "result": True}}


def test_queued_and_running_jobs_per_user_are_bounded(tmp_path):
    """One job runs (the whole collection's median), one waits; the third start is refused."""
    with serve(base_settings(tmp_path / "data", isolation="thread", max_running_jobs=1,
                             max_active_jobs_per_user=2)) as root:
        alice, bob = clients(root)
        ids = [alice.create_job(SLOW).headers["OpenEO-Identifier"] for _ in range(3)]
        assert alice.post(f"/jobs/{ids[0]}/results").status_code == 202
        assert alice.post(f"/jobs/{ids[1]}/results").status_code == 202
        resp = alice.post(f"/jobs/{ids[2]}/results")
        assert resp.status_code == 429 and resp.json()["code"] == "TooManyRequests", resp.text[:300]
        assert alice.get(f"/jobs/{ids[2]}").json()["status"] == "created"
        other = bob.create_job(SLOW).headers["OpenEO-Identifier"]
        assert bob.post(f"/jobs/{other}/results").status_code == 202  # another user is not held back
        for client, job_id in [(alice, i) for i in ids] + [(bob, other)]:
            client.http.delete(f"{client.api}/jobs/{job_id}", headers=client.headers)


def test_concurrent_sync_requests_per_user_are_bounded(limited):
    """While one of alice's synchronous requests runs (a median over 1400 x 900 px x 12 dates: 15 M values,
    inside the default 16 M budget; 2-9 s here), her second one is refused with 429; bob's goes through.
    Before: both ran. The second is sent once the store shows that the first holds its slot (a fixed
    sleep was not enough on a loaded machine: the first was still being checked). Skipped only when the
    two did not overlap (the first had ended before the second was sent)."""
    server, settings = limited
    alice, bob = clients(server)
    before = sync_requests_started(settings, alice.user)
    slow = {"load": {"process_id": "load_collection", "arguments": {
        "id": "CGLS_SSM_1KM", "spatial_extent": {"west": 5, "east": 19, "south": 45, "north": 54},
        "temporal_extent": ["2020-01-01", "2021-01-01"]}},
        "r": {"process_id": "reduce_dimension", "arguments": {"data": {"from_node": "load"}, "dimension": "t",
              "reducer": {"process_graph": {"m": {"process_id": "median", "arguments": {
                  "data": {"from_parameter": "data"}}, "result": True}}}}},
        "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "r"}, "format": "netCDF"},
                 "result": True}}
    first: dict = {}

    def run_first() -> None:
        first["resp"] = alice.result(slow)
        first["ended"] = time.monotonic()

    thread = threading.Thread(target=run_first)
    thread.start()
    deadline = time.monotonic() + 120
    while sync_requests_started(settings, alice.user) == before and "ended" not in first:
        assert time.monotonic() < deadline, "the first synchronous request did not start within 120 s"
        time.sleep(0.05)
    sent = time.monotonic()
    second = alice.result({"a": {"process_id": "add", "arguments": {"x": 1, "y": 2}, "result": True}})
    other = bob.result({"a": {"process_id": "add", "arguments": {"x": 1, "y": 2}, "result": True}})
    thread.join(300)
    assert first["resp"].status_code == 200, first["resp"].text[:300]  # the slow graph itself is allowed
    if first["ended"] < sent:
        pytest.skip(f"the first request ended {sent - first['ended']:.1f} s before the second was sent: they did "
                    "not overlap (machine too fast)")
    assert second.status_code == 429 and second.json()["code"] == "TooManyRequests", second.text[:300]
    assert other.status_code == 200 and other.json() == 3


def test_stored_results_per_user_are_bounded(tmp_path):
    with serve(base_settings(tmp_path / "data", isolation="thread", max_result_mb_per_user=1)) as root:
        alice, _ = clients(root)
        big = {"load": {"process_id": "load_collection", "arguments": {
            "id": "CGLS_SSM_1KM", "spatial_extent": {"west": 5, "east": 10, "south": 45, "north": 50},
            "temporal_extent": ["2020-01-01", "2020-03-02"]}},
            "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "load"}, "format": "GTiff"},
                     "result": True}}
        first = alice.create_job(big).headers["OpenEO-Identifier"]
        assert alice.post(f"/jobs/{first}/results").status_code == 202
        assert alice.wait_job(first)["status"] == "finished"
        second = alice.create_job(big).headers["OpenEO-Identifier"]
        resp = alice.post(f"/jobs/{second}/results")
        assert resp.status_code == 400 and resp.json()["code"] == "QuotaExceeded", resp.text[:300]
        alice.http.delete(f"{alice.api}/jobs/{first}", headers=alice.headers)
        assert alice.post(f"/jobs/{second}/results").status_code == 202


def test_results_expire_after_their_time_to_live(tmp_path):
    from terramind_openeo.backend.store import Store

    data_dir = tmp_path / "data"
    with serve(base_settings(data_dir, isolation="thread")) as root:
        alice, _ = clients(root)
        graph = {"load": LOAD_TINY, "save": {"process_id": "save_result", "arguments": {
            "data": {"from_node": "load"}, "format": "netCDF"}, "result": True}}
        job_id = alice.create_job(graph).headers["OpenEO-Identifier"]
        alice.post(f"/jobs/{job_id}/results")
        assert alice.wait_job(job_id)["status"] == "finished"
    store = Store(data_dir / "jobs.sqlite")
    store.update_job(job_id, finished="2001-01-01T00:00:00Z")
    store.close()
    with serve(base_settings(data_dir, isolation="thread", result_ttl_s=3600)) as root:
        alice, _ = clients(root)
        time.sleep(1)
        resp = alice.get(f"/jobs/{job_id}/results")
        assert resp.status_code == 410 and resp.json()["code"] == "ResultsExpired", resp.text[:300]
    assert not (data_dir / "jobs" / job_id / "results").exists()


def test_the_weights_cache_is_bounded(tmp_path):
    """Checkpoints downloaded by URL (an allowed prefix) stay within ``weights_cache_mb``: least recently
    used ones go; the one just asked for always stays."""
    from terramind_openeo import config
    from terramind_openeo.inference.weights_download import resolve_weights

    sources = []
    for i in range(3):
        path = tmp_path / f"ckpt{i}.pt"
        path.write_bytes(bytes([i]) * (1 << 20))
        sources.append(path.as_uri())
    with config.override(cache_dir=tmp_path / "cache", weights_cache_mb=2.5):
        local = [resolve_weights(url) for url in sources]
        time.sleep(0.05)
        kept = sorted(p.name for p in (tmp_path / "cache" / "weights").iterdir())
        assert len(kept) == 2 and all(p.endswith(".pt") for p in kept), kept
        assert not __import__("os").path.exists(local[0]) and all(map(__import__("os").path.exists, local[1:]))
