"""Cost figure (not a test): CPU core-hours per 1000 km^2 at 10 m, from ``terramind-openeo run`` end to end.

Three cases, each in float32 and in the fast precision of this CPU (``fast``: bfloat16 where the CPU has
AMX-BF16 or AVX512-BF16, else int8), side by side (interleaved per size, so load from other processes hits
both alike):

- base embeddings (``terramind_embed``, patch resolution),
- base S2 -> LULC (``terramind_generate``, ``argmax=True``),
- tiny S2 -> LULC.

Input: the real S2L2A tile mirrored into N x N px GeoTIFF mosaics (``bench_pipeline.mosaic``), random weights.
Core-hours are the CPU seconds (user + system) of the whole ``run`` process tree (client, Dask nanny and
workers) / 3600: what a map producer pays for, whatever the wall clock. Reported per case and precision: the
whole run at the largest size (start-up included) and the marginal cost between the smallest and the largest
size (start-up cancels out: the rate at which a large area is paid for), plus km^2/h and the speed-up of the
fast precision. Run it on a quiet machine; at least two sizes.

    python benchmarks/cost_per_km2.py --sizes 2048 4096            # the README's figure
    python benchmarks/cost_per_km2.py --sizes 448 672 --cases tiny-lulc   # a quick check that it works
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_pipeline

CASES = {
    "base-embed": ("terramind_v1_base", "embed", "base embeddings"),
    "base-lulc": ("terramind_v1_base", "lulc", "base S2 -> LULC"),
    "tiny-lulc": ("terramind_v1_tiny", "lulc", "tiny S2 -> LULC"),
}


def fast_dtype() -> str:
    from terramind_openeo.kernels import cpu_features

    return "bfloat16" if cpu_features.detect().bf16_fast else "int8"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[2048, 4096])
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES))
    p.add_argument("--dtypes", nargs="+", default=["float32", "fast"], help="'fast': this CPU's fast precision")
    p.add_argument("--workers", type=int, default=1, help="worker processes of run's local cluster")
    p.add_argument("--tile-size", type=int, default=2048)
    p.add_argument("--chunk-size", type=int, default=512)
    p.add_argument("--workdir", default=None)
    args = p.parse_args(argv)
    from terramind_openeo.kernels import cpu_features

    dtypes = list(dict.fromkeys(fast_dtype() if d == "fast" else d for d in args.dtypes))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="cost_per_km2_"))
    workdir.mkdir(parents=True, exist_ok=True)
    sizes = sorted(args.sizes)
    print(f"# CPU: {cpu_features.detect().describe()}; {os.cpu_count()} cores; run --workers {args.workers}")
    print(f"# real S2L2A tile mirrored into N x N px mosaics, random weights; dtypes {dtypes}")
    print(f"{'case':<16} {'dtype':<9} {'size_px':>7} {'km2':>7} {'wall_s':>8} {'cpu_s':>8} {'km2/h':>8} "
          f"{'core-h/1000km2':>15}")
    rows = []
    for case in args.cases:
        model, kind, _ = CASES[case]
        for size in sizes:
            tif = bench_pipeline.mosaic(size, workdir)
            km2 = size * size * 100 / 1e6
            for dtype in dtypes:
                r = bench_pipeline.run_pipeline(tif, workdir, kind, 1, args.workers, bench_pipeline.run_tile(
                    kind, args.tile_size), args.chunk_size, model=model, dtype=dtype)
                row = {"case": case, "dtype": dtype, "size": size, "km2": km2, **r}
                rows.append(row)
                print(f"{case:<16} {dtype:<9} {size:>7} {km2:>7.2f} {r['seconds']:>8.1f} {r['cpu_seconds']:>8.1f} "
                      f"{km2 / (r['seconds'] / 3600):>8.2f} {1000 * r['cpu_seconds'] / 3600 / km2:>15.2f}",
                      flush=True)
    (workdir / "cost.json").write_text(json.dumps(rows, indent=1))
    print("\n| case | dtype | core-h per 1000 km^2 (marginal) | core-h per 1000 km^2 (whole run, "
          f"{sizes[-1]} px) | km^2/h (whole run) | speed-up vs float32 |")
    print("|---|---|---|---|---|---|")
    by = {(r["case"], r["dtype"], r["size"]): r for r in rows}
    for case in args.cases:
        base_rate = None
        for dtype in dtypes:
            big, small = by[(case, dtype, sizes[-1])], by[(case, dtype, sizes[0])]
            dk = big["km2"] - small["km2"]
            dc = big["cpu_seconds"] - small["cpu_seconds"]
            marginal = f"{1000 * dc / 3600 / dk:.2f}" if len(sizes) > 1 and dc > 0 else "-"
            rate = big["km2"] / (big["seconds"] / 3600)
            base_rate = base_rate or (rate if dtype == "float32" else None)
            speed = f"{rate / base_rate:.2f} x" if base_rate and dtype != "float32" else "-"
            print(f"| {CASES[case][2]} | {dtype} | {marginal} | {1000 * big['cpu_seconds'] / 3600 / big['km2']:.2f} "
                  f"| {rate:.1f} | {speed} |")
    print(f"# rows in {workdir / 'cost.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
