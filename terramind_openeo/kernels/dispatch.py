"""Which implementation runs an op: one explicit choice per call, with an environment override.

Order of precedence: an explicit ``impl`` argument other than ``"auto"``; else the op's environment
variable (``TERRAMIND_OPENEO_ATTENTION``, ``TERRAMIND_OPENEO_LAYERNORM``, ``TERRAMIND_OPENEO_SWIGLU``);
else the op's automatic rule for the device of its inputs. An unknown name is an error that lists the valid
ones, never a silent fallback.

Automatic rules:

* attention: ``triton`` for CUDA tensors when triton is importable, PyTorch ``sdpa`` elsewhere.
* weight pre-packing (``prepack.py``, CPU only): convolutions ``mkldnn`` (``TERRAMIND_OPENEO_PREPACK``),
  linear layers ``mkl`` (``TERRAMIND_OPENEO_PREPACK_LINEAR``); both ``torch`` on other devices.
* add + LayerNorm and SwiGLU: eager ``torch`` everywhere. Their Triton kernels are tested, but they become
  the CUDA default only once a GPU benchmark shows they pay (``benchmarks/bench_attention.py`` measures
  them); until then ``triton`` is opt-in.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass

import torch

from terramind_openeo.kernels.errors import TritonUnavailableError, UnknownImplementationError

AUTO = "auto"


@dataclass(frozen=True)
class OpSpec:
    """How one op chooses its implementation."""

    name: str
    """Name used in messages."""
    env_var: str
    """Environment variable that forces an implementation when the caller passes ``impl="auto"``."""
    impls: tuple[str, ...]
    """Valid implementation names besides ``"auto"``."""
    auto_cuda: str
    """Choice of ``"auto"`` for CUDA tensors when triton is importable."""
    auto_other: str
    """Choice of ``"auto"`` everywhere else."""


ATTENTION = OpSpec("attention", "TERRAMIND_OPENEO_ATTENTION", ("triton", "sdpa", "reference"), "triton", "sdpa")
ADD_LAYER_NORM = OpSpec("add_layer_norm", "TERRAMIND_OPENEO_LAYERNORM", ("triton", "torch", "reference"), "torch", "torch")
SWIGLU = OpSpec("swiglu", "TERRAMIND_OPENEO_SWIGLU", ("triton", "torch", "reference"), "torch", "torch")


@functools.cache
def triton_available() -> bool:
    """Whether ``import triton`` can succeed (checked without importing it)."""
    return importlib.util.find_spec("triton") is not None


def triton_interpreting() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for the CPU interpreter (read the way triton reads it)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def _check_name(spec: OpSpec, name: str, source: str) -> str:
    valid = (AUTO, *spec.impls)
    if name not in valid:
        raise UnknownImplementationError(
            f"unknown {spec.name} implementation {name!r} from {source}; valid: {', '.join(valid)}"
        )
    return name


def choose(spec: OpSpec, impl: str, device: torch.device) -> str:
    """The implementation name (one of ``spec.impls``) that runs ``spec`` on tensors living on ``device``."""
    if not isinstance(impl, str):
        raise UnknownImplementationError(f"{spec.name} impl must be a string, got {type(impl).__name__}")
    name = _check_name(spec, impl.strip().lower(), "the impl argument")
    if name == AUTO:
        forced = os.environ.get(spec.env_var, "").strip().lower()
        if forced:
            name = _check_name(spec, forced, f"environment variable {spec.env_var}")
    if name == AUTO:
        on_cuda = device.type == "cuda" and triton_available()
        name = spec.auto_cuda if on_cuda else spec.auto_other
    return name


def require_triton(spec: OpSpec, device: torch.device) -> None:
    """Raise a clear error where the Triton implementation of ``spec`` cannot run on ``device``."""
    if not triton_available():
        raise TritonUnavailableError(f"{spec.name} impl 'triton' needs the triton package (pip install triton)")
    if device.type != "cuda" and not triton_interpreting():
        raise TritonUnavailableError(
            f"{spec.name} impl 'triton' on {device.type} tensors needs the Triton interpreter: set "
            "TRITON_INTERPRET=1 before triton is imported, or use CUDA tensors"
        )

