"""``load_task_model``: a fine-tuned TerraMind model from what terratorch users ship.

The checkpoint: a Lightning ``.ckpt`` (``{"state_dict": {"model.encoder...": ...}, ...}``), a plain state dict
(with or without the ``model.`` prefix), a file of either, or a Hugging Face hub repo id whose files hold one
(``ibm-esa-geospatial/TerraMind-base-Flood``: ``TerraMind_v1_base_ImpactMesh_flood.pt`` + its YAML). Read with
``torch.load(weights_only=True)``, prefixes stripped by the backbone's filter (``model.weights``), loaded strictly:
every tensor of the model present with its shape, nothing unexpected under the model's prefix (keys outside it,
such as a loss's ``criterion.weight``, are ignored).

The config: a terratorch YAML or the JSON form (:mod:`terramind_openeo.model.task.config`), a parsed mapping, a
:class:`TaskConfig`, or None: then the one ``*.yaml`` / ``*.yml`` / ``*.json`` beside the checkpoint (in its
folder, or in its hub repo).

URLs are downloaded by the inference layer (``inference.weights_download.resolve_weights``, the backbone's cache and
policy) before they get here.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from terramind_openeo.config import hub_offline
from terramind_openeo.model import precision
from terramind_openeo.model.config import TerraMindConfig, get_config
from terramind_openeo.model.errors import WeightsSourceError
from terramind_openeo.model.task.backbone import TemporalBackbone, TerraMindBackbone
from terramind_openeo.model.task.config import TaskConfig, read_task_config, task_config
from terramind_openeo.model.task.decoders import build_decoder
from terramind_openeo.model.task.errors import TaskCheckpointError, TaskConfigError
from terramind_openeo.model.task.heads import build_head
from terramind_openeo.model.task.model import TaskModel
from terramind_openeo.model.task.necks import build_necks
from terramind_openeo.model.task.tim_backbone import TiMBackbone
from terramind_openeo.model.weights import check_state_dict, filter_state_dict, read_checkpoint

logger = logging.getLogger(__name__)

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def _prefixed(args: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in args.items() if k.startswith(prefix)}


def build_task_model(config: TaskConfig, terramind: TerraMindConfig | None = None) -> TaskModel:
    """The (uninitialised) model ``config`` describes. ``terramind``: another architecture for the backbone
    than ``config.backbone``'s (tests use fewer layers)."""
    args = config.model_args
    terramind = terramind or get_config(config.terramind_name)
    tim = config.tim
    encoder: torch.nn.Module
    if tim is not None:
        encoder = TiMBackbone(terramind, config.input_bands, merge=args.get("backbone_merge_method", "mean"), **tim)
    else:
        encoder = TerraMindBackbone(terramind, config.input_bands, args.get("backbone_merge_method", "mean"))
    if config.temporal:
        encoder = TemporalBackbone(encoder, args.get("backbone_temporal_pooling", "mean"),
                                   args.get("backbone_temporal_n_timestamps"),
                                   args.get("backbone_temporal_subset_lengths"))
    neck, channels = build_necks(args.get("necks"), list(encoder.out_channels))
    decoder = build_decoder(args["decoder"], channels, _prefixed(args, "decoder_"))
    head = build_head(config.task, decoder.out_channels, _prefixed(args, "head_"), args.get("num_classes"),
                      args.get("num_outputs"))
    return TaskModel(config.task, encoder, neck, decoder, head, rescale=bool(args.get("rescale", True)),
                     config=config)


def _hub_files(repo: str) -> list[Path]:
    """The checkpoint and config files of a hub repo, from the Hugging Face cache (downloaded if allowed)."""
    from huggingface_hub import snapshot_download

    offline = hub_offline()
    try:
        folder = snapshot_download(repo_id=repo, local_files_only=offline,
                                   allow_patterns=[f"*{s}" for s in _CHECKPOINT_SUFFIXES + _CONFIG_SUFFIXES])
    except Exception as exc:  # network, auth and cache errors come in many types
        hint = " (HF_HUB_OFFLINE is set and the repo is not in the cache)" if offline else ""
        raise WeightsSourceError(f"cannot get the files of hub repo {repo!r}{hint}: {exc}") from exc
    return sorted(p for p in Path(folder).rglob("*") if p.is_file())


def _one(files: list[Path], suffixes: tuple[str, ...], what: str, where: str) -> Path:
    found = [p for p in files if p.suffix.lower() in suffixes]
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise WeightsSourceError(f"{where}: expected one {what} ({'/'.join(suffixes)}), found {names}; "
                                 f"name it explicitly")
    return found[0]


