"""TerraMind v1 in plain PyTorch: a 4M-style encoder-decoder whose state dict is the official checkpoint's.

Inputs (``inputs: dict[str, Tensor]``), one entry per modality:

* raw modalities ``S2L2A`` (12 bands), ``S2L1C`` (13), ``S2RGB`` (3), ``S1GRD`` (2), ``S1RTC`` (2), ``DEM`` (1):
  float ``[B, C, H, W]``, standardised (:func:`terramind_openeo.model.standardize`), H and W multiples of 16;
* tokenised modalities as token ids under ``tok_<NAME>`` (``tok_S2L2A``, ``tok_S1GRD``, ``tok_S1RTC``,
  ``tok_DEM``, ``tok_LULC``, ``tok_NDVI``): integer ``[B, h, w]`` on the patch grid (h = H / 16), as the
  tokenizers (``load_tokenizer``) produce them;
* ``coords``: integer ids ``[B, L]`` of the coordinate sequence.

All image inputs share one patch grid; tokens are concatenated in the order of the dict. Decoder targets are
named without prefix (``LULC``, ``S2L2A``, ``S1GRD``, ``S1RTC``, ``DEM``, ``NDVI``).

Building blocks for generation (all without ``inference_mode``, all documented below): ``embed_modality``,
``embed_inputs``, ``run_encoder`` / ``forward_encoder``, ``decoder_context``, ``target_embedding``,
``target_queries``, ``forward_decoder``, ``target_logits``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from terramind_openeo.kernels.prepack import linear
from terramind_openeo.model.blocks import Block, DecoderBlock, LayerNorm
from terramind_openeo.model.config import (
    COORDS,
    RAW_MODALITIES,
    SEQUENCE_POS_TABLE,
    TOKEN_MODALITIES,
    TerraMindConfig,
    input_spec,
    target_spec,
)
from terramind_openeo.model.embeddings import (
    PatchEmbedding,
    SequenceEmbedding,
    SequenceTargetEmbedding,
    TokenEmbedding,
    TokenTargetEmbedding,
    build_1d_sincos_table,
    build_2d_sincos_table,
)
from terramind_openeo.model.errors import TerraMindError
from terramind_openeo.model.validation import validate_inputs

logger = logging.getLogger(__name__)

MERGE_METHODS = (None, "mean", "max", "concat", "dict")


@dataclass
class EncoderInput:
    """Embedded encoder input: what the encoder blocks consume and what the decoder context reuses."""

    tokens: torch.Tensor
    """Content embeddings ``[B, N, D]`` (patch projections / token embeddings), modalities concatenated."""
    emb: torch.Tensor
    """Position + modality embeddings ``[1, N, D]``; the encoder input is ``tokens + emb``."""
    names: list[str]
    """Input modality names, in token order."""
    counts: list[int]
    """Number of tokens of each modality."""
    image: list[bool]
    """Whether each modality is an image modality (kept by merge mean/max/concat) or a sequence (coords)."""
    grid: tuple[int, int] | None
    """Patch grid ``(h, w)`` of the image modalities; None if there are none."""


class TerraMind(nn.Module):
    """TerraMind v1 encoder-decoder. Build it with :func:`terramind_openeo.model.load_terramind`.

    Attributes: ``config`` (:class:`TerraMindConfig`), ``name`` (``terramind_v1_{size}``), ``weights`` (where the
    weights came from: ``"hub"`` (the official checkpoint of ``config.hub_repo``), ``"random"`` (its seed in
    ``seed``), ``"state_dict"`` or the checkpoint's file path), ``seed`` (None unless the weights are random).
    """

    def __init__(self, config: TerraMindConfig, inputs: Sequence[str] | None = None,
                 targets: Sequence[str] | None = None):
        """``inputs`` / ``targets``: the modalities to hold embedding tables for (names as :func:`input_spec` /
        :func:`target_spec` take them); None: all of them, as the official checkpoint holds them. A fine-tuned
        TiM backbone's generator holds only its inputs' and TiM modalities' tables, as terratorch's does."""
        super().__init__()
        self.config = config
        self.weights = "uninitialised"
        dim, p, size = config.dim, config.patch_size, config.image_size
        in_specs = ([*RAW_MODALITIES.values(), *TOKEN_MODALITIES.values(), COORDS] if inputs is None
                    else [input_spec(name) for name in inputs])
        encoder_embeddings: dict[str, nn.Module] = {}
        for spec in in_specs:
            encoder_embeddings[spec.key] = (
                PatchEmbedding(spec.channels, dim, p, size) if spec.kind == "raw"
                else TokenEmbedding(spec.vocab_size, dim, p, size) if spec.kind == "tokens"
                else SequenceEmbedding(COORDS.vocab_size, dim, SEQUENCE_POS_TABLE))
        self.encoder_embeddings = nn.ModuleDict(encoder_embeddings)

        out_specs = ([*TOKEN_MODALITIES.values(), COORDS] if targets is None
                     else [COORDS if name == COORDS.name else target_spec(name) for name in targets])
        decoder_embeddings: dict[str, nn.Module] = {}
        for spec in out_specs:
            decoder_embeddings[spec.key] = (
                SequenceTargetEmbedding(COORDS.vocab_size, dim, SEQUENCE_POS_TABLE) if spec.kind == "sequence"
                else TokenTargetEmbedding(spec.vocab_size, dim, p, size))
        self.decoder_embeddings = nn.ModuleDict(decoder_embeddings)

        self.encoder = nn.ModuleList(Block(config) for _ in range(config.encoder_depth))
        self.encoder_norm = LayerNorm(dim, config.norm_eps)
        self.decoder_proj_context = nn.Linear(dim, dim)
        self.decoder = nn.ModuleList(DecoderBlock(config) for _ in range(config.decoder_depth))
        self.decoder_norm = LayerNorm(dim, config.norm_eps)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.tie_weights()

    @property
    def name(self) -> str:
        return self.config.name

    def extra_repr(self) -> str:
        return f"name={self.name!r}, weights={self.weights!r}"

    # ---------------------------------------------------------------- weights
    def tie_weights(self) -> None:
        """Share what the reference shares: decoder ``mod_emb`` = encoder ``mod_emb`` of the same table, and
        each decoder ``to_logits.weight`` = its ``token_emb.weight``. Call again after replacing parameters."""
        for key, target in self.decoder_embeddings.items():
            if key in self.encoder_embeddings:
                target.mod_emb = self.encoder_embeddings[key].mod_emb
            target.to_logits.weight = target.token_emb.weight

    @torch.no_grad()
    def init_random(self, seed: int = 0) -> None:
        """Deterministic random initialisation (MAE/4M scheme), identical in every process for one seed.

        Drawn on the CPU in fp32 from its own generator, so it neither depends on nor disturbs global RNG state.
        """
        gen = torch.Generator().manual_seed(seed)
        state = self.state_dict(keep_vars=True)

        def fill(key: str, draw) -> None:
            target = state[key]
            if target.device.type == "cpu" and target.dtype == torch.float32:
                draw(target.data)
            else:
                scratch = torch.empty(target.shape)
                draw(scratch)
                target.data.copy_(scratch)

        for name, module in self.named_modules():
            if isinstance(module, nn.Linear) and not name.endswith("to_logits"):  # to_logits is tied to token_emb
                fan_out, fan_in = module.weight.shape
                parts = 3 if name.endswith("qkv") else 2 if name.endswith(".kv") else 1
                bound = math.sqrt(6.0 / (fan_out // parts + fan_in))
                fill(f"{name}.weight", lambda t, b=bound: t.uniform_(-b, b, generator=gen))
                if module.bias is not None:
                    module.bias.data.zero_()
            elif isinstance(module, LayerNorm):
                module.weight.data.fill_(1.0)
                module.bias.data.zero_()
            elif isinstance(module, nn.Embedding):
                fill(f"{name}.weight", lambda t: t.normal_(0.0, 0.02, generator=gen))
        for key in self.encoder_embeddings:
            fill(f"encoder_embeddings.{key}.mod_emb", lambda t: t.normal_(0.0, 0.02, generator=gen))
        fill("mask_token", lambda t: t.normal_(0.0, 0.02, generator=gen))
        grid = self.config.image_size // self.config.patch_size
        tables = {"2d": build_2d_sincos_table(grid, grid, self.config.dim),
                  "1d": build_1d_sincos_table(SEQUENCE_POS_TABLE, self.config.dim)}
        for prefix in ("encoder_embeddings", "decoder_embeddings"):
            for key in getattr(self, prefix):
                state[f"{prefix}.{key}.pos_emb"].data.copy_(tables["1d" if key == COORDS.key else "2d"])

    def compile_blocks(self, encoder: bool = True, decoder: bool = True, **kwargs) -> TerraMind:
        """``torch.compile`` every encoder / decoder block in place (one graph shared by all blocks of a kind):
        fuses norms, activations and residual adds; outputs equal eager ones to ~1e-6. The first call per input
        shape pays the compilation (tens of seconds on a CPU). ``kwargs`` go to ``torch.compile``."""
        for block in list(self.encoder if encoder else []) + list(self.decoder if decoder else []):
            block.compile(**kwargs)
        return self

    # ------------------------------------------------------------ embeddings
    @property
    def _dtype(self) -> torch.dtype:
        return self.mask_token.dtype

    def embed_modality(self, name: str, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed one (already validated) input: ``(x [B, N, D], emb [1, N, D])`` as the encoder's input parts."""
        spec = input_spec(name)
        if spec.key not in self.encoder_embeddings:
            raise TerraMindError(f"input {name!r}: this model holds no embedding for it (its inputs: "
                                 f"{', '.join(self.encoder_embeddings)})")
        value = value.to(device=self.mask_token.device)
        if spec.kind == "raw":
            value = value.to(self._dtype)
        return self.encoder_embeddings[spec.key](value)

    def embed_inputs(self, inputs: dict[str, torch.Tensor]) -> EncoderInput:
        """Validate and embed all inputs (see the module docstring for names and shapes), concatenated."""
        checked = validate_inputs(inputs, self.config.patch_size)
        xs, embs, counts, image, grid = [], [], [], [], None
        for name, (spec, value) in checked.items():
            x, emb = self.embed_modality(name, value)
            xs.append(x)
            embs.append(emb)
            counts.append(x.shape[1])
            image.append(spec.kind != "sequence")
            if spec.kind == "raw":
                grid = (value.shape[-2] // self.config.patch_size, value.shape[-1] // self.config.patch_size)
            elif spec.kind == "tokens":
                grid = tuple(value.shape[-2:])
        tokens = xs[0] if len(xs) == 1 else torch.cat(xs, dim=1)  # [B, N, D]
        emb = embs[0] if len(embs) == 1 else torch.cat(embs, dim=1)  # [1, N, D]
        return EncoderInput(tokens, emb, list(checked), counts, image, grid)

    # --------------------------------------------------------------- encoder
    def run_encoder(self, x: torch.Tensor, key_mask: torch.Tensor | None = None,
                    layers: list[int] | None = None) -> dict[int, torch.Tensor]:
        """Run the encoder blocks on ``x = tokens + emb`` ``[B, N, D]``; ``key_mask [B, N]`` True = attend.

        Returns ``{layer index: output}`` for the requested ``layers`` (non-negative indices; default: the last),
        stopping after the deepest one. The last layer's output is passed through ``encoder_norm``, the others
        are raw block outputs, as the reference backbone returns them.
        """
        depth = len(self.encoder)
        wanted = {depth - 1} if layers is None else set(layers)
        last = max(wanted)
        out: dict[int, torch.Tensor] = {}
        for i, block in enumerate(self.encoder[: last + 1]):
            x = block(x, key_mask)
            if i in wanted:
                out[i] = self.encoder_norm(x) if i == depth - 1 else x
        return out

    def forward_encoder(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """All encoder blocks and ``encoder_norm``: the context tokens ``[B, N, D]`` the decoder attends to."""
        return self.run_encoder(x, key_mask)[len(self.encoder) - 1]

    # --------------------------------------------------------------- decoder
    def decoder_context(self, encoded: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Cross-attention context: ``decoder_proj_context(encoder output) + emb`` (the encoder's pos+mod emb)."""
        return linear(self.decoder_proj_context, encoded) + emb

    def target_embedding(self, target: str, grid: tuple[int, int]) -> torch.Tensor:
        """Position + modality embedding ``[1, h * w, D]`` of a tokenised target on a ``(h, w)`` patch grid."""
        return self._target_table(target).additive(tuple(grid))

    def target_queries(self, target: str, grid: tuple[int, int], batch: int) -> torch.Tensor:
        """Decoder input for fully masked targets: ``mask_token + target_embedding``, ``[B, h * w, D]``."""
        return (self.mask_token + self.target_embedding(target, grid)).expand(batch, -1, -1)

    def forward_decoder(self, y: torch.Tensor, context: torch.Tensor, self_mask: torch.Tensor | None = None,
                        context_mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        """Decoder blocks and ``decoder_norm``. ``y [B, M, D]``, ``context [B, N, D]``; masks True = attend:
        ``self_mask [B, M]`` over decoder keys, ``context_mask [B, N]`` over context keys; ``causal``: token i
        sees decoder tokens 0..i only (sequence targets)."""
        for block in self.decoder:
            y = block(y, context, self_mask, context_mask, causal)
        return self.decoder_norm(y)

    def target_logits(self, target: str, y: torch.Tensor) -> torch.Tensor:
        """Tied output projection of ``target``: decoder output ``[B, M, D]`` -> ``[B, M, vocab]``."""
        return self._target_table(target).logits(y)

    def _target_table(self, target: str) -> nn.Module:
        key = target_spec(target).key
        if key not in self.decoder_embeddings:
            raise TerraMindError(f"target {target!r}: this model holds no decoder embedding for it (its targets: "
                                 f"{', '.join(self.decoder_embeddings)})")
        return self.decoder_embeddings[key]

    # ------------------------------------------------------------ public API
    @torch.inference_mode()
    def encode(self, inputs: dict[str, torch.Tensor], layers: int | list[int] | None = None,
               merge: str | None = None, tim: list[str] | None = None, **tim_options):
        """Per-layer token features, as the reference backbone (``TerraMindViT``) returns them.

        ``layers``: None = every encoder layer (a list); an int (negative counts from the end) = that layer only
        (not a list); a list of ints = those layers. Only the last layer is normed.
        ``merge``: None = ``[B, N, D]`` with all modalities' tokens concatenated; ``"mean"`` / ``"max"`` =
        ``[B, h * w, D]`` over image modalities; ``"concat"`` = ``[B, h * w, M * D]``; ``"dict"`` =
        ``{modality: [B, N_m, D]}``. ``tim``: modalities to generate first (Thinking-in-Modalities), delegated to
        :mod:`terramind_openeo.model.tim`; ``tim_options`` (``seed``, ``temperature``, ``top_p``, ``top_k``,
        ``argmax``, ``tokenizers``) go to its generator, so TiM features are reproducible with a seed.
        """
        if merge not in MERGE_METHODS:
            raise TerraMindError(f"unknown merge {merge!r}; expected one of {', '.join(map(str, MERGE_METHODS))}")
        if tim:
            from terramind_openeo.model.tim import encode_with_tim

            return encode_with_tim(self, inputs, tim=tim, layers=layers, merge=merge, **tim_options)
        if tim_options:
            raise TerraMindError(f"{', '.join(sorted(tim_options))}: only valid together with tim=[...]")
        depth = len(self.encoder)
        single = isinstance(layers, int)
        wanted = list(range(depth)) if layers is None else [layers] if isinstance(layers, int) else list(layers)
        if not wanted:
            raise TerraMindError("layers must name at least one encoder layer")
        indices = []
        for layer in wanted:
            if not isinstance(layer, int) or not -depth <= layer < depth:
                raise TerraMindError(f"layer {layer!r} out of range; {self.name} has {depth} encoder layers "
                                     f"(0..{depth - 1}, or negative from the end)")
            indices.append(layer % depth)
        embedded = self.embed_inputs(inputs)
        outputs = self.run_encoder(embedded.tokens + embedded.emb, layers=indices)
        merged = [merge_tokens(outputs[i], embedded, merge) for i in indices]
        return merged[0] if single else merged

    def encoder_context(self, inputs: dict[str, torch.Tensor], masks: dict[str, torch.Tensor] | None = None,
                        ) -> tuple[torch.Tensor, torch.Tensor | None, EncoderInput]:
        """Encode ``inputs`` into the decoder's cross-attention context: ``(context [B, N, D], key_mask [B, N] or
        None, the embedded input)``. ``masks``: ``{input name: bool [B, n] (True = token present)}`` for inputs
        with padded tokens (a generated coords sequence of a batch with ragged lengths); absent tokens are left
        out of every attention, as the reference drops masked input tokens."""
        embedded = self.embed_inputs(inputs)
        key_mask = None
        if masks:
            unknown = sorted(set(masks) - set(embedded.names))
            if unknown:
                raise TerraMindError(f"masks name inputs {unknown} that are not among the inputs {embedded.names}")
            batch = embedded.tokens.shape[0]
            device = embedded.tokens.device
            parts = [masks[name].to(device=device, dtype=torch.bool) if name in masks
                     else torch.ones(batch, count, dtype=torch.bool, device=device)
                     for name, count in zip(embedded.names, embedded.counts)]
            key_mask = torch.cat(parts, dim=1)  # [B, N]
            if bool(key_mask.all()):
                key_mask = None
        encoded = self.forward_encoder(embedded.tokens + embedded.emb, key_mask)
        return self.decoder_context(encoded, embedded.emb), key_mask, embedded

    @torch.inference_mode()
    def decoder_logits(self, inputs: dict[str, torch.Tensor], target: str,
                       masks: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Decoder scores ``[B, h * w, vocab]`` for every token of ``target`` (all masked), given ``inputs``
        (``masks``: see :meth:`encoder_context`).

        The first step of TerraMind's generation: the target grid is the inputs' patch grid (14 x 14 if the
        inputs hold no image), tokens in raster order.
        """
        target_spec(target)
        context, key_mask, embedded = self.encoder_context(inputs, masks)
        grid = embedded.grid or (self.config.image_size // self.config.patch_size,) * 2
        y = self.forward_decoder(self.target_queries(target, grid, context.shape[0]), context, context_mask=key_mask)
        return self.target_logits(target, y)

    def generate(self, inputs, targets, **kwargs):
        """Generate ``targets`` from ``inputs``; see :func:`terramind_openeo.model.generation.generate`."""
        from terramind_openeo.model.generation import generate

        return generate(self, inputs, targets, **kwargs)


def merge_tokens(x: torch.Tensor, embedded: EncoderInput, merge: str | None):
    """Split ``x [B, N, D]`` by modality and merge as :meth:`TerraMind.encode` describes."""
    if merge is None:
        return x
    parts = torch.split(x, embedded.counts, dim=1)
    if merge == "dict":
        return dict(zip(embedded.names, parts))
    images = [part for part, keep in zip(parts, embedded.image) if keep]
    if not images:
        raise TerraMindError(f"merge={merge!r} needs at least one image modality; got only {embedded.names}")
    if len(images) == 1:
        return images[0]
    if merge == "concat":
        return torch.cat(images, dim=-1)  # M x [B, n, D] -> [B, n, M * D]
    stacked = torch.stack(images, dim=1)  # [B, M, n, D]
    return stacked.mean(dim=1) if merge == "mean" else stacked.amax(dim=1)
