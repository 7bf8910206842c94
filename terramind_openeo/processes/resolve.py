"""Which process a graph node runs: the one rule shared by the engine and every policy check.

The engine (``graph.GraphEvaluator``) and the back-end's checks (UDF rights, allowed weights, allowed URLs,
unknown processes) all call :func:`resolve_node`, and the checks walk graphs with :func:`walk`, which
descends exactly where the engine would: into callbacks (``{"process_graph": ...}`` arguments) and into the
stored (user-defined) processes that nodes resolve to, under every namespace. A policy that walks the same
resolved graph the engine runs cannot be bypassed by spelling a call differently (issue 15: a stored
process called with ``"namespace": "backend"`` ran a UDF that the UDF policy never saw).

Namespaces: ``None`` and ``""`` mean a predefined process if one has that id, else the caller's stored
process; ``"backend"`` and ``"predefined"`` mean a predefined process only; ``"user"`` a stored process
only; any other namespace is refused.

This module imports nothing heavy, so the API can use it without loading the processes layer.
"""

from __future__ import annotations

from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from terramind_openeo.processes.errors import ProcessGraphInvalid, ProcessUnsupported

PREDEFINED_ONLY = ("backend", "predefined")
EITHER = (None, "")
USER_ONLY = ("user",)
MAX_NESTING = 64
"""Callbacks and stored-process calls nested deeper than this are refused (the engine recurses per level)."""


class Unresolved:
    """A parameter value that is not known before execution (``from_node``, a callback's own data)."""

    def __repr__(self) -> str:
        return "<unresolved>"


class Deferred:
    """A parameter of a process being stored: its value comes with each call and is checked then."""

    def __repr__(self) -> str:
        return "<deferred>"


UNRESOLVED = Unresolved()
DEFERRED = Deferred()


@dataclass(frozen=True)
class Target:
    """What a node runs: a predefined process (``spec is None``) or the caller's stored process ``spec``."""

    process_id: str
    user_process: dict | None = None

    @property
    def predefined(self) -> bool:
        return self.user_process is None


def resolve_node(node: Any, predefined: Container[str], user_processes: Mapping[str, dict],
                 node_name: str | None = None) -> Target:
    """The process ``node`` runs, given the predefined process ids and the caller's stored processes."""
    if not isinstance(node, dict):
        raise ProcessGraphInvalid("is not a JSON object", node=node_name)
    pid = node.get("process_id")
    namespace = node.get("namespace")
    if not isinstance(pid, str) or not pid:
        raise ProcessGraphInvalid("has no 'process_id'", node=node_name)
    if namespace in USER_ONLY:
        if pid in user_processes:
            return Target(pid, user_processes[pid])
        raise ProcessUnsupported(f"user-defined process '{pid}' does not exist", node=node_name)
    if namespace in PREDEFINED_ONLY:
        if pid in predefined:
            return Target(pid)
        raise ProcessUnsupported(f"process '{pid}' is not a predefined process of this back-end", node=node_name)
    if namespace not in EITHER:
        raise ProcessUnsupported(f"process '{pid}' in namespace {str(namespace)[:60]!r} is not available: only the "
                                 "predefined and 'user' namespaces are supported", node=node_name)
    if pid in predefined:
        return Target(pid)
    if pid in user_processes:
        return Target(pid, user_processes[pid])
    raise ProcessUnsupported(f"process '{pid}' is not supported by this back-end", node=node_name)


def is_callback(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("process_graph"), dict)


