"""What the worker processes of a local Dask cluster get: a quick exit.

A worker process that has closed still runs Python's finalization (module teardown of torch, GDAL, ...),
which on a busy machine takes longer than the 4 s its nanny waits before killing it ("Worker process still
alive after 4.0 seconds, killing" ... "killed by signal 9"). Once the worker has closed there is nothing left
to save: the process flushes its logs and leaves with ``os._exit``, and the cluster closes in under a second.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys

from distributed.diagnostics.plugin import WorkerPlugin


def _exit_now() -> None:
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


class QuickExit(WorkerPlugin):
    """Registered on a local cluster's client: each worker process (restarted ones too) exits at once after
    its worker closed. ``atexit`` runs after the worker's own shutdown and before the slow finalization."""

    name = "terramind-openeo-quick-exit"

    def setup(self, worker) -> None:
        atexit.register(_exit_now)
