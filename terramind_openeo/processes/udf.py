"""``run_udf``: a Python UDF on a labelled cube through ``openeo.udf.run_udf_code``.

The UDF gets the cube with its labels, coordinates, CRS and the ``context`` intact (openeo-processes-dask's
``run_udf`` hands over bare arrays and drops the context). ``openeo.udf.inspect`` messages of the UDF go to
the job's logger; an exception becomes a ``UdfError`` carrying the UDF's part of the traceback only.

Where the UDF runs (a thread of this process or a ``dask.distributed`` worker process, local or remote), its
messages are logged to ``terramind_openeo.udf_log.<channel>``, the channel being the run's
(``ExecutionContext.log_channel``); ``forward_udf_logs`` relays that logger to the run's logger and, with a
distributed client, has the workers forward it (``Client.forward_logging``), so concurrent runs on one
cluster each get their own messages only.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import numpy as np
import rioxarray  # noqa: F401 - registers the .rio accessor (also in dask workers)
import xarray as xr

from terramind_openeo.classes import CLASS_NODATA, ClassScheme, attach
from terramind_openeo.config import settings
from terramind_openeo.crs import crs_of, with_crs
from terramind_openeo.processes.errors import ProcessParameterInvalid, UdfError

logger = logging.getLogger(__name__)
JOB_LOGGER = "terramind_openeo.job"
UDF_LOG = "terramind_openeo.udf_log"  # parent of the per-run channels; stops there (never at the root)
logging.getLogger(UDF_LOG).propagate = False
_UDF_FILENAME = "<udf>"
FORWARD_GRACE_S = 0.5  # distributed: how long forwarded records of finished tasks may take to arrive


def udf_code(udf: Any, roots: tuple[str, ...] | None = None) -> str:
    """UDF source from code text or a local ``.py`` path (relative paths: also from the repository root).

    ``roots``: the directories a path may point into (the run's ``Policy.udf_roots``; None: anywhere). A path
    outside them is refused with the same words whether or not the file exists."""
    if not isinstance(udf, str) or not udf.strip():
        raise ProcessParameterInvalid("must be the UDF's Python code (or a path to a .py file)", argument="udf")
    text = udf.strip()
    if text.endswith(".py") and "\n" not in text:
        from pathlib import Path

        for candidate in (Path(text), Path(__file__).resolve().parents[2] / text):
            if roots is not None and not _inside_any(candidate, roots):
                continue
            if candidate.is_file():
                return candidate.read_text()
        if roots is not None:
            raise ProcessParameterInvalid(f"reading UDF file {text[:200]!r} is not allowed on this back-end (UDF "
                                          "files may come from this project's udf/ folder only)", argument="udf")
        raise ProcessParameterInvalid(f"UDF file '{text}' not found", argument="udf")
    return udf


def _inside_any(path, roots: tuple[str, ...]) -> bool:
    real = os.path.realpath(path)
    return any(real.startswith(os.path.realpath(root).rstrip("/") + "/") for root in roots)


def check_runtime(runtime: Any) -> None:
    if not isinstance(runtime, str) or runtime.lower() != "python":
        raise ProcessParameterInvalid(f"runtime '{runtime}' is not supported (supported: Python)", argument="runtime")


class _UserLogForwarder(logging.Handler):
    """Forwards ``openeo.udf.inspect`` records of one thread to the job logger."""

    def __init__(self, target: logging.Logger):
        super().__init__()
        self.thread = threading.get_ident()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread:
            return
        data = getattr(record, "data", None)
        message = record.getMessage()
        if data is not None:
            message = f"{message} {_describe(data)}".strip()
        self.target.log(record.levelno, "UDF inspect [%s]: %s", getattr(record, "code", "User"), message)


def _describe(data: Any) -> str:
    if isinstance(data, xr.DataArray):
        return f"DataArray dims={dict(data.sizes)} dtype={data.dtype}"
    text = repr(data)
    return text if len(text) < 500 else text[:500] + "..."


def _trimmed_traceback(exc: BaseException) -> str:
    """The frames of the UDF code (and the error line), not the engine's."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename in (_UDF_FILENAME, "<string>")]
    lines = [f'  File "{f.filename}", line {f.lineno}, in {f.name}' + (f"\n    {f.line}" if f.line else "")
             for f in frames[-5:]]
    return "\n".join(["Traceback (UDF frames):", *lines, f"{type(exc).__name__}: {exc}"])


def channel_logger(channel: str) -> logging.Logger:
    log = logging.getLogger(f"{UDF_LOG}.{channel}")
    log.setLevel(logging.DEBUG)  # in a worker too: records below the logger's level are never forwarded
    return log


class _Relay(logging.Handler):
    def __init__(self, target: logging.Logger):
        super().__init__(logging.DEBUG)
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        extra = {k: getattr(record, k) for k in ("code", "data") if getattr(record, k, None) is not None}
        self.target.log(record.levelno, "%s", record.getMessage(), extra=extra)


_FORWARDING: weakref.WeakSet[Any] = weakref.WeakSet()  # distributed clients already forwarding UDF_LOG


@contextmanager
def forward_udf_logs(channel: str, target: logging.Logger, client: Any = None,
                     wait: Any = False) -> Iterator[None]:
    """Relay the UDF messages of channel ``channel`` to ``target`` while the block runs.

    ``client``: a ``distributed.Client`` whose workers run the UDFs (their records come as events; with
    ``wait`` true, or a callable returning true at the end, the block's end waits ``FORWARD_GRACE_S`` for
    the last ones)."""
    log = channel_logger(channel)
    relay = _Relay(target)
    log.addHandler(relay)
    if client is not None and client not in _FORWARDING:
        try:
            client.forward_logging(UDF_LOG, level=logging.DEBUG)
            _FORWARDING.add(client)
        except Exception as exc:  # noqa: BLE001 - a client without the feature: messages stay in worker logs
            logger.warning("UDF messages of Dask workers cannot be forwarded: %s", exc)
    try:
        yield
    finally:
        if client is not None and (wait() if callable(wait) else wait):
            time.sleep(FORWARD_GRACE_S)
        log.removeHandler(relay)
        logging.Logger.manager.loggerDict.pop(log.name, None)  # one logger per run must not pile up


def call_udf(code: str, data: xr.DataArray, context: Any, job_logger: logging.Logger | None = None,
             channel: str | None = None) -> xr.DataArray:
    """Run ``code`` on one labelled chunk (numpy-backed) and return the labelled result.

    Messages go to ``job_logger`` if given, else to the run's channel (``forward_udf_logs``), else to
    ``terramind_openeo.job``."""
    from openeo.udf import UdfData, XarrayDataCube, run_udf_code

    target = job_logger or (channel_logger(channel) if channel else logging.getLogger(JOB_LOGGER))
    handler = _UserLogForwarder(target)
    user_log = logging.getLogger(settings().udf_user_logger)
    user_log.addHandler(handler)
    if user_log.level == logging.NOTSET or user_log.level > logging.DEBUG:
        user_log.setLevel(logging.DEBUG)
    try:
        result = run_udf_code(code, UdfData(datacube_list=[XarrayDataCube(data)], user_context=context or {}))
    except Exception as exc:  # noqa: BLE001 - any UDF failure is reported as the UDF's
        text = _trimmed_traceback(exc)
        target.error("UDF failed: %s", text)
        raise UdfError(f"the UDF raised {type(exc).__name__}: {exc}\n{text}") from None
    finally:
        user_log.removeHandler(handler)
    cubes = result.get_datacube_list() if result is not None else None
    if not cubes:
        raise UdfError("the UDF returned no data cube")
    out = cubes[0].get_array()
    crs = crs_of(data)  # neither data.rio nor out.rio: a reference cycle each (terramind_openeo/crs.py)
    if crs is not None and crs_of(out) is None and {"x", "y"} <= set(out.dims):
        out = with_crs(out, crs)  # the data stays the UDF's (no copy)
    return out


class UdfOutput(NamedTuple):
    """What a UDF's ``apply_metadata`` says of its result."""

    bands: list[str]
    scheme: ClassScheme | None
    """the classes it states for one band (checked), or None"""
    steps: tuple[float, float] | None
    """the x/y pixel size (the input's when it does not say, or when none was given)"""


def udf_output_metadata(code: str, bands: list[str], context: Any,
                        steps: tuple[float, float] | None = None) -> UdfOutput:
    """Band labels after the UDF, the classes it states for one of them (``classes.declare_classes``) and its
    x/y pixel size (``steps``: the input's, None when not asked): from its ``apply_metadata`` when it has one
    (run where the current run's policy runs user code), else the labels and grid unchanged and no classes."""
    if "def apply_metadata" not in code:
        return UdfOutput(bands, None, steps)
    runner = udf_runner()
    if runner is not None:
        names, declared, out_steps = runner.sandbox().metadata(code, bands, context, logger=runner.logger(),
                                                               steps=steps)
    else:
        from terramind_openeo.processes.sandbox_worker import run_apply_metadata

        try:
            said = run_apply_metadata(code, bands, context, steps)
        except Exception as exc:  # noqa: BLE001
            raise UdfError(f"the UDF's apply_metadata raised {type(exc).__name__}: {exc}") from None
        names, declared = said["bands"], said["classes"]
        out_steps = (said["steps"][0], said["steps"][1]) if said["steps"] else None
    return UdfOutput(names, checked_classes(declared, names), out_steps if out_steps is not None else steps)


def checked_classes(declared: Any, bands: list[str]) -> ClassScheme | None:
    """The class scheme a UDF's ``apply_metadata`` stated (``(band, classification:classes)`` from
    ``classes.declared_classes``, untrusted), checked; a ``UdfError`` names what is wrong."""
    if declared is None:
        return None
    if not isinstance(declared, (list, tuple)) or len(declared) != 2 or declared[0] not in bands:
        raise UdfError("the UDF's apply_metadata stated classification:classes for no band of its result")
    try:
        return ClassScheme.from_stac(declared[0], declared[1])
    except ValueError as exc:
        raise UdfError(f"the UDF's apply_metadata stated classification:classes for band "
                       f"'{str(declared[0])[:100]}' that are unusable: {exc}") from None


class ClassChunkFn:
    """A UDF's chunk function whose one result band holds the classes of ``scheme``: the chunk comes back as
    uint8 (``CLASS_NODATA`` or the scheme's no-data where the UDF gave NaN), after checking that every value
    is one of the scheme's (a UDF contradicting its own metadata is its error, never a silent cast)."""

    def __init__(self, fn: Any, scheme: ClassScheme):
        self.fn, self.scheme = fn, scheme
        self.token = ("classes", getattr(fn, "token", id(fn)), scheme.to_json())

    def __call__(self, chunk: xr.DataArray) -> xr.DataArray:
        out = self.fn(chunk)
        values = np.asarray(out.values)
        nodata = self.scheme.nodata if self.scheme.nodata is not None else CLASS_NODATA
        if values.dtype.kind == "f":
            values = np.where(np.isnan(values), nodata, values)
        allowed = np.array(sorted({c.value for c in self.scheme.classes} | {nodata}))
        bad = ~np.isin(values, allowed)
        if bad.any():
            raise UdfError(f"the UDF returned {values[bad].flat[0]!r} in band '{self.scheme.band}', which its "
                           f"apply_metadata declares a class band of values {allowed.tolist()}")
        return out.copy(data=values.astype(np.uint8))


def class_output(fn: Any, scheme: ClassScheme | None, bands: list[str], dtype: str) -> tuple[Any, str]:
    """The chunk function and dtype of a UDF's result: a single band the UDF states classes for (values that
    fit a byte) is uint8 as the ``terramind_*`` processes write class maps; anything else as given."""
    fits = scheme is not None and max([c.value for c in scheme.classes] + [scheme.nodata or 0]) <= 255
    if scheme is not None and fits and bands == [scheme.band]:
        return ClassChunkFn(fn, scheme), "uint8"
    return fn, dtype


def with_classes(out: xr.DataArray, scheme: ClassScheme | None) -> xr.DataArray:
    """A UDF's lazy result with the classes it stated (and the no-data value of a uint8 class map)."""
    if scheme is not None:
        attach(out, scheme)
        if out.dtype == np.uint8:
            out.attrs["nodata"] = scheme.nodata if scheme.nodata is not None else CLASS_NODATA
    return out


class SandboxRunner:
    """Where a run's UDF code goes: its sandbox (``sandbox.sandbox_for``), keyed by the run's channel.

    Picklable (configuration and channel only): chunk functions carry it to Dask workers, where each
    worker process starts the run's sandbox on first use."""

    def __init__(self, config: Any, channel: str):
        self.config, self.channel = config, channel

    def sandbox(self):
        from terramind_openeo.processes.sandbox import sandbox_for

        return sandbox_for(self.channel, self.config, _cancel_of_current_run())

    def logger(self) -> logging.Logger:
        return channel_logger(self.channel)


def _cancel_of_current_run():
    from terramind_openeo.processes import context as _ctx

    ctx = _ctx._CURRENT.get()
    return ctx.cancel if ctx is not None else None


def udf_runner() -> SandboxRunner | None:
    """The current run's UDF runner: a sandbox, or None for in-process execution, which only a trusted
    policy (the operator's own run) allows. UDFs are refused when the policy says no sandbox can be made."""
    from terramind_openeo.processes import context as _ctx
    from terramind_openeo.processes.sandbox import SandboxConfig, Unavailable

    ctx = _ctx._CURRENT.get()
    policy = ctx.policy if ctx is not None else None
    if ctx is None or policy is None:
        raise UdfError("internal error: a UDF outside any run; refusing to run it")
    if isinstance(policy.udf_sandbox, SandboxConfig):
        return SandboxRunner(policy.udf_sandbox, ctx.log_channel)
    if isinstance(policy.udf_sandbox, Unavailable):
        raise UdfError(policy.udf_sandbox.message(), status=501, code="UdfSandboxUnavailable")
    if policy.trusted:
        return None
    raise UdfError("user-defined functions are not enabled on this back-end")


class UdfChunkFn:
    """Picklable chunk function running a UDF (used by ``apply_neighborhood`` and top-level ``run_udf``):
    in the run's sandbox when ``runner`` is given, else in this process (trusted runs only)."""

    def __init__(self, code: str, context: Any, channel: str | None = None, runner: SandboxRunner | None = None):
        self.code, self.context, self.channel, self.runner = code, context, channel, runner
        self.token = ("udf", code, repr(context))  # the channel is left out: same UDF, same task names

    def __call__(self, chunk: xr.DataArray) -> xr.DataArray:
        if self.runner is None:
            out = call_udf(self.code, chunk, self.context, channel=self.channel)
        else:
            out = sandboxed_call(self.runner, self.code, chunk, self.context)
        dates = chunk.sizes.get("t", 1)
        if dates > 1 and "t" not in out.dims:  # e.g. a fine-tuned model that reads every date at once
            raise UdfError(f"the UDF returned no dimension 't' for a chunk of {dates} dates: the result of "
                           "apply_neighborhood and run_udf keeps the cube's dimensions (for a TerraMind model "
                           "that reads all dates at once use the terramind_predict process)")
        return out


def sandboxed_call(runner: SandboxRunner, code: str, chunk: xr.DataArray, context: Any) -> xr.DataArray:
    """``call_udf`` in the run's sandbox: the chunk goes in as data, the result comes back as data."""
    crs = crs_of(chunk)
    out = runner.sandbox().apply(code, chunk, context, crs=crs, logger=runner.logger())
    if crs is not None and {"x", "y"} <= set(out.dims):
        out = with_crs(out, crs)
    return out


def udf_chunk_fn(code: str, context: Any) -> UdfChunkFn:
    """The chunk function of a UDF in the current run (its messages on the run's channel)."""
    from terramind_openeo.processes import context as _ctx

    runner = udf_runner()
    ctx = _ctx.current()
    ctx.udf_used = True
    return UdfChunkFn(code, context, channel=ctx.log_channel, runner=runner)


def run_udf(data: Any, udf: str, runtime: str, version: str | None = None, context: Any = None) -> Any:
    from terramind_openeo.processes import context as _ctx

    check_runtime(runtime)
    code = udf_code(udf, _ctx.current().policy.udf_roots)
    if not isinstance(data, xr.DataArray):
        raise ProcessParameterInvalid(f"run_udf needs a data cube here, got {type(data).__name__}", argument="data")
    if not hasattr(data.data, "dask"):  # a chunk inside apply_neighborhood: run it now
        runner = udf_runner()
        if runner is not None:
            return sandboxed_call(runner, code, data, context)
        return call_udf(code, data, context, channel=_current_channel())
    from terramind_openeo.processes.chunked import map_chunks, plan_for

    # A whole lazy cube: the UDF runs on spatial chunks (all dates together), no overlap.
    cube = data if "bands" in data.dims else data.expand_dims(bands=["band_1"])
    bands, scheme, _ = udf_output_metadata(code, [str(b) for b in cube.bands.values], context)
    dtype = str(cube.dtype) if bands == [str(b) for b in cube.bands.values] else "float32"
    fn, dtype = class_output(udf_chunk_fn(code, context), scheme, bands, dtype)
    plan = plan_for(cube, _ctx.current().chunk_size, 0, 0, 0, anchored=False)
    return with_classes(map_chunks(cube, fn, plan, bands, dtype, per_date=False, name="run_udf"), scheme)


def _current_channel() -> str | None:
    from terramind_openeo.processes import context as _ctx

    ctx = _ctx._CURRENT.get()
    return ctx.log_channel if ctx is not None else None


__all__ = ["UdfChunkFn", "call_udf", "forward_udf_logs", "np", "run_udf", "udf_chunk_fn", "udf_output_metadata"]
