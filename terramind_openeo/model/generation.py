"""Any-to-any generation with TerraMind: inputs -> target tokens (one decoder pass each) -> tokenizer decoding.

``generate(model, inputs, targets, timesteps=10, temperature=1.0, top_p=0.8, top_k=0, seed=None, argmax=False)``
(also ``model.generate(...)``) returns a :class:`GenerationOutput`: a dict ``{target: tensor [B, C, H, W]}`` in
physical units (S2L2A reflectance x 10000, S1 dB, DEM m, NDVI ratio; LULC: the 10 class scores), with
``.classes["LULC"]`` (argmax classes ``[B, H, W]``) and ``.tokens[target]`` (``[B, h, w]``) beside it. The
``coords`` target (geo-localisation) gives ``[B, 2]`` longitude, latitude (float32, degrees; NaN where the
generated sequence does not parse, the reasons in ``.problems["coords"]``, or an error with
``strict_coords=True``) and ``.tokens["coords"]`` (the generated ids ``[B, L]``, ``[PAD]``-padded), decoded
autoregressively as :mod:`terramind_openeo.model.coords_generation` describes.

How it runs, per target in the given order (the reference's chained ROAR schedule with one decoding step):
the encoder sees the inputs plus every target generated so far (as ``tok_<NAME>`` token inputs); the decoder
queries ``mask_token + pos + mod_emb`` for all ``h x w`` target tokens in one pass; tokens are sampled
(:mod:`terramind_openeo.model.sampling`). Then each target is decoded by its tokenizer: LULC by the ViT decoder,
the others by DDIM (``timesteps`` steps) and de-standardised.

Inputs: as :meth:`TerraMind.encode` takes them (standardised raw modalities, ``tok_<NAME>`` token grids, ``coords``
ids), plus raw ``LULC`` class maps / standardised ``NDVI`` / ``coords`` as ``[B, 2]`` float longitude, latitude,
which are tokenised first. The patch grid of the inputs is the
target grid: non-square inputs give non-square outputs, the right way round.

Randomness: one ``torch.Generator`` on the model's device. Target ``i`` is sampled after
``generator.manual_seed(seed + i)``; after the last target, the generator goes on to draw each diffusion target's
start noise ``randn(B, C, H, W)`` in target order. This is exactly the sequence of draws the reference makes from
torch's global generator when its sampler gets ``seed``, so on CPU the two give the same output.

Tokenizers: ``tokenizers=None`` picks them by the model's weights (``model.weights == "random"`` -> random
tokenizers, otherwise the official hub checkpoints); ``tokenizers="random" | "hub" | PATH-per-modality dict |
{modality: tokenizer}`` overrides. Loaded tokenizers are cached per (modality, source, device, dtype).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import cast

import torch

from terramind_openeo.config import settings
from terramind_openeo.model.coords import CoordsTokenizer
from terramind_openeo.model.coords_generation import generate_coords
from terramind_openeo.model.ddim import DDIMSchedule
from terramind_openeo.model.generation_errors import (
    CoordsDecodeError,
    GenerationError,
    NotGeneratableError,
    SamplingParameterError,
)
from terramind_openeo.model.lru import LoadedLRU
from terramind_openeo.model.precision import precision_name, precision_of
from terramind_openeo.model.sampling import check_sampling, sample_tokens
from terramind_openeo.model.standardization import destandardize
from terramind_openeo.model.tokenizers import (
    TOKENIZER_SPECS,
    TerraMindTokenizer,
    load_tokenizer,
)

logger = logging.getLogger(__name__)

IMAGE_TARGETS = tuple(TOKENIZER_SPECS)
"""Image targets (a token per patch): S2L2A, S1GRD, S1RTC, DEM, NDVI, LULC."""
GENERATABLE = IMAGE_TARGETS + ("coords",)
"""Targets TerraMind v1 can generate: the image targets and coords (the location, a sequence)."""
TOKENISED_RAW_INPUTS = ("LULC", "NDVI")
"""Inputs without a raw-pixel embedding: tokenised by their tokenizer before encoding (and ``coords`` when given as
float longitude, latitude)."""

def _load_tokenizer(key: tuple) -> TerraMindTokenizer | CoordsTokenizer:
    modality, weights, device, dtype = key
    with torch.inference_mode(False):  # plain (not inference) tensors: the cached tokenizer outlives this call
        return load_tokenizer(modality, weights, device=device, dtype=dtype)


TOKENIZER_CACHE = LoadedLRU(_load_tokenizer, lambda: settings().tokenizer_cache_size, "tokenizer")
"""The process's tokenizers (a diffusion tokenizer holds ~1.1 GB): bounded by the ``tokenizer_cache_size``
setting, locked like the model cache."""


class GenerationOutput(dict):
    """``{target: physical-unit tensor [B, C, H, W]}`` plus ``tokens`` and LULC ``classes``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokens: dict[str, torch.Tensor] = {}
        self.classes: dict[str, torch.Tensor] = {}
        self.problems: dict[str, list[str]] = {}
        self.seed: int | None = None


