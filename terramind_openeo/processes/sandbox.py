"""User code (UDFs) in a bubblewrap sandbox: one per run (job or synchronous request), never shared.

A :class:`Sandbox` is a ``python -m terramind_openeo.processes.sandbox_worker`` process started by
``bwrap`` (Debian package ``bubblewrap``) with:

- its own user, PID, IPC, UTS, cgroup and **network** namespaces: no network at all, not even the host's
  loopback; an unprivileged uid/gid (``setpriv`` from util-linux drops root first when the server runs as
  root, so that the process-count limit applies; otherwise a user namespace maps it);
- a read-only view of the Python environment, this package, the project's ``udf/`` files and the model
  weights caches, nothing else of the host's files: no data directory, config, store, signing key or
  other runs' files (a hidden path inside a bound one is covered by an empty tmpfs); ``/tmp`` is a small
  private tmpfs, ``/proc`` shows the sandbox's processes only;
- a clean environment (no setting or secret of the server), resource limits set by the worker on itself
  before any user code runs (memory, CPU time, file size, processes, open files), its own session and
  process group; ``--die-with-parent`` ends it with its parent, :meth:`Sandbox.close` kills it, and all
  its children go with it (they live in its PID namespace).

The server talks to it over stdin/stdout with :mod:`.sandbox_wire` (data only, sizes bounded). One
sandbox serves every UDF call of one run in one process (so a model loads once per run and process);
:func:`close_run` ends them when the run ends, an idle timer when a run's end never reaches a worker.

Where ``bwrap`` is missing or cannot start a sandbox, :func:`probe` says why and the back-end refuses UDFs
with that message (never a fallback to running user code unsandboxed).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import shutil
import signal
import site
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

from terramind_openeo.processes.errors import UdfError
from terramind_openeo.processes.sandbox_wire import (
    WireError,
    decode_cube,
    encode_cube,
    receive,
    send,
)

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parents[1]
PROJECT_UDF_DIR = PACKAGE_DIR.parent / "udf"
INSTALL_HINT = ("user-defined functions run in a bubblewrap sandbox, and it is not available on this server: "
                "{reason}. Install the Debian/Ubuntu package 'bubblewrap' (apt-get install bubblewrap) or "
                "your distribution's equivalent")


@dataclass(frozen=True)
class SandboxConfig:
    """How sandboxes are built; picklable (it travels with chunk functions to Dask workers)."""

    bwrap: str
    python: str
    readonly: tuple[str, ...]
    """Host paths bound read-only at the same place (Python environment, package, weights caches)."""
    hidden: tuple[str, ...] = ()
    """Host paths that must stay invisible even when inside a read-only path (data directory, config)."""
    env: tuple[tuple[str, str], ...] = ()
    """The sandbox's whole environment (nothing else of the server's is passed)."""
    memory_mb: int = 8192
    cpu_s: int = 4 * 3600
    file_mb: int = 1024
    processes: int = 256
    open_files: int = 1024
    tmp_mb: int = 512
    call_timeout_s: float = 900.0
    """Longest single UDF call (one chunk); the run's own time limit still applies."""
    max_result_mb: int = 4096
    idle_s: float = 600.0
    """A sandbox unused this long is closed (a run whose end never reached this process)."""
    drop_to_uid: int = 61000
    """When the server runs as root: the unprivileged host uid/gid the sandbox runs as."""
    threads: int = 4
    """Calls one sandbox runs at once (the chunks a run's threads hand it in parallel)."""

    def limits(self) -> dict[str, int]:
        return {"memory_bytes": self.memory_mb << 20, "cpu_s": self.cpu_s, "file_bytes": self.file_mb << 20,
                "processes": self.processes, "open_files": self.open_files}


@dataclass(frozen=True)
class Unavailable:
    """No sandbox can be made here; ``reason`` says why (UDFs are refused with it)."""

    reason: str

    def message(self) -> str:
        return INSTALL_HINT.format(reason=self.reason)


