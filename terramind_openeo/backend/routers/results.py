"""Synchronous processing (``POST /result``, with its logs) and signed downloads of batch-job result files.

Every synchronous request gets a log of its own (engine messages, UDF ``inspect`` output, the error that ended
it), linked from the response as ``Link: <.../result/logs/ID>; rel="monitor"`` (openEO API 1.2) on success
and on failure alike; only its owner can read it, for ``sync_log_ttl_s`` seconds.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
import threading
import uuid
import zipfile
from pathlib import Path

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from terramind_openeo.errors import describe, format_traceback

from ..auth import User
from ..context import BackendState
from ..errors import FileNotFound, NotFound, OpenEOError, ResultLinkExpired
from ..graphs import process_graph_of
from ..runner import StoreLogHandler, finished_results, log_error, results_dir
from ..store import sync_log_key
from ..web import NanJSONResponse, json_object, media_type, read_json
from .general import TAG

log = logging.getLogger(__name__)


def _zip(paths: list[Path], root: Path, target: Path) -> Path:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in paths:
            members = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
            for member in members:
                archive.write(member, member.relative_to(root).as_posix())
    return target


def safe_child(root: Path, name: str) -> Path:
    """``root/name`` when it stays inside ``root`` (no ``..``, no absolute paths, no links out)."""
    if not name or "\\" in name or "\x00" in name or name.startswith("/"):
        raise FileNotFound(f"File '{name}' does not exist.")
    root = root.resolve()
    candidate = (root / name).resolve()
    if root not in candidate.parents:
        raise FileNotFound(f"File '{name}' does not exist.")
    return candidate


async def _cancel_on_disconnect(request: Request, cancel: threading.Event) -> None:
    """A client that went away stops its synchronous execution (in a worker process: killed at once)."""
    while not cancel.is_set():
        await anyio.sleep(0.5)
        if await request.is_disconnected():
            log.info("client disconnected: canceling its synchronous execution")
            cancel.set()


def results_router(state: BackendState) -> APIRouter:
    router = APIRouter(prefix=state.settings.api_prefix)
    settings = state.settings

    @router.post("/result", tags=[TAG])
    async def sync_result(request: Request, user: User = Depends(state.user)):
        body = json_object(await read_json(request, settings.max_request_bytes))
        process = process_graph_of(body)
        udps = state.check_graph(user, process["process_graph"])
        with state.sync_slot(user.user_id):
            return await _run_sync(request, user, process, udps)

    async def _run_sync(request: Request, user: User, process: dict, udps: dict):
        scratch = settings.data_dir / "sync" / uuid.uuid4().hex
        scratch.mkdir(parents=True)
        cleanup = BackgroundTask(shutil.rmtree, scratch, ignore_errors=True)
        log_id = state.store.create_sync_log(user.user_id, settings.sync_log_ttl_s)
        monitor = {"Link": f'<{state.api_url(request, f"/result/logs/{log_id}")}>; rel="monitor"'}
        # a logger outside logging's registry: one per request, gone with it
        logger = logging.Logger(f"terramind_openeo.sync.{log_id}", logging.DEBUG)
        logger.addHandler(StoreLogHandler(state.store, sync_log_key(log_id), logging.DEBUG))
        logger.info("Synchronous processing started.")
        cancel = threading.Event()
        watcher = asyncio.ensure_future(_cancel_on_disconnect(request, cancel))
        timer = threading.Timer(settings.sync_timeout_s, cancel.set)  # the request's time limit
        timer.daemon = True
        timer.start()
        try:
            outcome = await anyio.to_thread.run_sync(
                lambda: state.engine.execute(process["process_graph"], scratch / "out", user_processes=udps,
                                             logger=logger, cancel=cancel, progress=lambda _: None,
                                             job_results=finished_results(state.store, user.user_id),
                                             max_pixels=settings.sync_max_pixels),
                limiter=state.sync_limiter)
        except OpenEOError as failure:
            cancel.set()
            shutil.rmtree(scratch, ignore_errors=True)
            error = failure
            if not timer.is_alive() and not await request.is_disconnected():
                error = OpenEOError(f"The synchronous request ran longer than {settings.sync_timeout_s} s and was "
                                    "stopped; run it as a batch job (POST /jobs) instead.",
                                    code="RequestTimeout", status=408)
            log_error(logger, error, f"synchronous request {log_id}")
            error.headers.update(monitor)
            raise error from None
        except BaseException as exc:
            cancel.set()
            shutil.rmtree(scratch, ignore_errors=True)
            logger.error("Synchronous processing failed: %s", describe(exc),
                         extra={"code": "Internal", "data": {"traceback": format_traceback(exc)}})
            raise
        finally:
            watcher.cancel()
            timer.cancel()
        logger.info("Synchronous processing finished.")
        headers = {"OpenEO-Costs": "0", **monitor}
        if outcome.has_value or not outcome.files:
            cleanup.func(*cleanup.args, **cleanup.kwargs)
            return NanJSONResponse(outcome.value, headers=headers)
        if len(outcome.files) == 1 and outcome.files[0].is_file():
            path = outcome.files[0]
            return FileResponse(path, media_type=media_type(path), filename=path.name, headers=headers,
                                background=cleanup)
        archive = _zip(outcome.files, scratch / "out", scratch / "result.zip")
        return FileResponse(archive, media_type="application/zip", filename="result.zip", headers=headers,
                            background=cleanup)

    @router.get("/result/logs/{log_id}", tags=[TAG])
    def sync_logs(log_id: str, user: User = Depends(state.user)) -> dict:
        """The log of one synchronous request (the ``monitor`` link; no paging parameters, as the API says)."""
        if not state.store.has_sync_log(user.user_id, log_id):
            raise NotFound(f"The log '{log_id}' does not exist (or has expired).")
        return {"logs": state.store.logs(sync_log_key(log_id)), "links": [], "level": "debug"}

    # HEAD too: clients (the openeo Python client among them) ask for a result's size before downloading it
    @router.api_route("/download/{job_id}/{expires}/{signature}/{filename:path}", methods=["GET", "HEAD"])
    def download(job_id: str, expires: int, signature: str, filename: str):
        if not state.signer.verify(job_id, filename, expires, signature):
            raise ResultLinkExpired()
        job = state.store.get_job_any_owner(job_id)
        if job is None or job.status != "finished" or filename not in (job.stac or {}).get("files", []):
            raise FileNotFound(f"File '{filename}' does not exist.")
        path = safe_child(results_dir(settings, job_id), filename)
        if path.is_dir():
            tmp = Path(tempfile.mkdtemp(dir=settings.data_dir))
            archive = _zip([path], path.parent, tmp / (path.name + ".zip"))
            return FileResponse(archive, media_type="application/zip", filename=archive.name,
                                background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))
        if not path.is_file():
            raise FileNotFound(f"File '{filename}' does not exist.")
        return FileResponse(path, media_type=media_type(path), filename=path.name)

    return router
