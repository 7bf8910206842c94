"""Finite scalar quantisation (FSQ) of the TerraMind tokenizers: latent <-> code <-> token index.

Each latent channel ``d`` is squashed by a sigmoid and rounded to one of ``levels[d]`` values; the code is that
value scaled to [0, 1] and the token index is the mixed-radix number of the rounded values (channel 0 is the
least significant digit). TerraMind v1 uses levels 8-8-8-6-5 (15360 codes) for S2L2A, S1GRD, S1RTC, DEM and
NDVI, and 7-5-5-5-5 (4375 codes) for LULC.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from terramind_openeo.model.generation_errors import TokenRangeError

LEVELS_15360 = (8, 8, 8, 6, 5)
LEVELS_4375 = (7, 5, 5, 5, 5)


def parse_levels(levels: str | tuple[int, ...] | list[int]) -> tuple[int, ...]:
    """``"8-8-8-6-5"`` or a sequence of ints -> a tuple of ints, each at least 2."""
    values = tuple(int(v) for v in levels.split("-")) if isinstance(levels, str) else tuple(int(v) for v in levels)
    if not values or any(v < 2 for v in values):
        raise ValueError(f"FSQ levels must be integers >= 2, got {levels!r}")
    return values


@dataclass(frozen=True)
class FSQ:
    """A finite scalar quantiser; stateless (no learned parameters), so a plain object rather than a module."""

    levels: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", parse_levels(self.levels))

    @property
    def dim(self) -> int:
        """Number of latent channels (one per level)."""
        return len(self.levels)

    @property
    def codebook_size(self) -> int:
        return math.prod(self.levels)

    def _tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        levels = torch.tensor(self.levels, dtype=torch.int64, device=device)
        basis = torch.cumprod(torch.tensor((1,) + self.levels[:-1], dtype=torch.int64, device=device), dim=0)
        return levels, basis

    def quantize(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent ``[B, D, h, w]`` -> (codes ``[B, D, h, w]`` in [0, 1], token indices ``[B, h, w]`` int64)."""
        if latent.ndim != 4 or latent.shape[1] != self.dim:
            raise ValueError(f"latent must be [B, {self.dim}, h, w], got {tuple(latent.shape)}")
        levels, basis = self._tables(latent.device)
        steps = (levels - 1).to(latent.dtype)[None, :, None, None]  # [1, D, 1, 1]
        digits = torch.round(torch.sigmoid(latent) * steps)  # [B, D, h, w] integral values 0..levels-1
        codes = digits / steps
        indices = (digits.to(torch.int64) * basis[None, :, None, None]).sum(dim=1)  # [B, h, w]
        return codes, indices

    def check_indices(self, indices: torch.Tensor, name: str = "tokens") -> None:
        """Raise :class:`TokenRangeError` unless every index is an integer in [0, codebook_size)."""
        if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
            raise TokenRangeError(f"{name} must be an integer tensor of token indices, got dtype {indices.dtype}")
        if indices.numel() == 0:
            return
        low, high = int(indices.min()), int(indices.max())
        if low < 0 or high >= self.codebook_size:
            raise TokenRangeError(
                f"{name} must lie in [0, {self.codebook_size - 1}] (codebook {'-'.join(map(str, self.levels))}), "
                f"got values in [{low}, {high}]"
            )

    def indices_to_codes(self, indices: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Token indices ``[...]`` -> codes ``[..., D]`` in [0, 1] (range-checked)."""
        self.check_indices(indices)
        levels, basis = self._tables(indices.device)
        digits = (indices.to(torch.int64)[..., None] // basis) % levels  # [..., D]
        return digits.to(dtype) / (levels - 1).to(dtype)

    def tokens_to_latent(self, tokens: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Token grid ``[B, h, w]`` -> code map ``[B, D, h, w]`` (what the tokenizer decoders are conditioned on)."""
        if tokens.ndim != 3:
            raise ValueError(f"tokens must be [B, h, w], got {tuple(tokens.shape)}")
        return self.indices_to_codes(tokens, dtype).permute(0, 3, 1, 2).contiguous()

    def codes_to_indices(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[..., D]`` in [0, 1] -> token indices ``[...]`` (inverse of :meth:`indices_to_codes`)."""
        if codes.shape[-1] != self.dim:
            raise ValueError(f"codes must end in a dimension of {self.dim}, got {tuple(codes.shape)}")
        levels, basis = self._tables(codes.device)
        digits = torch.round(codes * (levels - 1).to(codes.dtype)).to(torch.int64)
        if bool(((digits < 0) | (digits >= levels)).any()):
            raise TokenRangeError("codes must lie in [0, 1]")
        return (digits * basis).sum(dim=-1)
