"""Per-process model cache: one loaded model per (name, weights, device, dtype), least recently used out.

UDFs are called once per chunk; loading a checkpoint per chunk would dominate the run time. The cache is
bounded (the ``model_cache_size`` setting, ``TERRAMIND_OPENEO_MODEL_CACHE_SIZE``, default 2) so a worker that
sees several model sizes does not keep them all in memory. Checkpoints given by URL are fetched by
``weights_download``; border tiles are kept by ``tile_cache``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from terramind_openeo.config import settings
from terramind_openeo.model.lru import LoadedLRU
from terramind_openeo.model.precision import precision_name

from .weights_download import resolve_weights

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelKey:
    """What identifies a loaded model."""

    name: str
    weights: str
    device: str
    dtype: str


def _default_loader(key: ModelKey) -> Any:
    from terramind_openeo.model import load_terramind

    model = load_terramind(key.name, weights=resolve_weights(key.weights), device=key.device, dtype=key.dtype)
    if hasattr(model, "eval"):
        model.eval()
    return model


class ModelCache(LoadedLRU):
    """Bounded LRU of loaded models, safe to use from several threads."""

    def __init__(self, max_size: int | None = None, loader: Callable[[ModelKey], Any] | None = None):
        super().__init__(loader or _default_loader,
                         max_size if max_size is not None else lambda: settings().model_cache_size, "model")

    def get(self, name: str, weights: str, device: torch.device, dtype: torch.dtype | str) -> Any:
        """The model ``name`` in precision ``dtype`` (a torch dtype or a name such as ``"int8"``)."""
        key = ModelKey(name, weights, str(device), precision_name(dtype))
        if key not in self._items:
            _log.info("loading %s (weights=%s) on %s in %s", name, weights, device, dtype)
        return self.lookup(key)


MODEL_CACHE = ModelCache()
