"""Typed errors of the kernels package: bad input is named, never a stack trace from deep inside Triton."""

from __future__ import annotations


class KernelError(Exception):
    """Base class of every error raised by ``terramind_openeo.kernels``."""


class KernelShapeError(KernelError, ValueError):
    """A tensor has the wrong rank, packed dimension, head dimension or a size that does not match."""


class KernelDtypeError(KernelError, TypeError):
    """A tensor has an unsupported dtype, or tensors that must share a dtype do not."""


class KernelDeviceError(KernelError, ValueError):
    """Tensors that must live on one device do not."""


class UnknownImplementationError(KernelError, ValueError):
    """An implementation name (argument or environment variable) that the dispatcher does not know."""


class TritonUnavailableError(KernelError, RuntimeError):
    """The Triton implementation was requested where it cannot run (no triton, or CPU without the interpreter)."""
