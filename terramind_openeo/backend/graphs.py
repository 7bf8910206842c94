"""Checks on process graphs before any work starts: shape, known processes and collections, and the
policy checks of :mod:`.checks`, all on the graph as ``processes.resolve.walk`` resolves it - the same
rule the engine runs it by, for every namespace, callback and stored process.

Argument semantics are the engine's business; only what can be judged on the JSON is judged here.
"""

from __future__ import annotations

import re
from collections.abc import Container, Mapping
from typing import Any

from terramind_openeo.processes.resolve import ResolvedNode, walk

from .errors import (
    CollectionNotFound,
    OpenEOError,
    ProcessGraphInvalid,
    ProcessGraphMissing,
)

PROCESS_ID = re.compile(r"^\w+$")


def process_graph_of(body: Any, *, key: str = "process") -> dict:
    """``body[key]["process_graph"]`` (as ``POST /result`` and ``POST /jobs`` send it), checked for shape."""
    process = body.get(key) if isinstance(body, dict) else None
    if not isinstance(process, dict) or "process_graph" not in process:
        raise ProcessGraphMissing(f"The request has no '{key}' object with a 'process_graph'.")
    check_shape(process["process_graph"])
    return process


def check_shape(graph: Any, where: str = "process_graph") -> None:
    if not isinstance(graph, dict) or not graph:
        raise ProcessGraphMissing(f"'{where}' must be a non-empty object of nodes.")
    for node_id, node in graph.items():
        if not isinstance(node, dict) or not isinstance(node.get("process_id"), str):
            raise ProcessGraphInvalid(f"Node '{node_id}' of {where} has no 'process_id'.")
        if not isinstance(node.get("arguments", {}), dict):
            raise ProcessGraphInvalid(f"Node '{node_id}' of {where}: 'arguments' must be an object.")


def resolved_nodes(graph: Any, predefined: Container[str], user_processes: Mapping[str, dict],
                   parameters: Mapping[str, Any] | None = None) -> list[ResolvedNode]:
    """Every node the engine may run for ``graph`` (``processes.resolve.walk``), or its error."""
    check_shape(graph)
    return list(walk(graph, predefined, user_processes, parameters))


def uses_process(graph: dict, process_id: str, user_processes: Mapping[str, dict],
                 predefined: Container[str]) -> bool:
    """True when ``process_id`` (a predefined process) runs anywhere, stored processes included."""
    return any(n.target.predefined and n.target.process_id == process_id
               for n in resolved_nodes(graph, predefined, user_processes))


def validation_errors(graph: Any, process_ids: set[str], collection_ids: set[str],
                      user_processes: Mapping[str, dict]) -> list[OpenEOError]:
    """Problems found without executing anything (an empty list when none)."""
    try:
        nodes = resolved_nodes(graph, process_ids, user_processes)
    except OpenEOError as exc:
        return [exc]
    errors: list[OpenEOError] = []
    for n in nodes:
        if n.target.predefined and n.target.process_id == "load_collection":
            cid = n.arguments.get("id")
            if isinstance(cid, str) and cid not in collection_ids:
                errors.append(CollectionNotFound(f"Collection '{cid}' (node '{n.label}') does not exist."))
    return errors
