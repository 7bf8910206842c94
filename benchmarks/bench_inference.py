"""Benchmark of the inference layer: a large cube through TerraMind tiny on the CPU.

The cube is a mosaic of the real 224 px TerraMesh Sentinel-2 L2A sample tiles (the three sites of
``../shared/data/terramind-examples/S2L2A``, repeated in a checkerboard and cropped to ``--size``), 12 bands,
on a UTM grid. Reports pixels/s for embeddings and for S2L2A -> LULC generation, the time spent inside the
model's ``encode``/``generate`` calls, and the overhead of everything else (tiling, reflect padding,
standardisation, nodata handling, stitching) as a share of that model time (goal: < 10 % at 32 px overlap),
plus memory: the peak of numpy allocations during the run (tracemalloc: tile batches, one band plane while
checking values, the validity mask, the output) and the peak resident-set increase (adds torch's own
allocations and allocator caching). Only the input cube (not copied) and the output are cube-sized.

    python benchmarks/bench_inference.py --size 2048 --lulc-size 448
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import psutil
import xarray as xr

from terramind_openeo.inference import RunStats, embed_cube, generate_cube
from terramind_openeo.inference.bands import S2L2A_BANDS

DATA = Path(os.environ.get("TERRAMIND_OPENEO_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def mosaic(size: int) -> xr.DataArray:
    """``size`` x ``size`` px, 12 bands: the real sample tiles in a checkerboard (10 m, EPSG:32632)."""
    import rioxarray

    tiles = [rioxarray.open_rasterio(p).values.astype(np.float32)
             for p in sorted((DATA / "terramind-examples" / "S2L2A").glob("*.tif"))]
    n = -(-size // 224)
    rows = [np.concatenate([tiles[(i + j) % len(tiles)] for j in range(n)], axis=2) for i in range(n)]
    data = np.concatenate(rows, axis=1)[:, :size, :size]
    cube = xr.DataArray(data, dims=("bands", "y", "x"), coords={
        "bands": list(S2L2A_BANDS), "y": 5160005.0 - 10 * np.arange(size), "x": 670005.0 + 10 * np.arange(size)})
    return cube.rio.write_crs("EPSG:32632")


class PeakRSS:
    """Peak resident set size above the level at start, sampled every 10 ms."""

    def __enter__(self):
        self.process = psutil.Process()
        self.base = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()

    @property
    def increase_mib(self) -> float:
        return (self.peak - self.base) / 2**20


def run(name: str, fn, cube: xr.DataArray, context: dict) -> None:
    stats = RunStats()
    with PeakRSS() as memory:
        tracemalloc.start()
        start = time.perf_counter()
        out = fn(cube, context, stats=stats)
        seconds = time.perf_counter() - start
        numpy_peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    pixels = cube.sizes["y"] * cube.sizes["x"]
    cube_mib = cube.nbytes / 2**20
    print(f"{name:>10}: {cube.sizes['y']}x{cube.sizes['x']} px, {stats.tiles} tiles, batch {context['batch_size']}, "
          f"overlap {context['overlap']}: {seconds:.1f} s, {pixels / seconds:,.0f} px/s; "
          f"model {stats.model_seconds:.1f} s, "
          f"overhead {100 * stats.overhead:.1f} % of model time; peak numpy allocations {numpy_peak:.0f} MiB, "
          f"peak RSS +{memory.increase_mib:.0f} MiB "
          f"(input cube {cube_mib:.0f} MiB, output {out.nbytes / 2**20:.0f} MiB)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048, help="cube edge for embeddings (px)")
    parser.add_argument("--lulc-size", type=int, default=2048, help="cube edge for S2L2A -> LULC (px)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--skip-lulc", action="store_true")
    parser.add_argument("--lulc-sampled", action="store_true", help="also time sampled (not arg-max) LULC")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    context = {"model": "terramind_v1_tiny", "weights": "random", "device": "cpu", "batch_size": args.batch_size,
               "overlap": args.overlap}
    warm = mosaic(224)
    embed_cube(warm, context)  # load and warm up the model (not timed)
    run("embed", embed_cube, mosaic(args.size), context)
    if not args.skip_lulc:
        lulc = {**context, "target": "LULC", "seed": 0, "argmax": True}
        generate_cube(warm.isel(y=slice(0, 64), x=slice(0, 64)), {**lulc, "tile_size": 64, "overlap": 0})
        run("S2->LULC", generate_cube, mosaic(args.lulc_size), lulc)  # arg-max: batched
        if args.lulc_sampled:  # sampled tokens: one call per tile (a seed per tile position)
            run("sampled", generate_cube, mosaic(args.lulc_size), {**lulc, "argmax": False})


if __name__ == "__main__":
    main()
