"""The heap policy: batch buffers reused without page faults, freed memory back to the OS on trim."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from terramind_openeo.processes import heap

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning (Linux)")

# 20 allocate-touch-free rounds of a 8 MiB buffer (an activation of a batch of tiles), then 48 MiB of
# blocks freed (less than the trim threshold: glibc keeps them) and the heap trimmed: page faults of rounds 2-20, RSS before and after the trim
_PROBE = """
import ctypes, json, resource, sys
from terramind_openeo.processes import heap
if sys.argv[1] == "policy":
    heap.apply_policy()
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
def touch(n):
    p = libc.malloc(n)
    ctypes.memset(p, 1, n)
    return p
libc.free(touch(8 << 20))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(19):
    libc.free(touch(8 << 20))
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
blocks = [touch(1 << 20) for _ in range(48)]
for p in blocks:
    libc.free(p)
held = rss()
heap.trim()
print(json.dumps({"faults": faults, "held": held, "trimmed": rss()}))
"""


def _probe(mode: str, **env: str) -> dict:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], env=environ, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


def test_policy_reuses_batch_buffers_and_trim_gives_memory_back():
    pages = (8 << 20) // 4096  # one round's buffer in 4 KiB pages
    tuned = _probe("policy")
    assert tuned["faults"] < pages  # 19 rounds: the heap's pages reused, not faulted in again
    dask_default = _probe("none", MALLOC_TRIM_THRESHOLD_="65536")
    assert dask_default["faults"] > 10 * pages  # the setting this policy replaces: every round mapped afresh
    assert tuned["held"] - tuned["trimmed"] > 32 << 20  # the freed 48 MiB: kept for reuse until the trim


def test_users_malloc_settings_win():
    assert set(heap.worker_environ()) == {"MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_"}
    # with the user's variable set, apply_policy leaves glibc alone: rounds fault as the user's setting says
    user = _probe("policy", MALLOC_TRIM_THRESHOLD_="65536")
    assert user["faults"] > 10 * (8 << 20) // 4096
