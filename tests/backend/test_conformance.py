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
