"""End-to-end pipeline benchmark: S2 -> LULC (or embeddings) with ``terramind-openeo run`` over growing areas.

The input is the real Sentinel-2 L2A TerraMesh tile ``282D_485L_3_3`` (224 x 224 px) mosaicked by mirroring
into N x N px GeoTIFFs (real pixels, repeated; said so in the output). For every size it measures, on CPU
with the tiny model and random weights:

- pipeline throughput (km^2/h, 10 m pixels) of ``run`` with a local Dask cluster of 1 and of 2 worker
  processes, and the peak RSS of the whole process tree (``run`` + workers, sampled every 0.2 s);
- the pure model throughput on the same pixels (``inference.generate_cube``/``embed_cube`` in process,
  no Dask, no I/O) for sizes up to ``--model-max``; larger sizes are compared with the rate of the
  largest size timed (the model's cost per pixel does not depend on the area), marked ``*``;
- CPU seconds (user + system) of both, summed over the whole ``run`` process tree: on a machine shared
  with other work the wall clock includes waiting for a core, the CPU time much less so.

``--model`` and ``--dtype`` choose the model and the processes' precision (default tiny, float32 on CPU).

Goals (issue 6): peak RSS grows < 20 % from 2k^2 to 8k^2; pipeline >= 85 % of pure model throughput;
2 workers >= 1.7 x one.

    python benchmarks/bench_pipeline.py --sizes 1024 2048 4096 8192 --workers 1 2 --kind lulc
    python benchmarks/bench_pipeline.py --sizes 8192 --workers 1 2 --threads-per-worker 1 --model-max 0 \
        --scaling-size 2048   # worker scaling, and the machine's ceiling for it
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TERRAMIND_OPENEO_SHARED_DATA", REPO.parent / "shared" / "data"))
TILE = SHARED / "terramind-examples/S2L2A/282D_485L_3_3.tif"
BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]


def mosaic(size: int, out: Path) -> Path:
    """An N x N px GeoTIFF of the real tile mirrored in both directions (same CRS, 10 m pixels)."""
    import rasterio

    path = out / f"s2_{size}.tif"
    if path.exists():
        return path
    with rasterio.open(TILE) as src:
        tile, profile = src.read(), src.profile
    reps = -(-size // tile.shape[1])
    row = np.concatenate([tile if i % 2 == 0 else tile[:, :, ::-1] for i in range(reps)], axis=2)
    full = np.concatenate([row if i % 2 == 0 else row[:, ::-1, :] for i in range(reps)], axis=1)[:, :size, :size]
    profile.update(width=size, height=size, tiled=True, blockxsize=512, blockysize=512, compress="deflate")
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(full)
    return path


def graph(kind: str, timesteps: int, model: str = "terramind_v1_tiny", dtype: str | None = None) -> dict:
    load = {"process_id": "load_collection", "arguments": {"id": "BENCH", "spatial_extent": None,
                                                          "temporal_extent": None, "bands": None}}
    common = {"data": {"from_node": "load"}, "model": model, "weights": "random"}
    if dtype:
        common["dtype"] = dtype
    proc = ({"process_id": "terramind_generate", "arguments": {**common, "target": "LULC", "timesteps": timesteps,
                                                                 "argmax": True}} if kind == "lulc" else
            {"process_id": "terramind_embed", "arguments": {**common, "resolution": "patch"}})
    return {"process_graph": {"load": load, "model": proc, "save": {
        "process_id": "save_result", "arguments": {"data": {"from_node": "model"}, "format": "GTiff"},
        "result": True}}}


def tree_rss(pid: int) -> tuple[int, int, int]:
    """RSS of the ``run`` process, of its children (Dask nanny + workers) summed, and of the whole tree."""
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.Error:
        return 0, 0, 0
    rss = []
    for q in procs:
        try:
            rss.append(q.memory_info().rss)
        except psutil.Error:
            rss.append(0)
    return rss[0], sum(rss[1:]), sum(rss)


def run_tile(kind: str, tile: int) -> int:
    """``run``'s ``--tile-size`` is in result pixels; a patch embedding pixel is 16 x 16 input pixels, so the
    same work (``tile`` input px a side) is ``tile // 16`` result px (else up to 32k^2 input px is one tile)."""
    return tile if kind == "lulc" else max(1, tile // 16)


def run_pipeline(tif: Path, workdir: Path, kind: str, timesteps: int, workers: int, tile: int, chunk: int,
                 threads_per_worker: int | None = None, model: str = "terramind_v1_tiny",
                 dtype: str | None = None) -> dict:
    catalog = workdir / f"catalog_{tif.stem}.json"
    catalog.write_text(json.dumps({"collections": [
        {"id": "BENCH", "type": "geotiff", "path": str(tif), "datetime": "2021-07-23", "bands": BANDS}]}))
    tag = f"{kind}_{model}_{dtype or 'default'}"
    gpath = workdir / f"graph_{tag}.json"
    gpath.write_text(json.dumps(graph(kind, timesteps, model, dtype)))
    out = workdir / f"out_{tif.stem}_{tag}_{workers}w"
    shutil.rmtree(out, ignore_errors=True)  # else `run` resumes: every tile would be skipped
    cmd = [sys.executable, "-m", "terramind_openeo.cli", "run", str(gpath), "--output", str(out), "--catalog",
           str(catalog), "--scheduler", "local", "--workers", str(workers), "--tile-size", str(run_tile(kind, tile)),
           "--chunk-size", str(chunk), "--no-progress"]
    if threads_per_worker:
        cmd += ["--threads-per-worker", str(threads_per_worker)]
    env = dict(os.environ)  # `run` gives each worker process cores // workers threads unless told
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = [0, 0, 0]  # client, workers (all children), whole tree

    def sample() -> None:
        while proc.poll() is None:
            peak[:] = [max(a, b) for a, b in zip(peak, tree_rss(proc.pid))]
            time.sleep(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    log = proc.communicate()[0]
    wall = time.perf_counter() - start
    t.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # `run` and the workers it waited for
    cpu = (after.ru_utime - usage.ru_utime) + (after.ru_stime - usage.ru_stime)
    (workdir / f"log_{tif.stem}_{tag}_{workers}w.txt").write_text(log)  # per-tile timestamps, for the tail
    if proc.returncode != 0:
        raise RuntimeError(f"run failed:\n{log[-3000:]}")
    return {"seconds": wall, "cpu_seconds": cpu, "peak_rss_mb": peak[2] / 2**20, "client_peak_mb": peak[0] / 2**20,
            "workers_peak_mb": peak[1] / 2**20}


def model_only(tif: Path, kind: str, timesteps: int, threads: int | None = None, barrier=None,
               model: str = "terramind_v1_tiny", dtype: str | None = None) -> tuple[float, float]:
    """Wall and CPU seconds of ``inference`` alone on the same pixels (in process, numpy in memory, model
    warm). ``barrier``: waited on once the model is warm (processes timed side by side start together)."""
    import rioxarray
    import torch

    from terramind_openeo import inference

    torch.set_num_threads(threads or os.cpu_count() or 1)  # as a 1-worker run: every core unless told
    cube = rioxarray.open_rasterio(tif).rename(band="bands").assign_coords(bands=BANDS).load()
    ctx = {"model": model, "weights": "random", "dtype": dtype}
    fn = inference.generate_cube if kind == "lulc" else inference.embed_cube
    if kind == "lulc":
        ctx.update(target="LULC", timesteps=timesteps, argmax=True)
    fn(cube.isel(x=slice(0, 224), y=slice(0, 224)), ctx)  # warm the model cache
    if barrier is not None:
        barrier.wait()
    start, cpu = time.perf_counter(), time.process_time()
    fn(cube, ctx)
    return time.perf_counter() - start, time.process_time() - cpu


def _model_child(args: tuple, barrier, results) -> None:
    results.put(model_only(*args, threads=1, barrier=barrier)[0])


def model_scaling(tif: Path, kind: str, timesteps: int, processes: int) -> tuple[float, float]:
    """Seconds of the model alone on ``tif`` in one process with one thread, and the slowest of
    ``processes`` such processes run side by side: what the machine allows worker processes to gain, with
    no Dask, I/O or writing (shared caches, memory bandwidth, other tenants of the host)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    times = []
    for n in (1, processes):
        barrier, results = ctx.Barrier(n), ctx.Queue()
        procs = [ctx.Process(target=_model_child, args=((tif, kind, timesteps), barrier, results)) for _ in range(n)]
        for proc in procs:
            proc.start()
        walls = [results.get() for _ in procs]
        for proc in procs:
            proc.join()
        times.append(max(walls))
    return times[0], times[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--kind", choices=("lulc", "embed"), default="lulc")
    p.add_argument("--timesteps", type=int, default=1)
    p.add_argument("--tile-size", type=int, default=2048, help="work tile of `run` in input px")
    p.add_argument("--chunk-size", type=int, default=512)
    p.add_argument("--model-max", type=int, default=2048, help="largest size also timed model-only")
    p.add_argument("--threads-per-worker", type=int, default=None,
                   help="torch threads of each worker (default: run's, cores / workers). With 1, adding a worker "
                        "adds a core: the scaling of the pipeline, not of the machine's cores shared out")
    p.add_argument("--scaling-size", type=int, default=0,
                   help="also time the model alone (1 thread) in 1 process and in as many processes side by side "
                        "as the largest --workers, on a mosaic of this size: the machine's ceiling for the worker "
                        "scaling")
    p.add_argument("--model", default="terramind_v1_tiny")
    p.add_argument("--dtype", default=None, choices=("float32", "bfloat16", "float16", "int8"),
                   help="the processes' dtype (default: theirs, float32 on CPU); benchmarks/cost_per_km2.py "
                        "runs several side by side")
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_pipeline_"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"# input: real S2L2A tile {TILE.name} mirrored into N x N px mosaics; {args.model}, dtype "
          f"{args.dtype or 'default'}, random weights, CPU")
    print(f"# kind={args.kind} timesteps={args.timesteps} tile={args.tile_size} chunk={args.chunk_size} "
          f"cpus={os.cpu_count()} threads_per_worker={args.threads_per_worker or 'cores / workers'}")
    print("size_px  km2      workers  seconds   km2/h    cpu_s    km2/cpu_h  peak_rss_MB  client_MB  workers_MB  "
          "model_km2/h  model_km2/cpu_h  pipeline/model  (cpu)")
    results = []
    model_rate = model_cpu_rate = None
    for size in args.sizes:
        tif = mosaic(size, workdir)
        km2 = size * size * 100 / 1e6
        measured = size <= args.model_max
        if measured:
            wall, cpu = model_only(tif, args.kind, args.timesteps, args.threads_per_worker, model=args.model,
                                   dtype=args.dtype)
            model_rate, model_cpu_rate = km2 / (wall / 3600), km2 / (cpu / 3600)
        mark = "" if measured else "*"
        for w in args.workers:
            r = run_pipeline(tif, workdir, args.kind, args.timesteps, w, args.tile_size, args.chunk_size,
                             args.threads_per_worker, model=args.model, dtype=args.dtype)
            rate, cpu_rate = km2 / (r["seconds"] / 3600), km2 / (r["cpu_seconds"] / 3600)
            ratio = f"{rate / model_rate:.2f}{mark}" if (model_rate and w == 1) else "-"
            cpu_ratio = f"{cpu_rate / model_cpu_rate:.2f}{mark}" if model_cpu_rate else "-"
            print(f"{size:<8} {km2:<8.2f} {w:<8} {r['seconds']:<9.1f} {rate:<8.2f} {r['cpu_seconds']:<8.1f} "
                  f"{cpu_rate:<10.2f} {r['peak_rss_mb']:<12.0f} {r['client_peak_mb']:<10.0f} "
                  f"{r['workers_peak_mb']:<11.0f} {(f'{model_rate:.2f}{mark}' if model_rate else '-'):<12} "
                  f"{(f'{model_cpu_rate:.2f}{mark}' if model_cpu_rate else '-'):<16} {ratio:<15} {cpu_ratio}",
                  flush=True)
            results.append({"size": size, "workers": w, **r, "km2_per_h": rate, "km2_per_cpu_h": cpu_rate,
                            "model_km2_per_h": model_rate, "model_km2_per_cpu_h": model_cpu_rate,
                            "model_measured_at_this_size": measured})
    (workdir / "results.json").write_text(json.dumps(results, indent=1))
    by = {(r["size"], r["workers"]): r for r in results}
    for size in args.sizes:
        if (size, 1) in by and (size, 2) in by:
            print(f"# {size} px: 2 workers / 1 worker = {by[(size, 2)]['km2_per_h'] / by[(size, 1)]['km2_per_h']:.2f} x")
    if args.scaling_size:
        n = max(args.workers)
        one, many = model_scaling(mosaic(args.scaling_size, workdir), args.kind, args.timesteps, n)
        print(f"# model alone on {args.scaling_size} px, 1 thread: 1 process {one:.1f} s, {n} side by side "
              f"{many:.1f} s each: {n} processes give {n * one / many:.2f} x one (the ceiling of the worker scaling)")
    sizes = sorted({r["size"] for r in results})
    for w in args.workers:  # start-up (cluster, imports, model load) cancels out between sizes
        for a, b in zip(sizes, sizes[1:]):
            if (a, w) in by and (b, w) in by:
                dt = by[(b, w)]["seconds"] - by[(a, w)]["seconds"]
                dk = (b * b - a * a) * 100 / 1e6
                marginal = dk / (dt / 3600) if dt > 0 else float("nan")
                ref = by[(b, w)]["model_km2_per_h"]
                vs = f" = {marginal / ref:.2f} x the model's {ref:.1f} km2/h" if (ref and w == 1) else ""
                print(f"# marginal throughput {a} -> {b} px with {w} worker(s): {marginal:.1f} km2/h{vs}")
                dc = by[(b, w)]["cpu_seconds"] - by[(a, w)]["cpu_seconds"]
                ref = by[(b, w)]["model_km2_per_cpu_h"]
                if dc > 0 and ref:
                    print(f"# marginal CPU throughput {a} -> {b} px with {w} worker(s): {dk / (dc / 3600):.1f} "
                          f"km2/cpu_h = {dk / (dc / 3600) / ref:.2f} x the model's {ref:.1f} km2/cpu_h")
    if len(sizes) >= 2:
        lo, hi = sizes[0], sizes[-1]
        for w in args.workers:
            if (lo, w) in by and (hi, w) in by:
                growth = {k: by[(hi, w)][k] / by[(lo, w)][k] - 1 for k in ("peak_rss_mb", "client_peak_mb",
                                                                           "workers_peak_mb")}
                print(f"# peak RSS {lo} -> {hi} px with {w} worker(s): {growth['peak_rss_mb'] * 100:+.0f} % "
                      f"(client {growth['client_peak_mb'] * 100:+.0f} %, workers {growth['workers_peak_mb'] * 100:+.0f} %)")
    print(f"# results in {workdir / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
