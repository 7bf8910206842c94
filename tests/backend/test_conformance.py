"""The openEO conformance suite (general API + workflows) against ``terramind-openeo serve``, opt-in.

It takes about a minute or more and needs the suite's own venv (created by ``run-suite`` from PyPI on first
use), so it runs only with ``TERRAMIND_OPENEO_CONFORMANCE=1``; CI calls
``tests/backend/conformance/run_conformance.py`` directly. Fewer passes than ``conformance/baseline.json``
records fail.
"""

from __future__ import annotations

import os

import pytest

from .conformance import run_conformance


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("TERRAMIND_OPENEO_CONFORMANCE") != "1",
                    reason="conformance suite is opt-in: set TERRAMIND_OPENEO_CONFORMANCE=1 (CI runs "
                           "tests/backend/conformance/run_conformance.py)")
def test_conformance_suite_does_not_regress(shared_data):
    if not (run_conformance.SUITE_DIR / "run-suite").is_file():
        pytest.skip(f"conformance kit not found at {run_conformance.SUITE_DIR}")
    assert run_conformance.main(["--parts", "general,workflows"]) == 0


def test_summary_parsing_and_regression_check(tmp_path, monkeypatch):
    output = ("collections: 23 passed, 0 failed, 0 skipped\n"
              "general: 35 passed, 7 failed, 0 skipped\n  (general: 6 of the failed match known suite bugs)\n")
    assert run_conformance.parse_counts(output) == {
        "collections": {"passed": 23, "failed": 0, "skipped": 0},
        "general": {"passed": 35, "failed": 7, "skipped": 0}}
    baseline = tmp_path / "baseline.json"
    baseline.write_text('{"all": {"general": {"passed": 36}}}')
    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "run-suite").write_text("")
    monkeypatch.setattr(run_conformance, "SUITE_DIR", tmp_path / "kit")
    monkeypatch.setattr(run_conformance, "start_server", lambda workdir, port: (None, "http://x/"))
    monkeypatch.setattr(run_conformance, "run_suite", lambda *args: (0, output))
    assert run_conformance.main(["--parts", "general", "--baseline", str(baseline)]) == 1  # 35 < 36
    baseline.write_text('{"all": {"general": {"passed": 35}}}')
    assert run_conformance.main(["--parts", "general", "--baseline", str(baseline)]) == 0
    assert run_conformance.main(["--parts", "general,workflows", "--baseline", str(baseline)]) == 1  # not run
