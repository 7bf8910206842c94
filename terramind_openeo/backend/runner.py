"""Background execution of batch jobs: queue, concurrency limits, cancellation, publishing, restart recovery.

A started job is ``queued``; a dispatcher starts it in its own thread when fewer than
``max_running_jobs`` run overall and fewer than ``max_running_jobs_per_user`` for its owner. The engine
writes into ``jobs/<id>/partial-<n>/``; only a complete run is renamed to ``jobs/<id>/results/`` and
marked ``finished``. A canceled or failed run is discarded. After a restart, jobs that were ``running``
when the server died are marked ``error`` with a log line (their work is not resumed); ``queued`` jobs
are queued again.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from pathlib import Path

from terramind_openeo.errors import to_openeo_error
from terramind_openeo.files import publish

from .engine import Engine
from .errors import JobCanceled, OpenEOError
from .settings import Settings
from .store import Job, Store, utcnow
from .usage import UsageMeter, entry

log = logging.getLogger(__name__)

_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error"}


MAX_LOG_ENTRIES = 5000  # per job run: a UDF logging in a tight loop must not fill the database


class StoreLogHandler(logging.Handler):
    """Writes the records of one job's logger into its log table (UDF ``inspect`` messages included)."""

    def __init__(self, store: Store, job_id: str, min_level: int):
        super().__init__(min_level)
        self.store = store
        self.job_id = job_id
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if self.count > MAX_LOG_ENTRIES and record.levelno < logging.ERROR:
            if self.count == MAX_LOG_ENTRIES + 1:
                self.store.add_log(self.job_id, "warning", f"More than {MAX_LOG_ENTRIES} log entries: further "
                                                           "debug, info and warning entries are dropped.")
            return
        try:
            level = _LEVELS.get(record.levelno, "error" if record.levelno > logging.ERROR else "debug")
            data = getattr(record, "data", None)
            code = getattr(record, "code", None)
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                message += "\n" + "".join(traceback.format_exception_only(record.exc_info[1])).strip()
            self.store.add_log(self.job_id, level, message, code=code, data=data)
        except Exception:  # a log line must never break the job
            self.handleError(record)


def job_logger(store: Store, job_id: str, log_level: str) -> tuple[logging.Logger, logging.Handler]:
    logger = logging.getLogger(f"terramind_openeo.jobs.{job_id}")
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    handler = StoreLogHandler(store, job_id, getattr(logging, log_level.upper(), logging.DEBUG))
    logger.addHandler(handler)
    return logger, handler


def sweep_scratch(settings: Settings) -> int:
    """At start-up: remove what a previous server process left half-done (synchronous requests' scratch,
    unpublished job runs, temporary download archives); returns how many entries went."""
    removed = 0
    candidates = [*(settings.data_dir / "sync").glob("*"), *settings.jobs_dir.glob("*/partial-*"),
                  *settings.data_dir.glob("tmp*")]
    for path in candidates:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed


def log_error(logger: logging.Logger, exc: OpenEOError, what: str) -> None:
    """The error that ended a run, into its log (the client reads it) and, with the traceback of an
    unexpected failure, into the server's log as well (the operator reads it)."""
    trace = exc.trace
    extra: dict = {"code": exc.code}
    if trace:
        extra["data"] = {"traceback": trace}
    logger.error("%s", exc.message, extra=extra)
    if trace or exc.status >= 500:
        log.error("%s failed: %s: %s%s", what, exc.code, exc.message, f"\n{trace}" if trace else "")


def results_dir(settings: Settings, job_id: str) -> Path:
    return settings.jobs_dir / job_id / "results"


def finished_results(store: Store, owner: str) -> dict[str, str]:
    """The owner's finished batch jobs and their results directories: what ``load_ml_model`` may read."""
    return {j.id: j.result_dir for j in store.list_jobs(owner) if j.status == "finished" and j.result_dir}


