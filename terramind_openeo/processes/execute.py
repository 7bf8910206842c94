"""``execute_process_graph``: check a graph whole, evaluate it lazily, write its results chunk by chunk."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import xarray as xr

from terramind_openeo.processes import context as _ctx
from terramind_openeo.processes.errors import (
    OpenEOError,
    ProcessGraphInvalid,
    ProcessGraphMissing,
)
from terramind_openeo.processes.graph import GraphEvaluator, flat_graph
from terramind_openeo.processes.names import inside
from terramind_openeo.processes.policy import Policy
from terramind_openeo.processes.sandbox import (
    Sandbox,
    SandboxConfig,
    close_run,
    prestart,
    set_run_cancel,
    start_early,
)
from terramind_openeo.processes.stac_out import build_stac
from terramind_openeo.processes.udf import forward_udf_logs
from terramind_openeo.processes.writers import WRITERS, check_writable, normalise_cube

logger = logging.getLogger(__name__)


@dataclass
class ExecutionResult:
    """What a run produced: files written by ``save_result`` (complete ones only) and their STAC."""

    files: list[Path] = field(default_factory=list)
    stac: dict = field(default_factory=dict)
    value: Any = None  # the result node's value (what a graph without save_result returns)
    formats: list[str] = field(default_factory=list)


def parse_process_graph(process_graph: Any) -> dict:
    """A graph from JSON text, bytes or a dict (``{"process_graph": ...}`` or the flat nodes)."""
    if process_graph is None:
        raise ProcessGraphMissing("no process graph given")
    if isinstance(process_graph, (str, bytes)):
        try:
            process_graph = json.loads(process_graph)
        except json.JSONDecodeError as exc:
            raise ProcessGraphInvalid(f"the process graph is not valid JSON: {exc.msg} at line {exc.lineno} "
                                      f"column {exc.colno}") from exc
    if isinstance(process_graph, dict) and "process" in process_graph and "process_graph" not in process_graph:
        process_graph = process_graph["process"]  # a /result or /jobs request body
    if not isinstance(process_graph, dict):
        raise ProcessGraphInvalid(f"a process graph must be a JSON object, got {type(process_graph).__name__}")
    flat_graph(process_graph)
    return process_graph


def graph_parameters(pg: dict, given: dict | None) -> dict:
    """Graph parameter values: declared defaults overridden by ``given``."""
    values = {}
    for p in pg.get("parameters", []) or []:
        if isinstance(p, dict) and "name" in p and "default" in p:
            values[p["name"]] = p["default"]
    values.update(given or {})
    return values


def prepare(process_graph: Any, *, catalog, user_processes=None, parameters=None,
            output_dir: Path | None = None, logger_: logging.Logger | None = None, cancel=None, progress=None,
            dask_client=None, chunk_size: int = 512, policy: Policy | None = None,
            job_results: dict[str, str] | None = None
            ) -> tuple[dict, GraphEvaluator, dict, _ctx.ExecutionContext]:
    """Parse and validate (no data is touched); return what ``evaluate`` needs."""
    pg = parse_process_graph(process_graph)
    evaluator = GraphEvaluator(user_processes)
    scope = graph_parameters(pg, parameters)
    declared = {p["name"] for p in pg.get("parameters", []) or [] if isinstance(p, dict) and "name" in p}
    evaluator.validate(pg, parameters=declared | set(scope))
    ctx = _ctx.ExecutionContext(catalog=catalog, output_dir=Path(output_dir) if output_dir else None,
                                logger=logger_ or logging.getLogger("terramind_openeo.job"),
                                scheduler=dask_client, cancel=cancel, progress=progress, chunk_size=chunk_size,
                                policy=policy, job_results=job_results)
    return pg, evaluator, scope, ctx


def evaluate(pg: dict, evaluator: GraphEvaluator, scope: dict, ctx: _ctx.ExecutionContext) -> Any:
    """Build the lazy result (and ``ctx.saves``); cheap: metadata only."""
    token = _ctx.activate(ctx)
    try:
        return evaluator.evaluate(pg, scope)
    finally:
        _ctx.deactivate(token)


def execute_process_graph(process_graph: Any, output_dir: Path | None, *, catalog, user_processes=None,
                          logger=None, cancel: Callable[[], bool] | None = None,
                          progress: Callable[[float], None] | None = None, dask_client=None,
                          parameters: dict | None = None, chunk_size: int = 512,
                          policy: Policy | None = None, job_results: dict[str, str] | None = None
                          ) -> ExecutionResult:
    """Run ``process_graph`` and write what its ``save_result`` nodes ask into ``output_dir``.

    Raises ``OpenEOError`` subclasses; all graph, argument and extent errors are raised before any
    pixel is computed. Files appear in ``output_dir`` only when complete. ``policy``: what the user may
    do (the back-end's); default ``Policy.trusted_local()``, the operator's own run. ``job_results``: the
    batch jobs ``load_ml_model`` may read (job id -> results directory of each finished job of the caller).
    """
    job_logger = logger or logging.getLogger("terramind_openeo.job")
    early = early_sandbox(process_graph, user_processes, policy)
    try:
        pg, evaluator, scope, ctx = prepare(process_graph, catalog=catalog, user_processes=user_processes,
                                            parameters=parameters, output_dir=output_dir, logger_=job_logger,
                                            cancel=cancel, progress=progress, dask_client=dask_client,
                                            chunk_size=chunk_size, policy=policy, job_results=job_results)
        if output_dir is not None:
            check_writable(Path(output_dir))
    except BaseException:
        if early is not None:
            early.close()
        raise
    set_run_cancel(ctx.log_channel, cancel)
    try:
        prestart_sandbox(pg, evaluator, scope, ctx, early)
        with forward_udf_logs(ctx.log_channel, job_logger, dask_client, wait=lambda: ctx.udf_used):
            return _run(pg, evaluator, scope, ctx, output_dir, dask_client, job_logger, progress)
    finally:  # the run's UDF sandboxes end with it, here and on every Dask worker
        close_run(ctx.log_channel)
        if dask_client is not None and ctx.udf_used:
            try:
                dask_client.run(close_run, ctx.log_channel)
            except Exception as exc:  # noqa: BLE001 - the workers' idle timers close them anyway
                logger.warning("could not close the UDF sandboxes on the Dask workers: %s", exc)


def early_sandbox(process_graph: Any, user_processes: Any, policy: Policy | None) -> Sandbox | None:
    """A sandbox started before the run is even checked, for a sandboxed run whose request mentions
    ``run_udf`` (its start overlaps with the checks; :func:`prestart_sandbox` adopts or closes it)."""
    config = policy.udf_sandbox if policy is not None else None
    if not isinstance(config, SandboxConfig):
        return None
    try:
        mentioned = '"run_udf"' in json.dumps([process_graph, user_processes], default=str)
    except (TypeError, ValueError, RecursionError):
        return None
    return start_early(config) if mentioned else None


def prestart_sandbox(pg: dict, evaluator: GraphEvaluator, scope: dict, ctx: _ctx.ExecutionContext,
                     early: Sandbox | None = None) -> None:
    """A sandboxed run whose graph calls ``run_udf`` has its sandbox started now (or adopts ``early``),
    with the imports of the UDFs it can read already (literal code or an allowed file), while the graph is
    evaluated. Only a head start: a graph this cannot read is left to the evaluation, which raises the real
    error (and an early sandbox the run does not need is closed)."""
    config = ctx.policy.udf_sandbox if ctx.policy is not None else None
    if not isinstance(config, SandboxConfig):
        if early is not None:
            early.close()
        return
    from terramind_openeo.processes.registry import registry
    from terramind_openeo.processes.resolve import walk
    from terramind_openeo.processes.udf import udf_code

    codes = []
    try:
        for node in walk(flat_graph(pg), registry(), evaluator.user_processes, scope):
            if node.target.predefined and node.target.process_id == "run_udf":
                udf = node.arguments.get("udf")
                try:
                    codes.append(udf_code(udf, ctx.policy.udf_roots) if isinstance(udf, str) else "")
                except OpenEOError:
                    codes.append("")
    except Exception:  # noqa: BLE001 - the evaluation meets the same graph and raises its real error
        codes = []
    if codes:
        prestart(ctx.log_channel, config, codes, early)
    elif early is not None:
        early.close()


def _run(pg: dict, evaluator: GraphEvaluator, scope: dict, ctx: _ctx.ExecutionContext, output_dir: Path | None,
         dask_client, job_logger: logging.Logger, progress: Callable[[float], None] | None) -> ExecutionResult:
    value = evaluate(pg, evaluator, scope, ctx)
    result = ExecutionResult(value=value)
    if not ctx.saves:
        if isinstance(value, (xr.DataArray, da.Array)):
            value = value.compute(scheduler=dask_client) if dask_client is None else dask_client.compute(value).result()
            result.value = value
        return result
    if output_dir is None:
        raise OpenEOError("save_result needs an output directory")
    out = Path(output_dir)
    total = sum(_count_blocks(s.data) for s in ctx.saves) or 1
    done = [0]

    def on_block() -> None:
        done[0] += 1
        if progress is not None:
            progress(min(done[0] / total, 1.0))

    cubes: dict[Path, Any] = {}
    for i, save in enumerate(ctx.saves):
        basename = "openEO" if len(ctx.saves) == 1 else f"openEO_{i}"
        basename = save.options.get("filename_prefix", basename)
        inside(out, basename)  # the name stays a file name directly inside the output directory
        job_logger.info("writing %s result %s", save.format, basename)
        files = WRITERS[save.format](save.data, out, basename, scheduler=dask_client, cancel=ctx.check_cancel,
                                     on_block=on_block)
        for f in files:
            cubes[f] = _slice_for(save.data, f) if isinstance(save.data, xr.DataArray) else None
        result.files += files
        result.formats.append(save.format)
    result.stac = build_stac(result.files, out, cubes)
    if progress is not None:
        progress(1.0)
    return result


def _count_blocks(data: Any) -> int:
    if isinstance(data, xr.DataArray) and isinstance(data.data, da.Array):
        return int(data.data.npartitions)
    return 1


def _slice_for(cube: xr.DataArray, path: Path) -> xr.DataArray:
    try:
        cube = normalise_cube(cube)
    except OpenEOError:
        return cube
    if path.suffix == ".tif" and "t" in cube.coords and cube.sizes["t"] > 1:
        for i, t in enumerate(cube.t.values):
            if str(t)[:10] in path.stem:
                return cube.isel(t=[i])
    return cube
