"""benchmarks/gpu_check.sh: every step runs, each under its limit, every figure lands in one file, and a
failing step fails the check. The steps' commands are recorded by a stand-in interpreter here (quick); the
real dry run (``benchmarks/gpu_check.sh --dry-run``, minutes under the Triton interpreter) runs them for real."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.sh"


def _fake_python(tmp_path: Path, fail_on: str = "") -> tuple[Path, Path]:
    log = tmp_path / "calls.log"
    fake = tmp_path / "python"
    fake.write_text(f"""#!/usr/bin/env bash
echo "$*" >> {log}
cat > /dev/null
case "$*" in *{fail_on or "@never@"}*) echo "stand-in failure"; exit 3 ;; esac
echo "stand-in output of: $*"
""")
    fake.chmod(0o755)
    return fake, log


def _run(tmp_path: Path, fake: Path, data: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--dry-run", "--python", str(fake), "--out", str(tmp_path / "out"),
                           "--data", str(data)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "GPU_CHECK_DRY_RUN_LIMIT_SCALE": "1"})


@pytest.fixture
def data(tmp_path: Path) -> Path:
    tile = tmp_path / "data" / "terramind-examples" / "S2L2A" / "tile.tif"
    tile.parent.mkdir(parents=True)
    tile.write_bytes(b"")
    return tmp_path / "data"


def test_every_step_runs_and_reports_to_one_file(tmp_path, data):
    fake, log = _fake_python(tmp_path)
    done = _run(tmp_path, fake, data)
    assert done.returncode == 0, done.stdout + done.stderr
    results = (tmp_path / "out" / "RESULTS.txt").read_text()
    for step in ("environment", "kernel tests", "bench_attention", "encoder end to end", "UDF on a real tile"):
        assert f"=== {step}" in results and f"--- {step}" in results
    assert "DRY RUN" in results and "all steps passed" in results
    calls = log.read_text()
    assert "-m pytest" in calls and "tests/kernels" in calls
    assert "benchmarks/bench_attention.py --smoke" in calls
    assert "benchmarks/gpu_encoder.py --device cpu" in calls and "--json" in calls
    assert f"benchmarks/gpu_udf.py {data}/terramind-examples/S2L2A/tile.tif --device cpu" in calls


def test_a_failing_step_fails_the_check_and_the_rest_still_runs(tmp_path, data):
    fake, log = _fake_python(tmp_path, fail_on="bench_attention")
    done = _run(tmp_path, fake, data)
    results = (tmp_path / "out" / "RESULTS.txt").read_text()
    assert done.returncode == 1 and "FAILED: bench_attention (exit 3)" in results
    assert "benchmarks/gpu_udf.py" in log.read_text()


def test_without_data_the_udf_step_is_reported_missing(tmp_path):
    fake, _ = _fake_python(tmp_path)
    done = _run(tmp_path, fake, tmp_path / "nowhere")
    assert done.returncode == 1 and "UDF on a real tile (no data)" in (tmp_path / "out" / "RESULTS.txt").read_text()