def clear_tokenizer_cache() -> None:
    TOKENIZER_CACHE.clear()


def get_tokenizer(modality: str, weights, device: torch.device,
                  dtype: torch.dtype | str) -> TerraMindTokenizer | CoordsTokenizer:
    """``load_tokenizer`` through the process's bounded cache (:data:`TOKENIZER_CACHE`); ``dtype``: a torch dtype
    or a precision name (``"int8"``...), one cache entry per precision."""
    return TOKENIZER_CACHE.lookup((modality, str(weights), str(device), precision_name(dtype)))


def _tokenizer_for(model, modality: str, tokenizers, device, dtype) -> TerraMindTokenizer | CoordsTokenizer:
    """The tokenizer of ``modality`` as ``tokenizers`` asks (see the module docstring)."""
    choice = tokenizers.get(modality) if isinstance(tokenizers, Mapping) else tokenizers
    if isinstance(choice, (TerraMindTokenizer, CoordsTokenizer)):
        if choice.modality != modality:
            raise GenerationError(f"tokenizers[{modality!r}] is the {choice.modality} tokenizer")
        return choice
    if choice is None:
        choice = "random" if getattr(model, "weights", None) == "random" else "hub"
    if not isinstance(choice, (str, os.PathLike)):
        raise GenerationError(f"tokenizers[{modality!r}] must be a tokenizer, 'hub', 'random' or a path, "
                              f"got {type(choice).__name__}")
    return get_tokenizer(modality, choice, device, dtype)


def _check_targets(targets, inputs: Mapping) -> list[str]:
    names = [targets] if isinstance(targets, str) else list(targets or [])
    if not names:
        raise NotGeneratableError(f"targets must name at least one of {', '.join(GENERATABLE)}")
    for name in names:
        if name not in GENERATABLE:
            raise NotGeneratableError(f"targets: {name!r} cannot be generated; TerraMind v1 generates "
                                      f"{', '.join(GENERATABLE)}")
        if name in inputs or f"tok_{name}" in inputs:
            raise NotGeneratableError(f"targets: {name!r} is also an input modality; a modality cannot be both")
    if len(set(names)) != len(names):
        raise NotGeneratableError(f"targets: each modality may appear once, got {names}")
    return names


def _check_seed(seed) -> int:
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little") - 2**31
        logger.debug("generation seed %d (pass seed=%d to repeat this output)", seed, seed)
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SamplingParameterError(f"seed must be an integer or None, got {seed!r}")
    return seed


