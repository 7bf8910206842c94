"""TerraMind v1 tokenizers: image <-> discrete tokens, weight-compatible with the official checkpoints.

``load_tokenizer("S2L2A" | "S1GRD" | "S1RTC" | "DEM" | "NDVI" | "LULC", weights="hub" | "random" | PATH)``.

* ``tok.encode(x) -> tokens [B, H/16, W/16]`` (int64). ``x`` is in *standardised* units (pre-training mean/std,
  as the TerraMind encoder takes them), ``[B, C, H, W]`` with H, W multiples of 16; for LULC, class indices
  ``[B, H, W]`` / ``[B, 1, H, W]`` (0..9) or one-hot scores ``[B, 10, H, W]``.
* ``tok.decode(tokens, timesteps=50, generator=None, noise=None, threshold=1.0)``: for the diffusion tokenizers
  (S2L2A, S1GRD, S1RTC, DEM, NDVI) a DDIM reconstruction ``[B, C, H, W]`` in standardised units, starting from
  ``noise`` or from ``torch.randn((B, C, H, W), generator=generator)`` drawn on the tokenizer's device (the
  reference draws the same tensor on the CPU: on CPU the two agree); for LULC the 10 class scores
  ``[B, 10, H, W]`` (no diffusion, no randomness).

Architecture: ViT-B encoder (``tokenizer_vit``), 1x1 projection to 5 latent channels, FSQ (``fsq``), and either the
ViT-B decoder (LULC) or the patched UNet (``unet``) with DDIM (``ddim``).
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from terramind_openeo.model import precision
from terramind_openeo.model.ddim import DDIMSchedule
from terramind_openeo.model.errors import CheckpointError, WeightsSourceError
from terramind_openeo.model.fsq import FSQ, LEVELS_4375, LEVELS_15360
from terramind_openeo.model.generation_errors import (
    GenerationError,
    TokenizerWeightsError,
    UnknownModalityError,
)
from terramind_openeo.model.tokenizer_vit import (
    TokenizerDecoder,
    TokenizerEncoder,
    sincos_table_2d,
)
from terramind_openeo.model.unet import PatchedUNet, UNetConfig
from terramind_openeo.model.weights import (
    check_state_dict,
    filter_state_dict,
    read_checkpoint,
)

if TYPE_CHECKING:
    from terramind_openeo.model.coords import CoordsTokenizer

logger = logging.getLogger(__name__)

LULC_CLASSES = 10


@dataclass(frozen=True)
class TokenizerSpec:
    modality: str
    channels: int  # image channels (LULC: number of classes)
    levels: tuple[int, ...]
    diffusion: bool  # UNet + DDIM decoder (else the ViT decoder)

    @property
    def codebook_size(self) -> int:
        return FSQ(self.levels).codebook_size


TOKENIZER_SPECS: dict[str, TokenizerSpec] = {
    "S2L2A": TokenizerSpec("S2L2A", 12, LEVELS_15360, True),
    "S1GRD": TokenizerSpec("S1GRD", 2, LEVELS_15360, True),
    "S1RTC": TokenizerSpec("S1RTC", 2, LEVELS_15360, True),
    "DEM": TokenizerSpec("DEM", 1, LEVELS_15360, True),
    "NDVI": TokenizerSpec("NDVI", 1, LEVELS_15360, True),
    "LULC": TokenizerSpec("LULC", LULC_CLASSES, LEVELS_4375, False),
}


def tokenizer_spec(modality: str) -> TokenizerSpec:
    spec = TOKENIZER_SPECS.get(modality)
    if spec is None:
        raise UnknownModalityError(
            f"modality {modality!r} has no tokenizer; expected one of {sorted(TOKENIZER_SPECS)}")
    return spec


class TerraMindTokenizer(nn.Module):
    """Encoder + quantiser shared by both tokenizer kinds."""

    def __init__(self, spec: TokenizerSpec):
        super().__init__()
        self.spec = spec
        self.modality = spec.modality
        self.fsq = FSQ(spec.levels)
        self.encoder = TokenizerEncoder(spec.channels)
        self.quant_proj = nn.Conv2d(self.encoder.cfg.dim, self.fsq.dim, 1)
        self.patch_size = self.encoder.cfg.patch_size
        self.weights = "unset"

    @property
    def codebook_size(self) -> int:
        return self.fsq.codebook_size

    def _param(self) -> torch.Tensor:
        return self.quant_proj.weight

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        """Validate ``x`` and return ``[B, C, H, W]`` in the encoder's dtype and device."""
        c = self.spec.channels
        if x.ndim != 4 or x.shape[1] != c:
            raise GenerationError(f"x for the {self.modality} tokenizer must be [B, {c}, H, W], got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise GenerationError(f"x for the {self.modality} tokenizer must be a float tensor, got {x.dtype}")
        if not bool(torch.isfinite(x).all()):
            raise GenerationError(f"x for the {self.modality} tokenizer contains NaN or infinite values")
        return x.to(self._param())

    def _check_size(self, h: int, w: int) -> None:
        p = self.patch_size
        if h % p or w % p or h == 0 or w == 0:
            raise GenerationError(f"x for the {self.modality} tokenizer must have H and W multiples of {p}, "
                                  f"got {h}x{w}")

    @torch.inference_mode()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image ``[B, C, H, W]`` (standardised) -> tokens ``[B, H/16, W/16]`` int64."""
        x = self.prepare_input(x)
        self._check_size(*x.shape[-2:])
        feats, h, w = self.encoder.forward_tokens(x)  # [B, h*w, D] fp32
        latent = F.linear(feats, self.quant_proj.weight.flatten(1).float(), self.quant_proj.bias.float())
        latent = latent.transpose(1, 2).reshape(x.shape[0], self.fsq.dim, h, w)  # [B, 5, h, w]
        return self.fsq.quantize(latent)[1]

    def tokens_to_latent(self, tokens: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, h, w]`` -> FSQ codes ``[B, 5, h, w]`` (range-checked; error names ``tokens``)."""
        if tokens.ndim != 3:
            raise GenerationError(f"tokens must be [B, h, w], got {tuple(tokens.shape)}")
        return self.fsq.tokens_to_latent(tokens.to(self._param().device))


class LULCTokenizer(TerraMindTokenizer):
    """Land-cover tokenizer: one-hot classes -> tokens; tokens -> 10 class scores per pixel (ViT-B decoder)."""

    def __init__(self, spec: TokenizerSpec = TOKENIZER_SPECS["LULC"]):
        super().__init__(spec)
        self.decoder = TokenizerDecoder(spec.channels)
        self.post_quant_proj = nn.Conv2d(self.fsq.dim, self.decoder.cfg.dim, 1)

    def prepare_input(self, x: torch.Tensor) -> torch.Tensor:
        c = self.spec.channels
        if x.ndim == 4 and x.shape[1] == 1:
            x = x[:, 0]
        if x.ndim == 3:  # class indices -> one-hot
            if x.is_floating_point() and not bool((x == x.round()).all()):
                raise GenerationError("x for the LULC tokenizer: class indices must be integers 0..9")
            classes = x.to(torch.int64)
            if classes.numel() and (int(classes.min()) < 0 or int(classes.max()) >= c):
                raise GenerationError(f"x for the LULC tokenizer: class indices must lie in 0..{c - 1}, got "
                                      f"{int(classes.min())}..{int(classes.max())}")
            x = F.one_hot(classes, c).permute(0, 3, 1, 2).float()  # [B, 10, H, W]
        return super().prepare_input(x)

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, **_ignored) -> torch.Tensor:
        """Tokens ``[B, h, w]`` -> class scores ``[B, 10, 16h, 16w]`` (argmax over dim 1 gives the classes)."""
        codes = self.tokens_to_latent(tokens).to(self._param().dtype)  # [B, 5, h, w]
        h, w = codes.shape[-2:]
        feats = F.linear(codes.flatten(2).transpose(1, 2), self.post_quant_proj.weight.flatten(1),
                         self.post_quant_proj.bias)  # [B, h*w, D]
        return self.decoder.forward_tokens(feats, h, w)


