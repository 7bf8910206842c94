"""Triton kernels for the memory-bound glue of a ViT block: residual add + LayerNorm, and the SwiGLU gate.

* ``add_layer_norm``: rows of length C <= 8192 (TerraMind: 192, 384, 768, 1024), one row per program,
  the whole row in registers (``BLOCK_C`` = next power of two of C, masked); LayerNorm without bias,
  statistics in fp32; the sum is rounded to the input dtype before it is normalised, as an eager model
  that stores the residual stream would.
* ``swiglu``: ``silu(a) * b`` elementwise over flat contiguous tensors of any size, fp32 maths.

fp32, fp16, bf16 on CUDA; fp32 and fp16 are tested under ``TRITON_INTERPRET=1``. Imported lazily by the
dispatchers (``TRITON_INTERPRET`` must be set before triton is first imported).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from terramind_openeo.kernels.errors import KernelDeviceError, KernelShapeError
from terramind_openeo.kernels.launch import device_guard

MAX_ROW = 8192
_SWIGLU_BLOCK = 1024


@triton.jit
def _add_layer_norm_fwd(
    X, R, W, S, Y,
    stride_x, stride_r, stride_s, stride_y,
    n_cols, eps,
    HAS_RESIDUAL: tl.constexpr, BLOCK_C: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_C)
    in_row = cols < n_cols
    x = tl.load(X + row * stride_x + cols, mask=in_row, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(R + row * stride_r + cols, mask=in_row, other=0.0)
        s = (x.to(tl.float32) + r.to(tl.float32)).to(S.dtype.element_ty)
        tl.store(S + row * stride_s + cols, s, mask=in_row)
        sf = s.to(tl.float32)
    else:
        sf = x.to(tl.float32)
    mean = tl.sum(sf, axis=0) / n_cols
    centred = tl.where(in_row, sf - mean, 0.0)
    var = tl.sum(centred * centred, axis=0) / n_cols
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(W + cols, mask=in_row, other=0.0).to(tl.float32)
    tl.store(Y + row * stride_y + cols, (centred * rstd * w).to(Y.dtype.element_ty), mask=in_row)


@triton.jit
def _swiglu_fwd(A, B, Out, n_elements, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    ok = offs < n_elements
    a = tl.load(A + offs, mask=ok, other=0.0).to(tl.float32)
    b = tl.load(B + offs, mask=ok, other=0.0).to(tl.float32)
    gate = a / (1.0 + tl.exp(-a))  # silu
    tl.store(Out + offs, (gate * b).to(Out.dtype.element_ty), mask=ok)


def is_interpreted() -> bool:
    """Whether the kernels were built for the CPU interpreter (``TRITON_INTERPRET=1`` at import)."""
    return not isinstance(_swiglu_fwd, triton.runtime.JITFunction)


def _check_device(t: torch.Tensor) -> None:
    if t.device.type != "cuda" and not is_interpreted():
        raise KernelDeviceError(
            "Triton glue kernels were compiled for CUDA: CPU tensors need TRITON_INTERPRET=1 set before "
            "triton is first imported in the process"
        )


def _rows(t: torch.Tensor) -> torch.Tensor:
    # [..., C] -> [rows, C]; a view for the usual contiguous activations, a copy otherwise.
    t2 = t.reshape(-1, t.shape[-1])
    return t2 if t2.stride(-1) == 1 else t2.contiguous()


def add_layer_norm_triton(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float = 1e-6,
    *,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(s, y)`` with ``s = x + residual`` (``x`` itself when residual is None), ``y = LayerNorm(s) * weight``.

    Inputs are assumed validated by ``layernorm.py``. ``out = (s, y)`` preallocated contiguous tensors
    shaped like ``x`` (used by the tests to poison them); without a residual ``s`` is ``x`` and is not written.
    """
    _check_device(x)
    n_cols = x.shape[-1]
    if n_cols > MAX_ROW:
        raise KernelShapeError(f"add_layer_norm rows of {n_cols} elements exceed the kernel's maximum {MAX_ROW}")
    x2 = _rows(x)
    r2 = _rows(residual) if residual is not None else x2
    if out is None:
        s = torch.empty(x2.shape, dtype=x.dtype, device=x.device) if residual is not None else x
        y = torch.empty(x2.shape, dtype=x.dtype, device=x.device)
    else:
        s, y = out
        s = s if residual is not None else x
    s2 = s.view(-1, n_cols) if residual is not None else x2
    y2 = y.view(-1, n_cols)
    n_rows = x2.shape[0]
    if n_rows:
        block_c = triton.next_power_of_2(n_cols)
        num_warps = 1 if is_interpreted() else min(max(block_c // 256, 1), 8)
        with device_guard(x.device):
            _add_layer_norm_fwd[(n_rows,)](
                x2, r2, weight, s2, y2,
                x2.stride(0), r2.stride(0), s2.stride(0), y2.stride(0),
                n_cols, eps,
                HAS_RESIDUAL=residual is not None, BLOCK_C=block_c, num_warps=num_warps,
            )
    return s.view(x.shape), y.view(x.shape)


def swiglu_triton(a: torch.Tensor, b: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """``silu(a) * b``; inputs are assumed validated by ``swiglu.py``; ``out`` contiguous, shaped like ``a``."""
    _check_device(a)
    a_flat, b_flat = a.contiguous().view(-1), b.contiguous().view(-1)
    if out is None:
        out = torch.empty(a.shape, dtype=a.dtype, device=a.device)
    n = a_flat.numel()
    if n:
        with device_guard(a.device):
            _swiglu_fwd[(triton.cdiv(n, _SWIGLU_BLOCK),)](a_flat, b_flat, out.view(-1), n, BLOCK=_SWIGLU_BLOCK,
                                                          num_warps=4)
    return out
