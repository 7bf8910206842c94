"""Modality embeddings: raw-pixel patch embeddings, token embeddings, the coords sequence embedding, and the
decoder's target embeddings with their (tied) output projections.

Each module returns the content part ``x [B, N, D]`` and the additive part ``emb [1, N, D]`` (position table +
modality embedding) separately, because the decoder reuses ``emb`` on the projected encoder output. Parameter
and buffer names equal the reference's (``proj``, ``token_emb``, ``to_logits``, ``mod_emb``, ``pos_emb``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from terramind_openeo.kernels.prepack import linear


def build_2d_sincos_table(h: int, w: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 2-D sin-cos table ``[1, h * w, dim]`` as MoCo v3 / 4M build it.

    The flattened index runs over ``(w, h)`` with w the slow axis: [sin(w), cos(w), sin(h), cos(h)] per token.
    """
    if dim % 4:
        raise ValueError(f"sin-cos table width must be a multiple of 4, got {dim}")
    grid_w, grid_h = torch.meshgrid(torch.arange(w), torch.arange(h), indexing="ij")  # [w, h] each
    quarter = dim // 4
    omega = 1.0 / temperature ** (torch.arange(quarter, dtype=torch.float32) / quarter)  # [dim / 4]
    out_w = grid_w.reshape(-1, 1).float() * omega  # [w * h, dim / 4]
    out_h = grid_h.reshape(-1, 1).float() * omega
    return torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1).unsqueeze(0)


def build_1d_sincos_table(length: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Fixed 1-D sin-cos table ``[1, length, dim]``."""
    half = dim // 2
    omega = 1.0 / temperature ** (torch.arange(half, dtype=torch.float32) / half)  # [dim / 2]
    out = torch.arange(length, dtype=torch.float32).reshape(-1, 1) * omega  # [length, dim / 2]
    return torch.cat([out.sin(), out.cos()], dim=1).unsqueeze(0)


def resize_pos_table(table: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of a square table ``[1, n * n, D]`` to ``[1, h * w, D]`` (``grid = (h, w)`` patches).

    Exactly the reference's operation (align_corners=False, the table read as ``[n, n]``), computed in fp32.
    """
    n = int(round(table.shape[1] ** 0.5))
    dim = table.shape[2]
    square = table.float().reshape(1, n, n, dim).permute(0, 3, 1, 2)  # [1, n*n, D] -> [1, D, n, n]
    resized = F.interpolate(square, size=grid, mode="bicubic", align_corners=False)  # [1, D, h, w]
    return resized.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], dim).to(table.dtype)  # -> [1, h*w, D]


class _PositionTable(nn.Module):
    """Owner of ``pos_emb`` (square 2-D table) and ``mod_emb``; serves ``pos + mod`` for any patch grid."""

    def __init__(self, dim: int, table_grid: int):
        super().__init__()
        self.dim = dim
        self.table_grid = table_grid
        self.register_buffer("pos_emb", build_2d_sincos_table(table_grid, table_grid, dim))
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim))
        self._resized: dict[tuple, torch.Tensor] = {}

    def position_table(self, grid: tuple[int, int]) -> torch.Tensor:
        """``pos_emb`` for a ``grid = (h, w)`` of patches: ``[1, h * w, D]`` (resized and cached if not native)."""
        if tuple(grid) == (self.table_grid, self.table_grid):
            return self.pos_emb
        pos = self.pos_emb
        try:
            version = pos._version
        except RuntimeError:  # an inference tensor (model built under inference_mode) has no version counter
            version = -1
        key = (tuple(grid), pos.device, pos.dtype, pos.data_ptr(), version)
        table = self._resized.get(key)
        if table is None:
            if len(self._resized) > 16:
                self._resized.clear()
            table = resize_pos_table(pos, (grid[0], grid[1]))
            self._resized[key] = table
        return table

    def additive(self, grid: tuple[int, int]) -> torch.Tensor:
        """Position table + modality embedding, ``[1, h * w, D]``."""
        return self.position_table(grid) + self.mod_emb


class PatchEmbedding(_PositionTable):
    """Raw pixels ``[B, C, H, W]`` -> patch tokens: a bias-free linear over ``(ph, pw, c)``-ordered patches."""

    def __init__(self, channels: int, dim: int, patch_size: int = 16, image_size: int = 224):
        super().__init__(dim, image_size // patch_size)
        self.channels = channels
        self.patch_size = patch_size
        self.proj = nn.Linear(channels * patch_size * patch_size, dim, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``x [B, h * w, D]`` (raster order) and ``emb [1, h * w, D]``."""
        B, C, H, W = x.shape
        p = self.patch_size
        h, w = H // p, W // p
        # [B, C, h, p, w, p] -> [B, h, w, p, p, C] -> [B, h * w, p * p * C]
        patches = x.reshape(B, C, h, p, w, p).permute(0, 2, 4, 3, 5, 1).reshape(B, h * w, p * p * C)
        return linear(self.proj, patches), self.additive((h, w))


class TokenEmbedding(_PositionTable):
    """Token ids ``[B, h, w]`` of a tokenised image modality -> embeddings."""

    def __init__(self, vocab_size: int, dim: int, patch_size: int = 16, image_size: int = 224):
        super().__init__(dim, image_size // patch_size)
        self.vocab_size = vocab_size
        self.token_emb = nn.Embedding(vocab_size, dim)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``x [B, h * w, D]`` and ``emb [1, h * w, D]``."""
        B, h, w = ids.shape
        return self.token_emb(ids.reshape(B, h * w)), self.additive((h, w))


class SequenceEmbedding(nn.Module):
    """Token ids ``[B, L]`` of a sequence modality (coords) -> embeddings with 1-D sin-cos positions."""

    def __init__(self, vocab_size: int, dim: int, table_length: int, padding_idx: int = 0):
        super().__init__()
        self.vocab_size = vocab_size
        self.register_buffer("pos_emb", build_1d_sincos_table(table_length, dim))
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim))
        self.token_emb = nn.Embedding(vocab_size, dim, padding_idx=padding_idx)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``x [B, L, D]`` and ``emb [1, L, D]`` (positions 0..L-1, no padding mask)."""
        return self.token_emb(ids), self.pos_emb[:, : ids.shape[1]] + self.mod_emb


class TokenTargetEmbedding(_PositionTable):
    """Decoder side of a tokenised image modality: target position/modality embedding and tied output logits."""

    def __init__(self, vocab_size: int, dim: int, patch_size: int = 16, image_size: int = 224):
        super().__init__(dim, image_size // patch_size)
        self.vocab_size = vocab_size
        self.token_emb = nn.Embedding(vocab_size, dim)
        self.to_logits = nn.Linear(dim, vocab_size, bias=False)
        self.to_logits.weight = self.token_emb.weight

    def logits(self, y: torch.Tensor) -> torch.Tensor:
        """Decoder output ``[B, M, D]`` -> scores ``[B, M, vocab]``."""
        return linear(self.to_logits, y)


class SequenceTargetEmbedding(SequenceEmbedding):
    """Decoder side of a sequence modality (coords); held so that checkpoints load, tied like the reference."""

    def __init__(self, vocab_size: int, dim: int, table_length: int, padding_idx: int = 0):
        super().__init__(vocab_size, dim, table_length, padding_idx)
        self.to_logits = nn.Linear(dim, vocab_size, bias=False)
        self.to_logits.weight = self.token_emb.weight

    def logits(self, y: torch.Tensor) -> torch.Tensor:
        return self.to_logits(y)
