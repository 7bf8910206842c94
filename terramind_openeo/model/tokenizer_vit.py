"""ViT-B encoder and decoder of the TerraMind tokenizers (the 4M "VQ" architecture).

Module and parameter names follow the official tokenizer checkpoints (``encoder.blocks.0.attn.qkv.weight``...),
so their state dicts load unchanged. Differences from the main TerraMind transformer: LayerNorm *with* bias,
biases everywhere, GELU MLP, a learned-shape (but fixed sin-cos) position table of 16x16 (trained at 256 px) that is
bicubically resized to the token grid (14x14 at 224 px), and a tanh "post-MLP" residual after the blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from terramind_openeo.kernels.attention import fused_attention
from terramind_openeo.kernels.prepack import linear


@dataclass(frozen=True)
class TokenizerViTConfig:
    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    patch_size: int = 16
    train_size: int = 256  # the position table has train_size / patch_size entries per side
    norm_eps: float = 1e-6

    @property
    def grid(self) -> int:
        return self.train_size // self.patch_size


def sincos_table_2d(h: int, w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """The MoCo-v3 sin-cos table as the tokenizers build it, ``[1, dim, h, w]`` (only used for random init)."""
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4 for a 2-D sin-cos table, got {dim}")
    grid_w, grid_h = torch.meshgrid(torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32),
                                    indexing="ij")  # both [w, h]
    omega = 1.0 / temperature ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))
    out_w = grid_w.flatten()[:, None] * omega[None]  # [w*h, dim/4]
    out_h = grid_h.flatten()[:, None] * omega[None]
    table = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)  # [w*h, dim]
    # the flat index runs w-major but is read back as (h w), exactly as the original code does
    return table.reshape(h, w, dim).permute(2, 0, 1)[None].contiguous()  # [1, dim, h, w]


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = linear(self.qkv, x).view(B, N, 3, self.num_heads, C // self.num_heads)  # [B, N, 3, H, Dh]
        y = fused_attention(qkv)  # [B, N, H, Dh]
        return linear(self.proj, y.reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, act: type[nn.Module] = nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(self.fc2, self.act(linear(self.fc1, x)))


class Block(nn.Module):
    def __init__(self, cfg: TokenizerViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.attn = Attention(cfg.dim, cfg.num_heads)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.mlp = Mlp(cfg.dim, int(cfg.dim * cfg.mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        # inference: each sum written into the fresh branch output (float addition commutes: same numbers)
        x = self.attn(self.norm1(x)).add_(x)
        return self.mlp(self.norm2(x)).add_(x)


class _PosTable(nn.Module):
    """Holds ``pos_emb [1, D, g, g]`` and serves it resized to any token grid (cached per grid and device)."""

    def __init__(self, cfg: TokenizerViTConfig):
        super().__init__()
        # a Parameter (not a buffer) because the checkpoints store it as one; never trained here
        self.pos_emb = nn.Parameter(sincos_table_2d(cfg.grid, cfg.grid, cfg.dim), requires_grad=False)
        self._cache: dict[tuple, torch.Tensor] = {}

    def positions(self, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
        """``[1, h*w, D]`` position embeddings for an h x w token grid."""
        key = (h, w, dtype, self.pos_emb.device, self.pos_emb.data_ptr())
        table = self._cache.get(key)
        if table is None:
            resized = F.interpolate(self.pos_emb.float(), size=(h, w), mode="bicubic", align_corners=False)
            table = resized.flatten(2).transpose(1, 2).to(dtype)  # [1, h*w, D]
            self._cache = {key: table}
        return table

    def _load_from_state_dict(self, *args, **kwargs):
        self._cache = {}
        super()._load_from_state_dict(*args, **kwargs)


class TokenizerEncoder(_PosTable):
    """Image ``[B, C, H, W]`` -> latent features ``[B, D, H/16, W/16]`` (before the quantisation projection)."""

    def __init__(self, in_channels: int, cfg: TokenizerViTConfig = TokenizerViTConfig()):
        super().__init__(cfg)
        self.cfg = cfg
        self.in_channels = in_channels
        p = cfg.patch_size
        self.proj = nn.Conv2d(in_channels, cfg.dim, kernel_size=p, stride=p)
        self.blocks = nn.Sequential(*[Block(cfg) for _ in range(cfg.depth)])
        self.norm_mlp = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.post_mlp = Mlp(cfg.dim, int(cfg.dim * cfg.mlp_ratio), act=nn.Tanh)

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """``[B, C, H, W]`` -> (token features ``[B, h*w, D]``, h, w)."""
        tokens = self.proj(x)  # [B, D, h, w]
        h, w = tokens.shape[-2:]
        tokens = tokens.flatten(2).transpose(1, 2)  # [B, h*w, D]
        tokens = tokens + self.positions(h, w, tokens.dtype)
        tokens = self.blocks(tokens)
        if self.norm_mlp.weight.dtype == torch.float32:
            tokens = tokens.float() + self.post_mlp(self.norm_mlp(tokens.float()))  # fp32, as the reference
        else:  # a reduced-precision tokenizer (opt-in): its own dtype, result in fp32 for the quantiser
            tokens = (tokens + self.post_mlp(self.norm_mlp(tokens))).float()
        return tokens, h, w


class TokenizerDecoder(_PosTable):
    """Latent features ``[B, D, h, w]`` -> image ``[B, C, 16h, 16w]`` (the LULC tokenizer: class scores)."""

    def __init__(self, out_channels: int, cfg: TokenizerViTConfig = TokenizerViTConfig()):
        super().__init__(cfg)
        self.cfg = cfg
        self.out_channels = out_channels
        self.blocks = nn.Sequential(*[Block(cfg) for _ in range(cfg.depth)])
        self.norm_mlp = nn.LayerNorm(cfg.dim, eps=cfg.norm_eps)
        self.post_mlp = Mlp(cfg.dim, int(cfg.dim * cfg.mlp_ratio), act=nn.Tanh)
        self.out_proj = nn.Linear(cfg.dim, out_channels * cfg.patch_size * cfg.patch_size)

    def forward_tokens(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Token features ``[B, h*w, D]`` -> image ``[B, C, 16h, 16w]``."""
        B = tokens.shape[0]
        p, c = self.cfg.patch_size, self.out_channels
        tokens = tokens + self.positions(h, w, tokens.dtype)
        tokens = self.blocks(tokens)
        tokens = tokens + self.post_mlp(self.norm_mlp(tokens))
        out = linear(self.out_proj, tokens)  # [B, h*w, C*p*p], channel-major inside each patch
        out = out.view(B, h, w, c, p, p).permute(0, 3, 1, 4, 2, 5)  # [B, C, h, p, w, p]
        return out.reshape(B, c, h * p, w * p)
