"""Device and precision: CUDA when present (bfloat16 there), CPU in float32 otherwise; both overridable.

A precision the CPU cannot run fast is refused here, for every openEO entry point (UDFs, processes, ``run``):
the error names the missing CPU support (``model/precision.py`` says why each one is slow without it).
"""

from __future__ import annotations

import torch

from terramind_openeo.model.precision import cpu_problem, precision_name

from .errors import ContextError


def resolve_device(device: str | None) -> torch.device:
    """``None`` -> ``cuda`` when available, else ``cpu``; an unavailable CUDA device is an error."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ContextError("device", f"{device!r} requested but CUDA is not available here")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ContextError("device", f"{device!r} requested but only {torch.cuda.device_count()} GPUs exist")
    return resolved


def resolve_precision(dtype: str | None, device: torch.device) -> str:
    """The precision name for the context key ``dtype`` on ``device``: ``None`` -> bfloat16 on CUDA, float32
    elsewhere. ``int8`` off the CPU, and bfloat16/float16 on a CPU without hardware support for them, are
    refused (a :class:`ContextError` naming the missing CPU support)."""
    if dtype is None:
        return "bfloat16" if device.type == "cuda" else "float32"
    name = precision_name(dtype)
    if name == "int8" and device.type != "cpu":
        raise ContextError("dtype", f"'int8' runs on the CPU only (oneDNN int8 linear layers), not on {device}")
    if device.type == "cpu":
        problem = cpu_problem(name)
        if problem:
            raise ContextError("dtype", f"{problem}; use float32, or int8 (linear layers in int8)")
    return name

