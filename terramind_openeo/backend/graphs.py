"""Cheap checks on process graphs before any work starts: shape, known processes and collections, UDF use.

Only the JSON is walked here (nodes, callbacks in arguments, user-defined processes the graph calls);
argument semantics are the engine's business.
"""

from __future__ import annotations

import re
from typing import Any, Iterator

from .errors import OpenEOApiError, ProcessGraphInvalid, ProcessGraphMissing

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


def iter_nodes(graph: dict) -> Iterator[tuple[str, dict]]:
    """Every node of the graph and of the callbacks (``{"process_graph": ...}`` arguments) inside it."""
    for node_id, node in graph.items():
        if not isinstance(node, dict):
            continue
        yield node_id, node
        for callback in callback_graphs(node.get("arguments", {})):
            yield from iter_nodes(callback)


def callback_graphs(value: Any) -> Iterator[dict]:
    """The ``process_graph`` of every callback in an argument value (not those nested inside them)."""
    if isinstance(value, dict):
        if isinstance(value.get("process_graph"), dict):
            yield value["process_graph"]
        else:
            for item in value.values():
                yield from callback_graphs(item)
    elif isinstance(value, list):
        for item in value:
            yield from callback_graphs(item)


def uses_process(graph: dict, process_id: str, user_processes: dict[str, dict]) -> bool:
    """True when ``process_id`` is called anywhere, also inside user-defined processes the graph calls."""
    seen: set[str] = set()
    stack = [graph]
    while stack:
        for _, node in iter_nodes(stack.pop()):
            pid = node.get("process_id")
            if pid == process_id:
                return True
            if pid in user_processes and pid not in seen and node.get("namespace") in (None, "user"):
                seen.add(pid)
                udp_graph = user_processes[pid].get("process_graph")
                if isinstance(udp_graph, dict):
                    stack.append(udp_graph)
    return False


def validation_errors(graph: Any, process_ids: set[str], collection_ids: set[str],
                      user_processes: dict[str, dict]) -> list[OpenEOApiError]:
    """Problems found without executing anything (an empty list when none)."""
    try:
        check_shape(graph)
    except OpenEOApiError as exc:
        return [exc]
    errors: list[OpenEOApiError] = []
    for node_id, node in iter_nodes(graph):
        pid = node["process_id"] if isinstance(node.get("process_id"), str) else None
        if pid is None:
            errors.append(ProcessGraphInvalid(f"Node '{node_id}' has no 'process_id'."))
            continue
        if pid not in process_ids and pid not in user_processes:
            errors.append(OpenEOApiError(f"Process '{pid}' (node '{node_id}') is not supported.",
                                         code="ProcessUnsupported", status=400))
        if pid == "load_collection":
            cid = node.get("arguments", {}).get("id")
            if isinstance(cid, str) and cid not in collection_ids:
                errors.append(OpenEOApiError(f"Collection '{cid}' (node '{node_id}') does not exist.",
                                             code="CollectionNotFound", status=404))
    return errors
