"""Transformer blocks of TerraMind: pre-norm self-attention blocks (encoder) and self + cross-attention blocks
(decoder). Parameter names equal the reference's, so official checkpoints load unchanged.

Attention goes through ``terramind_openeo.kernels`` only: the packed projection output is viewed (no copy) as
``[B, N, 3, H, D]`` / ``[B, N, 2, H, D]`` and handed to the kernel, which returns token-major ``[B, N, H, D]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from terramind_openeo.kernels import dispatch, fused_attention, fused_cross_attention
from terramind_openeo.kernels.launch import needs_grad
from terramind_openeo.kernels.layernorm import add_layer_norm
from terramind_openeo.kernels.prepack import linear
from terramind_openeo.kernels.swiglu import swiglu
from terramind_openeo.model.config import TerraMindConfig


class LayerNorm(nn.Module):
    """LayerNorm whose bias is a (zero, persistent) buffer, as the checkpoints store it."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.register_buffer("bias", torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class Mlp(nn.Module):
    """GELU feed-forward (tiny, small)."""

    def __init__(self, dim: int, hidden: int, bias: bool):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(self.fc2, F.gelu(linear(self.fc1, x)))


class GatedMlp(nn.Module):
    """SwiGLU feed-forward (base, large): ``fc2(silu(fc1(x)) * fc3(x))``."""

    def __init__(self, dim: int, hidden: int, bias: bool):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, dim, bias=bias)
        self.fc3 = nn.Linear(dim, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = linear(self.fc1, x)
        if torch.is_grad_enabled() and gate.requires_grad:
            return self.fc2(F.silu(gate) * self.fc3(x))
        if dispatch.choose(dispatch.SWIGLU, "auto", gate.device) != "torch":  # the fused gate (opt-in on CUDA)
            return linear(self.fc2, swiglu(gate, linear(self.fc3, x), out=gate))
        # inference: one buffer, no temporaries (same numbers as the out-of-place form)
        return linear(self.fc2, F.silu(gate, inplace=True).mul_(linear(self.fc3, x)))


def make_mlp(config: TerraMindConfig) -> nn.Module:
    cls = GatedMlp if config.gated_mlp else Mlp
    return cls(config.dim, config.mlp_hidden, config.mlp_bias)


class Attention(nn.Module):
    """Multi-head self-attention over a packed qkv projection."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, proj_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        B, N, C = x.shape
        qkv = linear(self.qkv, x).view(B, N, 3, self.num_heads, C // self.num_heads)  # [B, N, 3C] -> [B, N, 3, H, D]
        if causal:  # autoregressive sequence targets (coords, <= 4 tokens): the fused kernels take key masks only
            if key_mask is not None:
                raise ValueError("causal self-attention takes no key_mask")
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # [B, N, 3, H, D] -> 3 x [B, H, N, D]
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2)  # [B, N, H, D]
        else:
            out = fused_attention(qkv, key_mask=key_mask)  # [B, N, H, D]
        return linear(self.proj, out.reshape(B, N, C))


class CrossAttention(nn.Module):
    """Multi-head cross-attention of queries ``x`` over ``context`` (packed kv projection)."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool, proj_bias: bool):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, M, C = x.shape
        N = context.shape[1]
        H = self.num_heads
        q = linear(self.q, x).view(B, M, H, C // H)  # [B, M, C] -> [B, M, H, D]
        kv = linear(self.kv, context).view(B, N, 2, H, C // H)  # [B, N, 2C] -> [B, N, 2, H, D]
        out = fused_cross_attention(q, kv, key_mask=key_mask)  # [B, M, H, D]
        return linear(self.proj, out.reshape(B, M, C))


def _residual(x: torch.Tensor, update: torch.Tensor) -> torch.Tensor:
    """``x + update``; at inference written into ``update`` (a fresh buffer) instead of a new one. The float
    addition commutes exactly, so the numbers are those of ``x + update``."""
    if torch.is_grad_enabled() and (x.requires_grad or update.requires_grad):
        return x + update
    return update.add_(x)


def _residual_norm(x: torch.Tensor, update: torch.Tensor, norm: LayerNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x + update, norm(x + update))``: the residual add and the next pre-norm, fused in one kernel where
    the dispatcher picks Triton for ``add_layer_norm`` (opt-in on CUDA, inference only; TerraMind's norms have
    a zero bias, which the kernel leaves out), else the eager ops with the numbers they always had."""
    if dispatch.choose(dispatch.ADD_LAYER_NORM, "auto", x.device) == "torch" or needs_grad(x, update):
        x = _residual(x, update)
        return x, norm(x)
    return add_layer_norm(update, x, norm.weight, norm.eps)


class Block(nn.Module):
    """Encoder block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, config: TerraMindConfig):
        super().__init__()
        self.norm1 = LayerNorm(config.dim, config.norm_eps)
        self.attn = Attention(config.dim, config.num_heads, config.qkv_bias, config.proj_bias)
        self.norm2 = LayerNorm(config.dim, config.norm_eps)
        self.mlp = make_mlp(config)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x, h = _residual_norm(x, self.attn(self.norm1(x), key_mask), self.norm2)
        return _residual(x, self.mlp(h))


class DecoderBlock(nn.Module):
    """Decoder block: self-attention, cross-attention on the (normed) context, MLP; all pre-norm residuals."""

    def __init__(self, config: TerraMindConfig):
        super().__init__()
        dim = config.dim
        self.norm1 = LayerNorm(dim, config.norm_eps)
        self.self_attn = Attention(dim, config.num_heads, config.qkv_bias, config.proj_bias)
        self.cross_attn = CrossAttention(dim, config.num_heads, config.qkv_bias, config.proj_bias)
        self.query_norm = LayerNorm(dim, config.norm_eps)
        self.context_norm = LayerNorm(dim, config.norm_eps)
        self.norm2 = LayerNorm(dim, config.norm_eps)
        self.mlp = make_mlp(config)

    def forward(
        self,
        y: torch.Tensor,
        context: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        context_mask: torch.Tensor | None = None,
        causal: bool = False,
    ) -> torch.Tensor:
        """``y [B, M, D]`` decoder tokens, ``context [B, N, D]``; masks are ``[B, M]`` / ``[B, N]``, True = attend;
        ``causal``: decoder token i attends to tokens 0..i only (autoregressive targets)."""
        y, h = _residual_norm(y, self.self_attn(self.norm1(y), self_mask, causal), self.query_norm)
        y, h = _residual_norm(y, self.cross_attn(h, self.context_norm(context), context_mask), self.norm2)
        return _residual(y, self.mlp(h))
