"""Each execution in its own process: a crash (HDF5, torch, out of memory) fails one job, not the server.

:class:`IsolatedEngine` answers metadata (collections, processes, formats) in-process and runs every
``execute`` in a child forked from a ``forkserver`` that has the engine preloaded (fast start, no
inherited threads). The child sends log records, progress and the outcome through a pipe; cancelling
terminates the child, so the work really stops; its CPU seconds and peak memory are the job's usage.
"""

from __future__ import annotations

import logging
import multiprocessing
import resource
import threading
import time
from pathlib import Path
from typing import Any, Callable

from .engine import EngineError, Outcome, ProcessesEngine
from .errors import OpenEOApiError
from .settings import Settings

log = logging.getLogger(__name__)

PRELOAD = ["terramind_openeo.backend.isolation", "terramind_openeo.backend._forkserver_warmup"]
_CONTEXT = None
_CONTEXT_LOCK = threading.Lock()


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
        self.lock_ = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = getattr(record, "data", None)
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message += f"\n{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
            with self.lock_:
                self.conn.send(("log", record.levelno, message, getattr(record, "code", None),
                                data if _picklable(data) else str(data)))
        except Exception:  # a log line must never break the run
            self.handleError(record)


def _picklable(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str, list, dict, tuple))


def _noop() -> None:
    pass


def _child_main(conn, settings: Settings, process_graph: dict, output_dir: Path,
                user_processes: dict[str, dict]) -> None:
    """Runs in the child: execute, report, exit."""
    logger = logging.getLogger("terramind_openeo.isolated_job")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(_PipeHandler(conn))
    send_lock = threading.Lock()
    last = [0.0]

    def progress(fraction: float) -> None:
        now = time.monotonic()
        if now - last[0] > 0.5 or fraction >= 1.0:
            last[0] = now
            with send_lock:
                conn.send(("progress", float(fraction)))

    engine = ProcessesEngine(settings)
    try:
        outcome = engine.execute(process_graph, output_dir, user_processes=user_processes, logger=logger,
                                 cancel=threading.Event(), progress=progress)
        ru = resource.getrusage(resource.RUSAGE_SELF)
        outcome.usage.setdefault("cpu", {"value": round(ru.ru_utime + ru.ru_stime, 2), "unit": "cpu-seconds"})
        outcome.usage.setdefault("memory", {"value": round(ru.ru_maxrss / 1024.0, 1), "unit": "mb-peak"})
        with send_lock:
            conn.send(("done", outcome))
    except OpenEOApiError as exc:
        with send_lock:
            conn.send(("error", exc.code, exc.message, exc.status))
    except BaseException as exc:  # noqa: BLE001 - everything must reach the parent as an error
        with send_lock:
            conn.send(("error", "Internal", f"Execution failed: {type(exc).__name__}: {exc}"[:2000], 500))
    finally:
        engine.close()
        conn.close()


class IsolatedEngine:
    """The :class:`ProcessesEngine` with every execution in a child process."""

    def __init__(self, settings: Settings, inner: ProcessesEngine | None = None):
        self.settings = settings
        self.inner = inner or ProcessesEngine(settings)

    def collections(self) -> list[dict]:
        return self.inner.collections()

    def process_specs(self) -> list[dict]:
        return self.inner.process_specs()

    def file_formats(self) -> dict:
        return self.inner.file_formats()

    def close(self) -> None:
        self.inner.close()

    def warm_up(self) -> None:
        """Start the forkserver (it preloads the engine) now rather than on the first request."""
        def run() -> None:
            try:
                proc = _mp_context().Process(target=_noop, name="openeo-warmup")
                proc.start()
                proc.join(120)
            except Exception:  # noqa: BLE001 - only an optimisation
                log.warning("could not warm up the execution forkserver", exc_info=True)

        threading.Thread(target=run, name="forkserver-warmup", daemon=True).start()

    def _child_settings(self) -> Settings:
        if self.settings.dask == "local":  # one cluster in the server; children connect to it
            client = self.inner._client_for_run()
            return self.settings.replace(dask=client.scheduler.address)
        return self.settings

    def execute(self, process_graph: dict, output_dir: Path, *, user_processes: dict[str, dict],
                logger: logging.Logger, cancel: threading.Event, progress: Callable[[float], None]) -> Outcome:
        ctx = _mp_context()
        receiver, sender = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child_main, name="openeo-execution",
                           args=(sender, self._child_settings(), process_graph, output_dir, user_processes))
        proc.start()
        sender.close()
        result: tuple | None = None
        try:
            while result is None:
                if cancel.is_set():
                    raise EngineError("The execution was canceled.", code="JobCanceled", status=400)
                if receiver.poll(0.2):
                    try:
                        message = receiver.recv()
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
                elif not proc.is_alive():
                    if not receiver.poll(0):
                        break
        finally:
            if proc.is_alive() and result is None:
                proc.terminate()
                proc.join(5)
                if proc.is_alive():
                    proc.kill()
            proc.join(30)
            receiver.close()
        if result is None:
            code = proc.exitcode
            reason = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            log.error("execution process died (%s)", reason)
            raise EngineError(f"The execution process died unexpectedly ({reason}); no result was produced.",
                              code="Internal", status=500)
        if result[0] == "error":
            _, code, message, status = result
            raise EngineError(message, code=code, status=status)
        return result[1]
