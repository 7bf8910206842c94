"""Checkpoints given by URL: downloaded once per machine into the weights cache, then read from there."""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from urllib.parse import urlparse

import torch

from terramind_openeo.config import settings
from terramind_openeo.files import atomic_path

_log = logging.getLogger(__name__)


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