def bind(value: Any, env: Mapping[str, Any]) -> Any:
    """``value`` with ``{"from_parameter": name}`` replaced from ``env`` (:data:`UNRESOLVED` when absent)
    and ``{"from_node": ...}`` replaced by :data:`UNRESOLVED`; callbacks are left as they are."""
    if isinstance(value, dict):
        if set(value) == {"from_parameter"}:
            name = value["from_parameter"]
            return env.get(name, UNRESOLVED) if isinstance(name, str) else UNRESOLVED
        if set(value) == {"from_node"}:
            return UNRESOLVED
        if is_callback(value):
            return value
        return {k: bind(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [bind(v, env) for v in value]
    return value


def callbacks(value: Any) -> Iterator[tuple[str, dict]]:
    """``(path, process_graph)`` of every callback in an argument value (not those nested inside them)."""
    if is_callback(value):
        yield "", value["process_graph"]
    elif isinstance(value, dict):
        for key, item in value.items():
            for path, graph in callbacks(item):
                yield f".{key}{path}", graph
    elif isinstance(value, list):
        for i, item in enumerate(value):
            for path, graph in callbacks(item):
                yield f"[{i}]{path}", graph


@dataclass(frozen=True)
class ResolvedNode:
    """One node the execution may run, with what it resolves to and its arguments as far as known."""

    label: str
    """Where it is: ``node``, ``node > callback_node``, ``node > stored_process: node`` ..."""
    node_id: str
    node: dict
    target: Target
    arguments: dict
    """The node's arguments with parameters bound (:data:`UNRESOLVED`/:data:`DEFERRED` where unknown)."""


def walk(graph: Any, predefined: Container[str], user_processes: Mapping[str, dict],
         parameters: Mapping[str, Any] | None = None, *, where: str = "") -> Iterator[ResolvedNode]:
    """Every node reachable from ``graph`` as the engine would run it, each resolved by :func:`resolve_node`.

    Callbacks see the enclosing parameters plus their parent's ``context`` argument; a stored process sees
    its parameter defaults overridden by the call's arguments. A stored process already being walked (a
    recursive call) is not walked again. Raises ``ProcessUnsupported``/``ProcessGraphInvalid`` as the engine
    would, and ``ProcessGraphInvalid`` beyond :data:`MAX_NESTING` levels.
    """
    yield from _walk(graph, predefined, user_processes, dict(parameters or {}), where, (), 0)


def _walk(graph: Any, predefined, user_processes, env: dict, where: str, stack: tuple[str, ...],
          depth: int) -> Iterator[ResolvedNode]:
    if depth > MAX_NESTING:
        raise ProcessGraphInvalid(f"callbacks and process calls are nested more than {MAX_NESTING} levels deep")
    if not isinstance(graph, dict) or not graph:
        raise ProcessGraphInvalid(f"the process graph{' of ' + where.rstrip(': >') if where else ''} has no nodes")
    for node_id, node in graph.items():
        label = f"{where}{node_id}"
        target = resolve_node(node, predefined, user_processes, node_name=label)
        raw_args = node.get("arguments", {})
        if not isinstance(raw_args, dict):
            raise ProcessGraphInvalid("'arguments' must be an object", node=label)
        args = {name: bind(value, env) for name, value in raw_args.items()}
        yield ResolvedNode(label, str(node_id), node, target, args)
        callback_env = {**env, "context": args.get("context")}  # absent: the parameter's default, null
        for value in raw_args.values():
            for _, child in callbacks(value):
                yield from _walk(child, predefined, user_processes, callback_env, f"{label} > ", stack, depth + 1)
        if target.user_process is not None and target.process_id not in stack:
            spec = target.user_process
            declared = spec.get("parameters")
            udp_env = {p["name"]: p["default"] for p in (declared if isinstance(declared, list) else [])
                       if isinstance(p, dict) and isinstance(p.get("name"), str) and "default" in p}
            udp_env.update(args)
            yield from _walk(spec.get("process_graph"), predefined, user_processes, udp_env,
                             f"{label} > {target.process_id}: ", stack + (target.process_id,), depth + 1)


def stored_process_parameters(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The environment a stored process is checked in when it is stored: defaults where declared, every
    other declared parameter :data:`DEFERRED` (its value is checked with each call)."""
    env: dict[str, Any] = {}
    declared = spec.get("parameters")
    for p in declared if isinstance(declared, list) else []:
        if isinstance(p, dict) and isinstance(p.get("name"), str):
            env[p["name"]] = p.get("default", DEFERRED)
    return env
