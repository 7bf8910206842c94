"""``/process_graphs`` (user-defined processes, one set per user) and ``/validation``."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response

from ..auth import User
from ..context import BackendState
from ..errors import BadRequest, ProcessGraphNotFound
from ..graphs import PROCESS_ID, check_shape
from ..web import json_object, read_json
from .general import TAG

UDP_FIELDS = ("id", "summary", "description", "categories", "parameters", "returns", "deprecated",
              "experimental", "exceptions", "examples", "links", "process_graph")


def _check_id(process_graph_id: str) -> None:
    if not PROCESS_ID.match(process_graph_id):
        raise BadRequest(f"Process id {process_graph_id!r} is invalid: use letters, digits and '_' only.",
                         code="ProcessGraphIdInvalid")


def user_processes_router(state: BackendState) -> APIRouter:
    router = APIRouter(prefix=state.settings.api_prefix, tags=[TAG])
    max_bytes = state.settings.max_request_bytes

    @router.get("/process_graphs")
    def list_udps(request: Request, user: User = Depends(state.user)) -> dict:
        summaries = [{k: v for k, v in spec.items() if k != "process_graph"}
                     for spec in state.store.list_udps(user.user_id)]
        return {"processes": summaries, "links": [{"rel": "self", "href": state.api_url(request, "/process_graphs")}]}

    @router.get("/process_graphs/{process_graph_id}")
    def get_udp(process_graph_id: str, user: User = Depends(state.user)) -> dict:
        spec = state.store.get_udp(user.user_id, process_graph_id)
        if spec is None:
            raise ProcessGraphNotFound(f"User-defined process '{process_graph_id}' does not exist.")
        return spec

    @router.put("/process_graphs/{process_graph_id}")
    async def put_udp(request: Request, process_graph_id: str, user: User = Depends(state.user)) -> Response:
        _check_id(process_graph_id)
        body = json_object(await read_json(request, max_bytes))
        check_shape(body.get("process_graph"))
        spec = {k: body[k] for k in UDP_FIELDS if k in body}
        spec["id"] = process_graph_id
        spec.setdefault("parameters", [])
        state.check_stored_process(user, process_graph_id, spec)  # and again whenever it runs
        state.store.put_udp(user.user_id, process_graph_id, spec)
        return Response(status_code=200)

    @router.delete("/process_graphs/{process_graph_id}")
    def delete_udp(process_graph_id: str, user: User = Depends(state.user)) -> Response:
        if not state.store.delete_udp(user.user_id, process_graph_id):
            raise ProcessGraphNotFound(f"User-defined process '{process_graph_id}' does not exist.")
        return Response(status_code=204)

    @router.post("/validation")
    async def validation(request: Request, user: User = Depends(state.user)) -> dict:
        body = json_object(await read_json(request, max_bytes))
        errors = state.validate(user, body.get("process_graph"))
        return {"errors": [{"code": e.code, "message": e.message} for e in errors]}

    return router
