"""Flash-style patch-token attention in Triton, reading packed projections in place.

One kernel serves self- and cross-attention. Q, K and V arrive as strided token-major views
``[B, L, H, D]`` (``qkv[:, :, 0]`` of the packed ``[B, N, 3, H, D]`` projection is such a view, as is
``kv[:, :, 1]``), so nothing is permuted or copied; the output is written token-major ``[B, M, H, D]``,
the layout the output projection reads.

Supported shapes and dtypes (the launcher checks them; ``attention.py`` validates user input first):

* head dim D in {32, 64, 128}; the last dimension of every operand and of the output has stride 1;
* any sequence length M (queries) and N (keys) >= 1: the ragged tail block is masked, so TerraMind's
  196, 392, 588 ... 1568 tokens need no padding; the key loop runs over full blocks without bounds checks
  and handles the tail in one masked step;
* optional ``key_mask [B, N]`` (bool, True = attend); a query whose keys are all masked gets zeros;
* fp32, fp16, bf16 inputs; softmax statistics and accumulators in fp32; fp32 products use IEEE precision
  (no TF32), so the fp32 kernel matches torch's fp32;
* under ``TRITON_INTERPRET=1`` (CPU tests): one fixed block configuration, fp32 and fp16 only (bf16
  ``tl.dot`` is wrong in the interpreter). On CUDA a small autotuned config list for fp16/bf16, keyed on the
  lengths rounded up to a power of two (>= 64: TerraMind's 196, 392, 588 ... 1568 tokens fall in 5 buckets,
  so a new length does not trigger a new tuning run), the head dim and the mask; a fixed heuristic for
  fp32, or for all with ``TERRAMIND_OPENEO_AUTOTUNE=0``. All configurations compile for sm_90 (checked
  ahead of time without a GPU); none was timed on one yet.
* tensors on any CUDA device: the launch runs under that device's context (a GPU other than the current
  one gets its kernel there, not on the current device).

Triton reads ``TRITON_INTERPRET`` when a kernel is decorated, and decorates its own ``tl.max`` / ``tl.sum``
when triton is imported: the variable must be set before the first ``import triton`` of the process. The
dispatcher imports this module (and so triton) lazily, only when the Triton implementation is chosen.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from terramind_openeo.config import settings
from terramind_openeo.kernels.errors import KernelDeviceError, KernelShapeError
from terramind_openeo.kernels.launch import device_guard

SUPPORTED_HEAD_DIMS = (32, 64, 128)
_LOG2E = 1.4426950408889634


@triton.jit
def _attend_block(
    acc, l_i, m_i, q, k_base, v_base, mask_base,
    start_n, offs_n, offs_d, n_kv, stride_kn, stride_vn, stride_mask_n, qk_scale,
    TAIL: tl.constexpr, HAS_MASK: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    # One key block: scores, online-softmax update of (m_i, l_i), rescaled accumulation of P @ V.
    cols = start_n + offs_n  # [BLOCK_N]
    if TAIL:
        in_range = cols < n_kv
        k = tl.load(k_base + cols[None, :] * stride_kn + offs_d[:, None], mask=in_range[None, :], other=0.0)
        v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :], mask=in_range[:, None], other=0.0)
    else:
        k = tl.load(k_base + cols[None, :] * stride_kn + offs_d[:, None])  # [D, BLOCK_N]
        v = tl.load(v_base + cols[:, None] * stride_vn + offs_d[None, :])  # [BLOCK_N, D]
    qk = tl.dot(q, k, input_precision=DOT_PRECISION) * qk_scale  # [BLOCK_M, BLOCK_N], log2 units
    if HAS_MASK:
        if TAIL:
            keep = tl.load(mask_base + cols * stride_mask_n, mask=in_range, other=0) != 0
        else:
            keep = tl.load(mask_base + cols * stride_mask_n) != 0
        qk = tl.where(keep[None, :], qk, float("-inf"))
    elif TAIL:
        qk = tl.where(in_range[None, :], qk, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    # While every key so far is masked, m_new is -inf; subtracting 0 instead keeps exp2 at 0, never NaN.
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
    alpha = tl.math.exp2(m_i - m_safe)
    p = tl.math.exp2(qk - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PRECISION)
    return acc, l_i, m_new


@triton.jit
def _attention_fwd(
    Q, K, V, Out, Mask,
    stride_qb, stride_qn, stride_qh,
    stride_kb, stride_kn, stride_kh,
    stride_vb, stride_vn, stride_vh,
    stride_ob, stride_on, stride_oh,
    stride_mask_b, stride_mask_n,
    n_heads, n_q, n_kv, qk_scale,
    n_q_bucket, n_kv_bucket,  # not read by the kernel: the autotuning key (length_bucket)
    HEAD_DIM: tl.constexpr, HAS_MASK: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // n_heads).to(tl.int64)  # int64: batch offsets of large packed tensors pass 2**31
    h = pid_bh % n_heads
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < n_q

    q_ptrs = Q + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qn + offs_d[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None], other=0.0)  # [BLOCK_M, D]
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    mask_base = Mask + b * stride_mask_b

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    n_full = (n_kv // BLOCK_N) * BLOCK_N
    for start_n in range(0, n_full, BLOCK_N):
        acc, l_i, m_i = _attend_block(
            acc, l_i, m_i, q, k_base, v_base, mask_base,
            start_n, offs_n, offs_d, n_kv, stride_kn, stride_vn, stride_mask_n, qk_scale,
            False, HAS_MASK, DOT_PRECISION,
        )
    if n_full < n_kv:
        acc, l_i, m_i = _attend_block(
            acc, l_i, m_i, q, k_base, v_base, mask_base,
            n_full, offs_n, offs_d, n_kv, stride_kn, stride_vn, stride_mask_n, qk_scale,
            True, HAS_MASK, DOT_PRECISION,
        )

    l_safe = tl.where(l_i == 0.0, 1.0, l_i)  # no key attended: acc is 0, the output is 0
    out = acc / l_safe[:, None]
    o_ptrs = Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :]
    tl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=row_ok[:, None])


# Interpreter: one configuration, small blocks so the tests see several full blocks and a ragged tail.
_INTERPRETER_CONFIG = {"BLOCK_M": 32, "BLOCK_N": 32, "num_warps": 4, "num_stages": 1}


def _cuda_configs() -> list[triton.Config]:
    # (BLOCK_M, BLOCK_N, warps, stages): the usual Hopper/Ampere winners for D <= 128 at short lengths.
    shapes = [(128, 64, 4, 3), (128, 64, 8, 3), (64, 64, 4, 3), (128, 32, 4, 3), (64, 32, 4, 4), (128, 128, 8, 2)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in shapes]


def _cuda_heuristic(n_kv: int, head_dim: int, dtype: torch.dtype) -> dict:
    if dtype == torch.float32:  # IEEE fp32 tiles are 2x larger: keep shared memory < 100 KB
        return {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 2}
    block_n = 32 if head_dim == 128 or n_kv <= 256 else 64
    return {"BLOCK_M": 128 if head_dim <= 64 else 64, "BLOCK_N": block_n, "num_warps": 4, "num_stages": 3}


def length_bucket(n: int) -> int:
    """The autotuning key of a sequence length: the next power of two, at least 64."""
    return 1 << max(6, (max(1, n) - 1).bit_length())


_autotuned = triton.autotune(configs=_cuda_configs(),
                             key=["n_q_bucket", "n_kv_bucket", "HEAD_DIM", "HAS_MASK", "DOT_PRECISION"])(
    _attention_fwd
)



def is_interpreted() -> bool:
    """Whether this module's kernels were built for the CPU interpreter (``TRITON_INTERPRET=1`` at import)."""
    return not isinstance(_attention_fwd, triton.runtime.JITFunction)


def attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of ``q [B, M, H, D]`` over ``k, v [B, N, H, D]`` (strided views), into ``out [B, M, H, D]``.

    ``out`` is allocated token-major when absent. Inputs are assumed validated by ``attention.py``
    (dtypes, ranks, head dim, devices); this launcher checks only what the kernel itself relies on.
    """
    batch, n_q, heads, head_dim = q.shape
    n_kv = k.shape[1]
    if head_dim not in SUPPORTED_HEAD_DIMS:
        raise KernelShapeError(f"head dim {head_dim} is not supported by the Triton kernel: {SUPPORTED_HEAD_DIMS}")
    interpreted = is_interpreted()
    if q.device.type != "cuda" and not interpreted:
        raise KernelDeviceError(
            "Triton attention kernels were compiled for CUDA: CPU tensors need TRITON_INTERPRET=1 set before "
            "triton is first imported in the process"
        )
    # The kernel assumes unit stride along D (vector loads); other layouts are rare enough to copy.
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    if out is None:
        out = torch.empty((batch, n_q, heads, head_dim), dtype=q.dtype, device=q.device)
    elif out.stride(-1) != 1:
        raise KernelShapeError(f"out must have unit stride along its last dimension, got strides {out.stride()}")
    if batch == 0 or n_q == 0:
        return out
    if key_mask is not None:
        mask = key_mask.view(torch.uint8)  # bool is one byte: same memory, loads as 0/1
        mask_strides = (mask.stride(0), mask.stride(1))
    else:
        mask = q  # never read: HAS_MASK=False compiles the loads away
        mask_strides = (0, 0)
    qk_scale = _LOG2E / math.sqrt(head_dim)
    args = (
        q, k, v, out, mask,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        *mask_strides,
        heads, n_q, n_kv, qk_scale,
        length_bucket(n_q), length_bucket(n_kv),
    )
    meta = {
        "HEAD_DIM": head_dim,
        "HAS_MASK": key_mask is not None,
        "DOT_PRECISION": "ieee" if q.dtype == torch.float32 else "tf32",
    }
    if interpreted:
        config = _INTERPRETER_CONFIG
    elif q.dtype == torch.float32 or not settings().autotune:
        # fp32 (checks, not a speed path) skips autotuning: its IEEE-precision variants compile slowly
        config = _cuda_heuristic(n_kv, head_dim, q.dtype)
    else:
        def tuned_grid(cfg: dict) -> tuple[int, int]:
            return (triton.cdiv(n_q, cfg["BLOCK_M"]), batch * heads)

        with device_guard(q.device):
            _autotuned[tuned_grid](*args, **meta)
        return out
    grid = (triton.cdiv(n_q, config["BLOCK_M"]), batch * heads)
    with device_guard(q.device):
        _attention_fwd[grid](*args, **meta, **config)
    return out