class JobRunner:
    def __init__(self, settings: Settings, store: Store, engine: Engine,
                 user_processes_of: Callable[[str], dict], enforce: Callable[[str, dict, dict], None] | None = None):
        self.settings = settings
        self.store = store
        self.engine = engine
        self.user_processes_of = user_processes_of
        self.enforce = enforce  # the door's policy checks (BackendState.enforce), run again at start
        self._lock = threading.Lock()
        self._queue: deque[str] = deque()
        self._running: dict[str, tuple[str, threading.Event, threading.Thread]] = {}
        self._closed = False

    # ---------------------------------------------------------------- lifecycle
    def expire_results(self) -> int:
        """Delete the results of jobs that finished more than ``result_ttl_s`` ago; returns how many."""
        ttl = self.settings.result_ttl_s
        if not ttl:
            return 0
        cutoff = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - ttl))
        expired = 0
        for job_id in self.store.job_ids_with_status("finished"):
            try:
                job = self.store.get_job_any_owner(job_id)
                if job is None or not job.finished or job.finished >= cutoff or (job.stac or {}).get("expired"):
                    continue
                shutil.rmtree(results_dir(self.settings, job_id), ignore_errors=True)
                self.store.update_job(job_id, stac={"files": [], "expired": True}, result_dir=None)
                self.store.add_log(job_id, "info", f"Results deleted: older than {ttl} s.")
                expired += 1
            except Exception:
                log.exception("could not expire the results of job %s", job_id)
        return expired

    def _start_expiry(self) -> None:
        def loop() -> None:
            while not self._closed:
                self.expire_results()
                for _ in range(360):  # every hour, stopping promptly on close
                    if self._closed:
                        return
                    time.sleep(10)

        threading.Thread(target=loop, name="results-expiry", daemon=True).start()

    def recover(self) -> None:
        """Called once at start-up: settle jobs that the previous server process left behind, each on its
        own (a job that cannot be read or settled is marked ``error``; it never stops the server)."""
        self._start_expiry()
        for job_id in self.store.job_ids_with_status("running"):
            self._settle(job_id, "The server stopped while this job was running; its partial results were "
                                 "discarded. Start the job again.", requeue=False)
        for job_id in self.store.job_ids_with_status("queued"):
            self._settle(job_id, "", requeue=True)
        self._dispatch()

    def _settle(self, job_id: str, message: str, requeue: bool) -> None:
        try:
            job = self.store.get_job_any_owner(job_id)
            self._discard_partials(job_id)
            if job is not None and requeue and job.readable:
                self.store.add_log(job_id, "info", "Queued again after a server restart.")
                self._queue.append(job_id)
                return
            if job is not None and not job.readable:
                message = "The stored process graph of this job cannot be read back; the job cannot run."
            self.store.add_log(job_id, "error", message, code="Internal")
            self.store.set_status(job_id, "error", expected=("running", "queued"), finished=utcnow())
        except Exception:
            log.exception("could not settle job %s after a restart; marking it error", job_id)
            try:
                self.store.set_status(job_id, "error", expected=("running", "queued"), finished=utcnow())
            except Exception:
                log.exception("could not mark job %s error", job_id)

    def close(self, wait_s: float = 5.0) -> None:
        with self._lock:
            self._closed = True
            running = list(self._running.values())
        for _, cancel, _ in running:
            cancel.set()
        deadline = time.monotonic() + wait_s
        for _, _, thread in running:
            thread.join(max(0.0, deadline - time.monotonic()))

    # ---------------------------------------------------------------- API
    def start(self, job: Job) -> None:
        if not self.store.set_status(job.id, "queued", expected=("created", "error", "canceled", "finished"),
                                     progress=0):
            return  # already queued or running: starting again is a no-op
        self.store.add_log(job.id, "info", "Job queued.")
        with self._lock:
            self._queue.append(job.id)
        self._dispatch()

    def cancel(self, job: Job) -> None:
        with self._lock:
            if job.id in self._queue:
                self._queue.remove(job.id)
            entry = self._running.get(job.id)
        if entry is not None:
            entry[1].set()
        if self.store.set_status(job.id, "canceled", expected=("queued", "running")):
            self.store.add_log(job.id, "info", "Job canceled by the user.")

    def is_active(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._running or job_id in self._queue

    # ---------------------------------------------------------------- internals
    def _dispatch(self) -> None:
        with self._lock:
            if self._closed:
                return
            skipped: deque[str] = deque()
            while self._queue and len(self._running) < self.settings.max_running_jobs:
                job_id = self._queue.popleft()
                job = self.store.get_job_any_owner(job_id)
                if job is None or job.status != "queued":
                    continue
                per_user = sum(1 for owner, _, _ in self._running.values() if owner == job.owner)
                if per_user >= self.settings.max_running_jobs_per_user:
                    skipped.append(job_id)
                    continue
                cancel = threading.Event()
                thread = threading.Thread(target=self._run, args=(job, cancel), name=f"job-{job_id}", daemon=True)
                self._running[job_id] = (job.owner, cancel, thread)
                thread.start()
            self._queue.extendleft(reversed(skipped))

    def _discard_partials(self, job_id: str) -> None:
        for path in (self.settings.jobs_dir / job_id).glob("partial-*"):
            shutil.rmtree(path, ignore_errors=True)

    def _run(self, job: Job, cancel: threading.Event) -> None:
        logger, handler = job_logger(self.store, job.id, job.log_level)
        partial = self.settings.jobs_dir / job.id / f"partial-{uuid.uuid4().hex[:8]}"
        meter = UsageMeter()
        timer = None
        try:
            if not self.store.set_status(job.id, "running", expected=("queued",), started=utcnow(), progress=0):
                return
            logger.info("Job started.")
            if self.settings.job_timeout_s:
                timer = threading.Timer(self.settings.job_timeout_s, cancel.set)
                timer.daemon = True
                timer.start()
            partial.mkdir(parents=True, exist_ok=True)
            last = [0.0]

            def progress(fraction: float) -> None:
                percent = max(0.0, min(100.0, float(fraction) * 100.0))
                if percent - last[0] >= 1.0 or percent >= 100.0:
                    last[0] = percent
                    self.store.update_job(job.id, progress=round(percent, 1))

            udps = self.user_processes_of(job.owner)
            # again at run time: settings may have changed, or a called user-defined process, since the start
            if self.enforce is not None:
                self.enforce(job.owner, job.process["process_graph"], udps)
            outcome = self.engine.execute(job.process["process_graph"], partial, user_processes=udps, logger=logger,
                                          cancel=cancel, progress=progress,
                                          job_results=finished_results(self.store, job.owner))
            if cancel.is_set():
                raise JobCanceled()
            usage = self._usage(meter, outcome.usage)
            final = publish(partial, results_dir(self.settings, job.id), durable=True)  # a crash never serves a half-written file
            files = [str((final / Path(f).resolve().relative_to(partial.resolve())).relative_to(final))
                     for f in outcome.files]
            stac = {"files": files, "stac": outcome.stac, "value": outcome.value if outcome.has_value else None}
            if self.store.set_status(job.id, "finished", expected=("running",), progress=100, finished=utcnow(),
                                     usage=usage, result_dir=str(final), stac=stac):
                logger.info("Job finished: %d result file(s).", len(files))
        except JobCanceled:
            self._stopped(job, logger, timer)
        except OpenEOError as exc:
            if cancel.is_set():
                self._stopped(job, logger, timer)
            else:
                log_error(logger, exc, f"job {job.id}")
                self.store.set_status(job.id, "error", expected=("running",), finished=utcnow(),
                                      usage=self._usage(meter, {}))
        except Exception as exc:  # the engine failed unexpectedly: keep the trace in the job's logs
            if cancel.is_set():
                self._stopped(job, logger, timer)
            else:
                log_error(logger, to_openeo_error(exc), f"job {job.id}")  # message and trace as for a sync request
                self.store.set_status(job.id, "error", expected=("running",), finished=utcnow(),
                                      usage=self._usage(meter, {}))
        finally:
            if timer:
                timer.cancel()
            shutil.rmtree(partial, ignore_errors=True)
            logger.removeHandler(handler)
            with self._lock:
                self._running.pop(job.id, None)
            self._dispatch()

    def _stopped(self, job: Job, logger: logging.Logger, timer) -> None:
        """The run ended because its cancel event was set: by the user, the time limit or a shutdown."""
        if self._closed:
            logger.error("The server stopped while this job was running; its partial results were discarded. "
                         "Start the job again.", extra={"code": "Internal"})
            self.store.set_status(job.id, "error", expected=("running", "queued"), finished=utcnow())
            return
        timed_out = timer is not None and not timer.is_alive()
        logger.info("Job stopped: %s.", "time limit reached" if timed_out else "canceled")
        self.store.set_status(job.id, "canceled", expected=("running", "queued"), finished=utcnow())

    @staticmethod
    def _usage(meter: UsageMeter, extra: dict) -> dict:
        """The job's usage: the engine's figures, then this process's CPU, duration and memory where missing."""
        usage = {key: value if isinstance(value, dict) else entry(value, key) for key, value in (extra or {}).items()}
        return meter.add_to(usage, "cpu", "duration", "memory")
