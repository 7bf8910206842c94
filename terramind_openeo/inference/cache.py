"""Per-process model cache: one loaded model per (name, weights, device, dtype), least recently used out.

UDFs are called once per chunk; loading a checkpoint per chunk would dominate the run time. The cache is
bounded (the ``model_cache_size`` setting, ``TERRAMIND_OPENEO_MODEL_CACHE_SIZE``, default 2) so a worker that
sees several model sizes does not keep them all in memory.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from terramind_openeo.config import settings
from terramind_openeo.files import atomic_path

from .shared_tiles import OneHot, SharedTileDir, from_settings

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelKey:
    """What identifies a loaded model."""

    name: str
    weights: str
    device: str
    dtype: str


def weights_cache_dir() -> Path:
    """Where checkpoints given by URL are kept (the ``cache_dir`` setting, ``TERRAMIND_OPENEO_CACHE``, else
    ``~/.cache/terramind-openeo``, then ``weights/``)."""
    return settings().weights_cache_dir


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
        _log.info("downloading weights %s -> %s", weights, target)
        with atomic_path(target, unique=True) as part:  # workers of one machine may download it at once
            torch.hub.download_url_to_file(weights, str(part), progress=False)
    os.utime(target)  # most recently used: the last to go
    bound_weights_cache(target.parent, int(settings().weights_cache_mb * 2**20), keep=target)
    return str(target)


def bound_weights_cache(folder: Path, max_bytes: int, keep: Path | None = None) -> list[Path]:
    """Delete the least recently used checkpoints of ``folder`` (never ``keep``) until the rest fit in
    ``max_bytes``; returns what was deleted."""
    files = sorted((p for p in folder.iterdir() if p.is_file() and ".part" not in p.name),
                   key=lambda p: p.stat().st_mtime)
    total = sum(p.stat().st_size for p in files)
    removed = []
    for path in files:
        if total <= max_bytes:
            break
        if keep is not None and path == keep:
            continue
        total -= path.stat().st_size
        path.unlink(missing_ok=True)
        removed.append(path)
        _log.info("weights cache over %d MiB: removed %s", max_bytes >> 20, path.name)
    return removed


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
        self._max_size = max_size
        self.loader = loader or _default_loader
        self._models: OrderedDict[ModelKey, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    @property
    def max_size(self) -> int:
        """The bound given to the constructor, else the ``model_cache_size`` setting in force."""
        return max(1, self._max_size if self._max_size is not None else settings().model_cache_size)

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


def _pack(value: Any) -> Any:
    import numpy as np

    if (isinstance(value, np.ndarray) and value.ndim == 3 and 1 < value.shape[0] <= 255
            and np.issubdtype(value.dtype, np.floating)):
        classes = value.argmax(axis=0)
        if np.array_equal(value, np.eye(value.shape[0], dtype=value.dtype)[classes].transpose(2, 0, 1)):
            return OneHot(classes.astype(np.uint8), value.shape[0], value.dtype)
    return value


def _unpack(value: Any) -> Any:
    import numpy as np

    if isinstance(value, OneHot):
        return np.eye(value.channels, dtype=value.dtype)[value.classes].transpose(2, 0, 1)
    return value


class TileCache:
    """Bounded LRU of model outputs of single tiles, shared by the chunks of one process.

    Neighbouring chunks of the process path (``terramind_*``, with ``share_tiles=True``) both need the
    tiles on their common border: the halo that makes chunks give the numbers of the whole cube. A chunk
    keeps the outputs of its border tiles here and the next chunk takes them instead of running the model
    again. Entries are keyed by the inference options, the model, the tile's grid position and a digest of
    its input pixels, so a hit is the output the model would give. An entry on one border side is used
    by one neighbour and dropped when taken; corner tiles (up to three neighbours) age out.
    ``TERRAMIND_OPENEO_TILE_CACHE_MB`` (default 512, 0: off) bounds the memory. Neighbours on other worker
    processes of the machine find the tiles in the share directory, if one is set (``shared_tiles``).
    """

    def __init__(self, max_bytes: int | None = None):
        self._max_bytes = max_bytes
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.bytes = 0
        self.hits = 0
        self.shared_hits = 0
        self.misses = 0
        self._share: SharedTileDir | None = None

    @property
    def max_bytes(self) -> int:
        """The bound given to the constructor, else the ``tile_cache_mb`` setting in force."""
        return max(0, self._max_bytes if self._max_bytes is not None else int(settings().tile_cache_mb * 2**20))

    def take(self, key: tuple, keep: bool = False, shared: bool = False) -> Any:
        """The cached value (removed unless ``keep``), or None. ``shared``: the key names the same output in
        every process (no object ids), so the share directory (if any) is looked at too."""
        share = self.share() if shared and self.max_bytes else None  # 0 MB: no reuse of border tiles at all
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self.hits += 1
                if keep:
                    self._items.move_to_end(key)
                else:
                    del self._items[key]
                    self.bytes -= value.nbytes
        if value is None and share is not None:
            value = share.take(key, keep=keep)
            if value is not None:
                with self._lock:
                    self.hits += 1
                    self.shared_hits += 1
        elif value is not None and share is not None and not keep:
            share.discard(key)  # taken by its one neighbour: nobody else needs the file
        if value is None:
            with self._lock:
                self.misses += 1
            return None
        return _unpack(value)

    def put(self, key: tuple, value: Any, shared: bool = False) -> None:
        """Keep ``value`` for a neighbouring chunk; ``shared``: also in the share directory (see ``take``)."""
        packed = _pack(value)
        share = self.share() if shared and self.max_bytes else None
        if share is not None:
            share.put(key, packed)
        value = packed if packed is not value else value.copy()  # not a view of a whole batch
        if value.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old.nbytes
            self._items[key] = value
            self.bytes += value.nbytes
            while self.bytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self.bytes -= evicted.nbytes

    def share(self) -> SharedTileDir | None:
        """The share directory between the processes of this machine (``TERRAMIND_OPENEO_TILE_SHARE_DIR``)."""
        self._share = from_settings(self._share)
        return self._share if self._share is not None and self._share.enabled else None

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)


TILE_CACHE = TileCache()