def python_paths() -> list[str]:
    """What a Python of this environment needs: its prefixes, site-packages and the package itself."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(os.path.realpath(sys.executable)).parents[1])}
    for entry in [*site.getsitepackages(), site.getusersitepackages()]:
        if entry and os.path.isdir(entry):
            paths.add(entry)
    paths.add(str(PACKAGE_DIR))
    if PROJECT_UDF_DIR.is_dir():
        paths.add(str(PROJECT_UDF_DIR))
    return sorted(p for p in paths if os.path.exists(p))


def default_config(*, hidden: tuple[str, ...] = (), weights_dirs: tuple[str, ...] = (),
                   **limits: Any) -> SandboxConfig | Unavailable:
    """A configuration for this Python, or :class:`Unavailable` when ``bwrap`` is missing."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return Unavailable("the 'bwrap' program is not installed")
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return Unavailable("the server runs as root and 'setpriv' (util-linux) is missing")
    readonly = [*python_paths(), *[d for d in weights_dirs if d and os.path.isdir(d)]]
    env = {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONNOUSERSITE": "1", "PYTHONPATH": str(PACKAGE_DIR.parent),
           "HF_HUB_OFFLINE": "1", "MPLCONFIGDIR": "/tmp"}
    for d in weights_dirs:
        if d and os.path.isdir(d) and d.rstrip("/").endswith("huggingface"):
            env["HF_HOME"] = d
        elif d and os.path.isdir(d) and Path(d).name == "terramind-openeo":
            env["TERRAMIND_OPENEO_CACHE"] = d
    return SandboxConfig(bwrap=bwrap, python=sys.executable, readonly=tuple(readonly),
                         hidden=tuple(str(Path(h).resolve()) for h in hidden if h),
                         env=tuple(sorted(env.items())), **limits)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def bwrap_command(config: SandboxConfig) -> list[str]:
    """The full command line that starts a sandbox worker."""
    cmd = [config.bwrap, "--die-with-parent", "--new-session", "--clearenv"]
    as_root = os.geteuid() == 0
    if as_root:  # no user namespace: the sandbox runs as an unprivileged host uid (setpriv below)
        cmd += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
                "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        cmd += ["--unshare-all", "--unshare-user", "--disable-userns", "--uid", "65534", "--gid", "65534"]
    cmd += ["--ro-bind", "/usr", "/usr"]
    for name in ("bin", "lib", "lib32", "lib64", "sbin"):
        path = Path("/") / name
        if path.is_symlink():
            cmd += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            cmd += ["--ro-bind", str(path), str(path)]
    for name in ("/etc/ld.so.cache", "/etc/localtime", "/etc/ssl/certs"):
        if os.path.exists(name):
            cmd += ["--ro-bind", name, name]
    # the private /tmp first: read-only paths that lie under the host's /tmp (a checkout or venv there) are
    # bound on top of it, not hidden by it
    cmd += ["--proc", "/proc", "--dev", "/dev", "--perms", "1777", "--size", str(config.tmp_mb << 20),
            "--tmpfs", "/tmp"]
    made = {"/", "/usr", "/etc", "/tmp"}
    for ro in config.readonly:  # parents made traversable (bwrap would create them 0700)
        for parent in reversed(Path(ro).parents):
            if str(parent) not in made and not Path("/", *parent.parts[1:2]).is_symlink():
                made.add(str(parent))
                cmd += ["--perms", "0755", "--dir", str(parent)]
        cmd += ["--ro-bind", ro, ro]
    for hidden in config.hidden:  # an empty, read-only directory over anything secret a bound path holds
        if any(_inside(hidden, path) for path in config.readonly) and os.path.isdir(hidden):
            cmd += ["--tmpfs", hidden, "--remount-ro", hidden]
    for key, value in config.env:
        cmd += ["--setenv", key, value]
    cmd += ["--chdir", "/tmp", "--"]
    if as_root:
        uid = str(config.drop_to_uid)
        cmd += [shutil.which("setpriv") or "/usr/bin/setpriv", f"--reuid={uid}", f"--regid={uid}",
                "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--"]
    cmd += [config.python, "-s", "-m", "terramind_openeo.processes.sandbox_worker", json.dumps({**config.limits(), "threads": config.threads})]
    return cmd


class _Call:
    """One call waiting for its answer."""

    def __init__(self, logger: logging.Logger | None):
        self.logger = logger
        self.done = threading.Event()
        self.header: dict = {}
        self.arrays: list = []
        self.failure: BaseException | None = None


