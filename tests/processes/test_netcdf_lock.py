"""netcdf_lock: concurrent executions reading and writing netCDF in one process no longer crash it."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import threading

import pytest
from processes_helpers import REPO

from terramind_openeo.processes.netcdf_lock import NETCDF_LOCK, NamedRLock

# 8 executions on 4 threads, each loading the Bolzano netCDF and writing a netCDF result; before the lock,
# about every second run of this script died of SIGSEGV/SIGBUS inside xarray's netCDF4 backend.
SCRIPT = """
import json, sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np, xarray as xr
sys.path.insert(0, {tests!r})
from processes_helpers import graph, load_node
from terramind_openeo.processes import Catalog, execute_process_graph
catalog = Catalog.from_file({catalog!r})
g = graph(load=load_node(), save={{"process_id": "save_result", "arguments": {{"data": {{"from_node": "load"}},
          "format": "netCDF"}}, "result": True}})
out = Path({out!r})
with ThreadPoolExecutor(4) as pool:
    futures = [pool.submit(execute_process_graph, g, out / f"r{{i}}", catalog=catalog, chunk_size=32) for i in range(8)]
    files = [f.result().files[0] for f in futures]
arrays = [xr.open_dataset(f, decode_coords="all").to_dataarray().values for f in files]
print(json.dumps({{"same": all(np.array_equal(a, arrays[0], equal_nan=True) for a in arrays),
                   "shape": list(arrays[0].shape)}}))
"""


def test_concurrent_netcdf_executions_in_one_process(catalog_file, tmp_path):
    code = SCRIPT.format(tests=str(REPO / "tests" / "processes"), catalog=str(catalog_file), out=str(tmp_path))
    for attempt in range(2):
        proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], capture_output=True, text=True,
                              timeout=600, cwd=REPO)
        assert proc.returncode == 0, f"attempt {attempt}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
        result = json.loads(proc.stdout.strip().splitlines()[-1])
        assert result["same"] and result["shape"][0] == 2  # B04, B08


def test_named_lock_is_reentrant_and_pickles_as_the_same_lock():
    copy = pickle.loads(pickle.dumps(NETCDF_LOCK))
    assert copy._lock is NETCDF_LOCK._lock and NamedRLock("other")._lock is not NETCDF_LOCK._lock
    with NETCDF_LOCK, copy:  # re-entrant: xarray takes it again inside our own critical sections
        held = []
        t = threading.Thread(target=lambda: held.append(NETCDF_LOCK.acquire(timeout=0.05)))
        t.start()
        t.join()
        assert held == [False]  # another thread waits


def test_the_lock_holds_xarrays_own_hdf5_lock_and_gives_it_back():
    from xarray.backends.locks import HDF5_LOCK

    def other_thread_gets(lock) -> bool:
        got = []

        def take():
            ok = lock.acquire(timeout=0.05)
            got.append(ok)
            if ok:
                lock.release()
        t = threading.Thread(target=take)
        t.start()
        t.join()
        return got[0]

    with NETCDF_LOCK, NETCDF_LOCK:
        assert not other_thread_gets(HDF5_LOCK)  # xarray's default-lock reads and closes wait for us
    assert other_thread_gets(HDF5_LOCK)  # given back with the outermost release, not before
    with HDF5_LOCK:  # xarray holds its lock elsewhere: a non-blocking try fails and leaves ours free
        assert not other_thread_gets(NETCDF_LOCK)
        t = threading.Thread(target=lambda: held.append(NETCDF_LOCK.acquire(blocking=False)))
        held: list[bool] = []
        t.start()
        t.join()
        assert held == [False]
    assert other_thread_gets(NETCDF_LOCK)


# The engine reading the Bolzano netCDF on dask threads while, in another thread of the process, (a) the
# collection's metadata is read (GET /collections/{id}) or (b) datasets opened with xarray's defaults are read
# and closed by the garbage collector. With the engine's lock separate from xarray's, (a) and (b) each
# crashed this script (SIGSEGV, heap corruption) within seconds.
RACE = """
import gc, sys, threading
import numpy as np, xarray as xr
sys.path.insert(0, {tests!r})
from processes_helpers import graph, load_node
from terramind_openeo.processes import Catalog, execute_process_graph
from terramind_openeo.processes.collection_meta import _grid
catalog = Catalog.from_file({catalog!r})
cfg = catalog.get("S2_BOLZANO")
mode = {mode!r}
plain = [xr.open_dataset(cfg.files()[0]) for _ in range(400)] if mode == "gc" else []  # before any engine thread
stop = threading.Event()

def other():
    while not stop.is_set() and (mode == "meta" or plain):
        if mode == "meta":
            _grid.__wrapped__(cfg)  # not the cached answer: the file is opened every time
        else:
            ds = plain.pop()
            ds["B04"].isel(t=len(plain) % 12).values
            del ds  # closed here, in this thread, with xarray's default lock
            if len(plain) % 50 == 0:
                gc.collect()

threads = [threading.Thread(target=other) for _ in range(2)]
for t in threads:
    t.start()
g = graph(load={{**load_node(), "result": True}})
first = None
for _ in range(3):
    v = np.asarray(execute_process_graph(g, None, catalog=catalog, chunk_size=64).value.values)
    assert first is None or np.array_equal(v, first, equal_nan=True)
    first = v
stop.set()
for t in threads:
    t.join()
print("ok", first.shape)
"""


@pytest.mark.parametrize("mode", ["meta", "gc"])
def test_engine_reads_and_xarray_default_opens_in_other_threads(catalog_file, mode):
    code = RACE.format(tests=str(REPO / "tests" / "processes"), catalog=str(catalog_file), mode=mode)
    try:  # ~10 s here; the corruption this guards against also showed as a hang
        proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], capture_output=True, text=True,
                              timeout=180, cwd=REPO)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"hung for {exc.timeout} s\n{(exc.stderr or b'')[-3000:]!r}")
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip().splitlines()[-1].startswith("ok")
