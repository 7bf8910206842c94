"""Attention and glue kernels: Triton on CUDA, PyTorch elsewhere, a torch reference on request.

The model calls these functions only, so it never hard-codes an implementation. Triton itself is imported
lazily, when a Triton implementation is chosen (see ``dispatch.py`` for the rules and the environment
overrides).
"""

from terramind_openeo.kernels.attention import fused_attention, fused_cross_attention
from terramind_openeo.kernels.errors import (
    KernelDeviceError,
    KernelDtypeError,
    KernelError,
    KernelShapeError,
    TritonUnavailableError,
    UnknownImplementationError,
)

__all__ = [
    "KernelDeviceError",
    "KernelDtypeError",
    "KernelError",
    "KernelShapeError",
    "TritonUnavailableError",
    "UnknownImplementationError",
    "fused_attention",
    "fused_cross_attention",
]
