"""kill -9 of ``terramind-openeo serve`` while a job runs and two wait: after a restart the running job
ends as ``error``, the queued ones run to ``finished``, nothing half-written is ever served, and no worker
of the killed server keeps running."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ..conftest import _HASHES, REPO_ROOT, free_port
from .conftest import Client
from .test_limits import SLOW

SMALL = {"load": {"process_id": "load_collection", "arguments": {
    "id": "CGLS_SSM_1KM", "spatial_extent": {"west": 10.0, "east": 10.1, "south": 46.0, "north": 46.1},
    "temporal_extent": ["2020-01-01", "2020-01-02"]}},
    "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "load"}, "format": "netCDF"},
             "result": True}}


def start(data_dir: Path, config: Path, port: int, marker: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TERRAMIND_OPENEO_")}
    env["KILL9_MARKER"] = marker  # inherited by every process the server starts
    proc = subprocess.Popen([sys.executable, "-m", "terramind_openeo.cli", "serve", "--config", str(config),
                             "--port", str(port), "--data-dir", str(data_dir)], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=open(data_dir.parent / f"server-{port}.log", "w"))  # noqa: SIM115
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/openeo/1.2/", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the server did not start")


def marked_processes(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"KILL9_MARKER={marker}".encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.mark.slow
def test_kill_9_while_jobs_run(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = tmp_path / "backend.json"
    config.write_text(json.dumps({"basic_users": _HASHES, "dask": "threads", "max_running_jobs": 1,
                                  "log_level": "WARNING"}))
    marker = secrets.token_hex(8)
    port = free_port()
    server = start(data_dir, config, port, marker)
    try:
        alice = Client(f"http://127.0.0.1:{port}", "alice").login()
        running = alice.create_job(SLOW).headers["OpenEO-Identifier"]
        queued = [alice.create_job(SMALL).headers["OpenEO-Identifier"] for _ in range(2)]
        for job_id in [running, *queued]:
            assert alice.post(f"/jobs/{job_id}/results").status_code == 202
        deadline = time.monotonic() + 120
        while alice.get(f"/jobs/{running}").json()["status"] != "running" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert alice.get(f"/jobs/{running}").json()["status"] == "running"
        assert [alice.get(f"/jobs/{j}").json()["status"] for j in queued] == ["queued", "queued"]
        time.sleep(2)  # the running job is inside its computation, writing its partial directory
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        deadline = time.monotonic() + 20
        while marked_processes(marker) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:200] for pid in marked_processes(marker)
                if Path(f"/proc/{pid}").exists()}
        assert not left, f"processes of the killed server still run: {left}"

        server = start(data_dir, config, port, marker)
        alice = Client(f"http://127.0.0.1:{port}", "alice").login()
        assert alice.wait_job(running, timeout=60)["status"] == "error"
        errors = alice.get(f"/jobs/{running}/logs", params={"level": "error"}).json()["logs"]
        assert any("server stopped" in e["message"] for e in errors), errors
        assert alice.get(f"/jobs/{running}/results").status_code == 424  # nothing of it is served
        for job_id in queued:
            assert alice.wait_job(job_id, timeout=300)["status"] == "finished"
            assets = alice.get(f"/jobs/{job_id}/results").json()["assets"]
            for asset in assets.values():
                content = httpx.get(asset["href"], timeout=60).content
                assert content[:4] == b"\x89HDF", "a published result is complete netCDF"
        assert not list(data_dir.glob("jobs/*/partial-*")) and not list((data_dir / "sync").glob("*"))
    finally:
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
