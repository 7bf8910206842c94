"""Process-graph validation and evaluation.

The graph is checked whole before anything runs (structure, unknown processes, cycles, missing or
unknown arguments, literal argument types), then evaluated node by node into lazy dask-backed cubes.

Why not ``OpenEOProcessGraph.to_callable`` of openeo-pg-parser-networkx: it caches node results across
calls, so a callback called once per chunk or per label would silently get its first result back, and
it ignores ``namespace``. Here a callback is a fresh evaluation of its child graph on every call, with
the parameters its caller passes (``positional_parameters``/``named_parameters``, the convention of
openeo-processes-dask). Literal arguments of standard processes are still typed by pg-parser's pydantic
model (``BoundingBox``, ``TemporalInterval`` ...), which is what openeo-processes-dask expects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from terramind_openeo.processes import context as _ctx
from terramind_openeo.processes.errors import (
    OpenEOError,
    ProcessGraphInvalid,
    ProcessGraphParameterMissing,
    ProcessParameterInvalid,
    ProcessParameterRequired,
    ProcessParameterUnsupported,
    ProcessUnsupported,
    to_openeo_error,
)
from terramind_openeo.processes.registry import ProcessDef, get_process, registry
from terramind_openeo.processes.resolve import MAX_NESTING, resolve_node

logger = logging.getLogger(__name__)

# Keyword arguments that openeo-processes-dask passes into callbacks besides the parameters.
CALLBACK_SPECIALS = ("axis", "keepdims", "source_transposed_axis", "context", "dim_labels")
_JSON_TYPES: dict[str, type | tuple[type, ...]] = {"string": str, "number": (int, float), "integer": int, "boolean": bool,
               "array": list, "object": dict, "null": type(None)}


def flat_graph(pg: Any) -> dict:
    """The node dict of a process graph given as ``{"process_graph": {...}}`` or as the nodes."""
    if not isinstance(pg, dict):
        raise ProcessGraphInvalid(f"a process graph must be a JSON object, got {type(pg).__name__}")
    nodes = pg.get("process_graph", pg)
    if not isinstance(nodes, dict) or not nodes:
        raise ProcessGraphInvalid("the process graph has no nodes")
    return nodes


def _is_ref(value: Any, key: str) -> bool:
    return isinstance(value, dict) and key in value and len(value) == 1


def _is_callback(value: Any) -> bool:
    return isinstance(value, dict) and "process_graph" in value and isinstance(value["process_graph"], dict)


def _node_refs(value: Any) -> list[str]:
    """``from_node`` names used in an argument (not inside child process graphs)."""
    if _is_ref(value, "from_node"):
        return [value["from_node"]]
    if _is_callback(value):
        return []
    if isinstance(value, dict):
        return [r for v in value.values() for r in _node_refs(v)]
    if isinstance(value, list):
        return [r for v in value for r in _node_refs(v)]
    return []


def _has_refs(value: Any) -> bool:
    if isinstance(value, dict):
        if "from_node" in value or "from_parameter" in value or _is_callback(value):
            return True
        return any(_has_refs(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_refs(v) for v in value)
    return False


def _schema_accepts(schema: Any, value: Any) -> bool:
    """Loose JSON-schema type check of a literal argument against a spec schema."""
    alternatives = schema if isinstance(schema, list) else [schema]
    for alt in alternatives:
        if not isinstance(alt, dict):
            return True
        types = alt.get("type")
        if types is None:
            if "anyOf" in alt or "oneOf" in alt:
                if _schema_accepts(alt.get("anyOf", alt.get("oneOf")), value):
                    return True
                continue
            return True
        for t in types if isinstance(types, list) else [types]:
            py = _JSON_TYPES.get(t)
            if py is None:
                return True
            if isinstance(value, bool) and t in ("number", "integer"):
                continue
            if t == "integer" and isinstance(value, float) and value.is_integer():
                return True
            if isinstance(value, py):
                return True
    return False


def topological_order(nodes: dict, where: str = "") -> list[str]:
    """Node names in dependency order; raises on dangling references and cycles."""
    state: dict[str, int] = {}
    order: list[str] = []

    def visit(name: str, stack: list[str]) -> None:
        if state.get(name) == 2:
            return
        if state.get(name) == 1:
            cycle = " -> ".join(stack[stack.index(name):] + [name])
            raise ProcessGraphInvalid(f"the process graph{where} has a cycle: {cycle}")
        state[name] = 1
        for arg_name, arg in nodes[name].get("arguments", {}).items():
            for ref in _node_refs(arg):
                if ref not in nodes:
                    raise ProcessGraphInvalid(f"refers to unknown node '{ref}'", node=name, argument=arg_name)
                visit(ref, stack + [name])
        state[name] = 2
        order.append(name)

    for name in nodes:
        visit(name, [])
    return order


class GraphEvaluator:
    """Validates and evaluates process graphs against the registry and user-defined processes."""

    def __init__(self, user_processes: dict[str, dict] | None = None):
        self.user_processes = dict(user_processes or {})
        self._calls = 0  # user-defined processes being evaluated, one inside the other

    # ---------------------------------------------------------------- lookup
    def resolve(self, node_name: str, node: dict) -> ProcessDef | dict:
        """The process ``node`` runs: the rule of ``resolve.resolve_node``, which the back-end's policy
        checks apply to the same graph, so what they check is what runs."""
        target = resolve_node(node, registry(), self.user_processes, node_name=node_name)
        if target.user_process is not None:
            return target.user_process
        process = get_process(target.process_id)
        if process is None:  # resolve_node found it in the registry; a registry without it is a bug
            raise ProcessUnsupported(f"process '{target.process_id}' is not available", node=node_name)
        return process

    # ---------------------------------------------------------------- validation
    def validate(self, pg: dict, parameters: set[str] | None = None, where: str = "") -> None:
        nodes = flat_graph(pg)
        for name, node in nodes.items():
            if not isinstance(node, dict):
                raise ProcessGraphInvalid("is not a JSON object", node=name)
            if not isinstance(node.get("arguments", {}), dict):
                raise ProcessGraphInvalid("'arguments' must be an object", node=name)
        results = [n for n, node in nodes.items() if node.get("result")]
        if len(results) != 1:
            raise ProcessGraphInvalid(f"the process graph{where} must have exactly one result node, "
                                      f"found {len(results)}")
        topological_order(nodes, where)
        for name, node in nodes.items():
            self._validate_node(name, node, parameters)

    def _validate_node(self, name: str, node: dict, parameters: set[str] | None) -> None:
        target = self.resolve(name, node)
        args = node.get("arguments", {})
        spec_params = (target.spec if isinstance(target, ProcessDef) else target).get("parameters", [])
        by_name = {p["name"]: p for p in spec_params}
        for arg_name in args:
            if arg_name not in by_name:
                raise ProcessParameterUnsupported(
                    f"process '{node['process_id']}' has no parameter '{arg_name}' "
                    f"(parameters: {', '.join(by_name) or 'none'})", node=name, argument=arg_name)
        for p in spec_params:
            if not p.get("optional", False) and "default" not in p and p["name"] not in args:
                raise ProcessParameterRequired(
                    f"process '{node['process_id']}' requires argument '{p['name']}'", node=name, argument=p["name"])
        for arg_name, value in args.items():
            schema = by_name[arg_name].get("schema", {})
            if _is_callback(value):
                cb_params = self._callback_parameter_names(schema)
                scope = (parameters or set()) | cb_params if parameters is not None else None
                self.validate(value, scope, where=f" of node '{name}' argument '{arg_name}'")
            elif not _has_refs(value) and not _schema_accepts(schema, value):
                raise ProcessParameterInvalid(
                    f"value {value!r:.80} does not match the expected type of '{arg_name}'",
                    node=name, argument=arg_name)
            self._check_parameter_refs(name, arg_name, value, parameters)

    @staticmethod
    def _callback_parameter_names(schema: Any) -> set[str]:
        names: set[str] = set()
        for alt in schema if isinstance(schema, list) else [schema]:
            if isinstance(alt, dict):
                names.update(p["name"] for p in alt.get("parameters", []) if isinstance(p, dict))
        return names

    def _check_parameter_refs(self, node: str, arg: str, value: Any, parameters: set[str] | None) -> None:
        if parameters is None or _is_callback(value):
            return
        if _is_ref(value, "from_parameter"):
            if value["from_parameter"] not in parameters:
                raise ProcessGraphParameterMissing(
                    f"parameter '{value['from_parameter']}' is not defined", node=node, argument=arg)
        elif isinstance(value, dict):
            for v in value.values():
                self._check_parameter_refs(node, arg, v, parameters)
        elif isinstance(value, list):
            for v in value:
                self._check_parameter_refs(node, arg, v, parameters)

    # ---------------------------------------------------------------- evaluation
    def evaluate(self, pg: dict, scope: dict[str, Any], specials: dict[str, Any] | None = None) -> Any:
        """Evaluate every node of ``pg`` once (in dependency order); return the result node's value."""
        nodes = flat_graph(pg)
        values: dict[str, Any] = {}
        result_name = ""
        for name in topological_order(nodes):
            node = nodes[name]
            values[name] = self._call_node(name, node, values, scope, specials or {})
            if node.get("result"):
                result_name = name
        return values[result_name]

    def _resolve_arg(self, value: Any, values: dict, scope: dict, node: str, arg: str) -> Any:
        if _is_ref(value, "from_node"):
            return values[value["from_node"]]
        if _is_ref(value, "from_parameter"):
            pname = value["from_parameter"]
            if pname not in scope:
                raise ProcessGraphParameterMissing(f"parameter '{pname}' is not defined", node=node, argument=arg)
            return scope[pname]
        if _is_callback(value):
            return self.make_callback(value, scope, f"{node}.{arg}")
        if isinstance(value, dict):
            return {k: self._resolve_arg(v, values, scope, node, arg) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve_arg(v, values, scope, node, arg) for v in value]
        return value

    def make_callback(self, child: dict, outer_scope: dict, label: str) -> Callable:
        """A callable evaluating ``child`` afresh on every call (never cached across calls).

        Called where no execution context is active (a Dask worker's thread or process), it evaluates under
        a context carrying its run's policy and log channel, never under a default (trusted) one."""
        evaluator = self
        run = _ctx._CURRENT.get()
        policy = run.policy if run is not None else None
        channel = run.log_channel if run is not None else None

        def callback(*args, positional_parameters: dict | None = None, named_parameters: dict | None = None,
                     **kwargs):
            scope = dict(outer_scope)
            scope.update(named_parameters or {})
            for pname, index in (positional_parameters or {}).items():
                scope[pname] = args[index]
            for key in [k for k in kwargs if k not in CALLBACK_SPECIALS]:  # direct keyword calls
                scope[key] = kwargs.pop(key)
            if "context" in kwargs and "context" not in scope:
                scope["context"] = kwargs["context"]
            specials = {k: v for k, v in kwargs.items() if k in CALLBACK_SPECIALS}
            if _ctx._CURRENT.get() is not None or policy is None:
                return evaluator.evaluate(child, scope, specials)
            token = _ctx.activate(_ctx.ExecutionContext(catalog=None, policy=policy, log_channel=channel or ""))
            try:
                return evaluator.evaluate(child, scope, specials)
            finally:
                _ctx.deactivate(token)

        callback.__name__ = f"callback_{label}"
        callback.process_graph = child  # type: ignore[attr-defined]  # lets apply_neighborhood find a run_udf
        callback.scope = outer_scope  # type: ignore[attr-defined]
        return callback

    def _call_node(self, name: str, node: dict, values: dict, scope: dict, specials: dict) -> Any:
        target = self.resolve(name, node)
        raw_args = node.get("arguments", {})
        kwargs = {arg: self._resolve_arg(v, values, scope, name, arg) for arg, v in raw_args.items()}
        if isinstance(target, dict):  # user-defined process: its own graph with its parameters
            sub_scope = {p["name"]: p["default"] for p in target.get("parameters", []) if "default" in p}
            sub_scope.update(kwargs)
            if self._calls >= MAX_NESTING:  # a process calling itself: an openEO error, not a RecursionError
                raise ProcessGraphInvalid(f"user-defined processes call each other more than {MAX_NESTING} "
                                          "levels deep", node=name)
            self._calls += 1
            try:
                return self.evaluate(target, sub_scope)
            finally:
                self._calls -= 1
        if target.standard:
            kwargs = {k: _typed(raw_args[k], v) for k, v in kwargs.items()}
        accepted = target.accepted_kwargs
        for key, value in specials.items():
            if key not in kwargs and (accepted is None or key in accepted):
                kwargs[key] = value
        logger.debug("running node %s (%s)", name, target.id)
        try:
            result = target.implementation(**kwargs)
            run = _ctx._CURRENT.get()
            if run is not None:
                run.check_size(result, name)  # the synchronous budget, on the lazy cube
            return _plain_scalar(result, target.spec) if target.standard else result
        except OpenEOError as exc:
            raise exc.locate(name) from None
        except Exception as exc:
            raise to_openeo_error(exc, node=name, process=target.id) from exc


