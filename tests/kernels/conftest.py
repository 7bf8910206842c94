"""Fixtures of the kernel tests; the interpreter set-up lives in ``kernel_testing`` (imported first)."""

from __future__ import annotations

import secrets

import pytest
import torch
from kernel_testing import INTERPRETER_USABLE, TRITON_DEVICE

from terramind_openeo.kernels import dispatch


@pytest.fixture
def triton_device() -> torch.device:
    """Where the Triton kernels run in this process: CPU (interpreter) or CUDA."""
    if not dispatch.triton_available():
        pytest.skip("triton is not installed")
    if not INTERPRETER_USABLE:
        pytest.skip("triton was imported before TRITON_INTERPRET=1 was set; test_interpreter_process.py runs these")
    if TRITON_DEVICE == "cuda" and not torch.cuda.is_available():
        pytest.skip("TRITON_INTERPRET=0 and no CUDA device: the Triton kernels cannot run here")
    return torch.device(TRITON_DEVICE)


@pytest.fixture
def rng() -> torch.Generator:
    """A generator with a fresh seed per test (printed on failure through ``rng.initial_seed()``)."""
    gen = torch.Generator()
    gen.manual_seed(secrets.randbits(63))
    return gen
