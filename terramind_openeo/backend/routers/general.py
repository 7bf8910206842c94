"""Capabilities, well-known discovery, conformance, file formats, UDF runtimes, service types."""

from __future__ import annotations

import importlib.metadata
import platform
import re

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute

from terramind_openeo import __version__

from ..context import API_VERSION, STAC_VERSION, BackendState

TAG = "openeo"
CONFORMANCE = [
    f"https://api.openeo.org/{API_VERSION}",
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/collections",
]
UDF_LIBRARIES = ("torch", "terramind-openeo", "numpy", "xarray", "openeo", "dask", "rioxarray")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def endpoints(request: Request, prefix: str) -> list[dict]:
    """The API paths and methods this app answers (routes tagged ``openeo``), as openEO writes them."""
    found: dict[str, set[str]] = {}
    for route in (r for router in request.app.state.routers for r in router.routes):
        if isinstance(route, APIRoute) and TAG in (route.tags or []) and route.path.startswith(prefix):
            path = re.sub(r"\{(\w+)(:path)?\}", r"{\1}", route.path[len(prefix):]) or "/"
            found.setdefault(path, set()).update(m for m in route.methods or () if m not in ("HEAD", "OPTIONS"))
    return [{"path": p, "methods": sorted(m)} for p, m in sorted(found.items())]


def udf_runtimes() -> dict:
    python = platform.python_version()
    short = ".".join(python.split(".")[:2])
    libraries = {name: {"version": v} for name in UDF_LIBRARIES if (v := _version(name))}
    return {"Python": {
        "title": "Python", "description": "Python UDFs: apply_datacube / apply_timeseries entry points "
                                         "(openeo.udf), with TerraMind inference available.",
        "type": "language", "default": "3",
        "versions": {short: {"libraries": libraries}, "3": {"libraries": libraries}},
    }}


def general_router(state: BackendState) -> APIRouter:
    settings = state.settings
    prefix = settings.api_prefix
    router = APIRouter()

    @router.get("/.well-known/openeo")
    def well_known(request: Request) -> dict:
        return {"versions": [{"url": state.api_url(request, "/"), "api_version": API_VERSION,
                              "production": False}]}

    @router.get(prefix or "/", tags=[TAG])
    def capabilities(request: Request) -> dict:
        api = state.api_url(request)
        return {
            "api_version": API_VERSION, "backend_version": __version__, "stac_version": STAC_VERSION,
            "type": "Catalog", "id": "terramind-openeo", "title": settings.title,
            "description": settings.description, "production": False,
            "endpoints": endpoints(request, prefix),
            "conformsTo": CONFORMANCE,
            "links": [
                {"rel": "self", "href": api + "/", "type": "application/json"},
                {"rel": "version-history", "href": state.api_url(request, "").rsplit(prefix, 1)[0]
                 + "/.well-known/openeo", "type": "application/json"},
                {"rel": "data", "href": api + "/collections", "type": "application/json"},
                {"rel": "conformance", "href": api + "/conformance", "type": "application/json"},
            ],
        }

    @router.get(prefix + "/conformance", tags=[TAG])
    def conformance() -> dict:
        return {"conformsTo": CONFORMANCE}

    @router.get(prefix + "/file_formats", tags=[TAG])
    def file_formats() -> dict:
        return state.engine.file_formats()

    @router.get(prefix + "/udf_runtimes", tags=[TAG])
    def runtimes() -> dict:
        return udf_runtimes()

    @router.get(prefix + "/service_types", tags=[TAG])
    def service_types() -> dict:
        return {}

    return router
