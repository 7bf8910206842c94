"""Acceptance: the openEO JavaScript client (the library the openEO Web Editor is built on) against the back-end.

``js_client/check_backend.cjs`` does what the Web Editor does on a session: discovery from the root URL,
capabilities, basic login, collections, processes, formats, UDF runtimes, local validation of graphs against
the back-end's process specs with ``@openeo/js-processgraphs`` (the model builder), server validation,
"run now" (synchronous result, logs from the ``monitor`` link), a batch job (start, poll, logs, results,
download) and a user-defined process. Versions are pinned in ``js_client/package-lock.json``; the packages
are installed with ``npm ci`` into a cache folder once. Needs Node.js >= 18 (skips, saying so, without it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from terramind_openeo.backend.settings import Settings

from .conftest import _HASHES, PASSWORDS, live_server

JS_DIR = Path(__file__).resolve().parent / "js_client"
BOLZANO = (679720, 5151080, 680680, 5151920, 32632)  # 96 x 84 px of SENTINEL2_L2A_BOLZANO (UTM 32N)


def _node_env() -> Path:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.skip("Node.js/npm not installed: the openEO JS client check needs them")
    major = int(subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip().lstrip("v")
                .split(".")[0] or 0)
    if major < 18:
        pytest.skip(f"Node.js {major} is too old for the openEO JS client check (needs >= 18)")
    lock = (JS_DIR / "package-lock.json").read_bytes()
    cache_root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "terramind-openeo"
    env_dir = cache_root / f"js-client-{hashlib.sha256(lock).hexdigest()[:12]}"
    if not (env_dir / "node_modules" / "@openeo" / "js-client").is_dir():
        work = cache_root / f"{env_dir.name}.{os.getpid()}.tmp"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(JS_DIR / name, work / name)
        proc = subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"], cwd=work,
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            shutil.rmtree(work, ignore_errors=True)
            pytest.skip(f"npm ci of the pinned openEO JS client failed (registry unreachable?): "
                        f"{proc.stderr.strip()[-400:]}")
        shutil.rmtree(env_dir, ignore_errors=True)
        work.rename(env_dir)
    shutil.copy(JS_DIR / "check_backend.cjs", env_dir / "check_backend.cjs")
    return env_dir


@pytest.fixture(scope="module")
def js_report(tmp_path_factory, shared_data) -> dict:
    env_dir = _node_env()
    settings = Settings(dask="threads", data_dir=tmp_path_factory.mktemp("backend-js") / "data",
                        basic_users=dict(_HASHES), max_running_jobs=2, max_running_jobs_per_user=2)
    with live_server(settings) as url:
        proc = subprocess.run(["node", "check_backend.cjs", url, "alice", PASSWORDS["alice"], "SENTINEL2_L2A_BOLZANO",
                               *map(str, BOLZANO)], cwd=env_dir, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_discovery_login_and_metadata(js_report):
    r = js_report
    assert r["apiVersion"] == "1.2.0"
    assert all(r["features"][f] for f in r["features"] if f not in ("authenticateOIDC",)), r["features"]
    assert "basic" in r["authProviders"] and r["account"] == "alice"
    assert "SENTINEL2_L2A_BOLZANO" in r["collections"]
    assert {"x", "y", "t", "bands"} <= set(r["collectionDimensions"])
    assert r["processCount"] > 100
    assert {"gtiff", "netcdf"} <= set(r["outputFormats"]) and "Python" in r["udfRuntimes"]


def test_graphs_validate_against_our_specs_like_the_model_builder(js_report):
    local = js_report["localValidation"]
    assert local["ndvi"] == [] and local["terramind"] == []
    assert local["missingArgument"] and any("data" in e for e in local["missingArgument"])
    assert local["unknownProcess"] and any("no_such_process" in e for e in local["unknownProcess"])
    assert js_report["serverValidation"]["ndvi"] == []
    assert js_report["serverValidation"]["unknownCollection"] == ["CollectionNotFound"]


def test_run_now_returns_netcdf_and_its_logs(js_report):
    sync = js_report["sync"]
    assert sync["type"].startswith("application/x-netcdf") and sync["bytes"] > 1000
    assert sync["head"] in ("CDF\x01", "CDF\x02", "\x89HDF")
    assert sync["logs"][0] == "Synchronous processing started." and sync["logs"][-1] == "Synchronous processing finished."


def test_batch_job_and_user_defined_process(js_report):
    job = js_report["job"]
    assert job["status"] == "finished", job
    assert any("Job finished" in m for m in job["logs"]) and job["logsAfterLast"] == 0
    assert job["stacType"] in ("Collection", "Feature") and job["assets"]
    assert job["assets"][0]["type"].startswith("image/tiff")
    assert job["download"]["status"] == 200 and job["download"]["bytes"] > 1000
    assert js_report["jobsListed"]
    udp = js_report["udp"]
    assert "js_ndvi" in udp["listed"] and udp["summary"] == "NDVI from the JS client"
    assert "js_ndvi" not in udp["afterDelete"]
