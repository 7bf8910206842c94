"""Generation benchmark: ours vs terratorch's TerraMindGeneration on the same random weights, seed and noise.

Cases (CPU): ``tiny-lulc`` (tiny, S2L2A -> LULC), ``tiny-s1grd`` (tiny, S2L2A -> S1GRD, ``--steps`` DDIM steps,
default 10), ``base-lulc`` (base, S2L2A -> LULC). Per case and implementation: median wall time per tile, median
CPU time per tile (``time.process_time``: robust on a shared, oversubscribed machine), peak extra resident memory
during a run (RSS sampled every 2 ms, above the RSS before the run: activations and temporaries, not weights),
and the largest difference between the two outputs (standardised units). Runs alternate ours / reference.

    python benchmarks/bench_generate.py                     # all cases, 224 px, batch 1, 3 repeats
    python benchmarks/bench_generate.py --cases tiny-s1grd --px 128 --threads 1 --repeats 2
    python benchmarks/bench_generate.py --threads 1 --repeats 2 --unpacked   # also ours without weight packing

Needs terratorch (``pip install --no-deps 'terratorch==1.2.*'`` + einops diffusers huggingface_hub tokenizers);
it is imported through ``tests/terratorch_ref.py``.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import random
import statistics
import sys
import threading
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import terratorch_ref  # noqa: E402

from terramind_openeo.kernels import prepack  # noqa: E402
from terramind_openeo.model import load_terramind, standardize  # noqa: E402
from terramind_openeo.model.generation import generate  # noqa: E402
from terramind_openeo.model.tokenizers import tokenizer_from_state_dict  # noqa: E402

CASES = {"tiny-lulc": ("tiny", "LULC"), "tiny-s1grd": ("tiny", "S1GRD"), "base-lulc": ("base", "LULC")}
REF_TOKENIZERS = {"LULC": ("terramind_v1_tokenizer_lulc", "tok_lulc@224"),
                  "S1GRD": ("terramind_v1_tokenizer_s1grd", "tok_sen1grd@224")}
PAGE = 4096


def release_freed_memory_to_os() -> None:
    """Let large blocks go back to the OS when freed (fixed mmap threshold), so RSS follows live memory."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD: fixed, no dynamic growth
        libc.malloc_trim(0)
    except OSError:  # not glibc: the memory column then shows growth of the heap only
        pass


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class PeakRSS:
    """Peak resident memory above the level at entry, sampled by a thread."""

    def __enter__(self):
        release_freed_memory_to_os()
        self.base = self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.002)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def extra_mib(self) -> float:
        return (self.peak - self.base) / 2**20


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Seeded values for every float tensor (the reference zero-inits its UNet output convs)."""
    gen = torch.Generator().manual_seed(seed)
    for name, tensor in module.state_dict(keep_vars=True).items():
        if tensor.is_floating_point() and not name.endswith("pos_emb"):
            noise = torch.randn(tensor.shape, generator=gen)
            norm_weight = tensor.ndim == 1 and name.endswith("weight")
            tensor.copy_(1.0 + 0.1 * noise if norm_weight else 0.02 * noise)


def build(size: str, target: str, steps: int):
    """(ours model, our tokenizer, reference TerraMindGeneration) on shared random weights."""
    _, full = terratorch_ref.load()
    ref_full = terratorch_ref.perturb_(terratorch_ref.build_full_model(size, seed=0), seed=1)
    state = ref_full.state_dict()
    ours = load_terramind(f"terramind_v1_{size}", weights=state)
    builder, key = REF_TOKENIZERS[target]
    ref_tok = full.build(builder).eval()
    randomize_(ref_tok, seed=2)
    our_tok = tokenizer_from_state_dict(target, {k: v.clone() for k, v in ref_tok.state_dict().items()})

    from terratorch.models.backbones.terramind.model.terramind_generation import TerraMindGeneration
    from terratorch.models.backbones.terramind.model.tm_utils import LayerNorm

    ref = TerraMindGeneration(modalities=["S2L2A"], output_modalities=[target], timesteps=steps, mlp_ratio=4,
                              norm_layer=partial(LayerNorm, eps=1e-6, bias=False),
                              tokenizer_dict={key: lambda pretrained=False: ref_tok},
                              **terratorch_ref.SIZES[size])
    own = ref.sampler.model.state_dict()
    ref.sampler.model.load_state_dict({k: state[k] for k in own}, strict=True)
    del ref_full
    return ours, our_tok, ref.eval()


def run_case(name: str, px: int, batch: int, steps: int, repeats: int, bf16: bool, unpacked_row: bool = False) -> dict:
    size, target = CASES[name]
    ours, tok, ref = build(size, target, steps)
    tok_bf16 = tokenizer_from_state_dict(target, {k: v.to(torch.bfloat16) for k, v in tok.state_dict().items()})
    x = torch.randn(batch, 12, px, px, generator=torch.Generator().manual_seed(0))
    python_seed = 7
    seed = random.Random(python_seed).randint(-(2**31), 2**31 - 1)

    def run_ours():
        return generate(ours, {"S2L2A": x}, [target], timesteps=steps, seed=seed, tokenizers={target: tok})[target]

    def run_ours_bf16():
        return generate(ours, {"S2L2A": x}, [target], timesteps=steps, seed=seed,
                        tokenizers={target: tok_bf16})[target]

    def run_ours_unpacked():
        with prepack.disabled():
            return run_ours()

    def run_ref():
        random.seed(python_seed)
        with torch.inference_mode():
            return ref({"S2L2A": x.clone()}, verbose=False)[target]

    impls = [("ours", run_ours), ("ref", run_ref)] + ([("ours-unpacked", run_ours_unpacked)] if unpacked_row else []) \
        + ([("ours-bf16", run_ours_bf16)] if bf16 else [])
    results = {impl: {"wall": [], "cpu": [], "mem": []} for impl, _ in impls}
    outputs = {}
    for _ in range(repeats + 1):  # the first round warms up and is not counted
        for impl, fn in impls:
            with PeakRSS() as mem:
                wall, cpu = time.perf_counter(), time.process_time()
                outputs[impl] = fn()
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            results[impl]["wall"].append(wall / batch)
            results[impl]["cpu"].append(cpu / batch)
            results[impl]["mem"].append(mem.extra_mib)
    def diff(impl):
        out = outputs[impl] if target == "LULC" else standardize(target, outputs[impl])
        return float((out - outputs["ref"]).abs().max())

    summary = {"case": name, "px": px, "batch": batch, "steps": steps if target != "LULC" else "-",
               "diff": diff("ours"), "diff_bf16": diff("ours-bf16") if bf16 else None,
               "diff_unpacked": diff("ours-unpacked") if unpacked_row else None}
    for impl, _ in impls:
        r = results[impl]
        summary[impl] = {"wall": statistics.median(r["wall"][1:]), "cpu": statistics.median(r["cpu"][1:]),
                         "mem": max(r["mem"][1:])}
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    parser.add_argument("--px", type=int, default=224)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps of the diffusion cases")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--unpacked", action="store_true",
                        help="also time ours with weight pre-packing off (TERRAMIND_OPENEO_PREPACK[_LINEAR]=torch)")
    parser.add_argument("--bf16", action="store_true",
                        help="also time ours with bf16 tokenizers (AMX; not bit-equal: its max diff is shown)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    if args.threads:
        torch.set_num_threads(args.threads)
    terratorch_ref.load()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.px} px, batch {args.batch}, "
          f"{args.repeats} repeats (medians per tile)")
    header = (f"{'case':<11} {'steps':>5} | {'ours wall':>9} {'ref wall':>9} {'x':>5} | {'ours cpu':>9} "
              f"{'ref cpu':>9} {'x':>5} | {'ours MiB':>8} {'ref MiB':>8} | max diff")
    print(header)
    print("-" * len(header))
    for name in args.cases.split(","):
        s = run_case(name.strip(), args.px, args.batch, args.steps, args.repeats, args.bf16, args.unpacked)
        gc.collect()
        prepack.release()  # the next case's models get the whole packing budget
        r = s["ref"]
        for impl, label, d in (("ours", s["case"], s["diff"]), ("ours-unpacked", "  unpacked", s["diff_unpacked"]),
                               ("ours-bf16", "  bf16 tok", s["diff_bf16"])):
            if impl not in s:
                continue
            o = s[impl]
            print(f"{label:<11} {s['steps']:>5} | {o['wall']:>8.2f}s {r['wall']:>8.2f}s {r['wall'] / o['wall']:>5.2f} | "
                  f"{o['cpu']:>8.2f}s {r['cpu']:>8.2f}s {r['cpu'] / o['cpu']:>5.2f} | {o['mem']:>8.0f} "
                  f"{r['mem']:>8.0f} | {d:.1e}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