def resolve_sources(checkpoint, config) -> tuple[object, object]:
    """``(checkpoint, config)`` with hub repo ids replaced by their files and a missing config found beside
    the checkpoint."""
    if isinstance(checkpoint, (str, os.PathLike)) and not isinstance(checkpoint, Mapping):
        text = str(checkpoint)
        if "://" in text:
            raise WeightsSourceError(f"checkpoint {text!r}: URLs are downloaded by the inference layer "
                                     "(inference.weights_download.resolve_weights); pass the local file")
        if not Path(text).exists() and _HUB_ID.match(text) and Path(text).suffix.lower() not in _CHECKPOINT_SUFFIXES:
            files = _hub_files(text)
            checkpoint = _one(files, _CHECKPOINT_SUFFIXES, "checkpoint", f"hub repo {text}")
            if config is None:
                config = _one(files, _CONFIG_SUFFIXES, "config", f"hub repo {text}")
        elif config is None:
            path = Path(text)
            siblings = sorted(p for p in path.parent.iterdir() if p.is_file()) if path.parent.is_dir() else []
            config = _one(siblings, _CONFIG_SUFFIXES, "config", f"folder of {text}")
    if config is None:
        raise TaskConfigError("(config)", "a task model needs its config (terratorch YAML or JSON)")
    return checkpoint, config


def as_task_config(config) -> TaskConfig:
    if isinstance(config, TaskConfig):
        return config
    if isinstance(config, Mapping):
        return task_config(config)
    if isinstance(config, (str, os.PathLike)):
        return read_task_config(config)
    raise TaskConfigError("(config)", f"expected a path, a mapping or a TaskConfig, got {type(config).__name__}")


def load_task_model(checkpoint=None, config=None, weights: str = "checkpoint", *, device=None, dtype=None,
                    seed: int = 0, terramind: TerraMindConfig | None = None) -> TaskModel:
    """A fine-tuned model in eval mode, gradients off (see the module docstring for ``checkpoint`` and
    ``config``). ``weights``: ``"checkpoint"`` (strict loading) or ``"random"`` (seeded random weights, for
    tests and benchmarks; ``checkpoint`` may then be None). ``dtype``: a torch dtype or a precision name of
    :mod:`terramind_openeo.model.precision` (``"int8"``: the backbone's linear layers in int8)."""
    if weights not in ("checkpoint", "random"):
        raise WeightsSourceError(f"weights must be 'checkpoint' or 'random', got {weights!r}")
    if weights == "checkpoint" and checkpoint is None:
        raise WeightsSourceError("no checkpoint given (weights='checkpoint')")
    if checkpoint is not None:
        checkpoint, config = resolve_sources(checkpoint, config)
    cfg = as_task_config(config)
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = build_task_model(cfg, terramind)
    finally:
        torch.random.set_rng_state(gen_state)
    if weights == "random":
        logger.warning("task model %s: RANDOM weights (seed=%d) - for tests and benchmarks only", cfg.backbone, seed)
        model.weights = "random"
    else:
        source = "state dict" if isinstance(checkpoint, Mapping) else str(checkpoint)
        state = checkpoint if isinstance(checkpoint, Mapping) else read_checkpoint(checkpoint)
        load_task_state(model, state, source)
        model.weights = source
    if dtype is not None:  # a precision of model/precision.py: "int8" runs the backbone's linear layers in int8
        precision.apply(model, dtype, device)
    elif device is not None:
        model.to(device=device)
    return model.eval().requires_grad_(False)


def load_task_state(model: TaskModel, state: Mapping, source: str) -> None:
    """Strip the Lightning ``model.`` prefix, check every key and shape (a TiM backbone's tokenizers apart, see
    :mod:`~terramind_openeo.model.task.tim_backbone`) and that tensors the model shares are equal, load: all or
    nothing."""
    own = model.state_dict(keep_vars=True)
    filtered = filter_state_dict(state, own.keys())
    if isinstance(model.encoder, TiMBackbone):
        prefix = "encoder.tokenizer."
        model.encoder.check_tokenizer_state({k[len(prefix):]: v for k, v in filtered.items()
                                             if k.startswith(prefix)}, source)
        filtered = {k: v for k, v in filtered.items() if not k.startswith(prefix)}
    try:
        check_state_dict(model, filtered, source)
    except Exception as exc:
        raise TaskCheckpointError(f"{exc}\n  (the model is the one {model.config.source} describes: "
                                  f"{_describe(model.config)})") from None
    _check_shared(own, filtered, source)
    model.load_state_dict(filtered, strict=True)


def _check_shared(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], source: str) -> None:
    """Keys that name one tensor of the model (a TiM generator's embeddings are the encoder's; tied output
    projections) must hold equal values: loading would otherwise keep one of them silently."""
    groups: dict[int, list[str]] = {}
    for key, tensor in own.items():
        groups.setdefault(id(tensor), []).append(key)
    differ = [f"{keys[0]} != {other}" for keys in groups.values() if len(keys) > 1
              for other in keys[1:] if not torch.equal(state[keys[0]], state[other])]
    if differ:
        shown = "\n    ".join(differ[:20])
        raise TaskCheckpointError(f"{source}: tensors that the model shares differ in the checkpoint:\n    {shown}")


def _describe(cfg: TaskConfig) -> str:
    args = cfg.model_args
    necks = " > ".join(n.get("name", "?") for n in args.get("necks") or []) or "no necks"
    return (f"{cfg.backbone} on {', '.join(cfg.modalities)}, {necks}, {args.get('decoder')}, {cfg.task} head"
            + (f" ({args['num_classes']} classes)" if args.get("num_classes") else ""))

