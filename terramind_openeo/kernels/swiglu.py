"""The SwiGLU gate ``silu(a) * b`` of a gated MLP (``fc2(silu(fc1(x)) * fc3(x))``), in one op.

Implementations (see ``dispatch.py``): ``"torch"`` (eager ``F.silu(a) * b``, the default everywhere until a
GPU benchmark shows the kernel pays), ``"triton"`` (``glue_triton.py``; forward only: a call that needs
gradients runs eager torch), ``"reference"`` (float64). The model's gated MLP (``model/blocks.py``) calls it.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F

from terramind_openeo.kernels import dispatch
from terramind_openeo.kernels._checks import check_float_tensor, check_like, check_out
from terramind_openeo.kernels.launch import needs_grad
from terramind_openeo.kernels.reference import swiglu_reference


def swiglu(a: torch.Tensor, b: torch.Tensor, impl: str = "auto", *, out: torch.Tensor | None = None) -> torch.Tensor:
    """``silu(a) * b`` for ``a``, ``b`` of one shape, dtype and device (written into ``out`` if given)."""
    check_float_tensor("a", a)
    check_float_tensor("b", b)
    check_like("b", b, "a", a)
    if out is not None:
        out = check_out("out", out, "a", a)
    name = dispatch.choose(dispatch.SWIGLU, impl, a.device)
    if name == "triton" and needs_grad(a, b):
        name = "torch"  # forward-only kernel: autograd goes through eager torch
    if name == "triton":
        dispatch.require_triton(dispatch.SWIGLU, a.device)
        kernels = importlib.import_module("terramind_openeo.kernels.glue_triton")
        return kernels.swiglu_triton(a, b, out=out)
    result = F.silu(a) * b if name == "torch" else swiglu_reference(a, b).to(a.dtype)
    if out is None:
        return result
    return out.copy_(result)
