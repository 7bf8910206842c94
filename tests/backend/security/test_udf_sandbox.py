"""Attacks 2 and 3: hostile UDFs, real code through the real back-end and the real sandbox.

Each UDF tries one thing and reports what it got by raising ``RuntimeError("RESULT:<what it saw>")``; the
error text comes back in the answer, so the test sees exactly what the attacker would. Before the sandbox
the UDF ran inside the server's worker process as the server's user: every attack below succeeded.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest

from terramind_openeo.backend.settings import load_settings

from ..conftest import _HASHES
from .conftest import LOAD_TINY, base_settings, canary, clients, known_settings, serve

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap (bwrap) is not installed")

SECRET_ENV = "TERRAMIND_OPENEO_TEST_SECRET"
os.environ.setdefault(SECRET_ENV, canary())  # in the server's environment before any worker starts


def udf_graph(body: str, context: dict | None = None) -> dict:
    code = ("import os, sys, socket, time, json, subprocess\nimport xarray\n\n"
            "def attack(context):\n" + "\n".join("    " + line for line in body.strip().splitlines()) + "\n\n"
            "def apply_datacube(cube: xarray.DataArray, context: dict) -> xarray.DataArray:\n"
            "    raise RuntimeError('RESULT:' + str(attack(context)))\n")
    return {"load": LOAD_TINY, "udf": {"process_id": "run_udf", "arguments": {
        "data": {"from_node": "load"}, "udf": code, "runtime": "Python", "context": context or {}}, "result": True}}


def result_of(resp) -> str:
    """What the UDF reported (``RESULT:...``), or ``""`` when it was stopped before reporting."""
    match = re.search(r"RESULT:(.*)", resp.text.replace("\\n", "\n"))
    return match.group(1).split('"')[0] if match else ""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    base = tmp_path_factory.mktemp("sandbox")
    config = base / "backend.json"
    data_dir = base / "data"
    config.write_text('{"basic_users": ' + __import__("json").dumps(_HASHES) + ', "dask": "threads"}')
    settings = load_settings(config, env={}).replace(**known_settings({
        "data_dir": data_dir, "udf_memory_mb": 2048, "udf_timeout_s": 20, "udf_processes": 64,
        "max_running_jobs": 2, "udf_policy": "authenticated"}))
    outside = base / "outside"
    outside.mkdir()
    with serve(settings) as root:
        alice, bob = clients(root)
        yield {"root": root, "alice": alice, "bob": bob, "data_dir": data_dir, "config": config,
               "outside": outside, "port": int(root.rsplit(":", 1)[1])}


def ask(env, body: str, context: dict | None = None, user: str = "alice"):
    return env[user].result(udf_graph(body, context))


def test_the_environment_holds_no_server_variable(env):
    resp = ask(env, "return sorted(os.environ)")
    names = result_of(resp)
    assert names, resp.text[:500]
    assert SECRET_ENV not in names and "TERRAMIND_OPENEO" not in names.replace("TERRAMIND_OPENEO_CACHE", "")
    assert "VIRTUAL_ENV" not in names and "PYTEST" not in names


def test_proc_shows_no_server_process(env):
    """The server (this test process runs it) is neither visible nor readable through /proc."""
    resp = ask(env, "pid = context['pid']\nseen = [p for p in os.listdir('/proc') if p.isdigit()]\n"
                    "try:\n    env = open(f'/proc/{pid}/environ', 'rb').read()\n"
                    "    return f'LEAK environ of {pid}: {len(env)} bytes'\n"
                    "except OSError as e:\n    pass\n"
                    "cmdlines = []\nfor p in seen:\n    try:\n"
                    "        cmdlines.append(open(f'/proc/{p}/cmdline', 'rb').read())\n"
                    "    except OSError:\n        pass\n"
                    "if any(b'pytest' in c or b'uvicorn' in c or b'forkserver' in c for c in cmdlines):\n"
                    "    return f'LEAK server processes visible among {len(seen)}'\n"
                    "return f'blocked: {len(seen)} processes visible'", {"pid": os.getpid()})
    seen = result_of(resp)
    assert seen.startswith("blocked"), resp.text[:300]
    assert os.environ[SECRET_ENV] not in resp.text


@pytest.mark.parametrize("target", ["data_dir/signing.key", "data_dir/jobs.sqlite", "config", "data_dir"])
def test_server_files_are_invisible(env, target):
    path = env["config"] if target == "config" else env["data_dir"] / target.split("/", 1)[1] \
        if "/" in target else env["data_dir"]
    resp = ask(env, "p = context['path']\ntry:\n"
                    "    return 'LEAK ' + (str(os.listdir(p)) if os.path.isdir(p) else open(p, 'rb').read(64).hex())\n"
                    "except OSError as e:\n    return 'blocked ' + type(e).__name__", {"path": str(path)})
    seen = result_of(resp)
    assert seen.startswith("blocked"), (target, seen, resp.text[:300])


def test_another_users_results_are_invisible(env):
    bob = env["bob"]
    graph = {"load": LOAD_TINY, "save": {"process_id": "save_result", "arguments": {
        "data": {"from_node": "load"}, "format": "netCDF"}, "result": True}}
    job_id = bob.create_job(graph).headers["OpenEO-Identifier"]
    assert bob.post(f"/jobs/{job_id}/results").status_code == 202
    assert bob.wait_job(job_id)["status"] == "finished"
    results = env["data_dir"] / "jobs" / job_id / "results"
    assert any(results.iterdir())
    resp = ask(env, "p = context['path']\ntry:\n    return 'LEAK ' + str(os.listdir(p))\n"
                    "except OSError as e:\n    return 'blocked ' + type(e).__name__", {"path": str(results)})
    assert result_of(resp).startswith("blocked"), resp.text[:300]


def test_nothing_can_be_written_outside(env):
    target = env["outside"] / "written-by-udf.txt"
    resp = ask(env, "try:\n    open(context['path'], 'w').write('pwned')\n    return 'LEAK wrote'\n"
                    "except OSError as e:\n    return 'blocked ' + type(e).__name__", {"path": str(target)})
    assert result_of(resp).startswith("blocked"), resp.text[:300]
    assert not target.exists()


@pytest.mark.parametrize("where", ["loopback", "server"])
def test_no_socket_reaches_loopback_or_the_server(env, recorder, where):
    port = recorder.port if where == "loopback" else env["port"]
    resp = ask(env, "s = socket.socket()\ns.settimeout(3)\ntry:\n"
                    "    s.connect(('127.0.0.1', context['port']))\n"
                    "    s.sendall(b'GET /openeo/1.2/ HTTP/1.0\\r\\n\\r\\n')\n"
                    "    return 'LEAK ' + s.recv(100).decode(errors='replace')\n"
                    "except OSError as e:\n    return 'blocked ' + type(e).__name__", {"port": port})
    assert result_of(resp).startswith("blocked"), resp.text[:300]
    assert recorder.hits == []


def test_a_fork_bomb_is_bounded_and_the_server_stays_up(env):
    resp = ask(env, "n = 0\npids = []\ntry:\n    for _ in range(500):\n        pid = os.fork()\n"
                    "        if pid == 0:\n            time.sleep(30)\n            os._exit(0)\n"
                    "        pids.append(pid)\n        n += 1\nexcept OSError as e:\n"
                    "    return f'bounded at {n} ' + type(e).__name__\nreturn f'LEAK {n} processes'")
    seen = result_of(resp)
    assert seen.startswith("bounded"), resp.text[:300]
    assert int(seen.split()[2]) < 64
    assert env["alice"].get("/").status_code == 200


def test_memory_beyond_the_limit_fails_the_udf_alone(env):
    resp = ask(env, "try:\n    block = bytearray(3 << 30)\n    return f'LEAK allocated {len(block)}'\n"
                    "except MemoryError:\n    return 'blocked MemoryError'")
    assert result_of(resp).startswith("blocked") or resp.status_code >= 400 and "LEAK" not in resp.text
    assert "LEAK" not in resp.text
    assert env["alice"].get("/").status_code == 200


def test_sleeping_past_the_timeout_is_stopped(env):
    t0 = time.monotonic()
    resp = ask(env, "time.sleep(120)\nreturn 'LEAK slept'")
    assert time.monotonic() - t0 < 90
    assert resp.status_code >= 400 and "LEAK" not in resp.text
    assert "longer than 20 s" in resp.json()["message"], resp.text[:300]


def _marked_processes(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], check=False, capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if marker in line and line.split()[1] == "/bin/sh"]


def test_no_child_outlives_its_run(env):
    marker = canary()
    resp = ask(env, "import subprocess\n"
                    "child = subprocess.Popen(['/bin/sh', '-c', 'sleep 300; true', context['m']], "
                    "start_new_session=True)\n"
                    "pid = os.fork()\nif pid == 0:\n    os.setsid()\n    time.sleep(300)\n    os._exit(0)\n"
                    "time.sleep(1)\nreturn 'started' if child.poll() is None else 'not started'", {"m": marker})
    assert result_of(resp) == "started", resp.text[:300]
    deadline = time.monotonic() + 15
    while _marked_processes(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _marked_processes(marker) == []


def test_one_users_udf_cannot_poison_anothers_run(env):
    poison = ("from terramind_openeo.processes import registry\n"
              "import dataclasses\n"
              "procs = registry.registry()\n"
              "procs['add'] = dataclasses.replace(procs['add'], target=lambda x, y, **kw: 1337)\n"
              "import terramind_openeo.processes.graph as g\n"
              "g.get_process = lambda pid: procs.get(pid)\n"
              "return 'poisoned'")
    ask(env, poison)
    bob = env["bob"]
    add = {"a": {"process_id": "add", "arguments": {"x": 1, "y": 2}, "result": True}}
    for _ in range(3):
        resp = bob.result(add)
        assert resp.status_code == 200 and resp.json() == 3, resp.text[:200]


def _embed_udf_graph(resolution: str) -> dict:
    """The embedding UDF file under apply_neighborhood (32 px of the synthetic collection, the tiny model)."""
    from ..conftest import REPO_ROOT

    code = (REPO_ROOT / "udf" / "terramind_embed.py").read_text()
    return {"load": {"process_id": "load_collection", "arguments": {
        "id": "CGLS_SSM_1KM", "spatial_extent": {"west": 10.0, "east": 10.32, "south": 46.0, "north": 46.32},
        "temporal_extent": ["2020-01-01", "2020-01-02"]}},
        "nb": {"process_id": "apply_neighborhood", "arguments": {
            "data": {"from_node": "load"}, "size": [{"dimension": "x", "value": 32, "unit": "px"},
                                                     {"dimension": "y", "value": 32, "unit": "px"}],
            "overlap": [], "process": {"process_graph": {"udf": {"process_id": "run_udf", "arguments": {
                "data": {"from_parameter": "data"}, "udf": code, "runtime": "Python",
                "context": {"from_parameter": "context"}}, "result": True}}},
            "context": {"model": "terramind_v1_tiny", "weights": "random", "tile_size": 32, "overlap": 0,
                        "modalities": ["S2L2A"], "missing_bands": "mean", "resolution": resolution}}},
        "save": {"process_id": "save_result", "arguments": {"data": {"from_node": "nb"}, "format": "netCDF"},
                 "result": True}}


def test_the_terramind_udf_files_work_in_the_sandbox(tmp_path):
    """The project's own UDF (model weights cache read-only, the Python environment) runs sandboxed; at the
    default patch resolution its apply_metadata (run in the sandbox) declares the 16 times coarser grid, which
    apply_neighborhood refuses before any work, naming the context value to use (issue 17, problem 2)."""
    with serve(base_settings(tmp_path / "data")) as root:
        alice, _ = clients(root)
        refused = alice.result(_embed_udf_graph("patch"))
        resp = alice.result(_embed_udf_graph("pixel"))
    assert refused.status_code == 400, refused.text[:500]
    assert '"resolution": "pixel"' in refused.json()["message"], refused.json()["message"]
    assert resp.status_code == 200, resp.text[:500]
    assert resp.content[:4] == b"\x89HDF"


def test_without_bubblewrap_udfs_are_off_by_default_and_refused_with_the_package_name(tmp_path, monkeypatch):
    """Never a silent fallback to running user code unsandboxed."""
    from terramind_openeo.backend.settings import Settings

    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap on the PATH
    assert Settings().udf_policy == "off"
    graph = udf_graph("return 'LEAK ran'")
    for policy in ("off", "authenticated"):
        with serve(base_settings(tmp_path / policy, udf_policy=policy, isolation="thread")) as root:
            alice, _ = clients(root)
            resp = alice.result(graph)
        assert resp.status_code in (403, 501), resp.text[:300]
        assert "bubblewrap" in resp.json()["message"] and "LEAK" not in resp.text


def test_read_only_paths_under_the_hosts_tmp_stay_visible(tmp_path):
    """A checkout or venv under the host's /tmp (a CI clone made with mktemp) is bound on top of the sandbox's
    private /tmp, not hidden by it; the rest of the host's /tmp stays invisible."""
    import dataclasses

    from terramind_openeo.processes.sandbox import Sandbox, SandboxConfig, default_config

    config = default_config()
    assert isinstance(config, SandboxConfig), config
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "note.txt").write_text("visible")
    (tmp_path / "secret.txt").write_text("hidden")
    assert str(tmp_path).startswith("/tmp/")
    config = dataclasses.replace(config, readonly=(*config.readonly, str(shared)))
    code = (f"from pathlib import Path\nSEEN = (Path({str(shared / 'note.txt')!r}).read_text(), "
            f"Path({str(tmp_path / 'secret.txt')!r}).exists())\n"
            "def apply_metadata(metadata, context):\n    raise RuntimeError(repr(SEEN))\n")
    box = Sandbox(config)
    try:
        reply, _ = box._call({"op": "metadata", "code": code, "bands": ["b"], "context": {}}, (), None)
    finally:
        box.close()
    assert reply.get("error") == repr(("visible", False)), reply
