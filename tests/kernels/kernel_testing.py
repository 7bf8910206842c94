"""Shared setup of the kernel tests: interpreter mode, dtypes, tolerances, random inputs.

Triton reads ``TRITON_INTERPRET`` when a kernel is decorated, and its own ``tl.max`` / ``tl.sum`` are
decorated when triton is imported: the variable must be set before the first ``import triton`` of the
process. The package imports triton lazily (only when a Triton implementation runs), so setting it here,
imported by ``conftest.py`` when pytest collects ``tests/kernels``, is early enough in a whole-suite run.
Should some earlier module have imported triton already, the in-process Triton tests skip and
``test_interpreter_process.py`` runs them in a fresh process instead.
"""

from __future__ import annotations

import os
import sys

import torch

from terramind_openeo import config

if "TRITON_INTERPRET" not in os.environ and not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"  # for triton itself, which reads it when it decorates a kernel
    config.reload()  # and for the package's settings, should they have been read already

from terramind_openeo.kernels import dispatch

INTERPRET = dispatch.triton_interpreting()
TRITON_DEVICE = "cpu" if INTERPRET else "cuda"
# bf16 tl.dot is wrong in the interpreter: bf16 is a GPU-only case.
KERNEL_DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if TRITON_DEVICE == "cuda" else [])



def _triton_built_for_interpreter() -> bool:
    if "triton" not in sys.modules:
        return True  # the first import will come after the variable was set
    import triton.language as tl
    from triton.runtime.jit import JITFunction

    return not isinstance(tl.max, JITFunction)


# False when triton was imported in this process before TRITON_INTERPRET=1 was set.
INTERPRETER_USABLE = not INTERPRET or _triton_built_for_interpreter()


def randn(rng: torch.Generator, *shape: int, dtype: torch.dtype, device: torch.device | str) -> torch.Tensor:
    return torch.randn(*shape, generator=rng, dtype=torch.float32).to(dtype=dtype, device=device)


def max_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return (x.double() - ref.double().to(x.device)).abs().max().item() if x.numel() else 0.0


# Accept a kernel whose error vs float64 is at most ~2x torch's own error in the same precision.
EPS = {torch.float32: 1e-6, torch.float16: 1e-4, torch.bfloat16: 1e-3}
