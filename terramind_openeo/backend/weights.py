"""Which TerraMind weights a process graph may ask for, checked on the JSON before any work starts.

``terramind_embed`` / ``terramind_generate`` take a ``weights`` argument, and the TerraMind UDFs read
``weights`` from their ``context``; the inference layer loads any local path and downloads any URL given
there. So that an API user cannot make the server fetch URLs or read its files, every such value must
match the ``allowed_weights`` setting: plain names (``hub``, ``random``), absolute local paths (a file, or
a folder whose files are allowed) and URL prefixes (``https://host/dir/``: every URL under it).

Values are resolved the way the engine resolves them: ``{"from_parameter": ...}`` through the arguments of
user-defined process calls (and their parameter defaults) and through a callback's ``context`` (the
parent node's ``context`` argument); a value computed by another node (``from_node``) cannot be checked
and is refused. A missing ``weights`` argument of a ``terramind_*`` node means ``"hub"`` (the default).
"""

from __future__ import annotations

import posixpath
from typing import Any
from urllib.parse import urlparse

from .errors import OpenEOApiError
from .graphs import callback_graphs

TERRAMIND_PROCESSES = ("terramind_embed", "terramind_generate")
DEFAULT_WEIGHTS = "hub"
_UNRESOLVED = object()


class WeightsNotAllowed(OpenEOApiError):
    """A node asks for TerraMind weights that ``allowed_weights`` does not list."""

    code = "ProcessParameterInvalid"
    status = 400
    default_message = "The requested TerraMind weights are not allowed on this back-end."


def weights_allowed(value: str, allowed: tuple[str, ...]) -> bool:
    """True when ``value`` is one of ``allowed``: a name, a path inside an allowed absolute path, a URL
    under an allowed URL prefix (ending in ``/``) or equal to an allowed URL."""
    if not isinstance(value, str) or not value or "\x00" in value:
        return False
    if value in allowed:
        return True
    scheme = urlparse(value).scheme
    if scheme in ("http", "https"):
        if ".." in urlparse(value).path.split("/"):
            return False
        return any(a.endswith("/") and urlparse(a).scheme in ("http", "https") and value.startswith(a)
                   for a in allowed)
    if scheme == "file":
        value = urlparse(value).path
    if not value.startswith("/"):
        return False
    path = posixpath.normpath(value)
    for entry in allowed:
        if not entry.startswith("/"):
            continue
        root = posixpath.normpath(entry)
        if path == root or path.startswith(root.rstrip("/") + "/"):
            return True
    return False


def _resolve(value: Any, env: dict[str, Any]) -> Any:
    """``value`` with parameter references replaced from ``env`` (``_UNRESOLVED`` when one cannot be)."""
    if isinstance(value, dict):
        if set(value) == {"from_parameter"}:
            name = value["from_parameter"]
            return env.get(name, _UNRESOLVED) if isinstance(name, str) else _UNRESOLVED
        if "from_node" in value and len(value) == 1:
            return _UNRESOLVED
        if "process_graph" in value:
            return value
        return {k: _resolve(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, env) for v in value]
    return value


class WeightsChecker:
    """Walks a graph, its callbacks and the user-defined processes it calls; raises on the first bad value."""

    def __init__(self, allowed: tuple[str, ...], user_processes: dict[str, dict]):
        self.allowed = tuple(allowed)
        self.user_processes = user_processes
        self._stack: list[str] = []

    def check(self, graph: dict, env: dict[str, Any] | None = None, where: str = "") -> None:
        env = dict(env or {})
        for node_id, node in graph.items():
            if not isinstance(node, dict):
                continue
            label = f"{where}{node_id}"
            pid = node.get("process_id")
            if not isinstance(pid, str):
                continue
            args = node.get("arguments") if isinstance(node.get("arguments"), dict) else {}
            if pid in TERRAMIND_PROCESSES:
                value = _resolve(args["weights"], env) if "weights" in args else DEFAULT_WEIGHTS
                self._verify(value, label, pid, "weights")
            if pid == "run_udf" and "context" in args:
                context = _resolve(args["context"], env)
                if context is _UNRESOLVED:
                    raise WeightsNotAllowed(self._message(label, pid, "context", "it refers to a value that "
                                                          "cannot be checked before execution"))
                if isinstance(context, dict) and "weights" in context:
                    self._verify(context["weights"], label, pid, "context.weights")
            callback_env = {**env, "context": _resolve(args.get("context"), env)}
            for sub in callback_graphs(args):
                self.check(sub, callback_env, where=f"{label} > ")
            if (pid in self.user_processes and node.get("namespace") in (None, "user")
                    and pid not in TERRAMIND_PROCESSES and pid not in self._stack):
                self._check_udp(pid, args, env, label)

    def _check_udp(self, pid: str, args: dict, env: dict[str, Any], label: str) -> None:
        spec = self.user_processes[pid]
        graph = spec.get("process_graph")
        if not isinstance(graph, dict):
            return
        udp_env: dict[str, Any] = {}
        for param in spec.get("parameters") or []:
            if isinstance(param, dict) and "name" in param and "default" in param:
                udp_env[param["name"]] = param["default"]
        udp_env.update({name: _resolve(value, env) for name, value in args.items()})
        self._stack.append(pid)
        try:
            self.check(graph, udp_env, where=f"{label} > {pid}: ")
        finally:
            self._stack.pop()

    def _verify(self, value: Any, label: str, pid: str, argument: str) -> None:
        if value is _UNRESOLVED or not isinstance(value, str):
            raise WeightsNotAllowed(self._message(label, pid, argument, "it must be a literal string (or a "
                                                  "parameter set to one) so that it can be checked"))
        if not weights_allowed(value, self.allowed):
            raise WeightsNotAllowed(self._message(
                label, pid, argument, f"weights {value!r} are not allowed on this back-end "
                f"(allowed: {', '.join(self.allowed) or 'none'})"))

    @staticmethod
    def _message(label: str, pid: str, argument: str, reason: str) -> str:
        return (f"The value passed for parameter '{argument}' in process '{pid}' (node '{label}') is invalid: "
                f"{reason}.")


def check_weights(graph: dict, allowed: tuple[str, ...], user_processes: dict[str, dict],
                  parameters: dict[str, Any] | None = None) -> None:
    """Raise :class:`WeightsNotAllowed` when any node asks for weights outside ``allowed``."""
    WeightsChecker(allowed, user_processes).check(graph, parameters)
