"""Few-shot prediction cost: what ``predict_random_forest`` adds to computing the embeddings, and its memory.

Three measurements, each in a fresh subprocess (peak RSS from ``getrusage``):

- ``embed``: ``terramind_embed`` over an N x N px Sentinel-2 L2A cube (the real tile ``282D_485L_3_3``
  mirrored to N x N, lazily, as the process path runs it: ``chunked.map_chunks``), every block computed and
  dropped;
- ``embed+predict``: the same embeddings with a model predicted over them chunk by chunk (the graph
  ``terramind_embed -> reduce_dimension(predict_random_forest)``), every block computed and dropped; the
  difference to ``embed`` is what prediction adds (goal: < 10 %);
- ``predict`` at several areas: the model over a synthetic embedding cube (D bands, every chunk a view of
  one random block: no model run, next to no cost), for the prediction's own throughput and to show that
  peak RSS stays flat as the area grows. The wall-clock difference of the first two runs is noisy on a
  shared machine; the predict-only rate scaled to the embedding cube's cells is the steadier estimate.

The model is fitted on random embeddings (``--classes`` x ``--samples`` points, ``--trees`` trees): deep trees,
the costly case. Random TerraMind weights unless ``--weights`` names a checkpoint (speed does not depend on
the weights' values). Small sizes work on a laptop; the real figures at 4096^2 px:

    python benchmarks/bench_fewshot.py --size 4096 --model terramind_v1_base --resolution pixel \
        --rss-sizes 1024 2048 4096 --estimator rf
    python benchmarks/bench_fewshot.py --size 512 --model terramind_v1_tiny   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TERRAMIND_OPENEO_SHARED_DATA", REPO.parent / "shared" / "data"))
TILE = SHARED / "terramind-examples/S2L2A/282D_485L_3_3.tif"
BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"]
DIMS = {"terramind_v1_tiny": 192, "terramind_v1_small": 384, "terramind_v1_base": 768, "terramind_v1_large": 1024}


def s2_cube(size: int, chunk: int):
    """The real tile mirrored to size x size px (lazy: each block is cut from the tile when computed)."""
    import dask.array as da
    import rasterio
    import xarray as xr

    with rasterio.open(TILE) as src:
        tile, transform, crs = src.read().astype(np.float32), src.transform, src.crs
    n = tile.shape[1]

    def block(block_info=None):
        (b0, b1), (r0, r1), (c0, c1) = block_info[None]["array-location"]
        rows, cols = np.arange(r0, r1), np.arange(c0, c1)
        rr = np.where((rows // n) % 2 == 0, rows % n, n - 1 - rows % n)
        cc = np.where((cols // n) % 2 == 0, cols % n, n - 1 - cols % n)
        return tile[b0:b1][:, rr][:, :, cc]

    data = da.map_blocks(block, dtype=np.float32, chunks=((12,), *(_chunks(size, chunk),) * 2))
    ys = transform.f + transform.e * (np.arange(size) + 0.5)
    xs = transform.c + transform.a * (np.arange(size) + 0.5)
    cube = xr.DataArray(data, dims=("bands", "y", "x"), coords={"bands": BANDS, "y": ys, "x": xs})
    return cube.rio.write_crs(crs)


def _chunks(size: int, chunk: int) -> tuple[int, ...]:
    return tuple(min(chunk, size - i) for i in range(0, size, chunk))


def embedding_cube(size: int, dim: int, chunk: int):
    """Synthetic embeddings ``(bands, y, x)`` with a CRS: every chunk a view of one random block made once,
    so that producing a chunk costs next to nothing and the time measured is the prediction's."""
    import dask.array as da
    import xarray as xr

    values = np.random.default_rng(0).standard_normal((dim, chunk, chunk), dtype=np.float32)

    def block(block_info=None):
        (_, _), (r0, r1), (c0, c1) = block_info[None]["array-location"]
        return values[:, : r1 - r0, : c1 - c0]

    data = da.map_blocks(block, dtype=np.float32, chunks=((dim,), *(_chunks(size, chunk),) * 2))
    cube = xr.DataArray(data, dims=("bands", "y", "x"), coords={
        "bands": [f"emb_{i:03d}" for i in range(dim)], "y": 5_000_000.0 - 10 * np.arange(size),
        "x": 500_000.0 + 10 * np.arange(size)})
    return cube.rio.write_crs("EPSG:32632")


def fitted_model(dim: int, estimator: str, classes: int, samples: int, trees: int):
    """A model fitted on random embeddings through the process functions (what a graph does)."""
    from terramind_openeo.processes.ml.fit import (
        fit_class_random_forest,
        terramind_fit_class_knn,
        terramind_fit_class_logistic,
    )
    from terramind_openeo.processes.vector import parse_geojson, vector_cube

    rng = np.random.default_rng(0)
    n = classes * samples
    x = rng.standard_normal((n, dim), dtype=np.float32)
    labels = np.repeat(np.arange(classes), samples)
    x += np.eye(classes, dim, dtype=np.float32)[labels] * 2  # separable a little, still deep trees
    features = parse_geojson({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [float(i % 360 - 180), 0.0]},
         "properties": {"target": int(c)}} for i, c in enumerate(labels)]})
    predictors = vector_cube(features, x, ("geometry", "bands"), {"bands": [f"emb_{i:03d}" for i in range(dim)]})
    fit = {"rf": lambda: fit_class_random_forest(predictors, predictors, num_trees=trees, seed=0),
           "knn": lambda: terramind_fit_class_knn(predictors, predictors, k=5),
           "logistic": lambda: terramind_fit_class_logistic(predictors, predictors)}[estimator]
    return fit()


