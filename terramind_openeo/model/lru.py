"""A bounded, least-recently-used cache of loaded objects (models, tokenizers), safe from several threads.

Loading a checkpoint costs seconds and its tensors take up to a few GB, so a process keeps the last few it
used: each key is loaded once (loads are serialised under the cache's lock, so two threads asking for the
same model do not load it twice), and the least recently used entry goes once more than ``max_size`` are
held. The model cache of the inference layer and the tokenizer cache of generation are two instances.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

_log = logging.getLogger(__name__)


class LoadedLRU:
    """``lookup(key)`` returns ``loader(key)``, loaded once and kept while among the ``max_size`` most recent."""

    def __init__(self, loader: Callable[[Any], Any], max_size: int | Callable[[], int], what: str = "entry"):
        self.loader = loader
        self._max_size = max_size
        self.what = what
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0

    @property
    def max_size(self) -> int:
        """The bound: a number, or a function read at each use (a setting that may be overridden)."""
        size = self._max_size() if callable(self._max_size) else self._max_size
        return max(1, int(size))

    def lookup(self, key: Hashable) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
            value = self.loader(key)
            self.loads += 1
            self._items[key] = value
            while len(self._items) > self.max_size:
                evicted, _ = self._items.popitem(last=False)
                _log.info("%s cache full: dropped %s", self.what, evicted)
            return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def keys(self) -> list[Hashable]:
        """The keys held, least recently used first."""
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        return len(self._items)
