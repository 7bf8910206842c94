"""processes layer: openEO process graphs -> lazy dask cubes -> files (see docs/contracts.md).

``execute_process_graph`` runs a graph; ``Catalog`` maps collection ids to data; ``list_process_specs``
lists every process the engine offers (openeo-processes-dask's standard ones + ours).
"""

from terramind_openeo.processes.catalog import Catalog
from terramind_openeo.processes.errors import OpenEOError
from terramind_openeo.processes.execute import ExecutionResult, execute_process_graph
from terramind_openeo.processes.registry import list_process_specs
from terramind_openeo.processes.save import list_file_formats

__all__ = ["Catalog", "ExecutionResult", "OpenEOError", "execute_process_graph", "list_file_formats",
           "list_process_specs"]
