"""One process-wide, re-entrant, picklable lock around every netCDF/HDF5 call of the engine.

The HDF5 library is not thread-safe, and xarray's netCDF4 backend locks data reads and writes but not the
metadata work of opening a file or creating its variables. Two executions in one process (the back-end's
``isolation = "thread"``) reading and writing netCDF at the same time crashed it (segmentation fault).
``load_collection`` opens netCDF files with ``lock=NETCDF_LOCK`` and inside it, the netCDF writer creates
and fills its file inside it: every HDF5 call of ours is serialised. Re-entrant because xarray acquires the
lock it was given again inside calls we already hold it around; picklable (by name) because dask.distributed
ships the lazy arrays, lock included, to its workers.

The lock also holds xarray's own HDF5 lock (``xarray.backends.locks.HDF5_LOCK``) while a thread holds it:
whatever opens netCDF through xarray's defaults in this process (collection metadata, a test, a UDF run
in-process, the garbage collector closing a dataset someone left open) is serialised against our reads and
writes. With two separate locks, an engine read and a plain ``xarray.open_dataset`` of the same file in
another thread crashed the process (heap corruption) or failed with ``NetCDF: HDF error``. Because xarray's
lock is not re-entrant, code that holds this lock opens netCDF only with it (``open_netcdf`` below, or
``lock=NETCDF_LOCK``): an xarray default-lock call inside would wait for itself.
"""

from __future__ import annotations

import threading
from typing import Any


def _xarray_hdf5_lock() -> Any:
    """The lock xarray takes around HDF5 calls when it is given none (netCDF4 and h5netcdf back-ends)."""
    from xarray.backends.locks import HDF5_LOCK

    return HDF5_LOCK


class _Shared:
    """One name's state: the re-entrant lock and how deep its owner holds it (changed only by the owner)."""

    def __init__(self) -> None:
        self.rlock = threading.RLock()
        self.depth = 0


_LOCKS: dict[str, _Shared] = {}
_GUARD = threading.Lock()


class NamedRLock:
    """A re-entrant lock that pickles as its name: the same name is the same lock within a process.

    The outermost acquisition in a thread also takes xarray's HDF5 lock (not re-entrant, so only then) and
    the last release gives it back: acquisition order is always this lock, then xarray's.
    """

    def __init__(self, name: str):
        self.name = name
        with _GUARD:
            self._shared = _LOCKS.setdefault(name, _Shared())
        self._lock = self._shared.rlock

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        shared = self._shared
        if not shared.rlock.acquire(blocking, timeout):
            return False
        if shared.depth == 0:
            inner = _xarray_hdf5_lock()
            # xarray's own non-blocking closes (a file manager's __del__) land here with blocking=False
            if not (inner.acquire(blocking, timeout) if blocking else inner.acquire(False)):
                shared.rlock.release()
                return False
        shared.depth += 1
        return True

    def release(self) -> None:
        shared = self._shared
        shared.depth -= 1
        if shared.depth == 0:
            _xarray_hdf5_lock().release()
        shared.rlock.release()

    def __enter__(self) -> NamedRLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __getstate__(self) -> str:
        return self.name

    def __setstate__(self, name: str) -> None:
        type(self).__init__(self, name)

    def __repr__(self) -> str:
        return f"NamedRLock({self.name!r})"


NETCDF_LOCK = NamedRLock("terramind_openeo.netcdf")


def open_netcdf(path: Any, engine: str | None = None, **kwargs: Any) -> Any:
    """``xarray.open_dataset`` of a netCDF file with every HDF5 call of the open and of later reads locked."""
    import xarray as xr

    lock = {"lock": NETCDF_LOCK} if engine in (None, "netcdf4", "h5netcdf") else {}
    with NETCDF_LOCK:  # xarray does not lock the metadata reads of an open
        return xr.open_dataset(path, engine=engine, **lock, **kwargs)
