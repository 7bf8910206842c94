"""processes layer: openEO process graphs -> lazy dask cubes -> files (see docs/contracts.md).

``execute_process_graph`` runs a graph; ``Catalog`` maps collection ids to data; ``list_process_specs``
lists every process the engine offers (openeo-processes-dask's standard ones + ours).

The names below are imported on first use: the back-end's API imports small modules of this package
(``resolve``, ``urls``, ``errors``) without loading xarray, dask and the process registry.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Catalog": "terramind_openeo.processes.catalog",
    "OpenEOError": "terramind_openeo.processes.errors",
    "ExecutionResult": "terramind_openeo.processes.execute",
    "execute_process_graph": "terramind_openeo.processes.execute",
    "list_process_specs": "terramind_openeo.processes.registry",
    "list_file_formats": "terramind_openeo.processes.save",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