def drain(array) -> float:
    """Compute every block of a dask array and drop it; seconds."""
    import dask

    blocks = array.map_blocks(lambda b: np.zeros((1,) * b.ndim, dtype=np.int8), dtype=np.int8,
                              chunks=tuple((1,) * len(c) for c in array.chunks))
    start = time.perf_counter()
    dask.compute(blocks, scheduler="threads")
    return time.perf_counter() - start


def child(args: argparse.Namespace) -> dict:
    from terramind_openeo.processes import context as ctx
    from terramind_openeo.processes.ml.predict import predict_cube

    ctx.activate(ctx.ExecutionContext(catalog=None, chunk_size=args.chunk))
    dim = DIMS[args.model]
    model = fitted_model(dim, args.estimator, args.classes, args.samples, args.trees)
    out: dict = {"mode": args.mode, "size": args.size}
    if args.mode in ("embed", "embed+predict"):
        from terramind_openeo.processes.terramind import terramind_embed

        emb = terramind_embed(s2_cube(args.size, args.chunk), model=args.model, weights=args.weights,
                              resolution=args.resolution, device=args.device)
        target = emb if args.mode == "embed" else predict_cube(emb, model, "value", keep_bands=False)
        out["seconds"] = drain(target.data)
        out["cells"] = int(np.prod([emb.sizes["y"], emb.sizes["x"]]))
    else:
        emb = embedding_cube(args.size, dim, args.chunk)
        out["generate_seconds"] = drain(emb.data)
        out["seconds"] = drain(predict_cube(emb, model, "value", keep_bands=False).data)
        out["cells"] = args.size * args.size
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out


def run_child(args: argparse.Namespace, mode: str, size: int) -> dict:
    """``--repeats`` fresh subprocesses: the median of their times, the largest of their peak RSS."""
    cmd = [sys.executable, __file__, "--child", "--mode", mode, "--size", str(size)]
    for key in ("model", "weights", "resolution", "device", "estimator", "classes", "samples", "trees", "chunk"):
        cmd += [f"--{key}", str(getattr(args, key))]
    runs = []
    for _ in range(args.repeats):
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    row = dict(runs[0])
    for key in ("seconds", "generate_seconds"):
        if key in row:
            row[key] = float(np.median([r[key] for r in runs]))
    row["peak_rss_mb"] = max(r["peak_rss_mb"] for r in runs)
    row["all_seconds"] = [round(r["seconds"], 2) for r in runs]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512, help="input px per side of the embed / embed+predict runs")
    p.add_argument("--rss-sizes", type=int, nargs="*", default=[512, 1024, 2048],
                   help="embedding-cube px per side of the predict-only runs")
    p.add_argument("--model", default="terramind_v1_tiny", choices=sorted(DIMS))
    p.add_argument("--weights", default="random")
    p.add_argument("--resolution", default="patch", choices=("patch", "pixel"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--estimator", default="rf", choices=("rf", "knn", "logistic"))
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--samples", type=int, default=100, help="training points per class")
    p.add_argument("--trees", type=int, default=100)
    p.add_argument("--chunk", type=int, default=512, help="dask chunk edge in px (the process path's default)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each measurement (median time, largest RSS)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="embed", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    rows = []
    for mode, size in [("embed", args.size), ("embed+predict", args.size)] + [("predict", s) for s in args.rss_sizes]:
        rows.append(run_child(args, mode, size))
        print(json.dumps(rows[-1]), flush=True)  # as it comes: a run cut short by a timeout keeps what it measured
    embed, both = rows[0], rows[1]
    added = (both["seconds"] - embed["seconds"]) / embed["seconds"]
    print(f"\n{args.model} ({args.weights} weights, {args.resolution} resolution, {args.device}), {args.size}^2 px, "
          f"{args.estimator} ({f'{args.trees} trees, ' if args.estimator == 'rf' else ''}{args.classes} classes x "
          f"{args.samples} points), chunk "
          f"{args.chunk}, median of {args.repeats}:")
    print(f"  embeddings {embed['seconds']:.1f} s; embeddings + prediction {both['seconds']:.1f} s: prediction adds "
          f"{100 * added:+.1f} % (goal < 10 %)")
    for r in rows[2:]:
        print(f"  predict only over {r['size']}^2 cells x {DIMS[args.model]} bands: {r['seconds']:.1f} s, "
              f"{r['cells'] / r['seconds'] / 1e6:.3f} Mcells/s (cube chunks: {r['generate_seconds']:.1f} s), "
              f"peak RSS {r['peak_rss_mb']:.0f} MB")
    if both["cells"]:
        per_cell = rows[-1]["seconds"] / rows[-1]["cells"]
        print(f"  at that rate the {both['cells']} cells of the embed+predict run take {per_cell * both['cells']:.1f} s "
              f"= {100 * per_cell * both['cells'] / embed['seconds']:.1f} % of the embedding time")


if __name__ == "__main__":
    main()
