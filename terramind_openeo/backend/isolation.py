"""Executions in worker processes: a crash (HDF5, torch, out of memory) fails one run, not the server.

:class:`IsolatedEngine` answers metadata (collections, processes, formats) in-process and runs every
``execute`` in a worker process forked from a ``forkserver`` that has the engine preloaded (fast start,
no inherited threads). A worker runs one execution at a time and is reused afterwards, so its model
cache stays warm; it sends log records, progress and the outcome through a pipe. Cancelling terminates
the worker (the work really stops) and a worker that died or was stopped is never reused.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import select
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .engine import Outcome, ProcessesEngine
from .errors import Internal, JobCanceled, error_for, error_parts, to_openeo_error
from .settings import Settings
from .usage import UsageMeter

log = logging.getLogger(__name__)

PRELOAD = ["terramind_openeo.backend.isolation", "terramind_openeo.backend._forkserver_warmup"]
_CONTEXT = None
_CONTEXT_LOCK = threading.Lock()
_SEND_LOCK = threading.Lock()
ENGINE_JOB_LOGGER = "terramind_openeo.job"  # processes/udf.py JOB_LOGGER  # in a worker: log lines (any thread), progress and the reply share one pipe


def _mp_context():
    global _CONTEXT
    with _CONTEXT_LOCK:
        if _CONTEXT is None:
            ctx = multiprocessing.get_context("forkserver")
            ctx.set_forkserver_preload(PRELOAD)
            _CONTEXT = ctx
        return _CONTEXT


class _PipeHandler(logging.Handler):
    def __init__(self, conn):
        super().__init__(logging.DEBUG)
        self.conn = conn

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = getattr(record, "data", None)
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message += f"\n{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
            with _SEND_LOCK:
                self.conn.send(("log", record.levelno, message, getattr(record, "code", None),
                                data if _picklable(data) else str(data)))
        except Exception:  # a log line must never break the run
            self.handleError(record)


def _picklable(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, list, dict, tuple))


_ENGINES: dict[tuple[str, str], ProcessesEngine] = {}  # in a worker: by (catalog, dask) setting


def _run_one(conn, settings: Settings, process_graph: dict, output_dir: Path,
             user_processes: dict[str, dict], job_results: dict[str, str] | None = None,
             max_pixels: int | None = None) -> tuple:
    """One execution inside a worker; returns the message for the parent."""
    # A worker runs one execution at a time, so the engine's process-wide job logger (where UDF chunks log
    # when no logger reaches them) belongs to this run as well: one logger for both.
    logger = logging.getLogger(ENGINE_JOB_LOGGER)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = _PipeHandler(conn)
    logger.addHandler(handler)
    last = [0.0]

    def progress(fraction: float) -> None:
        now = time.monotonic()
        if now - last[0] > 0.5 or fraction >= 1.0:
            last[0] = now
            with _SEND_LOCK:
                conn.send(("progress", float(fraction)))

    key = (settings.catalog, settings.dask)
    engine = _ENGINES.get(key)
    if engine is None:  # one engine (catalog, Dask client) per worker and settings, reused by later runs
        engine = _ENGINES[key] = ProcessesEngine(settings)
    meter = UsageMeter()
    try:
        outcome = engine.execute(process_graph, output_dir, user_processes=user_processes, logger=logger,
                                 cancel=threading.Event(), progress=progress, job_results=job_results,
                                 max_pixels=max_pixels)
        meter.add_to(outcome.usage, "cpu", "memory")  # this worker process's, not the server's
        return ("done", outcome)
    except Exception as exc:  # noqa: BLE001 - everything must reach the parent as an error
        return ("error", *error_parts(to_openeo_error(exc)))
    finally:
        logger.removeHandler(handler)


def exit_with_server(server_pid: int) -> None:
    """End this worker (and its UDF sandboxes, which die with it) as soon as the server process is gone,
    also while an execution runs: a killed server must not leave work running on its behalf."""
    def watch() -> None:
        try:
            fd = os.pidfd_open(server_pid)
            select.select([fd], [], [])  # readable when the process ends
        except (OSError, AttributeError):  # no pidfd (old kernel): poll the parent instead
            while os.getppid() != 1 and _alive(server_pid):
                time.sleep(1.0)
        os._exit(70)

    threading.Thread(target=watch, name="server-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _worker_main(conn, server_pid: int | None = None) -> None:
    """A worker process: runs executions sent by the server one after the other until the pipe closes."""
    if server_pid is not None:
        exit_with_server(server_pid)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            break
        reply = _run_one(conn, *task)
        with _SEND_LOCK:
            conn.send(reply)
    for engine in _ENGINES.values():
        engine.close()


class _Worker:
    def __init__(self):
        ctx = _mp_context()
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, os.getpid()), name="openeo-worker")
        self.proc.start()
        child.close()

    def alive(self) -> bool:
        return self.proc.is_alive()

    def stop(self, hard: bool = False) -> None:
        if hard and self.proc.is_alive():
            self.proc.terminate()
            self.proc.join(5)
            if self.proc.is_alive():
                self.proc.kill()
        try:
            self.conn.close()
        except OSError:
            pass
        self.proc.join(10)


class IsolatedEngine:
    """The :class:`ProcessesEngine` with every execution in a child process."""

    def __init__(self, settings: Settings, inner: ProcessesEngine | None = None):
        self.settings = settings
        self.inner = inner or ProcessesEngine(settings)
        self.max_idle = settings.max_running_jobs + settings.max_sync_requests
        self._idle: list[_Worker] = []
        self._lock = threading.Lock()
        self._closed = False

    def collections(self) -> list[dict]:
        return self.inner.collections()

    def collection_items(self, collection_id: str) -> list[dict]:
        return self.inner.collection_items(collection_id)

    def process_specs(self) -> list[dict]:
        return self.inner.process_specs()

    def file_formats(self) -> dict:
        return self.inner.file_formats()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.stop()
        self.inner.close()

    def warm_up(self) -> None:
        """Start the forkserver (it preloads the engine) and one idle worker now, not on the first request."""
        def run() -> None:
            try:
                self._release(_Worker())
            except Exception:
                log.warning("could not start an execution worker ahead of time", exc_info=True)

        threading.Thread(target=run, name="worker-warmup", daemon=True).start()

    def _child_settings(self) -> Settings:
        if self.settings.dask == "local":  # one cluster in the server; children connect to it
            client = self.inner._client_for_run()
            return self.settings.replace(dask=client.scheduler.address)
        return self.settings

    def _acquire(self) -> _Worker:
        with self._lock:
            while self._idle:
                worker = self._idle.pop()
                if worker.alive():
                    return worker
                worker.stop()
        return _Worker()

    def _release(self, worker: _Worker) -> None:
        with self._lock:
            if worker.alive() and not self._closed and len(self._idle) < self.max_idle:
                self._idle.append(worker)
                return
        worker.stop()

    def execute(self, process_graph: dict, output_dir: Path, *, user_processes: dict[str, dict],
                logger: logging.Logger, cancel: threading.Event, progress: Callable[[float], None],
                job_results: dict[str, str] | None = None, max_pixels: int | None = None) -> Outcome:
        worker = self._acquire()
        result: tuple | None = None
        reusable = False
        try:
            worker.conn.send((self._child_settings(), process_graph, output_dir, user_processes, job_results,
                              max_pixels))
            while result is None:
                if cancel.is_set():
                    raise JobCanceled("The execution was canceled.")
                if worker.conn.poll(0.2):
                    try:
                        message = worker.conn.recv()
                    except (EOFError, OSError):
                        break
                    if message[0] == "log":
                        _, level, text, code, data = message
                        extra = {k: v for k, v in (("code", code), ("data", data)) if v is not None}
                        logger.log(level, "%s", text, extra=extra)
                    elif message[0] == "progress":
                        progress(message[1])
                    else:
                        result = message
                elif not worker.alive() and not worker.conn.poll(0):
                    break
            reusable = result is not None
        finally:
            if reusable:
                self._release(worker)
            else:  # canceled, died or interrupted: this worker's state is unknown, never reuse it
                worker.stop(hard=True)
        if result is None:
            code = worker.proc.exitcode
            reason = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            log.error("execution worker died (%s)", reason)
            raise Internal(f"The execution process died unexpectedly ({reason}); no result was produced.")
        if result[0] == "error":
            raise error_for(*result[1:])  # with the worker's traceback, for the server's and the run's logs
        return result[1]
