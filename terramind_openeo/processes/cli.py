"""``terramind-openeo run GRAPH.json --output DIR``: a process graph over a large area, tiled and resumable.

The graph is checked whole first (every openEO error before any pixel is computed), evaluated into a
lazy cube, cut into work tiles aligned to its dask chunks, and the tiles are computed as Dask tasks
(a local cluster sized to the machine by default, ``--scheduler ADDRESS`` for an existing one) and
written as they finish. A rerun skips tiles whose files still match the checksums in the manifest.
At the end: a COG (or VRT) mosaic per date, or a netCDF, or one Zarr store; a PNG quicklook; STAC JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from terramind_openeo.config import settings
from terramind_openeo.errors import describe
from terramind_openeo.processes import heap
from terramind_openeo.processes.errors import OpenEOError, ProcessGraphInvalid, TileFailed, WeightsUnavailable
from terramind_openeo.processes.progress import Progress, logs_above_bar, pixel_area_km2, wants_bar

logger = logging.getLogger("terramind_openeo.run")
SHARE_DIR_ENV = "TERRAMIND_OPENEO_TILE_SHARE_DIR"  # inference.shared_tiles (not imported here: no torch)
# GDAL's block cache defaults to 5 % of RAM per process and fills with the area read: bound it. A chunk's
# input blocks are read again only by its neighbours (halo), minutes later, so a small cache loses nothing.
GDAL_CACHE_MB = "64"


DTYPE_CHOICES = ("float32", "bfloat16", "float16", "int8")  # inference.context.DTYPES (not imported here: no torch)
DTYPE_PROCESSES = ("terramind_embed", "terramind_generate", "terramind_predict", "terramind_locate")
"""The processes with a ``dtype`` parameter (tests/processes/test_dtype_option.py checks them against the specs)."""


def with_dtype(graph: dict, dtype: str) -> dict:
    """``graph`` with ``dtype`` set on every node (callbacks included) of a process with a ``dtype`` parameter
    that does not set one itself; an explicit ``dtype`` in the graph wins. Changes ``graph`` in place."""
    nodes = graph.get("process_graph", graph)
    for node in nodes.values():
        if not isinstance(node, dict):
            continue
        arguments = node.get("arguments")
        if not isinstance(arguments, dict):
            continue
        if node.get("process_id") in DTYPE_PROCESSES and arguments.get("dtype") is None:
            arguments["dtype"] = dtype
        for value in arguments.values():
            if isinstance(value, dict) and isinstance(value.get("process_graph"), dict):
                with_dtype(value, dtype)
    return graph


def _parse_param(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ProcessGraphInvalid(f"--param '{text}' must be name=value")
    name, value = text.split("=", 1)
    try:
        return name.strip(), json.loads(value)
    except json.JSONDecodeError:
        return name.strip(), value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def plain(text: str) -> str:
    """Docstring text for a terminal: no reStructuredText literal markers."""
    return text.replace("``", "")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="terramind-openeo run", description=plain(__doc__.split("\n\n")[0]))
    p.add_argument("graph", help="process graph JSON file (as the openEO Python client or Web Editor writes it)")
    p.add_argument("--output", "-o", default=None,
                   help="output directory (created; reruns resume in it); required unless --list-params")
    p.add_argument("--list-params", action="store_true",
                   help="print the graph's parameters (name, type, default, description) and exit")
    p.add_argument("--scheduler", default="local",
                   help="'local' (default: a local Dask cluster sized to the machine), 'threads', "
                        "'synchronous', or the address of a Dask scheduler (tcp://host:8786)")
    p.add_argument("--workers", type=_positive_int, default=None, help="worker processes of the local cluster")
    p.add_argument("--threads-per-worker", type=_positive_int, default=None,
                   help="torch/BLAS threads of each local worker (default: the machine's cores / workers)")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="set a graph parameter (value parsed as JSON when possible); repeatable")
    p.add_argument("--tile-size", type=int, default=2048, help="work tile edge in pixels (default 2048)")
    p.add_argument("--chunk-size", type=int, default=512, help="dask chunk edge in pixels (default 512)")
    p.add_argument("--catalog", default=None, help="catalog file (YAML/JSON); default: the packaged one")
    p.add_argument("--mosaic", choices=("cog", "vrt"), default="cog", help="GTiff results: COG mosaic or VRT")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default=None,
                   help="compute precision of every terramind_* process in the graph that does not set its own "
                        "dtype (a CPU without bf16 hardware refuses bfloat16; int8: linear layers in int8)")
    p.add_argument("--no-progress", action="store_true",
                   help="no progress bar but log lines (the default where stderr is not a terminal)")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="debug messages, and the INFO messages of Dask (distributed), silenced by default")
    return p


@contextlib.contextmanager
def dask_scheduler(spec: str, workers: int | None, threads_per_worker: int | None = None) -> Iterator[Any]:
    """None for dask's threaded/synchronous schedulers, else a ``distributed.Client``."""
    if spec in ("threads", "synchronous"):
        import dask

        with dask.config.set(scheduler=spec):
            yield None
        return
    from distributed import Client, LocalCluster

    if spec == "local":
        import dask

        n = workers or os.cpu_count() or 1
        # torch/BLAS threads per worker: by default the cores shared out, no oversubscription
        threads = str(threads_per_worker or max(1, (os.cpu_count() or 1) // n))
        environ = heap.dask_pre_spawn_environ()  # not dask's MALLOC_TRIM_THRESHOLD_=65536: see processes/heap.py
        environ.update({k: threads for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
        environ["GDAL_CACHEMAX"] = settings().gdal_cachemax or GDAL_CACHE_MB
        with contextlib.ExitStack() as stack:
            if n > 1 and settings().tile_share_dir is None:  # model tiles on the borders between the workers'
                # bands run once (inference.shared_tiles); a directory the user exported is used as it is
                environ[SHARE_DIR_ENV] = stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="terramind-openeo-tiles-"))
                stack.callback(os.environ.pop, SHARE_DIR_ENV, None)  # the nannies export it here: not beyond
            stack.enter_context(dask.config.set({"distributed.nanny.pre-spawn-environ": environ}))
            cluster = stack.enter_context(LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                                       dashboard_address=None))
            client = stack.enter_context(Client(cluster))
            from terramind_openeo.processes.workers import QuickExit

            client.register_plugin(QuickExit())  # a quick, clean close: see processes/workers.py
            yield client
        return
    with Client(spec, timeout="30s") as client:
        yield client


def _signature(graph: dict, params: dict, fmt: str, cube) -> str:
    text = json.dumps({"graph": graph, "params": params, "format": fmt, "shape": list(cube.shape),
                       "chunks": [list(c) for c in cube.chunks]}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def quiet_dependencies(verbose: bool) -> None:
    """Dask's INFO lines (~34 per run) only with ``-v``: set in dask's config before ``distributed`` is
    imported (it configures its loggers then, and its worker processes inherit the config), and on the
    loggers in case it already was."""
    import dask

    level = "info" if verbose else "warning"
    dask.config.set({"logging": {"distributed": level, "distributed.client": "warning"}})
    logging.getLogger("distributed").setLevel(level.upper())
    logging.captureWarnings(True)  # Python warnings through logging: above the progress bar, not on it


def list_params(path: str) -> int:
    """``--list-params``: what ``--param NAME=VALUE`` can set."""
    from terramind_openeo.processes.execute import parse_process_graph

    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ProcessGraphInvalid(f"cannot read {path}: {exc.strerror}") from exc
    params = [p for p in parse_process_graph(text).get("parameters") or [] if isinstance(p, dict) and "name" in p]
    if not params:
        print(f"{path} has no parameters")
        return 0
    for p in params:
        schema = p.get("schema") or {}
        types = schema.get("type") if isinstance(schema, dict) else None
        kind = "|".join(types) if isinstance(types, list) else (types or "any")
        default = f"default {json.dumps(p['default'])}" if "default" in p else "required"
        print(f"{p['name']} ({kind}, {default})")
        if p.get("description"):
            print(f"    {p['description']}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.list_params:
            return list_params(args.graph)
    except OpenEOError as exc:
        logger.error("%s: %s", exc.code, exc.message)
        return 2
    if not args.output:
        parser.error("--output is required")
    quiet_dependencies(args.verbose)
    os.environ.setdefault("GDAL_CACHEMAX", GDAL_CACHE_MB)  # hand-off to GDAL, which reads it itself
    heap.apply_policy()
    try:
        return _run(args)
    except OpenEOError as exc:
        if exc.trace:  # an unexpected failure: its traceback, for a bug report
            logger.error("%s", exc.trace.rstrip())
        logger.error("%s: %s", exc.code, exc.message)
        return 2 if exc.status < 500 else 1


def tiles_failed(failed: list[str], errors: list[BaseException]) -> OpenEOError:
    """One error for the failed tiles: the first one's cause, and "rerun" only where a rerun may help (a
    bad argument, missing weights or data, a UDF that raises will fail the same way again)."""
    first = errors[0] if errors else None
    lasting = bool(errors) and all(
        (isinstance(e, OpenEOError) and e.status < 500) or isinstance(e, (ValueError, TypeError)) for e in errors)
    cause = (first.message if isinstance(first, OpenEOError) else describe(first)) if first else "unknown"
    if isinstance(first, OpenEOError) and lasting:
        return type(first)(f"{len(failed)} tile(s) failed ({', '.join(failed)}): {cause}", code=first.code,
                           status=first.status)
    advice = "" if lasting else "; finished tiles are kept, a rerun with the same --output retries the failed ones"
    return TileFailed(f"{len(failed)} tile(s) failed ({', '.join(failed)}): {cause}{advice}")


def check_hub_weights(text: str, params: dict) -> None:
    """Before the process engine is even imported: the official checkpoints that the graph's ``terramind_*``
    nodes ask for (weights "hub", the default) are in the cache, or the hub answers one quick request. Offline,
    the run stops here within seconds with the message of ``model.hub``; the full check (callbacks,
    user-defined processes, local paths) runs again when the graph is evaluated."""
    try:
        doc = json.loads(text)
    except ValueError:
        return  # parse_process_graph says what is wrong with it
    doc = doc.get("process", doc) if isinstance(doc, dict) else {}
    nodes = doc.get("process_graph", doc) if isinstance(doc, dict) else {}
    values = {p["name"]: p.get("default") for p in doc.get("parameters") or [] if isinstance(p, dict) and "name" in p}
    values.update(params)
    names: list[str] = []
    # the defaults from the process specs (which a test holds equal to the context table): reading them does
    # not import the inference layer (torch, xarray: seconds on a busy machine)
    from terramind_openeo.processes.registry import SPEC_DIR

    defaults = {pid: {p["name"]: p.get("default") for p in json.loads((SPEC_DIR / f"{pid}.json").read_text())
                      ["parameters"]} for pid in ("terramind_embed", "terramind_generate")}
    for node in (nodes.values() if isinstance(nodes, dict) else []):
        pid = node.get("process_id") if isinstance(node, dict) else None
        if not isinstance(pid, str) or pid not in defaults:
            continue
        args = node.get("arguments") if isinstance(node.get("arguments"), dict) else {}
        spec_defaults = defaults[pid]

        def arg(key: str, args: dict = args, default: dict = spec_defaults) -> Any:
            value = args.get(key, default.get(key))
            if isinstance(value, dict) and set(value) == {"from_parameter"}:
                value = values.get(value["from_parameter"], default.get(key))
            return value

        if arg("weights") != "hub":
            continue
        names.append(arg("model"))
        if pid == "terramind_generate":
            target = arg("target")
            names += [target] if isinstance(target, str) else list(target or [])
    if not names:
        return
    from terramind_openeo.model.errors import HubUnavailableError, WeightsSourceError
    from terramind_openeo.model.hub import fetch_all, hub_file

    try:
        files = [hub_file(str(name)) for name in dict.fromkeys(names)]
    except WeightsSourceError:
        return  # a name that is not a model or a tokenizer: the graph's validation names it
    try:
        fetch_all(files)
    except HubUnavailableError as exc:
        raise WeightsUnavailable(str(exc), argument="weights") from None


def _run(args: argparse.Namespace) -> int:
    try:
        text = Path(args.graph).read_text()
    except OSError as exc:
        raise ProcessGraphInvalid(f"cannot read {args.graph}: {exc.strerror}") from exc
    params = dict(_parse_param(p) for p in args.param)
    check_hub_weights(text, params)  # seconds, not the engine's import time, when the weights cannot be had

    from terramind_openeo.processes.catalog import Catalog
    from terramind_openeo.processes.execute import evaluate, parse_process_graph, prepare
    from terramind_openeo.processes.runner import run_save
    from terramind_openeo.processes.udf import forward_udf_logs
    from terramind_openeo.processes.writers import check_writable

    graph = parse_process_graph(text)
    if args.dtype:
        graph = with_dtype(graph, args.dtype)
    catalog = Catalog.from_file(args.catalog) if args.catalog else Catalog.default()
    out = Path(args.output)
    pg, evaluator, scope, ctx = prepare(graph, catalog=catalog, parameters=params, output_dir=out,
                                        chunk_size=args.chunk_size)
    check_writable(out)
    evaluate(pg, evaluator, scope, ctx)
    if not ctx.saves:
        raise ProcessGraphInvalid("the graph has no save_result node: nothing to write")
    failed: list[str] = []
    errors: list[BaseException] = []
    files: list[Path] = []
    bar = wants_bar(args.no_progress, sys.stderr)
    with dask_scheduler(args.scheduler, args.workers, args.threads_per_worker) as client, \
            forward_udf_logs(ctx.log_channel, ctx.logger, client, wait=lambda: ctx.udf_used), logs_above_bar(bar):
        for i, save in enumerate(ctx.saves):
            basename = save.options.get("filename_prefix", "openEO" if len(ctx.saves) == 1 else f"openEO_{i}")
            km2 = pixel_area_km2(save.data) if hasattr(save.data, "sizes") else None
            result = run_save(save, out, basename, client=client, tile_size=args.tile_size, mosaic=args.mosaic,
                              signature_of=lambda cube, fmt: _signature(graph, params, fmt, cube),
                              progress_factory=lambda total, done, km2=km2: Progress(total, done, bar=bar,
                                                                                     km2_per_pixel=km2))
            failed += result.failed
            errors += result.errors
            files += result.files
    if failed:
        raise tiles_failed(failed, errors)
    logger.info("wrote %s", ", ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
