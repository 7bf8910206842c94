"""``/collections`` (STAC from the engine's catalog, with Items) and ``/processes`` (standard + TerraMind specs)."""

from __future__ import annotations

import copy

from fastapi import APIRouter, Query, Request

from ..context import STAC_VERSION, BackendState
from ..errors import CollectionNotFound, NotFound
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
        {"rel": "items", "href": f"{api}/collections/{out['id']}/items", "type": "application/geo+json",
         "title": "the collection's items (a site's or a date's footprint)"},
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

    def _items(request: Request, collection_id: str) -> tuple[dict, list[dict]]:
        """The collection and its Items with their links; 404 for an unknown collection."""
        found = next((c for c in state.engine.collections() if c["id"] == collection_id), None)
        lister = getattr(state.engine, "collection_items", None)
        if found is None or lister is None:
            raise CollectionNotFound(f"Collection '{collection_id}' does not exist.")
        api = state.api_url(request)
        out = []
        for item in lister(collection_id):
            item = copy.deepcopy(item)
            item["links"] = [
                {"rel": "self", "href": f"{api}/collections/{collection_id}/items/{item['id']}",
                 "type": "application/geo+json"},
                {"rel": "collection", "href": f"{api}/collections/{collection_id}", "type": "application/json"},
                {"rel": "parent", "href": f"{api}/collections/{collection_id}", "type": "application/json"},
                {"rel": "root", "href": f"{api}/", "type": "application/json"}]
            out.append(item)
        return found, out

    @router.get("/collections/{collection_id}/items")
    def collection_items(request: Request, collection_id: str, limit: int = Query(100, ge=1, le=1000),
                         offset: int = Query(0, ge=0)) -> dict:
        """The collection's STAC Items (each site's footprint and date), ``limit`` at a time."""
        _, items = _items(request, collection_id)
        api = state.api_url(request)
        page = items[offset:offset + limit]
        base = f"{api}/collections/{collection_id}/items"
        links = [{"rel": "self", "href": f"{base}?limit={limit}&offset={offset}", "type": "application/geo+json"},
                 {"rel": "collection", "href": f"{api}/collections/{collection_id}", "type": "application/json"},
                 {"rel": "root", "href": f"{api}/", "type": "application/json"}]
        if offset + limit < len(items):
            links.append({"rel": "next", "href": f"{base}?limit={limit}&offset={offset + limit}",
                          "type": "application/geo+json"})
        return {"type": "FeatureCollection", "features": page, "links": links, "numberMatched": len(items),
                "numberReturned": len(page)}

    @router.get("/collections/{collection_id}/items/{item_id}")
    def collection_item(request: Request, collection_id: str, item_id: str) -> dict:
        _, items = _items(request, collection_id)
        for item in items:
            if item["id"] == item_id:
                return item
        raise NotFound(f"Item '{item_id}' does not exist in collection '{collection_id}'.")

    @router.get("/processes")
    def processes(request: Request) -> dict:
        return {"processes": state.engine.process_specs(),
                "links": [{"rel": "self", "href": state.api_url(request, "/processes")}]}

    return router
