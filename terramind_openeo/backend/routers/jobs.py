"""``/jobs``: create, list, describe, update, delete, estimate, logs, start/cancel and results of batch jobs."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from ..auth import User
from ..context import STAC_VERSION, BackendState
from ..errors import (
    BadRequest,
    JobLocked,
    JobNotFinished,
    JobNotFound,
    QuotaExceeded,
    ResultsExpired,
    TooManyJobs,
)
from ..graphs import process_graph_of
from ..store import LOG_LEVELS, Job
from ..web import json_object, media_type, read_json
from .general import TAG

ASSET_FIELDS = ("proj:epsg", "proj:shape", "eo:bands", "datetime", "start_datetime", "end_datetime")
# what the engine's assets say about their own values (class names and colours of a class map)
ASSET_OWN_FIELDS = ("classification:classes", "raster:bands")
CLASSIFICATION_EXT = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"
EDITABLE = ("title", "description", "plan", "budget", "log_level")


def results_bytes(state: BackendState, owner: str) -> int:
    """Bytes of the published results of ``owner``'s jobs."""
    total = 0
    for job in state.store.list_jobs(owner):
        folder = state.settings.jobs_dir / job.id / "results"
        if job.status == "finished" and folder.is_dir():
            total += sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and not f.is_symlink())
    return total


def job_summary(job: Job) -> dict:
    out: dict[str, Any] = {"id": job.id, "status": job.status, "created": job.created, "updated": job.updated}
    for key in ("title", "description", "plan", "budget"):
        if getattr(job, key) is not None:
            out[key] = getattr(job, key)
    if job.progress is not None:
        out["progress"] = job.progress
    out["costs"] = 0
    if job.usage:
        out["usage"] = job.usage
    return out


def job_metadata(job: Job) -> dict:
    return {**job_summary(job), "process": job.process, "log_level": job.log_level}


MAX_TEXT = 10_000


def job_fields(body: dict) -> dict:
    """The editable job fields of a request body, each checked for its type (400 naming the field)."""
    out = {}
    for key in ("title", "description", "plan"):
        if key in body:
            value = body[key]
            if value is not None and not isinstance(value, str):
                raise BadRequest(f"'{key}' must be a string or null, not {type(value).__name__}.")
            if isinstance(value, str) and len(value) > MAX_TEXT:
                raise BadRequest(f"'{key}' is longer than {MAX_TEXT} characters.")
            out[key] = value
    if "budget" in body:
        value = body["budget"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise BadRequest(f"'budget' must be a number >= 0 or null, not {str(value)[:40]!r}.")
        out["budget"] = value
    if "log_level" in body:
        out["log_level"] = _log_level(body["log_level"])
    return out


def _log_level(value) -> str:
    if value is None:
        return "debug"
    if value not in LOG_LEVELS:
        raise BadRequest(f"log_level must be one of {list(LOG_LEVELS)}, not {value!r}.")
    return value


def results_document(state: BackendState, request: Request, job: Job) -> dict:
    info = job.stac or {}
    engine_stac = dict(info.get("stac") or {})
    expires = int(time.time()) + state.settings.download_link_ttl_s
    item_props = {}
    for item in engine_stac.get("features", []) or []:  # per-file metadata of the engine's items
        for asset in (item.get("assets") or {}).values():
            props = item.get("properties", {})
            item_props[asset.get("href")] = {k: props[k] for k in ASSET_FIELDS if props.get(k) is not None}
            item_props[asset.get("href")].update({k: asset[k] for k in ASSET_OWN_FIELDS if asset.get(k) is not None})
    assets = {}
    for name in info.get("files", []):
        signature = state.signer.sign(job.id, name, expires)
        href = state.api_url(request, f"/download/{job.id}/{expires}/{signature}/{name}")
        assets[name] = {"href": href, "type": media_type(name), "roles": ["data"], "title": Path(name).name,
                        **item_props.get(name, {})}
    extent = engine_stac.get("extent") or {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                                            "temporal": {"interval": [[job.created, job.finished or job.updated]]}}
    doc = {k: v for k, v in engine_stac.items() if k not in ("links", "assets", "id", "features")}
    doc.update({
        "type": "Collection", "stac_version": engine_stac.get("stac_version", STAC_VERSION), "id": job.id,
        "title": job.title or engine_stac.get("title") or f"Results of job {job.id}",
        "description": job.description or engine_stac.get("description") or "Results of an openEO batch job.",
        "license": engine_stac.get("license", "proprietary"), "extent": extent, "assets": assets,
        "openeo:status": "finished",
        "expires": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires)),
        "links": [{"rel": "self", "href": state.api_url(request, f"/jobs/{job.id}/results"),
                   "type": "application/json"},
                  {"rel": "canonical", "href": state.api_url(request, f"/jobs/{job.id}/results"),
                   "type": "application/json"}],
    })
    extensions = set(doc.get("stac_extensions") or [])
    if any("proj:shape" in a or "proj:epsg" in a for a in assets.values()):
        extensions.add("https://stac-extensions.github.io/projection/v1.1.0/schema.json")
    if any("eo:bands" in a for a in assets.values()):
        extensions.add("https://stac-extensions.github.io/eo/v1.1.0/schema.json")
    if any("classification:classes" in a or any("classification:classes" in b for b in a.get("raster:bands", []))
           for a in assets.values()):
        extensions.add(CLASSIFICATION_EXT)
    doc["stac_extensions"] = sorted(extensions)
    return doc


