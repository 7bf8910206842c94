"""One process-wide, re-entrant, picklable lock around every netCDF/HDF5 call of the engine.

The HDF5 library is not thread-safe, and xarray's netCDF4 backend locks data reads and writes but not the
metadata work of opening a file or creating its variables. Two executions in one process (the back-end's
``isolation = "thread"``) reading and writing netCDF at the same time crashed it (segmentation fault).
``load_collection`` opens netCDF files with ``lock=NETCDF_LOCK`` and inside it, the netCDF writer creates
and fills its file inside it: every HDF5 call of ours is serialised. Re-entrant because xarray acquires the
lock it was given again inside calls we already hold it around; picklable (by name) because dask.distributed
ships the lazy arrays, lock included, to its workers.
"""

from __future__ import annotations

import threading

_LOCKS: dict[str, threading.RLock] = {}
_GUARD = threading.Lock()


class NamedRLock:
    """A re-entrant lock that pickles as its name: the same name is the same lock within a process."""

    def __init__(self, name: str):
        self.name = name
        with _GUARD:
            self._lock = _LOCKS.setdefault(name, threading.RLock())

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        return self._lock.acquire(blocking, timeout)

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> NamedRLock:
        self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()

    def __getstate__(self) -> str:
        return self.name

    def __setstate__(self, name: str) -> None:
        type(self).__init__(self, name)

    def __repr__(self) -> str:
        return f"NamedRLock({self.name!r})"


NETCDF_LOCK = NamedRLock("terramind_openeo.netcdf")
