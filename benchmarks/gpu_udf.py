"""Benchmark (not a test): a UDF file over a real Sentinel-2 tile through the openEO client's
``run_udf_code``, on a chosen device, as a back-end's worker runs it. Used by ``benchmarks/gpu_check.sh``.

    python benchmarks/gpu_udf.py TILE.tif --device cuda --model terramind_v1_base
    python benchmarks/gpu_udf.py TILE.tif --device cpu --model terramind_v1_tiny --px 64   # a dry run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import rioxarray
from openeo.udf import UdfData, XarrayDataCube, run_udf_code

from terramind_openeo.inference.bands import S2L2A_BANDS

UDF_DIR = Path(__file__).resolve().parents[1] / "udf"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("tile", type=Path, help="a 12-band Sentinel-2 L2A GeoTIFF (terramind-examples/S2L2A)")
    parser.add_argument("--udf", default="terramind_generate.py", help="file in udf/")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default=None, help="context dtype (default: the UDF's)")
    parser.add_argument("--model", default="terramind_v1_base")
    parser.add_argument("--px", type=int, default=0, help="crop the tile to px x px (0: whole tile)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="append the result as a JSON line here")
    args = parser.parse_args(argv)
    cube = rioxarray.open_rasterio(args.tile).astype(np.float32)
    if args.px:
        cube = cube.isel(y=slice(0, args.px), x=slice(0, args.px))
    cube = cube.rename(band="bands").assign_coords(bands=list(S2L2A_BANDS))
    context = {"model": args.model, "weights": "random", "device": args.device, "target": "LULC", "argmax": True}
    if args.dtype:
        context["dtype"] = args.dtype
    code = (UDF_DIR / args.udf).read_text(encoding="utf-8")
    data = UdfData(datacube_list=[XarrayDataCube(cube)], user_context=context)
    start = time.perf_counter()
    result = run_udf_code(code, data).get_datacube_list()[0].get_array()  # first call: loads the model
    first = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run_udf_code(code, UdfData(datacube_list=[XarrayDataCube(cube)], user_context=context))
        times.append(time.perf_counter() - start)
    best = min(times) if times else first
    mpx = cube.sizes["y"] * cube.sizes["x"] / 1e6
    row = {"bench": "udf", "udf": args.udf, "model": args.model, "device": args.device, "dtype": args.dtype,
           "shape": list(result.shape), "first_call_s": round(first, 3), "warm_call_s": round(best, 3),
           "mpx_per_s": round(mpx / best, 3)}
    print(f"{args.udf} ({args.model}, {args.device}) on {args.tile.name}: result {result.dims} {result.shape}; "
          f"first call {first:.2f} s (loads the model), warm {best:.3f} s, {row['mpx_per_s']} Mpx/s")
    if args.json is not None:
        with args.json.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
