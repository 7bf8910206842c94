"""Border tiles shared between the worker processes of one machine, through a directory.

``TileCache`` lets two neighbouring chunks of one process run the model tiles on their common border once.
Two chunks on different worker processes (the bands of rows that ``run`` deals out meet along a border)
would each run them. With ``TERRAMIND_OPENEO_TILE_SHARE_DIR`` set (``run``'s local cluster sets it to a
directory it removes when the cluster closes), a border tile that a chunk keeps for its neighbour is also
written there, and a chunk that misses in its own process looks there before running the model.

- One file per tile: a JSON header line (the whole cache key, dtype, shape, packing) and the raw values.
  Written under a temporary name and renamed, so a reader never sees half a file; read back only when the
  header names the same key.
- A tile taken by its one neighbour is deleted (a corner tile, with up to three, stays until the directory
  goes). The files of one process still there are bounded by ``TERRAMIND_OPENEO_TILE_SHARE_MB`` (default
  1024); past it, it writes no more until some are taken.
- An I/O error turns the directory off for the process, logged once: its tiles are then computed, which
  costs time but never changes a value.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from terramind_openeo.config import settings
from terramind_openeo.files import atomic_path

_log = logging.getLogger(__name__)

SHARE_DIR_ENV = "TERRAMIND_OPENEO_TILE_SHARE_DIR"  # the variable of the tile_share_dir setting


class OneHot:
    """A one-hot ``[channels, h, w]`` float array kept as its ``uint8`` arg-max (LULC class votes: 1/40 of
    the memory), expanded again exactly when taken."""

    def __init__(self, classes: Any, channels: int, dtype: Any):
        self.classes, self.channels, self.dtype = classes, channels, np.dtype(dtype)
        self.nbytes = classes.nbytes


class SharedTileDir:
    """The files of one share directory, as seen by one process (safe to use from several threads)."""

    def __init__(self, path: Path, max_bytes: int | None = None):
        if max_bytes is None:
            max_bytes = int(settings().tile_share_mb * 2**20)
        self.path, self.max_bytes = Path(path), max(0, max_bytes)
        self.enabled = True
        self.bytes = 0  # in the files this process wrote that are still there (as far as it knows)
        self._mine: dict[Path, int] = {}
        self.hits = self.writes = 0
        self._lock = threading.Lock()

    def _file(self, key: tuple) -> tuple[Path, str]:
        text = repr(key)
        return self.path / f"{hashlib.blake2b(text.encode(), digest_size=20).hexdigest()}.tile", text

    def _off(self, exc: OSError) -> None:
        if self.enabled:
            _log.warning("tile share directory %s switched off for this process: %s", self.path, exc)
        self.enabled = False

    def put(self, key: tuple, value: np.ndarray | OneHot) -> None:
        if not self.enabled:
            return
        array = value.classes if isinstance(value, OneHot) else value
        path, text = self._file(key)
        with self._lock:
            if self.bytes + array.nbytes > self.max_bytes:
                self._recount()
                if self.bytes + array.nbytes > self.max_bytes:
                    return
            self.bytes += array.nbytes - self._mine.pop(path, 0)
            self._mine[path] = array.nbytes
        header = {"key": text, "dtype": array.dtype.str, "shape": list(array.shape)}
        if isinstance(value, OneHot):
            header["one_hot"] = {"channels": value.channels, "dtype": value.dtype.str}
        try:
            with atomic_path(path, unique=True) as part, open(part, "wb") as f:  # several writers, one name
                f.write(json.dumps(header).encode() + b"\n")
                f.write(np.ascontiguousarray(array).data)
            self.writes += 1
        except OSError as exc:
            self._off(exc)

    def take(self, key: tuple, keep: bool = False) -> np.ndarray | OneHot | None:
        """The tile's value (its file deleted unless ``keep``), or None."""
        if not self.enabled:
            return None
        path, text = self._file(key)
        try:
            with open(path, "rb") as f:
                header = json.loads(f.readline())
                if header["key"] != text:  # another key with the same file name
                    return None
                array = np.empty(tuple(header["shape"]), dtype=np.dtype(header["dtype"]))
                if f.readinto(array.data.cast("B")) != array.nbytes or f.read(1):
                    return None
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError, KeyError) as exc:  # not one of our files
            _log.debug("tile share: %s unreadable: %s", path, exc)
            return None
        if not keep:
            self.discard(key)
        self.hits += 1
        one_hot = header.get("one_hot")
        return OneHot(array, one_hot["channels"], one_hot["dtype"]) if one_hot else array

    def discard(self, key: tuple) -> None:
        """Delete the tile's file (taken by its one neighbour)."""
        if not self.enabled:
            return
        path = self._file(key)[0]
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._off(exc)
            return
        with self._lock:
            self.bytes -= self._mine.pop(path, 0)

    def _recount(self) -> None:
        """Forget the files of this process that others have taken (deleted) since."""
        self._mine = {path: n for path, n in self._mine.items() if path.exists()}
        self.bytes = sum(self._mine.values())


def from_settings(current: SharedTileDir | None) -> SharedTileDir | None:
    """The share directory of the ``tile_share_dir`` setting (``TERRAMIND_OPENEO_TILE_SHARE_DIR``), ``current``
    if it is that one."""
    path = settings().tile_share_dir
    if path is None:
        return None
    if current is not None and current.path == path:
        return current
    return SharedTileDir(path)
