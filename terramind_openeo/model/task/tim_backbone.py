"""The Thinking-in-Modalities encoder of a fine-tuned model: terratorch's ``TerraMindTiM`` (the
``terramind_v1_{size}_tim`` backbones, ``backbone_tim_modalities: [LULC]`` in a fine-tune config).

Before encoding, a frozen TerraMind generator (encoder + decoder, terratorch's ``sampler.model``) generates the
tokens of each TiM modality from the raw inputs (chained, in the config's order: each sees the ones before), by
:func:`terramind_openeo.model.tim.tim_inputs`; the fine-tuned encoder then runs over the inputs' patch tokens
followed by the TiM tokens, and the TiM modalities count as image modalities when the tokens are merged per
patch (``mean`` over inputs + TiM; ``concat`` is ``dim * (inputs + TiM)`` wide).

Config fields (``model_args``; terratorch's ``TerraMindTiM`` arguments with the ``backbone_`` prefix):

* ``backbone_tim_modalities``: names as terratorch reads them (``LULC``, ``NDVI``, ``DEM``, ``S1GRD``/``S1``,
  ``S1RTC``, ``S2L2A``/``S2``...: any S2 name means S2L2A tokens); default ``[LULC]``. Each once, none
  among the raw inputs (terratorch refuses that too);
* ``backbone_tim_temps`` (1.0; 0 = argmax, deterministic), ``backbone_tim_top_p`` (0.8), ``backbone_tim_top_k``
  (0): the sampling of the TiM tokens, as terratorch's ``GenerationSampler`` does it;
* ``backbone_tim_decoding_steps`` (1 only) and ``backbone_tim_chained_generations`` (true only).

Randomness: terratorch draws a fresh seed from Python's ``random`` on every forward pass. Here ``forward(inputs,
seed=...)`` takes it (None: a fresh one, not reproducible); the same seed gives terratorch's tokens exactly
(``generate_tokens`` reproduces its draws). With ``backbone_tim_temps: 0`` the tokens are the arg-max and no seed
matters.

State dict: terratorch's keys (``encoder_embeddings.*``, ``encoder.*``, ``encoder_norm.*``, ``sampler.model.*``).
The generator shares the patch and token embeddings with the encoder (one module under both names, as in
terratorch); ties are checked when loading. terratorch's TiM backbone also holds the TiM modalities' tokenizers
(``tokenizer.tok_lulc@224.*``: the ViT-B VQ-VAE that ``build_tokenizer`` makes from the hub, ~184 M numbers for
LULC), used there only to tokenise an input of a TiM modality, which a task model here never gets (its inputs are
raw): :meth:`TiMBackbone.check_tokenizer_state` checks those tensors against this package's tokenizer
architecture (every key, every shape) and they are not kept.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import torch
from torch import nn

from terramind_openeo.model.config import TOKEN_MODALITIES, TerraMindConfig
from terramind_openeo.model.embeddings import TokenEmbedding
from terramind_openeo.model.task.backbone import TerraMindBackbone
from terramind_openeo.model.task.errors import TaskCheckpointError, TaskConfigError, UnsupportedComponentError
from terramind_openeo.model.terramind import TerraMind
from terramind_openeo.model.tim import tim_inputs

logger = logging.getLogger(__name__)

DEFAULT_TIM = ("LULC",)
"""terratorch's default ``tim_modalities``."""
TIM_KEYS = ("backbone_tim_modalities", "backbone_tim_temps", "backbone_tim_top_p", "backbone_tim_top_k",
            "backbone_tim_decoding_steps", "backbone_tim_chained_generations")
"""``model_args`` fields of a TiM backbone."""
_FIELD = "model_args.backbone_tim_modalities"
_KEY_NAMES = {spec.key: name for name, spec in TOKEN_MODALITIES.items()}  # tok_lulc@224 -> LULC


def tim_modality_name(name) -> str:
    """A config's TiM modality as this package names the generated modality, by terratorch's rules
    (``build_tim_modality_embeddings``: ``S2*`` -> S2L2A, ``S1``/``S1GRD`` -> S1GRD, ...)."""
    if not isinstance(name, str):
        raise TaskConfigError(_FIELD, f"modality names must be strings, got {name!r}")
    if name in _KEY_NAMES:  # a checkpoint key (tok_lulc@224)
        return _KEY_NAMES[name]
    text = name.lower().replace("s2", "sen2").replace("s1", "sen1")
    for needle, ours in (("sen2", "S2L2A"), ("sen1rtc", "S1RTC"), ("sen1", "S1GRD"), ("dem", "DEM"),
                         ("lulc", "LULC"), ("ndvi", "NDVI")):
        if needle in text:
            return ours
    raise UnsupportedComponentError(_FIELD, f"{name!r} is not a TiM modality this package generates; supported: "
                                    f"{', '.join(TOKEN_MODALITIES)} (terratorch's caption and coords TiM are not)")


def _number(args: dict, key: str, default, low: float, high: float, integer: bool = False):
    value = args.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) \
            or not math.isfinite(value) or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        raise TaskConfigError(f"model_args.{key}", f"must be {kind} in [{low}, {high}], got {value!r}")
    return value


