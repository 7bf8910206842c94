"""Plain torch references of every kernel: readable maths, the test oracle and an explicit fallback.

Each reference computes in ``compute_dtype`` (float64 by default, the oracle of the tests) and returns that
dtype; the dispatchers cast the result back to the input dtype when a caller asks for ``impl="reference"``.
"""

from __future__ import annotations

import math

import torch


def attention_reference(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    *,
    compute_dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """softmax(q k^T / sqrt(D)) v per head, for token-major ``q [B, M, H, D]``, ``k, v [B, N, H, D]``.

    ``key_mask [B, N]`` (True = attend) removes keys; a query with no key left gets zeros. Returns
    ``[B, M, H, D]`` in ``compute_dtype``.
    """
    qf, kf, vf = (t.to(compute_dtype) for t in (q, k, v))
    scores = torch.einsum("bmhd,bnhd->bhmn", qf, kf) / math.sqrt(q.shape[-1])  # [B, H, M, N]
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isinf(row_max), torch.zeros_like(row_max), row_max)  # all keys masked
    weights = torch.exp(scores - row_max)  # masked keys -> exp(-inf) = 0
    denom = weights.sum(dim=-1, keepdim=True)
    weights = weights / torch.where(denom == 0, torch.ones_like(denom), denom)
    return torch.einsum("bhmn,bnhd->bmhd", weights, vf)  # [B, M, H, D]


def add_layer_norm_reference(
    x: torch.Tensor,
    residual: torch.Tensor | None,
    weight: torch.Tensor,
    eps: float = 1e-6,
    *,
    compute_dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``s = x + residual`` (rounded to ``x.dtype`` as an eager model stores it), ``y = LayerNorm(s) * weight``.

    LayerNorm over the last dimension without bias. Returns ``(s, y)`` in ``compute_dtype``.
    """
    s = x if residual is None else (x + residual)  # the residual stream is kept in the model's dtype
    sf = s.to(compute_dtype)
    mean = sf.mean(dim=-1, keepdim=True)
    var = (sf - mean).pow(2).mean(dim=-1, keepdim=True)
    y = (sf - mean) / torch.sqrt(var + eps) * weight.to(compute_dtype)
    return sf, y


def swiglu_reference(a: torch.Tensor, b: torch.Tensor, *, compute_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``silu(a) * b`` (the SwiGLU gate), in ``compute_dtype``."""
    af, bf = a.to(compute_dtype), b.to(compute_dtype)
    return af * torch.sigmoid(af) * bf
