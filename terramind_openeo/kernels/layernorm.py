"""Residual add + LayerNorm without bias (TerraMind's ``norm_layer``: eps 1e-6, no bias), in one op.

``add_layer_norm(x, residual, weight)`` returns ``(s, y)``: ``s = x + residual`` (the new residual stream,
``x`` itself when ``residual`` is None) and ``y = LayerNorm(s) * weight`` over the last dimension. In a
pre-norm block ``x = x + attn(norm1(x)); h = norm2(x)`` becomes ``x, h = add_layer_norm(x, attn_out, w2)``.

Implementations (see ``dispatch.py``): ``"torch"`` (eager add + ``F.layer_norm``, the default everywhere
until a GPU benchmark shows the kernel pays), ``"triton"`` (``glue_triton.py``; forward only: a call that
needs gradients runs eager torch), ``"reference"`` (float64). The model's blocks (``model/blocks.py``) call it
between attention and MLP.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F

from terramind_openeo.kernels import dispatch
from terramind_openeo.kernels._checks import check_float_tensor, check_like, check_out
from terramind_openeo.kernels.launch import needs_grad
from terramind_openeo.kernels.reference import add_layer_norm_reference


def add_layer_norm(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float = 1e-6,
    impl: str = "auto",
    *,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x + residual, LayerNorm(x + residual) * weight)`` over the last dimension, without bias.

    ``x`` and ``residual`` ``[..., C]`` share shape, dtype and device; ``weight [C]`` has the same dtype.
    ``out = (s, y)``: contiguous tensors shaped like ``x`` to write into (``s`` is unused without residual).
    """
    check_float_tensor("x", x)
    if residual is not None:
        check_float_tensor("residual", residual)
        check_like("residual", residual, "x", x)
    check_float_tensor("weight", weight)
    check_like("weight", weight, "x", x, shape=(x.shape[-1],))
    if out is not None:
        out = (check_out("out[0]", out[0], "x", x), check_out("out[1]", out[1], "x", x))
    name = dispatch.choose(dispatch.ADD_LAYER_NORM, impl, x.device)
    if name == "triton" and needs_grad(x, residual, weight):
        name = "torch"  # forward-only kernel: autograd goes through eager torch
    if name == "triton":
        dispatch.require_triton(dispatch.ADD_LAYER_NORM, x.device)
        kernels = importlib.import_module("terramind_openeo.kernels.glue_triton")
        return kernels.add_layer_norm_triton(x, residual, weight, eps, out=out)
    if name == "torch":
        s = x if residual is None else x + residual
        y = F.layer_norm(s, (x.shape[-1],), weight, None, eps)
    else:
        s64, y64 = add_layer_norm_reference(x, residual, weight, eps)
        s, y = (x if residual is None else s64.to(x.dtype)), y64.to(x.dtype)
    if out is None:
        return s, y
    if residual is not None:
        out[0].copy_(s)
        s = out[0]
    out[1].copy_(y)
    return s, out[1]
