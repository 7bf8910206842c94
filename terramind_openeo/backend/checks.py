"""The policy checks of a process graph at the door (``POST /result``, ``/jobs``, ``/validation``, stored
processes), run on the nodes ``processes.resolve.walk`` yields - the graph exactly as the engine will run it.

Each rule lives where the engine applies it again at run time (defence in depth): UDF rights here and in
the sandbox choice, weights in ``processes.policy.weights_allowed``, URLs and paths in ``processes.urls``,
file names in ``processes.names``. Values known only at run time are checked there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from terramind_openeo.processes.errors import OpenEOError
from terramind_openeo.processes.names import check_name
from terramind_openeo.processes.resolve import DEFERRED, UNRESOLVED, ResolvedNode
from terramind_openeo.processes.urls import UrlPolicy, check_location

from .weights import check_resolved_weights

URL_ARGUMENTS = {"load_stac": ("url",), "load_url": ("url",), "load_geojson": ("url",)}
"""Predefined processes whose arguments name a location the back-end would read."""
URL_OR_ID_ARGUMENTS = {"load_ml_model": ("id",)}
"""Arguments that name a location when they look like one (a URL or an absolute path), else a job id."""


def _names_location(pid: str, argument: str, value) -> bool:
    if argument in URL_ARGUMENTS.get(pid, ()):
        return True
    return isinstance(value, str) and (value.startswith(("/", "file:")) or "://" in value)


def _known(value) -> bool:
    return value is not UNRESOLVED and value is not DEFERRED


def uses_udf(nodes: Iterable[ResolvedNode]) -> bool:
    return any(n.target.predefined and n.target.process_id == "run_udf" for n in nodes)


def check_nodes(nodes: list[ResolvedNode], *, allowed_weights: tuple[str, ...], urls: UrlPolicy,
                udf_allowed: Callable[[], None]) -> None:
    """Raise the API error of the first rule a node breaks."""
    if uses_udf(nodes):
        udf_allowed()
    check_resolved_weights(nodes, allowed_weights)
    for n in nodes:
        if not n.target.predefined:
            continue
        pid = n.target.process_id
        for argument in URL_ARGUMENTS.get(pid, ()) + URL_OR_ID_ARGUMENTS.get(pid, ()):
            value = n.arguments.get(argument)
            if _known(value) and value is not None and _names_location(pid, argument, value):
                try:
                    check_location(value, urls)
                except OpenEOError as exc:
                    if exc.node is None:
                        exc.locate(n.label)
                    raise
        if pid == "save_result":
            options = n.arguments.get("options")
            if isinstance(options, dict) and _known(options.get("filename_prefix", DEFERRED)):
                try:
                    check_name(options["filename_prefix"], "filename_prefix")
                except OpenEOError as exc:
                    exc.locate(n.label)
                    raise
