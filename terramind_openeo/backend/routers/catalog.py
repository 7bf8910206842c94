"""``/collections`` (STAC from the engine's catalog) and ``/processes`` (standard + TerraMind specs)."""

from __future__ import annotations

import copy

from fastapi import APIRouter, Request

from ..context import STAC_VERSION, BackendState
from ..errors import CollectionNotFound
from .general import TAG


def stac_collection(state: BackendState, request: Request, collection: dict) -> dict:
    """The catalog's STAC dict with the fields and links a STAC/openEO client expects."""
    out = copy.deepcopy(collection)
    out.setdefault("type", "Collection")
    out.setdefault("stac_version", STAC_VERSION)
    out.setdefault("description", out.get("title") or out["id"])
    out.setdefault("license", "proprietary")
    out.setdefault("extent", {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                              "temporal": {"interval": [["1970-01-01T00:00:00Z", None]]}})
    if isinstance(out.get("summaries"), dict):  # STAC: a summary is a non-empty list, a range or a schema
        out["summaries"] = {k: v for k, v in out["summaries"].items() if v not in ([], {}, None)}
    api = state.api_url(request)
    own = [link for link in out.get("links", []) if link.get("rel") not in ("self", "root", "parent")]
    out["links"] = own + [
        {"rel": "self", "href": f"{api}/collections/{out['id']}", "type": "application/json"},
        {"rel": "root", "href": f"{api}/", "type": "application/json"},
        {"rel": "parent", "href": f"{api}/", "type": "application/json"},
    ]
    return out


def catalog_router(state: BackendState) -> APIRouter:
    router = APIRouter(prefix=state.settings.api_prefix, tags=[TAG])

    @router.get("/collections")
    def collections(request: Request) -> dict:
        api = state.api_url(request)
        return {"collections": [stac_collection(state, request, c) for c in state.engine.collections()],
                "links": [{"rel": "self", "href": f"{api}/collections"},
                          {"rel": "root", "href": f"{api}/"}]}

    @router.get("/collections/{collection_id}")
    def collection(request: Request, collection_id: str) -> dict:
        for c in state.engine.collections():
            if c["id"] == collection_id:
                return stac_collection(state, request, c)
        raise CollectionNotFound(f"Collection '{collection_id}' does not exist.")

    @router.get("/processes")
    def processes(request: Request) -> dict:
        return {"processes": state.engine.process_specs(),
                "links": [{"rel": "self", "href": state.api_url(request, "/processes")}]}

    return router
