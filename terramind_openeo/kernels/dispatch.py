"""Which implementation runs an op: one explicit choice per call, with a settings override.

Order of precedence: an explicit ``impl`` argument other than ``"auto"``; else the op's setting
(``terramind_openeo.config``: ``attention``, ``layernorm``, ``swiglu``, from ``TERRAMIND_OPENEO_ATTENTION``,
``TERRAMIND_OPENEO_LAYERNORM``, ``TERRAMIND_OPENEO_SWIGLU`` or ``config.override(attention=...)``);
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
from dataclasses import dataclass

import torch

from terramind_openeo.config import Settings, settings
from terramind_openeo.kernels.errors import TritonUnavailableError, UnknownImplementationError

AUTO = "auto"


@dataclass(frozen=True)
class OpSpec:
    """How one op chooses its implementation."""

    name: str
    """Name used in messages."""
    setting: str
    """The field of ``config.Settings`` that forces an implementation when the caller passes ``impl="auto"``."""
    impls: tuple[str, ...]
    """Valid implementation names besides ``"auto"``."""
    auto_cuda: str
    """Choice of ``"auto"`` for CUDA tensors when triton is importable."""
    auto_other: str
    """Choice of ``"auto"`` everywhere else."""

    @property
    def env_var(self) -> str:
        """The environment variable of :attr:`setting`."""
        return Settings.env_name(Settings.__dataclass_fields__[self.setting])


ATTENTION = OpSpec("attention", "attention", ("triton", "sdpa", "reference"), "triton", "sdpa")
ADD_LAYER_NORM = OpSpec("add_layer_norm", "layernorm", ("triton", "torch", "reference"), "torch", "torch")
SWIGLU = OpSpec("swiglu", "swiglu", ("triton", "torch", "reference"), "torch", "torch")


@functools.cache
def triton_available() -> bool:
    """Whether ``import triton`` can succeed (checked without importing it)."""
    return importlib.util.find_spec("triton") is not None


def triton_interpreting() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for the CPU interpreter (the ``triton_interpret`` setting)."""
    return settings().triton_interpret


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
        forced = getattr(settings(), spec.setting).strip().lower()
        if forced:
            name = _check_name(spec, forced, f"setting {spec.setting!r} ({spec.env_var})")
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