class DiffusionTokenizer(TerraMindTokenizer):
    """Tokenizer with the patched-UNet diffusion decoder (S2L2A, S1GRD, S1RTC, DEM, NDVI)."""

    def __init__(self, spec: TokenizerSpec):
        super().__init__(spec)
        self.decoder = PatchedUNet(UNetConfig(in_channels=spec.channels, cond_channels=self.fsq.dim))
        self.schedule = DDIMSchedule()
        self.channels_last = True
        self._weights_layout: tuple | None = None  # (device, dtype, data_ptr) the channels-last copy was made for

    def _prepare_layout(self) -> None:
        """Convolution weights in channels-last layout once, not on every call (oneDNN's native layout)."""
        weight = self.decoder.out[2].weight
        key = (weight.device, weight.dtype, weight.data_ptr())
        if self.channels_last and self._weights_layout != key:
            with torch.inference_mode(False), torch.no_grad():  # parameters stay ordinary tensors
                self.decoder.to(memory_format=torch.channels_last)
            weight = self.decoder.out[2].weight
            self._weights_layout = (weight.device, weight.dtype, weight.data_ptr())

    def start_noise(self, shape: tuple[int, ...], generator: torch.Generator | None) -> torch.Tensor:
        device = generator.device if generator is not None else self._param().device
        return torch.randn(shape, generator=generator, device=device, dtype=torch.float32)

    @torch.inference_mode()
    def denoise_step(self, sample: torch.Tensor, t: int, codes: torch.Tensor) -> torch.Tensor:
        """One UNet evaluation: predicted clean sample ``[B, C, H, W]`` (fp32) at timestep ``t``."""
        dtype = self._param().dtype
        self._prepare_layout()
        out = self.decoder(sample.to(dtype), torch.tensor([t], device=sample.device), codes.to(dtype),
                           channels_last=self.channels_last)
        return out.float()

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, timesteps: int = 50, generator: torch.Generator | None = None,
               noise: torch.Tensor | None = None, threshold: float | None = 1.0) -> torch.Tensor:
        """Tokens ``[B, h, w]`` -> DDIM reconstruction ``[B, C, 16h, 16w]`` in standardised units (fp32)."""
        codes = self.tokens_to_latent(tokens)  # [B, 5, h, w]
        B, _, h, w = codes.shape
        shape = (B, self.spec.channels, h * self.patch_size, w * self.patch_size)
        self.decoder.check_size(shape[2], shape[3])
        steps = self.schedule.timesteps(timesteps)
        if noise is None:
            noise = self.start_noise(shape, generator)
        elif tuple(noise.shape) != shape:
            raise GenerationError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        sample = noise.to(device=codes.device, dtype=torch.float32)
        for t in steps:
            x0 = self.denoise_step(sample, t, codes)
            sample = self.schedule.step(x0, t, sample, timesteps, threshold=threshold)
        return sample