def jobs_router(state: BackendState) -> APIRouter:
    router = APIRouter(prefix=state.settings.api_prefix, tags=[TAG])
    store = state.store
    max_bytes = state.settings.max_request_bytes

    def own_job(job_id: str, user: User) -> Job:
        job = store.get_job(user.user_id, job_id)
        if job is None:  # another user's job is indistinguishable from a missing one
            raise JobNotFound(f"Batch job '{job_id}' does not exist.")
        return job

    @router.post("/jobs", status_code=201)
    async def create_job(request: Request, user: User = Depends(state.user)) -> Response:
        body = json_object(await read_json(request, max_bytes))
        process = process_graph_of(body)
        fields = job_fields(body)
        state.check_graph(user, process["process_graph"])
        job = store.create_job(user.user_id, process, title=fields.get("title"),
                               description=fields.get("description"), plan=fields.get("plan"),
                               budget=fields.get("budget"), log_level=fields.get("log_level") or "debug")
        return Response(status_code=201, headers={"Location": state.api_url(request, f"/jobs/{job.id}"),
                                                  "OpenEO-Identifier": job.id})

    @router.get("/jobs")
    def list_jobs(request: Request, limit: int | None = Query(None, ge=1),
                  user: User = Depends(state.user)) -> dict:
        return {"jobs": [job_summary(j) for j in store.list_jobs(user.user_id, limit)],
                "links": [{"rel": "self", "href": state.api_url(request, "/jobs")}]}

    @router.get("/jobs/{job_id}")
    def get_job(job_id: str, user: User = Depends(state.user)) -> dict:
        return job_metadata(own_job(job_id, user))

    @router.patch("/jobs/{job_id}")
    async def patch_job(request: Request, job_id: str, user: User = Depends(state.user)) -> Response:
        job = own_job(job_id, user)
        body = json_object(await read_json(request, max_bytes))
        if job.status in ("queued", "running"):
            raise JobLocked(f"Batch job '{job_id}' is {job.status}; cancel it before changing it.")
        changes = job_fields(body)
        if "process" in body:
            process = process_graph_of(body)
            state.check_graph(user, process["process_graph"])
            changes["process"] = process
        if changes:
            store.update_job(job.id, **changes)
        return Response(status_code=204)

    @router.delete("/jobs/{job_id}")
    def delete_job(job_id: str, user: User = Depends(state.user)) -> Response:
        job = own_job(job_id, user)
        state.runner.cancel(job)
        store.delete_job(job.id)
        shutil.rmtree(state.settings.jobs_dir / job.id, ignore_errors=True)
        return Response(status_code=204)

    @router.get("/jobs/{job_id}/estimate")
    def estimate(job_id: str, user: User = Depends(state.user)) -> dict:
        own_job(job_id, user)
        return {"costs": 0, "duration": "PT5M",
                "expires": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                         time.gmtime(time.time() + state.settings.download_link_ttl_s))}

    @router.get("/jobs/{job_id}/logs")
    def logs(request: Request, job_id: str, offset: str | None = None, level: str = "debug",
             limit: int | None = Query(None, ge=1), user: User = Depends(state.user)) -> dict:
        own_job(job_id, user)
        if level not in LOG_LEVELS:
            raise BadRequest(f"level must be one of {list(LOG_LEVELS)}, not {level!r}.")
        after = int(offset) if offset and offset.isdigit() else 0
        entries = store.logs(job_id, after=after, min_level=level, limit=limit)
        links = []
        if limit and len(entries) == limit:
            links.append({"rel": "next", "href": state.api_url(
                request, f"/jobs/{job_id}/logs?offset={entries[-1]['id']}&level={level}&limit={limit}")})
        return {"logs": entries, "links": links, "level": level}

    @router.post("/jobs/{job_id}/results", status_code=202)
    def start_job(job_id: str, user: User = Depends(state.user)) -> Response:
        job = own_job(job_id, user)
        if job.status not in ("queued", "running"):
            state.check_graph(user, job.process["process_graph"])
            active = len([j for j in store.list_jobs(user.user_id) if j.status in ("queued", "running")])
            if active >= state.settings.max_active_jobs_per_user:
                raise TooManyJobs(f"You have {active} batch jobs queued or running; at most "
                                  f"{state.settings.max_active_jobs_per_user}. Start this one when one has ended.")
            used = results_bytes(state, user.user_id) >> 20
            if used >= state.settings.max_result_mb_per_user:
                raise QuotaExceeded(f"Your stored results take {used} MiB of your "
                                    f"{state.settings.max_result_mb_per_user} MiB; delete old jobs "
                                    "(DELETE /jobs/{id}) before starting more.")
            state.runner.start(job)
        return Response(status_code=202)

    @router.get("/jobs/{job_id}/results")
    def job_results(request: Request, job_id: str, partial: bool = False, user: User = Depends(state.user)):
        job = own_job(job_id, user)
        if partial and job.status in ("created", "queued", "running", "canceled"):
            doc = results_document(state, request, job)  # nothing is published before the job finishes
            doc["openeo:status"] = "canceled" if job.status == "canceled" else "running"
            return JSONResponse(doc, headers={"OpenEO-Costs": "0"})
        if job.status == "error":
            errors = store.logs(job.id, min_level="error")
            entry = errors[-1] if errors else {"id": "0", "level": "error", "message": "The job failed."}
            return JSONResponse(entry, status_code=424)
        if job.status != "finished":
            raise JobNotFinished(f"Batch job '{job_id}' is {job.status}, not finished.")
        if (job.stac or {}).get("expired"):
            raise ResultsExpired(f"The results of batch job '{job_id}' expired and were deleted; run it again.")
        return JSONResponse(results_document(state, request, job), headers={"OpenEO-Costs": "0"})

    @router.delete("/jobs/{job_id}/results")
    def cancel_job(job_id: str, user: User = Depends(state.user)) -> Response:
        state.runner.cancel(own_job(job_id, user))
        return Response(status_code=204)

    return router