class Sandbox:
    """One sandboxed worker process, serving concurrent calls (up to ``config.threads`` at once in it).

    Each call is a request with its own id; one reader thread hands every answer (and the UDF's log
    messages) to the call it belongs to. A call that times out or whose run is canceled ends the whole
    sandbox, and with it the other calls of the run (they fail, saying the sandbox ended)."""

    def __init__(self, config: SandboxConfig, cancel: Callable[[], bool] | None = None):
        self.config = config
        self.cancel = cancel
        self._send_lock = threading.Lock()
        self._state = threading.Lock()
        self._calls: dict[int, _Call] = {}
        self._next_id = 0
        self._stderr_tail: list[str] = []
        self.last_used = time.monotonic()
        self.closed = False
        self.proc = subprocess.Popen(bwrap_command(config), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env={"PATH": "/usr/bin:/bin"}, start_new_session=True,
                                     close_fds=True)  # bwrap itself gets no variable of the server either
        # the three pipes asked for above (typed once here: Popen types them Optional)
        self._stdin = cast(BinaryIO, self.proc.stdin)
        self._stdout = cast(BinaryIO, self.proc.stdout)
        self._stderr = cast(BinaryIO, self.proc.stderr)
        self._broken: BaseException | None = None
        self._stderr_thread = threading.Thread(target=self._drain, name="udf-sandbox-stderr", daemon=True)
        self._stderr_thread.start()
        self._reader = threading.Thread(target=self._read, name="udf-sandbox-reader", daemon=True)
        self._reader.start()

    @property
    def busy(self) -> bool:
        """Whether a call is waiting for its answer."""
        with self._state:
            return bool(self._calls)

    def _drain(self) -> None:
        for raw in iter(self._stderr.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip()[:500]
            self._stderr_tail.append(line)
            del self._stderr_tail[:-40]

    def _read(self) -> None:
        """Hand every message of the sandbox to its call; when the channel breaks, fail every waiting call."""
        try:
            while True:
                reply, out = receive(self._stdout, self.config.max_result_mb << 20)
                request = reply.get("id")
                with self._state:
                    call = self._calls.get(request) if isinstance(request, int) else None
                if call is None:
                    raise WireError("an answer to no waiting call")
                if reply.get("op") == "log":
                    level = reply.get("level")
                    level = level if isinstance(level, int) and 0 <= level <= 50 else logging.INFO
                    if call.logger is not None:
                        call.logger.log(level, "UDF inspect [%s]: %s", str(reply.get("code"))[:40],
                                        str(reply.get("message"))[:2000])
                    continue
                call.header, call.arrays = reply, out
                call.done.set()
        except (OSError, EOFError, WireError, ValueError) as exc:
            with self._state:
                self._broken = exc
                waiting = list(self._calls.values())
            for call in waiting:
                call.failure = exc
                call.done.set()

    def _call(self, header: dict, arrays: tuple, logger: logging.Logger | None) -> tuple[dict, list]:
        """Send one request, relay its log messages, return its result (or raise the UDF's error)."""
        call = _Call(logger)
        with self._state:
            ended = self.closed or self._broken is not None or self.proc.poll() is not None
            if not ended:
                self._next_id += 1
                request = self._next_id
                self._calls[request] = call
                self.last_used = time.monotonic()
        if ended:
            raise UdfError(self._ended("before the call"))
        try:
            try:
                with self._send_lock:
                    send(self._stdin, {**header, "id": request}, arrays)
            except (OSError, ValueError) as exc:
                call.failure = exc
            deadline = time.monotonic() + self.config.call_timeout_s
            while call.failure is None and not call.done.wait(0.2):
                if self.cancel is not None and self.cancel():
                    self.close()
                    raise UdfError("the UDF was stopped: the run was canceled")
                if time.monotonic() > deadline:
                    self.close()
                    raise UdfError(f"the UDF ran longer than {self.config.call_timeout_s:g} s and was stopped")
        finally:
            with self._state:
                self._calls.pop(request, None)
                self.last_used = time.monotonic()
        if call.failure is not None:
            self.close()
            raise UdfError(self._ended(f"({type(call.failure).__name__})"))
        return call.header, call.arrays

    def _ended(self, when: str) -> str:
        try:
            code = self.proc.wait(1)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None and code > 128:  # bwrap passes on its child's death by signal N as 128 + N
            code = 128 - code
        reason = (f"killed by signal {-code}" if code is not None and code < 0 else
                  f"exit status {code}" if code is not None else "no answer")
        hint = " (memory, CPU time, file size or process limit reached?)" if code not in (0, None) else ""
        tail = "\n".join(self._stderr_tail[-5:])
        return f"the UDF sandbox ended {when}: {reason}{hint}" + (f"\n{tail}" if tail else "")

    def apply(self, code: str, cube, context: Any, crs: Any = None, logger: logging.Logger | None = None):
        """The UDF's ``apply_datacube``/``apply_timeseries`` on one labelled chunk, run in the sandbox."""
        cube_header, arrays = encode_cube(cube, crs)
        reply, out = self._call({"op": "apply", "code": code, "context": _jsonable_context(context),
                                 "cube": cube_header}, arrays, logger)
        if not reply.get("ok"):
            raise _udf_error(reply, logger)
        try:
            return decode_cube(reply.get("cube") or {}, out)
        except WireError as exc:
            raise UdfError(f"the UDF returned something that is not a data cube ({exc})") from None

    def metadata(self, code: str, bands: list[str], context: Any, logger: logging.Logger | None = None,
                 steps: tuple[float, float] | None = None) -> tuple[list[str], Any, tuple[float, float] | None]:
        """The UDF's ``apply_metadata``: its band names, unchecked the ``(band, classification:classes)`` it
        states (``classes.declared_classes``; None if none; ``udf.checked_classes`` checks it) and, when
        ``steps`` (the input's x/y pixel size) is given, the x/y pixel size it declares (checked)."""
        request = {"op": "metadata", "code": code, "bands": list(bands), "context": _jsonable_context(context)}
        if steps is not None:
            request["steps"] = [float(s) for s in steps]
        reply, _ = self._call(request, (), logger)
        if not reply.get("ok"):
            raise _udf_error(reply, logger, "apply_metadata")
        names = reply.get("bands")
        if not isinstance(names, list) or not all(isinstance(b, str) and len(b) < 200 for b in names) or len(names) > 10000:
            raise UdfError("the UDF's apply_metadata returned no list of band names")
        out_steps = reply.get("steps")
        if out_steps is None or steps is None:
            return names, reply.get("classes"), None
        if not (isinstance(out_steps, list) and len(out_steps) == 2
                and all(isinstance(s, (int, float)) and math.isfinite(s) and s > 0 for s in out_steps)):
            raise UdfError("the UDF's apply_metadata returned x/y pixel sizes that are not two positive numbers")
        return names, reply.get("classes"), (float(out_steps[0]), float(out_steps[1]))

    def close(self) -> None:
        """End the sandbox and everything in it (its process group; its PID namespace goes with it).

        An idle sandbox is first asked to exit; a busy or unresponsive one is killed at once."""
        with self._state:
            polite = not self.closed and not self._calls and self._broken is None and self.proc.poll() is None
            self.closed = True
        if polite and self._send_lock.acquire(timeout=1):
            try:
                send(self._stdin, {"op": "exit"})
                self.proc.wait(3)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                pass
            finally:
                self._send_lock.release()
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            log.error("UDF sandbox %d did not end after SIGKILL", self.proc.pid)
        for stream in (self._stdin, self._stdout):
            try:
                stream.close()
            except OSError:
                pass


def _jsonable_context(context: Any) -> Any:
    try:
        return json.loads(json.dumps(context, allow_nan=False, default=_plain))
    except (TypeError, ValueError) as exc:
        raise UdfError(f"the UDF context cannot be passed to the sandbox: {exc}") from None


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _udf_error(reply: dict, logger: logging.Logger | None, where: str = "") -> UdfError:
    kind = str(reply.get("type") or "Error")[:80]
    message = str(reply.get("error"))[:4000]
    trace = str(reply.get("traceback") or "")[:8000]
    if logger is not None and trace:
        logger.error("UDF failed: %s", trace)
    what = f"the UDF's {where}" if where else "the UDF"
    return UdfError(f"{what} raised {kind}: {message}" + (f"\n{trace}" if trace else ""))


# ---------------------------------------------------------------- one sandbox per run (and process)
_RUNS: dict[str, Sandbox] = {}
_CANCELS: dict[str, Callable[[], bool]] = {}
_RUNS_LOCK = threading.Lock()
_REAPER: list[threading.Thread] = []


def set_run_cancel(run: str, cancel: Callable[[], bool] | None) -> None:
    """The run's cancel test: a sandbox of the run stops its call when it turns true."""
    if cancel is not None:
        with _RUNS_LOCK:
            _CANCELS[run] = cancel


def sandbox_for(run: str, config: SandboxConfig, cancel: Callable[[], bool] | None = None) -> Sandbox:
    """The sandbox of run ``run`` in this process, started on first use. A sandbox that died stays dead:
    later calls of the run fail (never a fresh start that would hide a kill by a limit)."""
    with _RUNS_LOCK:
        box = _RUNS.get(run)
        if box is None:
            box = _RUNS[run] = Sandbox(config, cancel or _CANCELS.get(run))
            _start_reaper()
        return box


def imported_modules(code: str) -> list[list]:
    """The absolute imports of a UDF's code as ``[module, [names]]`` (``import a.b``: ``["a.b", []]``; ``from
    a.b import c, d``: ``["a.b", ["c", "d"]]``), in order, without running it; none when it does not parse
    (running it will say why)."""
    import ast

    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return []
    found: list[list] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [[a.name, []] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append([node.module, [a.name for a in node.names if a.name != "*"]])
    return found


BASE_MODULES = ("numpy", "xarray", "openeo.udf", "openeo.metadata")
"""What every UDF call needs in the sandbox, whatever the UDF imports."""


def prestart(run: str, config: SandboxConfig, codes: list[str], box: Sandbox | None = None) -> Sandbox:
    """Start the sandbox of run ``run`` now (or make ``box``, started before the run had an id, its
    sandbox), and have it import what ``codes`` (the run's UDFs) import, in the background: the sandbox's
    start and imports overlap with the server's preparation of the run instead of delaying the first UDF
    call. Nothing of the user's code runs (modules are found by parsing it)."""
    if box is not None:
        with _RUNS_LOCK:
            if run in _RUNS:
                raise RuntimeError(f"run {run} has a sandbox already")
            _RUNS[run] = box
            box.cancel = box.cancel or _CANCELS.get(run)
            _start_reaper()
    box = sandbox_for(run, config)
    modules: list[list] = [[m, []] for m in BASE_MODULES]
    for code in codes:
        modules += [m for m in imported_modules(code) if m not in modules]
    preload(box, modules)
    return box


def preload(box: Sandbox, modules: list[list]) -> None:
    """Have ``box`` import ``modules`` (``[module, [names]]``, see :func:`imported_modules`) in the background."""
    def load() -> None:
        try:
            box._call({"op": "preload", "modules": modules[:64]}, (), None)
        except UdfError as exc:  # the sandbox died: the run's first real call says so
            log.debug("UDF sandbox preload failed: %s", exc)

    threading.Thread(target=load, name="udf-sandbox-preload", daemon=True).start()


def start_early(config: SandboxConfig) -> Sandbox:
    """A sandbox for a run that has no id yet (:func:`prestart` adopts it), importing what every UDF call
    needs while the run is checked."""
    box = Sandbox(config)
    preload(box, [[m, []] for m in BASE_MODULES])
    return box


def close_run(run: str) -> None:
    """End the sandbox of run ``run`` in this process, if any (also called on Dask workers)."""
    with _RUNS_LOCK:
        box = _RUNS.pop(run, None)
        _CANCELS.pop(run, None)
    if box is not None:
        box.close()


def _start_reaper() -> None:
    if _REAPER and _REAPER[0].is_alive():
        return

    def reap() -> None:
        while True:
            time.sleep(5)
            now = time.monotonic()
            with _RUNS_LOCK:
                idle = [k for k, b in _RUNS.items() if not b.busy and now - b.last_used > b.config.idle_s]
                boxes = [_RUNS.pop(k) for k in idle]
            for box in boxes:
                log.info("closing an idle UDF sandbox")
                box.close()

    thread = threading.Thread(target=reap, name="udf-sandbox-reaper", daemon=True)
    thread.start()
    _REAPER[:] = [thread]


@functools.lru_cache(maxsize=8)
def probe(config: SandboxConfig) -> str | None:
    """None when a sandbox starts and answers here, else the reason (cached per configuration)."""
    try:
        box = Sandbox(config)
    except OSError as exc:
        return f"bwrap could not be started ({exc})"
    try:
        box._call({"op": "metadata", "code": _PROBE_UDF, "bands": ["b"], "context": {}}, (), None)
        return None
    except UdfError as exc:
        return str(exc).splitlines()[0]
    finally:
        box.close()


_PROBE_UDF = "def apply_metadata(metadata, context):\n    return metadata\n"