def tim_settings(args: dict) -> dict | None:
    """The TiM settings of ``model_args`` (``{"tim": (...), "temperature", "top_p", "top_k"}``), or None for a
    backbone without TiM; every unsupported value is an error naming its field."""
    backbone = str(args.get("backbone", ""))
    given = [k for k in TIM_KEYS if k in args]
    if not backbone.endswith("_tim"):
        if given:
            raise UnsupportedComponentError(f"model_args.{given[0]}", f"needs a TiM backbone ({backbone}_tim); "
                                            f"{backbone!r} has no Thinking-in-Modalities")
        return None
    if args.get("backbone_use_temporal"):
        raise UnsupportedComponentError("model_args.backbone_use_temporal",
                                        "a TiM backbone inside terratorch's temporal wrapper is not supported")
    if args.get("backbone_bands"):
        raise UnsupportedComponentError("model_args.backbone_bands",
                                        "a TiM backbone takes its modalities' pre-training bands only (as terratorch)")
    raw = args.get("backbone_tim_modalities") or list(DEFAULT_TIM)
    if isinstance(raw, str) or not isinstance(raw, (list, tuple)):
        raise TaskConfigError(_FIELD, f"must be a list of modality names, got {raw!r}")
    inputs = [str(m) for m in args.get("backbone_modalities") or ["S2L2A"]]
    names: list[str] = []
    for entry in raw:
        name = tim_modality_name(entry)
        if entry in inputs:
            raise UnsupportedComponentError(_FIELD, f"{entry!r} is also a raw input (backbone_modalities); "
                                            "terratorch cannot generate an input modality either")
        if name in names:
            raise TaskConfigError(_FIELD, f"{entry!r}: {name} is named twice")
        names.append(name)
    steps = args.get("backbone_tim_decoding_steps", 1)
    if steps != 1 or isinstance(steps, bool):
        raise UnsupportedComponentError("model_args.backbone_tim_decoding_steps",
                                        f"{steps!r}: only one decoding step (terratorch's default)")
    chained = args.get("backbone_tim_chained_generations", True)
    if chained is not True:
        raise UnsupportedComponentError("model_args.backbone_tim_chained_generations",
                                        f"{chained!r}: only chained generation (true, terratorch's default)")
    top_p = _number(args, "backbone_tim_top_p", 0.8, 0.0, 1.0)
    if top_p == 0:
        raise UnsupportedComponentError("model_args.backbone_tim_top_p",
                                        "0 (no nucleus filtering) is not supported; 1.0 keeps every token")
    return {"tim": tuple(names), "temperature": float(_number(args, "backbone_tim_temps", 1.0, 0.0, 1e6)),
            "top_p": float(top_p), "top_k": _number(args, "backbone_tim_top_k", 0, 0, 2**31 - 1, integer=True)}


class _Sampler(nn.Module):
    """Where terratorch keeps the frozen generator: ``sampler.model`` (its ``GenerationSampler``)."""

    def __init__(self, model: TerraMind):
        super().__init__()
        self.model = model


class TiMBackbone(TerraMindBackbone):
    """:class:`TerraMindBackbone` whose inputs are extended by generated TiM modalities (module docstring);
    ``forward(inputs, seed=None)`` -> per-layer merged features ``[B, N, D']``."""

    def __init__(self, config: TerraMindConfig, modalities: dict[str, tuple[str, ...]], tim: tuple[str, ...],
                 merge: str | None = "mean", temperature: float = 1.0, top_p: float = 0.8, top_k: int = 0):
        super().__init__(config, modalities, merge)
        self.tim = tuple(tim)
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self.samples = temperature > 0
        self.tim_keys = {name: TOKEN_MODALITIES[name].key for name in self.tim}
        for name, key in self.tim_keys.items():
            self.encoder_embeddings[key] = TokenEmbedding(TOKEN_MODALITIES[name].vocab_size, config.dim,
                                                          config.patch_size, config.image_size)
        self._set_image_count(len(modalities) + len(self.tim))
        generator = TerraMind(config, inputs=[*modalities, *(f"tok_{n}" for n in self.tim)], targets=list(self.tim))
        generator.encoder_embeddings = self.encoder_embeddings  # one module under both names, as terratorch's
        generator.tie_weights()
        self.sampler = _Sampler(generator)

    def forward(self, inputs: dict[str, torch.Tensor], seed: int | None = None) -> list[torch.Tensor | None]:
        given = {name: inputs[name] for name in self.modalities if name in inputs}
        if not given:
            raise TaskConfigError("backbone_modalities", f"none of {list(self.modalities)} among the inputs "
                                  f"({list(inputs)})")
        generated = tim_inputs(self.sampler.model, given, list(self.tim), seed=seed, temperature=self.temperature,
                               top_p=self.top_p, top_k=self.top_k)
        xs, counts = self.embed(given)
        for name, key in self.tim_keys.items():
            x, emb = self.encoder_embeddings[key](generated[f"tok_{name}"])  # ids [B, h, w] -> [B, h * w, D]
            xs.append(x + emb)
            counts.append(x.shape[1])
        return self.run_blocks(xs, counts)

    def check_tokenizer_state(self, state: Mapping[str, torch.Tensor], source: str) -> None:
        """Check terratorch's TiM tokenizers of a checkpoint (``state``: the keys under ``tokenizer.``):
        one complete tokenizer per TiM modality, or none at all (a checkpoint stripped of them)."""
        from terramind_openeo.model.tokenizers import build_tokenizer
        from terramind_openeo.model.weights import check_state_dict

        if not state:
            logger.info("%s: no TiM tokenizer tensors (not needed here: task-model inputs are raw)", source)
            return
        known = {f"{key}.": name for name, key in self.tim_keys.items()}
        stray = sorted({k.split(".", 1)[0] for k in state if not any(k.startswith(p) for p in known)})
        if stray:
            raise TaskCheckpointError(f"{source}: tokenizer tensors of {', '.join(stray)}, which is no TiM modality "
                                      f"of this model ({', '.join(self.tim_keys.values())})")
        for prefix, name in known.items():
            with torch.device("meta"):
                tokenizer = build_tokenizer(name)
            part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            try:
                check_state_dict(tokenizer, part, f"{source} (tokenizer.{prefix[:-1]})")
            except Exception as exc:
                raise TaskCheckpointError(str(exc)) from None
