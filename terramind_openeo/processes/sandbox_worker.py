"""The program inside a UDF sandbox (``python -m terramind_openeo.processes.sandbox_worker LIMITS``).

Started by :mod:`.sandbox` under bubblewrap. Before it reads any user code it lowers its own resource
limits for good (hard = soft: memory, CPU time, file size, processes, open files, no core dumps), moves the
channel to the server onto private descriptors and points ``stdout`` at ``stderr``, so a ``print`` in a
UDF cannot corrupt the channel. Then it answers requests: ``apply`` (a UDF on one labelled chunk),
``metadata`` (the UDF's ``apply_metadata`` on band names and pixel sizes: the result's names, the classes it
states and its pixel size), ``preload`` (import installed modules the run's UDFs will import, by name, while
the server still prepares the run; nothing of the user's runs) and ``exit``. Requests carry an ``id`` and run concurrently on up to ``threads``
threads (the chunks of one run in parallel, as they run in the server's own threads without a sandbox; the
run's model loads once, in this one process); every answer carries the ``id`` of its request.
``openeo.udf`` ``inspect`` messages travel back as ``log`` messages of the request whose thread wrote them,
at most ``MAX_LOGS`` per request.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import resource
import sys
import threading
import traceback
from concurrent.futures import ThreadPoolExecutor

MAX_LOGS = 200
MAX_LOG_CHARS = 2000
_LIMITS = {"memory_bytes": resource.RLIMIT_AS, "cpu_s": resource.RLIMIT_CPU, "file_bytes": resource.RLIMIT_FSIZE,
           "processes": resource.RLIMIT_NPROC, "open_files": resource.RLIMIT_NOFILE}


def lower_limits(limits: dict) -> None:
    """Soft and hard limits set to the given values: user code cannot raise them again."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    for key, which in _LIMITS.items():
        value = limits.get(key)
        if isinstance(value, int) and value > 0:
            resource.setrlimit(which, (value, value))


def private_channel() -> tuple:
    """The channel (former stdin/stdout) on new descriptors; fd 0 is /dev/null and fd 1 goes to stderr."""
    reader = os.fdopen(os.dup(0), "rb", buffering=0)
    writer = os.fdopen(os.dup(1), "wb", buffering=1 << 16)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return reader, writer


class _Forward(logging.Handler):
    """``openeo.udf.inspect`` records as ``log`` messages of the request whose thread emitted them (records of
    threads a UDF starts itself are dropped: they belong to no request)."""

    def __init__(self, writer, send, lock: threading.Lock):
        super().__init__(logging.DEBUG)
        self.writer, self.send, self.channel_lock = writer, send, lock  # not ``lock``: Handler's own
        self.local = threading.local()

    def begin(self, request_id) -> None:
        self.local.request, self.local.count = request_id, 0

    def end(self) -> None:
        self.local.request = None

    def emit(self, record: logging.LogRecord) -> None:
        request = getattr(self.local, "request", None)
        if request is None:
            return
        self.local.count += 1
        if self.local.count > MAX_LOGS:
            return
        try:
            message = record.getMessage()
            data = getattr(record, "data", None)
            if data is not None:
                text = repr(data)
                message = f"{message} {text if len(text) < 500 else text[:500] + '...'}".strip()
            with self.channel_lock:
                self.send(self.writer, {"op": "log", "id": request, "level": int(record.levelno),
                                        "code": str(getattr(record, "code", "User"))[:40],
                                        "message": message[:MAX_LOG_CHARS]})
        except Exception:  # noqa: BLE001, S110 - a log line must never break the run
            pass


def _trimmed(exc: BaseException) -> str:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename in ("<udf>", "<string>")]
    lines = [f'  File "{f.filename}", line {f.lineno}, in {f.name}' + (f"\n    {f.line}" if f.line else "")
             for f in frames[-5:]]
    return "\n".join(["Traceback (UDF frames):", *lines, f"{type(exc).__name__}: {exc}"])[:8000]


def _apply(header: dict, arrays: list):
    from openeo.udf import UdfData, XarrayDataCube, run_udf_code

    from terramind_openeo.processes.sandbox_wire import decode_cube, encode_cube

    cube = decode_cube(header["cube"], arrays)
    crs = header["cube"].get("crs")
    if crs:
        from terramind_openeo.crs import with_crs

        with_crs(cube, crs)
    result = run_udf_code(header["code"], UdfData(datacube_list=[XarrayDataCube(cube)],
                                                  user_context=header.get("context") or {}))
    cubes = result.get_datacube_list() if result is not None else None
    if not cubes:
        raise RuntimeError("the UDF returned no data cube")
    out = cubes[0].get_array()
    return encode_cube(out)