def _grid(inputs: Mapping[str, torch.Tensor], patch: int, default: int) -> tuple[int, int]:
    """Patch grid (h, w) of the image inputs (the encoder checks that they agree)."""
    for name, value in inputs.items():
        if name == "coords" or not isinstance(value, torch.Tensor) or value.ndim < 2:
            continue
        if name.startswith("tok_"):  # token grid [B, h, w]
            return int(value.shape[-2]), int(value.shape[-1])
        return int(value.shape[-2]) // patch, int(value.shape[-1]) // patch  # pixels [B, (C,) H, W]
    return default, default


def prepare_inputs(model, inputs: Mapping[str, torch.Tensor], tokenizers=None,
                   tokenizer_dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """Encoder inputs: raw ``LULC`` / ``NDVI`` tokenised to ``tok_LULC`` / ``tok_NDVI``, ``coords`` given as float
    longitude, latitude ``[B, 2]`` to coords ids, the rest as given."""
    device, dtype = model.mask_token.device, precision_name(tokenizer_dtype, precision_of(model))
    enc_inputs: dict[str, torch.Tensor] = {}
    for name, value in inputs.items():
        if name == "coords":
            is_float = isinstance(value, torch.Tensor) and value.is_floating_point()
            enc_inputs[name] = (_tokenizer_for(model, name, tokenizers, device, dtype).encode(value, device=device)
                                if is_float else value)  # floats: lon/lat; else token ids already
        elif name in TOKENISED_RAW_INPUTS:
            tok = _tokenizer_for(model, name, tokenizers, device, dtype)
            enc_inputs[f"tok_{name}"] = tok.encode(value.to(device))
        else:
            enc_inputs[name] = value
    return enc_inputs


@torch.inference_mode()
def generate_tokens(model, inputs: Mapping[str, torch.Tensor], targets, temperature: float = 1.0,
                    top_p: float = 0.8, top_k: int = 0, seed: int | None = None, argmax: bool = False,
                    tokenizers=None, tokenizer_dtype: torch.dtype | None = None,
                    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Generator, int]:
    """The token part of :func:`generate`: ``(encoder inputs incl. generated tok_<T>, {target: tokens [B, h, w]},
    the generator (ready for the diffusion noise), the seed used)``."""
    if not isinstance(inputs, Mapping) or not inputs:
        raise GenerationError("inputs must be a non-empty dict {modality: tensor}")
    names = _check_targets(targets, inputs)
    check_sampling(temperature, top_p, top_k)
    seed = _check_seed(seed)
    patch = model.config.patch_size
    enc_inputs = prepare_inputs(model, inputs, tokenizers, tokenizer_dtype)
    h, w = _grid(enc_inputs, patch, model.config.image_size // patch)

    generator = torch.Generator(device=model.mask_token.device)
    tokens: dict[str, torch.Tensor] = {}
    masks: dict[str, torch.Tensor] = {}  # generated coords of ragged lengths: their padding is no input
    for i, target in enumerate(names):
        if target == "coords":
            generator.manual_seed(seed + i)
            tok = _tokenizer_for(model, "coords", tokenizers, model.mask_token.device,
                                 precision_name(tokenizer_dtype, precision_of(model)))
            _, ids, present = generate_coords(model, enc_inputs, tok, generator, temperature=temperature, top_p=top_p,
                                              top_k=top_k, argmax=argmax, start_in_encoder=i < len(names) - 1,
                                              masks=masks)
            tokens[target] = ids
            if ids.shape[1]:  # chained: later targets see the generated span (none at all: nothing to see)
                enc_inputs["coords"] = ids
                if not bool(present.all()):
                    masks["coords"] = present
            continue
        logits = model.decoder_logits(enc_inputs, target, masks=masks or None)  # [B, h*w, vocab], raster order
        generator.manual_seed(seed + i)
        tokens[target] = sample_tokens(logits, generator, temperature=temperature, top_p=top_p, top_k=top_k,
                                       argmax=argmax).view(-1, h, w)  # [B, h, w]
        enc_inputs[f"tok_{target}"] = tokens[target]  # chained: later targets see this one
    return enc_inputs, tokens, generator, seed


@torch.inference_mode()
def generate(model, inputs: Mapping[str, torch.Tensor], targets, timesteps: int = 10, temperature: float = 1.0,
             top_p: float = 0.8, top_k: int = 0, seed: int | None = None, argmax: bool = False,
             tokenizers=None, threshold: float | None = 1.0, s2_offset: float = 0.0,
             tokenizer_dtype: torch.dtype | None = None, strict_coords: bool = False) -> GenerationOutput:
    """Generate ``targets`` from ``inputs`` (see the module docstring).

    ``threshold``: the DDIM clip of the predicted clean sample in standardised units (None = off).
    ``s2_offset``: added to generated S2L2A (the +1000 of processing baseline 04.00, if wanted).
    ``tokenizer_dtype``: precision of the tokenizers loaded here (default: the model's, ``precision.precision_of``);
    ``torch.bfloat16`` runs the UNet and ViT decoders about 3-4x faster on CPUs with AMX at ~1e-2 deviation (DDIM
    arithmetic stays fp32); ``"int8"`` runs their linear layers in int8.
    ``strict_coords``: a generated coords sequence that does not parse is a :class:`CoordsDecodeError` (default:
    NaN for that item, the reason in ``out.problems["coords"]`` and a warning).
    """
    if not isinstance(inputs, Mapping) or not inputs:
        raise GenerationError("inputs must be a non-empty dict {modality: tensor}")
    names = _check_targets(targets, inputs)
    check_sampling(temperature, top_p, top_k)
    DDIMSchedule().timesteps(timesteps)  # validates timesteps
    if threshold is not None and not threshold >= 1.0:
        raise SamplingParameterError(f"threshold must be >= 1 (or None to disable), got {threshold!r}")
    device, dtype = model.mask_token.device, precision_name(tokenizer_dtype, precision_of(model))
    patch = model.config.patch_size
    h, w = _grid(inputs, patch, model.config.image_size // patch)
    diffusion = [n for n in names if n in TOKENIZER_SPECS and TOKENIZER_SPECS[n].diffusion]
    if diffusion and ((h * patch) % 32 or (w * patch) % 32):
        raise GenerationError(f"inputs: diffusion targets ({', '.join(diffusion)}) need H and W multiples of 32 "
                              f"px, got {h * patch}x{w * patch}")

    _, tokens, generator, seed = generate_tokens(model, inputs, names, temperature=temperature, top_p=top_p,
                                                 top_k=top_k, seed=seed, argmax=argmax, tokenizers=tokenizers,
                                                 tokenizer_dtype=tokenizer_dtype)
    out = GenerationOutput()
    out.seed, out.tokens = seed, tokens
    for target in names:  # decode in target order: the diffusion noise continues the generator's sequence
        tok = _tokenizer_for(model, target, tokenizers, device, dtype)
        if target == "coords":
            values, problems = tok.try_decode(tokens[target])
            if problems and strict_coords:
                raise CoordsDecodeError("generated coords do not parse as 'lat=<deg> lon=<deg>': "
                                        + "; ".join(problems))
            if problems:
                logger.warning("coords: %d of %d generated sequences do not parse (NaN): %s", len(problems),
                               len(values), problems[0])
                out.problems[target] = problems
            out[target] = values.to(device)
        elif TOKENIZER_SPECS[target].diffusion:
            x = cast(TerraMindTokenizer, tok).decode(tokens[target], timesteps=timesteps, generator=generator,
                                                     threshold=threshold)
            out[target] = destandardize(target, x, s2_offset=s2_offset if target == "S2L2A" else 0)
        else:
            scores = tok.decode(tokens[target]).float()  # [B, 10, H, W]
            out[target] = scores
            out.classes[target] = scores.max(dim=1).indices  # = argmax(dim=1) (first max, NaN wins), ~10x faster on CPU
    return out
