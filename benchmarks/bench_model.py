"""Benchmark (not a test): our TerraMind encoder vs terratorch's backbone on the same weights, on the CPU.

Prints the median milliseconds per tile of each and the speed-up (reference / ours, > 1 = ours faster), side by
side in one run, with the max abs difference of the outputs (every layer, as the reference returns them), and
for every variant its speed-up over our float32 model (``<name>/fp32``, > 1 = faster).
On a loaded machine use ``--threads 1``: oversubscribed OpenMP threads make every timing meaningless.

    python benchmarks/bench_model.py                       # tiny and base, batch 1 and 8, 1 and 2 modalities
    python benchmarks/bench_model.py --threads 1 --repeats 3 --compile --dtypes bfloat16 int8 --unpacked
    python benchmarks/bench_model.py --sizes base --batches 8 --modalities S2L2A --dtypes bfloat16 int8 \
        --bf16-autocast --repeats 7                        # the issue 20 speed goal: bf16 >= 3x fp32 on AMX

``--dtypes``: our model in those precisions (``model/precision.py``), side by side with float32; their
max|diff| to the reference is printed (not identical by design; ``benchmarks/fidelity_dtype.py`` measures
fidelity). ``--bf16-autocast``: also float32 weights under ``torch.autocast("cpu", torch.bfloat16)``, the
alternative to converted weights. The CPU's features are printed first: bfloat16 without AMX-BF16 /
AVX512-BF16 is emulated and slow (that is what the refusal in ``inference/device.py`` is for).

Runs are interleaved (ours, reference, ours, ...) so that load from other processes hits both alike.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the oracle loader lives with the tests

from terramind_openeo.kernels import cpu_features, prepack  # noqa: E402
from terramind_openeo.model import load_terramind  # noqa: E402
from terramind_openeo.model.config import RAW_MODALITIES  # noqa: E402


class Autocast:
    """``model`` (float32 weights) run under CPU autocast to bfloat16."""

    def __init__(self, model):
        self.model = model

    def encode(self, *args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model.encode(*args, **kwargs)


class Unpacked:
    """``model`` run with pre-packing off."""

    def __init__(self, model):
        self.model = model

    def encode(self, *args, **kwargs):
        with prepack.disabled():
            return self.model.encode(*args, **kwargs)


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_case(models, reference, modalities, batch, px, repeats, warmup, layers):
    """Median ms per tile of each of ``models`` and of ``reference``, and each model's max abs difference."""
    gen = torch.Generator().manual_seed(0)
    inputs = {m: torch.randn(batch, RAW_MODALITIES[m].channels, px, px, generator=gen) for m in modalities}
    runs = [lambda model=model: model.encode(inputs, layers=layers) for model in models]
    runs.append(lambda: reference(dict(inputs)))
    with torch.inference_mode():
        want = reference(dict(inputs))
        diffs = []
        for model in models:
            got = model.encode(inputs, layers=layers)
            pairs = [(got, want[-1])] if isinstance(got, torch.Tensor) else zip(got, want)
            diffs.append(max((a.float() - b).abs().max().item() for a, b in pairs))
        for _ in range(warmup):
            for run in runs:
                run()
        times = [[] for _ in runs]
        for _ in range(repeats):
            for run, acc in zip(runs, times):
                acc.append(_time(run))
    ms = [statistics.median(t) / batch * 1e3 for t in times]
    return ms[:-1], ms[-1], diffs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["tiny", "base"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--modalities", nargs="+", default=["S2L2A", "S2L2A+S1RTC"],
                        help="cases, modalities joined by '+' (S2L2A = 196 tokens, S2L2A+S1RTC = 392)")
    parser.add_argument("--px", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--last-layer-only", action="store_true",
                        help="ours returns only the last layer (the reference always computes all)")
    parser.add_argument("--compile", action="store_true", help="also time our model torch.compile'd")
    parser.add_argument("--unpacked", action="store_true",
                        help="also time our model with weight pre-packing off (TERRAMIND_OPENEO_PREPACK[_LINEAR]=torch)")
    parser.add_argument("--dtypes", nargs="*", default=[],
                        help="also time our model in these precisions (bfloat16, float16, int8; fast only where the "
                             "CPU supports them, NOT identical: max|diff| is printed)")
    parser.add_argument("--bf16", action="store_true", help="the same as --dtypes bfloat16")
    parser.add_argument("--bf16-autocast", action="store_true",
                        help="also time float32 weights under torch.autocast(bfloat16) (the alternative to converted "
                             "weights)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)

    import terratorch_ref

    terratorch_ref.load()
    dtypes = list(dict.fromkeys(args.dtypes + (["bfloat16"] if args.bf16 else [])))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.px} px, "
          f"median of {args.repeats} (warm-up {args.warmup}), ms per tile")
    print(f"CPU: {cpu_features.detect().describe()}")
    names = ["ours"] + (["compiled"] if args.compile else []) + dtypes \
        + (["autocast"] if args.bf16_autocast else []) + (["unpacked"] if args.unpacked else [])
    header = (f"{'model':<5} {'modalities':<12} {'tokens':>6} {'batch':>5} "
              + "".join(f"{n:>9}" for n in names) + f" {'terratorch':>10} "
              + "".join(f"{'x ' + n[:4]:>7}" for n in names) + "".join(f"{'diff ' + n[:4]:>10}" for n in names)
              + "".join(f"{n[:4] + '/fp32':>10}" for n in names[1:]))
    print(header)
    print("-" * len(header))
    for size in args.sizes:
        prepack.release()  # each size gets the whole packing budget
        ours = load_terramind(f"terramind_v1_{size}", weights="random")
        state = ours.state_dict()
        models = [ours]
        if args.compile:
            models.append(load_terramind(f"terramind_v1_{size}", weights=state, compile=True))
        for dtype in dtypes:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the CPU line above says what runs slowly here
                models.append(load_terramind(f"terramind_v1_{size}", weights=state, dtype=dtype))
        if args.bf16_autocast:
            models.append(Autocast(ours))
        if args.unpacked:
            models.append(Unpacked(ours))
        for case in args.modalities:
            modalities = case.split("+")
            reference = terratorch_ref.build_backbone(size, modalities, state, merge_method=None)
            for batch in args.batches:
                ms, ms_ref, diffs = bench_case(models, reference, modalities, batch, args.px, args.repeats,
                                               args.warmup, -1 if args.last_layer_only else None)
                tokens = len(modalities) * (args.px // 16) ** 2
                print(f"{size:<5} {case:<12} {tokens:>6} {batch:>5} " + "".join(f"{v:>9.1f}" for v in ms)
                      + f" {ms_ref:>10.1f} " + "".join(f"{ms_ref / v:>7.2f}" for v in ms)
                      + "".join(f"{d:>10.1e}" for d in diffs)
                      + "".join(f"{ms[0] / v:>10.2f}" for v in ms[1:]), flush=True)  # speed-up over our fp32
    return 0


if __name__ == "__main__":
    sys.exit(main())
