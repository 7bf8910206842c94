"""glibc heap policy of the processes that compute tiles: fast reuse within a chunk, memory back after it.

Two failure modes to avoid. glibc's defaults let the mmap threshold climb to the largest buffer freed so far,
so tile-sized buffers end up on the heap, and freed ones stay there: resident memory then follows the peak
of every chunk ever computed and grows with the area. The opposite cure (dask's worker default
``MALLOC_TRIM_THRESHOLD_=65536``, which also freezes the mmap threshold at 128 KiB) maps and unmaps every
activation of every batch: each one is page-faulted in again, about a third more of the model's time on a
CPU (docs/measurements.md).

The middle way: buffers up to ``MMAP_THRESHOLD`` come from the heap and are reused batch after batch
(``TRIM_THRESHOLD`` keeps glibc from handing the heap top back on every free), and :func:`trim` gives
everything free back to the OS once a chunk or a work tile is done: about the speed of glibc's defaults
with most of the memory saving of dask's setting (the figures: docs/measurements.md).
"""

from __future__ import annotations

import ctypes
from typing import Any

from terramind_openeo.config import settings

MMAP_THRESHOLD = 16 * 2**20  # most activations of a batch of 8 tiles fit under it (smaller: slower again)
TRIM_THRESHOLD = 64 * 2**20
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3

_LIBC: Any = None


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
            _LIBC.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        except (OSError, AttributeError):  # not glibc: nothing to tune
            _LIBC = False
    return _LIBC


def worker_environ() -> dict[str, str]:
    """The policy as environment variables, for worker processes started by this one (read at their start)."""
    return {"MALLOC_TRIM_THRESHOLD_": str(TRIM_THRESHOLD), "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD)}


def dask_pre_spawn_environ() -> dict[str, str]:
    """dask's worker environment (``distributed.nanny.pre-spawn-environ``) with this policy in place of its
    ``MALLOC_TRIM_THRESHOLD_=65536``. Variables exported in this process still win: dask reads them over
    the config (and its nannies export the config into this process when they start workers)."""
    import dask

    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    environ.update(worker_environ())
    return environ


def apply_policy() -> None:
    """The policy for this process (the ``threads`` and ``synchronous`` schedulers compute tiles here),
    unless the user set glibc's variables themselves."""
    libc = _libc()
    chosen = settings()
    if not libc or chosen.malloc_trim_threshold is not None or chosen.malloc_mmap_threshold is not None:
        return
    libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)


def trim() -> None:
    """Give all free heap memory back to the OS (after a chunk or a work tile)."""
    libc = _libc()
    if libc:
        libc.malloc_trim(0)
