"""Imported only by the forkserver of :mod:`.isolation`: loads and primes the engine once, so that every
forked execution starts warm (the standard-process registry alone takes seconds to build)."""

from __future__ import annotations

import logging
import os

from terramind_openeo.backend.isolation import exit_with_server

log = logging.getLogger(__name__)
exit_with_server(os.getppid())  # the forkserver ends with the server, also during this warm-up

try:
    import torch  # noqa: F401  - the TerraMind processes need it; imported, no thread pools started yet

    from terramind_openeo.processes import (
        Catalog,
        execute_process_graph,
        list_process_specs,
    )

    list_process_specs()
    execute_process_graph({"n": {"process_id": "add", "arguments": {"x": 1, "y": 1}, "result": True}}, None,
                          catalog=Catalog.from_dict({"collections": []}))
except Exception:
    log.warning("engine warm-up in the forkserver failed; executions start cold", exc_info=True)
