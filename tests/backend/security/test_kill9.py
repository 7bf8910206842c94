"""kill -9 of ``terramind-openeo serve`` while a job runs and two wait: no process of the killed server
keeps running (its execution workers and their UDF sandboxes end with it), after a restart the running job
ends as ``error``, the queued ones run to ``finished``, and nothing half-written is ever served."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from ..conftest import _HASHES, REPO_ROOT, free_port
from .conftest import Client

SMALL = {"load": {"process_id": "load_collection", "arguments": {
    "id": "CGLS_SSM_1KM", "spatial_extent": {"west": 10.0, "east": 10.1, "south": 46.0, "north": 46.1},
    "temporal_extent": ["2020-01-01", "2020-01-02"]}},
    "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "load"}, "format": "netCDF"},
             "result": True}}

# The running job's code says so in the job's log, then works (sleeps) for two minutes without a word: a
# worker that only notices a dead server when it next reports would run on for all of that time.
SLEEPING_UDF = """
import time
import xarray
from openeo.udf import inspect

def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:
    inspect(message="kill9: the job's code runs")
    time.sleep(120)
    return cube
"""
RUNNING = {"load": SMALL["load"],
           "udf": {"process_id": "run_udf", "arguments": {"data": {"from_node": "load"}, "udf": SLEEPING_UDF,
                                                           "runtime": "Python"}},
           "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "udf"}, "format": "netCDF"},
                    "result": True}}
# How long the killed server's processes may take to be gone. The workers (and the forkserver) watch the
# server's pidfd and exit the moment it ends (``backend.isolation.exit_with_server``); a UDF sandbox is
# bwrap ``--die-with-parent``, so it goes with its worker: all gone within 0.3 s here. Where the kernel has
# no pidfd the watch polls every second, hence 3 s, room for a loaded machine too. Before issue 15 the
# worker ran on until its code next reported (here: after the UDF's 120 s), 40 times this deadline.
EXIT_DEADLINE_S = 3.0


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


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) of a process, or None when there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1]), int(fields[19])


def server_processes(server_pid: int, marker: str) -> dict[int, int]:
    """Every process started on the server's behalf, by pid -> start time: its descendants (workers, their
    sandboxes, whose environment is clean) and whatever carries the marker of its environment."""
    table = {int(e.name): st for e in Path("/proc").iterdir() if e.name.isdigit() and (st := _stat(int(e.name)))}
    found: dict[int, int] = {}
    parents = [server_pid]
    while parents:
        parent = parents.pop()
        for pid, (_, ppid, started) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = started
                parents.append(pid)
    for pid, (_, _, started) in table.items():
        try:
            if f"KILL9_MARKER={marker}".encode() in Path(f"/proc/{pid}/environ").read_bytes():
                found.setdefault(pid, started)
        except OSError:
            pass
    found.pop(server_pid, None)
    return found


def still_running(processes: dict[int, int]) -> list[int]:
    """Those of ``processes`` that run (the same pid and start time, not a zombie waiting to be reaped)."""
    return [pid for pid, started in processes.items()
            if (st := _stat(pid)) is not None and st[2] == started and st[0] not in "ZX"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed: the running "
                    "job is a UDF, and UDFs run only in its sandbox")
def test_kill_9_while_jobs_run(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = tmp_path / "backend.json"
    config.write_text(json.dumps({"basic_users": _HASHES, "dask": "threads", "max_running_jobs": 1,
                                  "log_level": "WARNING"}))
    marker = secrets.token_hex(8)
    port = free_port()
    server = start(data_dir, config, port, marker)
    left: list[int] = []
    processes: dict[int, int] = {}
    try:
        alice = Client(f"http://127.0.0.1:{port}", "alice").login()
        running = alice.create_job(RUNNING).headers["OpenEO-Identifier"]
        queued = [alice.create_job(SMALL).headers["OpenEO-Identifier"] for _ in range(2)]
        for job_id in [running, *queued]:
            assert alice.post(f"/jobs/{job_id}/results").status_code == 202
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:  # until the job's code runs in its worker
            logs = alice.get(f"/jobs/{running}/logs").json()["logs"]
            if any("kill9: the job's code runs" in e["message"] for e in logs):
                break
            assert alice.get(f"/jobs/{running}").json()["status"] in ("queued", "running"), logs
            time.sleep(0.3)
        else:
            raise AssertionError(f"the running job's UDF did not start within 240 s: {logs}")
        assert alice.get(f"/jobs/{running}").json()["status"] == "running"
        assert [alice.get(f"/jobs/{j}").json()["status"] for j in queued] == ["queued", "queued"]
        processes = server_processes(server.pid, marker)
        assert processes, "the running job has a worker process"
        os.kill(server.pid, signal.SIGKILL)
        server.wait(10)
        deadline = time.monotonic() + EXIT_DEADLINE_S
        while (left := still_running(processes)) and time.monotonic() < deadline:
            time.sleep(0.05)
        names = {pid: Path(f"/proc/{pid}/cmdline").read_bytes()[:120] for pid in left}
        assert not left, f"processes of the killed server still run {EXIT_DEADLINE_S} s after it: {names}"

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
        for pid in still_running({pid: processes[pid] for pid in left}):  # a failed run: never let it run on
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if server.poll() is None:
            server.send_signal(signal.SIGINT)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
