"""Patch-token attention on packed projections: the public entry points, their checks and the torch paths.

Shapes: ``qkv [B, N, 3, H, D]`` (packed QKV projection output), ``q [B, M, H, D]``, ``kv [B, N, 2, H, D]``,
``key_mask [B, N]`` bool (True = attend). Outputs are token-major ``[B, N|M, H, D]``, ready for the output
projection. A query whose keys are all masked gets zeros, never NaN. Head dim D in {32, 64, 128}; dtypes
fp32, fp16, bf16. The scale is ``1 / sqrt(D)``.

Implementations (``impl``, see ``dispatch.py``): ``"triton"`` (``attention_triton.py``: one fused kernel
reading the packed tensor through strides), ``"sdpa"`` (PyTorch ``scaled_dot_product_attention`` on
strided views, the CPU default), ``"reference"`` (``reference.py`` in float64, cast back).

The Triton kernel is forward-only (inference). A call that needs gradients (grad mode on and an input that
requires grad, e.g. fine-tuning) goes to SDPA whatever ``impl`` says, so gradients always flow; a kernel
without a backward would silently return a result cut off from the graph.
"""

from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F

from terramind_openeo.kernels import dispatch
from terramind_openeo.kernels.errors import KernelDeviceError, KernelDtypeError, KernelShapeError
from terramind_openeo.kernels.launch import needs_grad
from terramind_openeo.kernels.reference import attention_reference

SUPPORTED_HEAD_DIMS = (32, 64, 128)
SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_tensor(name: str, t: object, rank: int, layout: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise KernelDtypeError(f"{name} must be a torch.Tensor {layout}, got {type(t).__name__}")
    if t.dim() != rank:
        raise KernelShapeError(f"{name} must have rank {rank} {layout}, got shape {tuple(t.shape)}")
    if t.dtype not in SUPPORTED_DTYPES:
        raise KernelDtypeError(f"{name} has dtype {t.dtype}; supported: float32, float16, bfloat16")
    return t


def _check_head_dim(name: str, t: torch.Tensor) -> None:
    if t.shape[-1] not in SUPPORTED_HEAD_DIMS:
        raise KernelShapeError(f"{name} has head dim {t.shape[-1]}; supported: {SUPPORTED_HEAD_DIMS}")


def _check_same(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    if t.dtype != ref.dtype:
        raise KernelDtypeError(f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}; cast them to one dtype")
    if t.device != ref.device:
        raise KernelDeviceError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")


def _check_key_mask(key_mask: object, batch: int, n_keys: int, ref: torch.Tensor) -> torch.Tensor | None:
    if key_mask is None:
        return None
    if not isinstance(key_mask, torch.Tensor):
        raise KernelDtypeError(f"key_mask must be a bool torch.Tensor [B, N], got {type(key_mask).__name__}")
    if key_mask.dtype != torch.bool:
        raise KernelDtypeError(f"key_mask must be bool (True = attend), got {key_mask.dtype}")
    if tuple(key_mask.shape) != (batch, n_keys):
        raise KernelShapeError(f"key_mask must have shape [B, N] = {[batch, n_keys]}, got {list(key_mask.shape)}")
    if key_mask.device != ref.device:
        raise KernelDeviceError(f"key_mask is on {key_mask.device} but the attention inputs are on {ref.device}")
    return key_mask


def _check_out(out: object, shape: tuple[int, ...], ref: torch.Tensor) -> torch.Tensor | None:
    if out is None:
        return None
    if not isinstance(out, torch.Tensor):
        raise KernelDtypeError(f"out must be a torch.Tensor, got {type(out).__name__}")
    if tuple(out.shape) != shape:
        raise KernelShapeError(f"out must have shape {list(shape)}, got {list(out.shape)}")
    _check_same("out", out, "the attention inputs", ref)
    return out


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    # q: [B, M, H, D], k, v: [B, N, H, D] views -> [B, H, L, D] views for SDPA; result back to [B, M, H, D].
    mask = None if key_mask is None else key_mask[:, None, None, :]  # [B, 1, 1, N]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    if key_mask is not None:
        # a query whose keys are all masked attends to nothing: zeros, not SDPA's NaN
        out = torch.where(key_mask.any(dim=1)[:, None, None, None], out, torch.zeros_like(out))
    return out.transpose(1, 2)


def _run(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None,
    impl: str,
    out: torch.Tensor | None,
) -> torch.Tensor:
    name = dispatch.choose(dispatch.ATTENTION, impl, q.device)
    if name == "triton" and needs_grad(q, k, v):
        name = "sdpa"  # the kernel has no backward: autograd goes through SDPA (module docstring)
    if name == "triton":
        dispatch.require_triton(dispatch.ATTENTION, q.device)
        # imported here, so that triton is imported only when used (TRITON_INTERPRET is read at import)
        kernels = importlib.import_module("terramind_openeo.kernels.attention_triton")
        return kernels.attention_triton(q, k, v, key_mask, out=out)
    if name == "sdpa":
        result = _sdpa(q, k, v, key_mask)
    else:
        result = attention_reference(q, k, v, key_mask).to(q.dtype)
    if out is None:
        return result
    out.copy_(result)
    return out


def fused_attention(
    qkv: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    impl: str = "auto",
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Self-attention over packed ``qkv [B, N, 3, H, D]``; returns ``[B, N, H, D]`` (written into ``out`` if given)."""
    _check_tensor("qkv", qkv, 5, "[B, N, 3, H, D]")
    if qkv.shape[2] != 3:
        raise KernelShapeError(f"qkv must be packed as [B, N, 3, H, D], got size {qkv.shape[2]} in dim 2")
    _check_head_dim("qkv", qkv)
    batch, n_tokens, _, heads, head_dim = qkv.shape
    key_mask = _check_key_mask(key_mask, batch, n_tokens, qkv)
    out = _check_out(out, (batch, n_tokens, heads, head_dim), qkv)
    q, k, v = qkv.unbind(dim=2)  # strided views [B, N, H, D], no copy
    return _run(q, k, v, key_mask, impl, out)


def fused_cross_attention(
    q: torch.Tensor,
    kv: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    impl: str = "auto",
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-attention of ``q [B, M, H, D]`` over packed ``kv [B, N, 2, H, D]``; returns ``[B, M, H, D]``."""
    _check_tensor("q", q, 4, "[B, M, H, D]")
    _check_tensor("kv", kv, 5, "[B, N, 2, H, D]")
    if kv.shape[2] != 2:
        raise KernelShapeError(f"kv must be packed as [B, N, 2, H, D], got size {kv.shape[2]} in dim 2")
    _check_head_dim("q", q)
    _check_same("kv", kv, "q", q)
    batch, n_q, heads, head_dim = q.shape
    if (kv.shape[0], kv.shape[3], kv.shape[4]) != (batch, heads, head_dim):
        raise KernelShapeError(
            f"kv [B, N, 2, H, D] = {list(kv.shape)} does not match q [B, M, H, D] = {list(q.shape)} in B, H or D"
        )
    key_mask = _check_key_mask(key_mask, batch, kv.shape[1], q)
    out = _check_out(out, (batch, n_q, heads, head_dim), q)
    k, v = kv.unbind(dim=2)  # strided views [B, N, H, D], no copy
    return _run(q, k, v, key_mask, impl, out)
