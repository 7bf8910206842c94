"""Fallback: the interpreter tests in a fresh process, when this one imported triton too early for them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from kernel_testing import INTERPRETER_USABLE

HERE = Path(__file__).resolve().parent


@pytest.mark.skipif(INTERPRETER_USABLE, reason="the Triton kernel tests run in this process")
def test_kernel_suite_in_a_fresh_interpreter_process():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    tests = [str(p) for p in sorted(HERE.glob("test_*.py")) if p.name != Path(__file__).name]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
        env=env, cwd=HERE.parents[1], capture_output=True, text=True, check=False, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
