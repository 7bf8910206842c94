"""Which TerraMind weights a process graph may ask for, checked on the JSON before any work starts.

``terramind_embed`` / ``terramind_generate`` take a ``weights`` argument, ``terramind_predict`` a ``checkpoint``
and a ``config`` (paths, URLs or hub repo ids), and the TerraMind UDFs read the same keys from their
``context``; the inference layer loads any local path and downloads any URL given
there. So that an API user cannot make the server fetch URLs or read its files, every such value must
match the ``allowed_weights`` setting: plain names (``hub``, ``random``), absolute local paths (a file, or
a folder whose files are allowed) and URL prefixes (``https://host/dir/``: every URL under it).

Values are resolved the way the engine resolves them (``processes.resolve.walk``, the engine's own rule):
``{"from_parameter": ...}`` through the arguments of stored-process calls (and their parameter defaults),
under every namespace, and through a callback's ``context`` (the parent node's ``context`` argument); a
value computed by another node (``from_node``) cannot be checked and is refused. A missing ``weights``
argument of a ``terramind_*`` node means ``"hub"`` (the default). The engine checks the value again where
it loads the weights (``Policy.allowed_weights``).
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any

from terramind_openeo.processes.policy import weights_allowed
from terramind_openeo.processes.resolve import DEFERRED, UNRESOLVED, ResolvedNode, walk

from .errors import ProcessParameterInvalid

__all__ = ["WeightsNotAllowed", "check_resolved_weights", "check_weights", "weights_allowed"]

TERRAMIND_PROCESSES = ("terramind_embed", "terramind_generate")
#: ``terramind_predict`` reads a fine-tuned checkpoint and its config (path, URL or hub repo id): both checked.
PREDICT_PROCESS = "terramind_predict"
_SOURCE_KEYS = ("weights", "checkpoint", "config")
DEFAULT_WEIGHTS = "hub"


class WeightsNotAllowed(ProcessParameterInvalid):
    """A node asks for TerraMind weights that ``allowed_weights`` does not list."""

    default_message = "The requested TerraMind weights are not allowed on this back-end."


class _AllButStored:
    """Predefined process ids when the caller does not give them: every id that is not a stored process."""

    def __init__(self, user_processes: dict[str, dict]):
        self.user_processes = user_processes

    def __contains__(self, pid: object) -> bool:
        return pid not in self.user_processes


def _message(label: str, pid: str, argument: str, reason: str) -> str:
    return (f"The value passed for parameter '{argument}' in process '{pid}' (node '{label}') is invalid: "
            f"{reason}.")


def _verify(value: Any, allowed: tuple[str, ...], label: str, pid: str, argument: str) -> None:
    if value is DEFERRED:  # a parameter of a process being stored: checked with each call
        return
    if value is UNRESOLVED or not isinstance(value, str):
        raise WeightsNotAllowed(_message(label, pid, argument, "it must be a literal string (or a parameter set "
                                         "to one) so that it can be checked"))
    if not weights_allowed(value, allowed):
        raise WeightsNotAllowed(_message(label, pid, argument, f"weights {value!r} are not allowed on this "
                                         f"back-end (allowed: {', '.join(allowed) or 'none'})"))


def check_resolved_weights(nodes: Iterable[ResolvedNode], allowed: tuple[str, ...]) -> None:
    """Raise :class:`WeightsNotAllowed` when a resolved node asks for weights outside ``allowed``."""
    allowed = tuple(allowed)
    for n in nodes:
        pid = n.target.process_id
        if not n.target.predefined:
            continue
        if pid in TERRAMIND_PROCESSES:
            _verify(n.arguments.get("weights", DEFAULT_WEIGHTS), allowed, n.label, pid, "weights")
        if pid == PREDICT_PROCESS:
            _verify(n.arguments.get("checkpoint", UNRESOLVED), allowed, n.label, pid, "checkpoint")
            config = n.arguments.get("config")
            if config is not None and not isinstance(config, dict):  # an inline config object reads no file
                _verify(config, allowed, n.label, pid, "config")
        if pid == "run_udf" and "context" in n.arguments:
            context = n.arguments["context"]
            if context is UNRESOLVED:
                raise WeightsNotAllowed(_message(n.label, pid, "context", "it refers to a value that cannot be "
                                                 "checked before execution"))
            if isinstance(context, dict):
                for key in _SOURCE_KEYS:  # a UDF's model files (terramind_predict.py: checkpoint, config)
                    value = context.get(key)
                    if key in context and (value is not None or key == "weights") \
                            and not (key == "config" and isinstance(value, dict)):
                        _verify(value, allowed, n.label, pid, f"context.{key}")


def check_weights(graph: dict, allowed: tuple[str, ...], user_processes: dict[str, dict],
                  parameters: dict[str, Any] | None = None, predefined: Container[str] | None = None) -> None:
    """Raise :class:`WeightsNotAllowed` when any node the engine would run asks for weights outside
    ``allowed`` (the graph walked by ``processes.resolve.walk``, stored processes and callbacks included)."""
    predefined = predefined if predefined is not None else _AllButStored(user_processes)
    nodes = list(walk(graph, predefined, user_processes, parameters))
    check_resolved_weights(nodes, allowed)
