"""Per-process model cache: one loaded model per (name, weights, device, dtype), least recently used out.

UDFs are called once per chunk; loading a checkpoint per chunk would dominate the run time. The cache is
bounded (``TERRAMIND_OPENEO_MODEL_CACHE_SIZE``, default 2) so a worker that sees several model sizes does
not keep them all in memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelKey:
    """What identifies a loaded model."""

    name: str
    weights: str
    device: str
    dtype: str


def weights_cache_dir() -> Path:
    """Where checkpoints given by URL are kept (``TERRAMIND_OPENEO_CACHE``, else ``~/.cache/terramind-openeo``)."""
    root = os.environ.get("TERRAMIND_OPENEO_CACHE") or Path.home() / ".cache" / "terramind-openeo"
    return Path(root) / "weights"


def resolve_weights(weights: str) -> str:
    """``hub``/``random``/a path pass through; an ``http(s)://``/``file://`` URL is downloaded once into
    :func:`weights_cache_dir` (written under a temporary name, then renamed) and its local path returned."""
    if urlparse(weights).scheme not in ("http", "https", "file"):
        return weights
    digest = hashlib.sha256(weights.encode()).hexdigest()[:16]
    name = Path(urlparse(weights).path).name or "checkpoint.pt"
    target = weights_cache_dir() / f"{digest}-{name}"
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + f".part{os.getpid()}")
        _log.info("downloading weights %s -> %s", weights, target)
        torch.hub.download_url_to_file(weights, str(partial), progress=False)
        partial.replace(target)
    return str(target)


def _default_loader(key: ModelKey) -> Any:
    from terramind_openeo.model import load_terramind

    dtype = getattr(torch, key.dtype.removeprefix("torch."))
    model = load_terramind(key.name, weights=resolve_weights(key.weights), device=key.device, dtype=dtype)
    if hasattr(model, "eval"):
        model.eval()
    return model


class ModelCache:
    """Bounded LRU of loaded models, safe to use from several threads."""

    def __init__(self, max_size: int | None = None, loader: Callable[[ModelKey], Any] | None = None):
        size = max_size if max_size is not None else int(os.environ.get("TERRAMIND_OPENEO_MODEL_CACHE_SIZE", "2"))
        self.max_size = max(1, size)
        self.loader = loader or _default_loader
        self._models: OrderedDict[ModelKey, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    def get(self, name: str, weights: str, device: torch.device, dtype: torch.dtype) -> Any:
        key = ModelKey(name, weights, str(device), str(dtype))
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            _log.info("loading %s (weights=%s) on %s in %s", name, weights, device, dtype)
            model = self.loader(key)
            self.loads += 1
            self._models[key] = model
            while len(self._models) > self.max_size:
                evicted, _ = self._models.popitem(last=False)
                _log.info("model cache full: dropped %s", evicted)
            return model

    def clear(self) -> None:
        with self._lock:
            self._models.clear()

    def __len__(self) -> int:
        return len(self._models)


MODEL_CACHE = ModelCache()