def build_tokenizer(modality: str) -> TerraMindTokenizer:
    """Architecture only (parameters uninitialised unless built under a real device)."""
    spec = tokenizer_spec(modality)
    return DiffusionTokenizer(spec) if spec.diffusion else LULCTokenizer(spec)


# --------------------------------------------------------------------------------------------- weights


def _random_state(model: TerraMindTokenizer, seed: int) -> dict[str, torch.Tensor]:
    """Deterministic random weights: uniform matrices of std 0.02, unit norms, zero biases, the sin-cos tables
    (uniform rather than normal: half the time for the 287 M numbers of a diffusion tokenizer)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith("pos_emb"):
            value = sincos_table_2d(tensor.shape[2], tensor.shape[3], tensor.shape[1])
        elif tensor.ndim == 1:
            is_norm_weight = name.endswith("weight")
            value = torch.ones(tensor.shape) if is_norm_weight else torch.zeros(tensor.shape)
        else:
            value = torch.empty(tensor.shape).uniform_(-0.02 * 3**0.5, 0.02 * 3**0.5, generator=g)
        state[name] = value
    return state


def hub_checkpoint(modality: str) -> Path:
    """The official checkpoint of ``modality`` (an image tokenizer's, or ``coords``) in the Hugging Face cache,
    fetched if needed (``HF_HUB_OFFLINE=1`` honoured): one quick attempt per process, see ``model.hub``."""
    from terramind_openeo.model.hub import fetch, hub_file

    try:
        return fetch(hub_file(modality))
    except WeightsSourceError as exc:
        raise TokenizerWeightsError(str(exc)) from None


def tokenizer_from_state_dict(modality: str, state: Mapping[str, torch.Tensor], source: str = "state dict",
                              device: torch.device | str | None = None,
                              dtype: torch.dtype | str | None = None) -> TerraMindTokenizer:
    """Build the ``modality`` tokenizer around ``state`` (strictly checked; tensors are used, not copied).
    ``dtype``: None keeps the state's dtype; else a precision (:mod:`terramind_openeo.model.precision`)."""
    with torch.device("meta"):
        model = build_tokenizer(modality)
    state = filter_state_dict(state, model.state_dict().keys())  # wrappers and prefixes, as for the model
    try:
        check_state_dict(model, state, f"tokenizer weights from {source}")
    except CheckpointError as exc:
        raise TokenizerWeightsError(str(exc)) from None
    model.load_state_dict(state, strict=True, assign=True)
    model.weights = source
    model.eval().requires_grad_(False)
    if dtype is None:
        return model.to(device=device)
    return precision.apply(model, dtype, device)


def load_tokenizer(modality: str, weights: str | os.PathLike = "hub", device: torch.device | str | None = None,
                   dtype: torch.dtype | str | None = None) -> TerraMindTokenizer | CoordsTokenizer:
    """Build the ``modality`` tokenizer and load its weights ("hub", "random" (seeded, warned) or a path).
    ``dtype``: a precision of :mod:`terramind_openeo.model.precision` (``"bfloat16"``, ``"int8"``...; None keeps
    the checkpoint's float32).

    ``"coords"`` gives the text tokenizer of :mod:`terramind_openeo.model.coords` (no weights: ``device`` and
    ``dtype`` do not apply; "random" is a synthetic vocabulary, a path a ``tokenizers`` JSON file)."""
    if modality == "coords":
        from terramind_openeo.model.coords import load_coords_tokenizer

        return load_coords_tokenizer(weights)
    tokenizer_spec(modality)  # unknown modality: a clear error before anything is loaded
    if dtype is not None:
        precision.precision_name(dtype)
    state: Mapping[str, torch.Tensor]
    if isinstance(weights, str) and weights == "random":
        logger.warning("load_tokenizer(%r, weights='random'): deterministic random weights, for tests and "
                       "benchmarks only", modality)
        with torch.device("meta"):
            shapes = build_tokenizer(modality)
        state = _random_state(shapes, seed=zlib.crc32(f"terramind-tokenizer-{modality}".encode()))
        source = "random"
    else:
        if isinstance(weights, str) and weights == "hub":
            path, source = hub_checkpoint(modality), "hub"
        else:
            path, source = Path(weights), str(weights)
        try:
            state = read_checkpoint(path)  # the model's reader: torch.load(weights_only=True), typed errors
        except (CheckpointError, WeightsSourceError) as exc:
            raise TokenizerWeightsError(f"weights for the {modality} tokenizer (expected 'hub', 'random' or a "
                                        f"path to a .pt state dict): {exc}") from None
    return tokenizer_from_state_dict(modality, state, source, device=device, dtype=dtype)