def run_apply_metadata(code: str, bands: list[str], context, steps=None) -> dict:
    """The UDF's ``apply_metadata`` on a cube of these band labels (and, given ``steps``, of that x/y pixel
    size), as JSON data the server checks: ``bands``, ``classes`` (the ``(band, classification:classes)`` it
    states, or None) and ``steps`` (the x/y pixel size it declares; None where not asked or not declared).
    The one place that builds the openEO client's metadata for a UDF, in the sandbox or, for trusted runs, not."""
    from openeo.metadata import Band, BandDimension, CubeMetadata, SpatialDimension
    from openeo.udf.run_code import load_module_from_string

    from terramind_openeo.classes import declared_classes

    module = load_module_from_string(code)
    dims: list = [BandDimension(name="bands", bands=[Band(name=b) for b in bands])]
    if steps is not None:
        dims += [SpatialDimension(name=n, extent=[None, None], crs=None, step=s) for n, s in zip("xy", steps)]
    out = module["apply_metadata"](CubeMetadata(dimensions=dims), context or {})
    out_steps = [float(d.step) for d in out.spatial_dimensions] if steps is not None else []
    declared = declared_classes(out)
    return {"bands": [str(b) for b in out.band_names],
            "classes": None if declared is None else json.loads(json.dumps(declared)),
            "steps": out_steps if len(out_steps) == 2 else None}


def _metadata(header: dict) -> dict:
    steps = header.get("steps")
    return run_apply_metadata(header["code"], header["bands"], header.get("context"),
                              tuple(steps) if isinstance(steps, list) else None)


MODULE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def preload(modules) -> list[str]:
    """Import installed modules as a UDF's import statements would: ``[module, [names]]`` entries (at most 64,
    well-formed names only; ``names``: what ``from module import ...`` takes, submodules or attributes).
    Returns the ones that failed."""
    failed = []
    for entry in modules[:64] if isinstance(modules, list) else []:
        if not (isinstance(entry, list) and len(entry) == 2 and isinstance(entry[1], list)):
            continue
        name, attrs = entry
        names = [a for a in attrs[:64] if isinstance(a, str) and MODULE_NAME.fullmatch(a) and "." not in a]
        if not (isinstance(name, str) and len(name) <= 200 and MODULE_NAME.fullmatch(name)):
            continue
        try:
            module = importlib.import_module(name)
            for attr in names:
                if not hasattr(module, attr):  # a submodule, or a lazily exported name (module __getattr__)
                    importlib.import_module(f"{name}.{attr}")
        except Exception:  # noqa: BLE001 - the UDF that imports it will say what is wrong
            failed.append(name)
    return failed


def serve(reader, writer, threads: int = 1) -> None:
    from terramind_openeo.config import settings
    from terramind_openeo.processes.sandbox_wire import receive, send

    user_log = logging.getLogger(settings().udf_user_logger)  # the sandbox's clean environment: the default
    user_log.setLevel(logging.DEBUG)
    write_lock = threading.Lock()
    forward = _Forward(writer, send, write_lock)
    user_log.addHandler(forward)

    def answer(message: dict, arrays=()) -> None:
        with write_lock:
            send(writer, message, arrays)

    def handle(header: dict, arrays: list) -> None:
        request = header.get("id")
        op = header.get("op")
        forward.begin(request)
        try:
            if op == "apply":
                out_header, out_arrays = _apply(header, arrays)
                answer({"op": "result", "id": request, "ok": True, "cube": out_header}, out_arrays)
            elif op == "metadata":
                answer({"op": "result", "id": request, "ok": True, **_metadata(header)})
            elif op == "preload":
                answer({"op": "result", "id": request, "ok": True, "failed": preload(header.get("modules"))})
            else:
                answer({"op": "result", "id": request, "ok": False, "error": f"unknown request {op!r}"})
        except BaseException as exc:  # noqa: BLE001 - every UDF failure goes back as the UDF's error
            try:
                answer({"op": "result", "id": request, "ok": False, "type": type(exc).__name__,
                        "error": str(exc)[:4000], "traceback": _trimmed(exc)})
            except BaseException:  # noqa: BLE001 - the channel is gone: nobody is waiting any more
                os._exit(3)
        finally:
            forward.end()

    pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="udf")
    while True:
        try:
            header, arrays = receive(reader, max_bytes=1 << 40)
        except EOFError:
            break
        if header.get("op") == "exit":
            break
        pool.submit(handle, header, arrays)
    pool.shutdown(wait=True, cancel_futures=True)  # the server asks to exit only when no call is running
    writer.flush()
    os._exit(0)  # at once: the interpreter's own teardown (torch loaded) would keep the run waiting for seconds


def main() -> None:
    limits = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    lower_limits(limits)
    reader, writer = private_channel()
    threads = limits.get("threads")
    serve(reader, writer, threads if isinstance(threads, int) and 0 < threads <= 256 else 1)


if __name__ == "__main__":
    main()
