"""netcdf_lock: concurrent executions reading and writing netCDF in one process no longer crash it."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import threading

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
