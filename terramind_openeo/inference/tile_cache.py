"""Model outputs of single border tiles, kept for the neighbouring chunk (in this process, and through the
share directory of ``shared_tiles`` for the other worker processes of the machine)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from terramind_openeo.config import settings

from .shared_tiles import OneHot, SharedTileDir, from_settings


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
