"""Patch-token attention on packed projections (placeholder: PyTorch SDPA only).

Shapes: ``qkv [B, N, 3, H, D]`` (packed QKV projection output), ``q [B, M, H, D]``, ``kv [B, N, 2, H, D]``,
``key_mask [B, N]`` (True = attend). Outputs are token-major ``[B, N|M, H, D]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
    # q, k, v: [B, L, H, D] views -> [B, H, L, D] for SDPA; result back to token-major [B, L, H, D].
    mask = None
    if key_mask is not None:
        mask = key_mask[:, None, None, :]  # [B, 1, 1, N]
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    if key_mask is not None:
        # a query whose keys are all masked attends to nothing: zeros, not NaN
        out = torch.where(key_mask.any(dim=1)[:, None, None, None], out, torch.zeros_like(out))
    return out.transpose(1, 2)


def fused_attention(qkv: torch.Tensor, key_mask: torch.Tensor | None = None, impl: str = "auto") -> torch.Tensor:
    """Self-attention over packed ``qkv [B, N, 3, H, D]``; returns ``[B, N, H, D]``."""
    q, k, v = qkv.unbind(dim=2)
    return _sdpa(q, k, v, key_mask)


def fused_cross_attention(
    q: torch.Tensor, kv: torch.Tensor, key_mask: torch.Tensor | None = None, impl: str = "auto"
) -> torch.Tensor:
    """Cross-attention of ``q [B, M, H, D]`` over packed ``kv [B, N, 2, H, D]``; returns ``[B, M, H, D]``."""
    k, v = kv.unbind(dim=2)
    return _sdpa(q, k, v, key_mask)
