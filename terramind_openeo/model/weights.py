"""Checkpoints: where they come from (hub, file), a pure ``state_dict -> state_dict`` filter for the layouts
terratorch writes, and strict loading that lists every missing, unexpected or wrongly shaped tensor."""

from __future__ import annotations

import logging
import os
import zipfile
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from terramind_openeo.model.config import TerraMindConfig
from terramind_openeo.model.errors import CheckpointError, WeightsSourceError

logger = logging.getLogger(__name__)

_WRAPPERS = ("state_dict", "model", "module", "model_state_dict")
_LIST_LIMIT = 20


def _unwrap(checkpoint: Mapping) -> Mapping:
    """Descend into ``{"state_dict": {...}}``-style wrappers (Lightning, plain training scripts)."""
    while isinstance(checkpoint, Mapping) and not any(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        inner = next((checkpoint[k] for k in _WRAPPERS if isinstance(checkpoint.get(k), Mapping)), None)
        if inner is None:
            break
        checkpoint = inner
    return checkpoint


def _common_prefix(keys, expected: set[str]) -> str:
    """The key prefix (ending at a dot, possibly empty) under which most keys become expected keys."""
    votes: Counter[str] = Counter()
    for key in keys:
        cut = 0
        while True:
            if key[cut:] in expected:
                votes[key[:cut]] += 1
                break
            dot = key.find(".", cut)
            if dot < 0:
                break
            cut = dot + 1
    if not votes:
        return ""
    best = max(votes.values())
    return min((p for p, n in votes.items() if n == best), key=len)


def filter_state_dict(state_dict: Mapping[str, torch.Tensor], expected_keys) -> dict[str, torch.Tensor]:
    """Strip the prefix terratorch wrote (``sampler.model.``, ``model.``, ``model.encoder.`` ...) and drop what
    lies outside it (e.g. ``tokenizer.*``, a TiM model's un-prefixed backbone copy).

    Pure: returns a new dict and changes nothing. Keys under the detected prefix are kept even when unexpected,
    so that strict loading reports them.
    """
    state_dict = _unwrap(state_dict)
    expected = set(expected_keys)
    prefix = _common_prefix(state_dict.keys(), expected)
    out = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    dropped = len(state_dict) - len(out)
    if prefix or dropped:
        outside = sorted({k.split(".", 1)[0] for k in state_dict if not k.startswith(prefix)})
        logger.info("checkpoint keys under prefix %r used; %d keys outside it ignored (%s)",
                    prefix, dropped, ", ".join(outside[:10]))
    return out


def _describe(title: str, items: list[str]) -> str:
    shown = items[:_LIST_LIMIT]
    more = f"\n    ... and {len(items) - len(shown)} more" if len(items) > len(shown) else ""
    return f"  {title} ({len(items)}):\n" + "\n".join(f"    {item}" for item in shown) + more


def check_state_dict(model: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` listing missing, unexpected and wrongly shaped tensors, if any."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = sorted(
        f"{k}: checkpoint {list(v.shape)}, model {list(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and (not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(own[k].shape)))
    if missing or unexpected or mismatched:
        parts = [f"{source} does not fit {getattr(model, 'name', type(model).__name__)} "
                 f"({len(state_dict)} tensors in the checkpoint, {len(own)} in the model):"]
        if missing:
            parts.append(_describe("missing", missing))
        if unexpected:
            parts.append(_describe("unexpected", unexpected))
        if mismatched:
            parts.append(_describe("shape mismatch", mismatched))
        raise CheckpointError("\n".join(parts))
    tied = [(f"decoder_embeddings.{k}.to_logits.weight", f"decoder_embeddings.{k}.token_emb.weight")
            for k in getattr(model, "decoder_embeddings", {})]
    tied += [(f"decoder_embeddings.{k}.mod_emb", f"encoder_embeddings.{k}.mod_emb")
             for k in getattr(model, "decoder_embeddings", {})]
    differ = [f"{a} != {b}" for a, b in tied if a in state_dict and not torch.equal(state_dict[a], state_dict[b])]
    if differ:
        raise CheckpointError(f"{source}: tensors that TerraMind shares differ:\n" + _describe("differ", differ))


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                           source: str = "checkpoint") -> None:
    """Filter, check and load ``state_dict`` into ``model``: all or nothing."""
    filtered = filter_state_dict(state_dict, model.state_dict().keys())
    check_state_dict(model, filtered, source)
    model.load_state_dict(filtered, strict=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()


def read_checkpoint(path: str | os.PathLike) -> Mapping[str, torch.Tensor]:
    """Read a pickled state dict with ``torch.load(weights_only=True)`` onto the CPU.

    The tensors are mapped from the file (``mmap=True``), not read: only those that are then copied into a
    model are ever read, and their pages belong to the page cache (the kernel can drop them), not to the
    process's heap. A fine-tuned TiM checkpoint's tokenizer (~0.7 GB, checked by shape, never loaded) is then not
    read at all. Files in the legacy (pre-zip) format cannot be mapped and are read whole as before. Cached
    files are replaced by rename, never rewritten in place, so a mapping stays valid."""
    path = Path(path)
    if not path.is_file():
        raise WeightsSourceError(f"checkpoint file {str(path)!r} does not exist")
    try:
        # torch's zip format maps; the legacy one (not a zip) cannot and is read whole
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as exc:  # unpickling errors come in many types
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: {exc}") from exc
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(f"checkpoint {str(path)!r} holds a {type(checkpoint).__name__}, not a state dict")
    return checkpoint


def download_checkpoint(config: TerraMindConfig) -> Path:
    """Path of ``TerraMind_v1_{size}.pt`` in the Hugging Face cache, downloaded if needed and allowed
    (``HF_HUB_OFFLINE=1`` restricts it to the cache): one quick attempt per process, see ``model.hub``."""
    from terramind_openeo.model.hub import fetch, hub_file

    return fetch(hub_file(config.name))
