"""Benchmark (not a test): the TerraMind encoder end to end on one device, in one dtype: ours with the
Triton attention kernel, ours with PyTorch SDPA, and terratorch's backbone, all on the same random weights.

Prints one line per implementation (ms per batch, tiles/s, max |difference| to terratorch's output of the
last layer) and writes them as JSON lines to ``--json`` if given. Used by ``benchmarks/gpu_check.sh``.

    python benchmarks/gpu_encoder.py --device cuda --dtype bfloat16 --size base --batch 16
    TRITON_INTERPRET=1 python benchmarks/gpu_encoder.py --device cpu --dtype float32 --size tiny --px 32 --batch 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the oracle loader lives with the tests

from terramind_openeo import config  # noqa: E402
from terramind_openeo.model import load_terramind  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_ms(fn, device: torch.device, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--size", default="base", choices=["tiny", "small", "base", "large"])
    parser.add_argument("--px", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-reference", action="store_true", help="skip terratorch (not installed)")
    parser.add_argument("--json", type=Path, default=None, help="append the results as JSON lines here")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    name = f"terramind_v1_{args.size}"
    ours = load_terramind(name, weights="random")
    state = ours.state_dict()
    ours = ours.to(device=device, dtype=dtype)
    gen = torch.Generator().manual_seed(0)
    tiles = {"S2L2A": torch.randn(args.batch, 12, args.px, args.px, generator=gen).to(device=device, dtype=dtype)}
    runs: dict[str, object] = {}
    for impl in ("triton", "sdpa"):
        def encode(impl: str = impl) -> torch.Tensor:
            with config.override(attention=impl), torch.inference_mode():
                return ours.encode(tiles, layers=-1)
        runs[impl] = encode
    reference = None
    if not args.no_reference:
        import terratorch_ref

        terratorch_ref.load()
        reference = terratorch_ref.build_backbone(args.size, ["S2L2A"], state).to(device=device, dtype=dtype)

        def encode_reference() -> torch.Tensor:
            with torch.inference_mode():
                return reference(dict(tiles))[-1]
        runs["terratorch"] = encode_reference
    want = runs["terratorch"]() if reference is not None else None  # type: ignore[operator]
    print(f"{name} encoder, S2L2A {args.px} px, batch {args.batch}, {args.dtype} on {device} "
          f"(median of {args.repeats}, warm-up {args.warmup})")
    rows = []
    for label, run in runs.items():
        out = run()  # type: ignore[operator]
        diff = None if want is None else (out.float() - want.float()).abs().max().item()
        ms = _median_ms(run, device, args.repeats, args.warmup)
        row = {"bench": "encoder", "model": name, "impl": label, "dtype": args.dtype, "device": str(device),
               "px": args.px, "batch": args.batch, "ms_per_batch": round(ms, 3),
               "tiles_per_s": round(args.batch / (ms * 1e-3), 2),
               "max_abs_diff_vs_terratorch": None if diff is None else float(f"{diff:.3e}")}
        rows.append(row)
        print(f"{label:<11}{ms:10.2f} ms/batch{row['tiles_per_s']:10.1f} tiles/s"
              + ("" if diff is None else f"   max|diff| vs terratorch {diff:.2e}"), flush=True)
    if args.json is not None:
        with args.json.open("a", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