def _plain_scalar(value: Any, spec: dict) -> Any:
    """0-d results as the JSON type the spec returns (openeo-processes-dask gives ``array(1.)`` for ``true``)."""
    if hasattr(value, "root") and hasattr(value.root, "isoformat"):  # pg-parser date types
        return value.root.isoformat().replace("+00:00", "Z")
    if not (isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0)):
        return value
    item = value.item()
    types = spec.get("returns", {}).get("schema", {})
    types = [t.get("type") for t in (types if isinstance(types, list) else [types]) if isinstance(t, dict)]
    flat = {x for t in types for x in (t if isinstance(t, list) else [t])}
    if flat == {"boolean"} or flat == {"boolean", "null"}:
        return None if item is None or (isinstance(item, float) and np.isnan(item)) else bool(item)
    if "integer" in flat and isinstance(item, float) and item.is_integer() and "number" not in flat:
        return int(item)
    return item


def _typed(raw: Any, value: Any) -> Any:
    """Literal JSON arguments typed as pg-parser types them (dates, intervals, bounding boxes)."""
    if _has_refs(raw) or isinstance(value, bool):
        return value
    if isinstance(value, list) and None in value and all(v is None or (isinstance(v, (int, float))
                                                                       and not isinstance(v, bool)) for v in value):
        return [np.nan if v is None else v for v in value]  # numeric arrays with no-data: NaN
    from openeo_pg_parser_networkx.pg_schema import ProcessNode

    try:
        return ProcessNode.model_validate({"process_id": "typed", "arguments": {"a": value}}, strict=True).arguments["a"]
    except Exception:  # noqa: BLE001 - leave untyped values as they are
        return value
