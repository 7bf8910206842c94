"""Fused patch-token attention (Triton) vs PyTorch SDPA; glue kernels; end-to-end base encoder.

    python benchmarks/bench_attention.py            # on a CUDA machine: < 5 minutes on an H100
    python benchmarks/bench_attention.py --quick     # fewer shapes, no end-to-end encoder
    TRITON_INTERPRET=1 python benchmarks/bench_attention.py --smoke   # the GPU code path on CPU, toy sizes

On CUDA: a correctness check first (Triton vs a float64 reference, against SDPA's own error; the run stops
if the kernel is off), then Triton vs SDPA's flash, cuDNN and memory-efficient backends at B in {32, 128},
H = 12, D = 64, N in {196, 392, 784, 1568}, bf16, timed with ``triton.testing.do_bench`` (median), as
TFLOP/s and ratios; then residual add + LayerNorm and SwiGLU (Triton vs eager torch, GB/s); then the
base encoder in tiles/s with ``TERRAMIND_OPENEO_ATTENTION`` set to ``triton`` and to ``sdpa``.
Both attention paths start from the packed ``[B, N, 3, H, D]`` projection and end token-major
``[B, N, H * D]``, as the model's blocks use them.

On CPU: the float64 reference vs SDPA at small sizes, and a note that the Triton timings need a GPU.
``--smoke`` runs the GPU code path on CPU under the Triton interpreter at toy sizes (fp16 for bf16, the tiny
model), to check this script itself; its timings mean nothing.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from terramind_openeo import config
from terramind_openeo.kernels import fused_attention, fused_cross_attention
from terramind_openeo.kernels.layernorm import add_layer_norm
from terramind_openeo.kernels.reference import attention_reference
from terramind_openeo.kernels.swiglu import swiglu

HEADS, HEAD_DIM = 12, 64
BATCHES = (32, 128)
LENGTHS = (196, 392, 784, 1568)


class Run:
    """Where and how big: the real GPU run, or the ``--smoke`` run of the same code on CPU."""

    device = "cuda"
    dtype = torch.bfloat16  # the timed dtype
    check_dtypes = ((torch.bfloat16, 1e-3), (torch.float16, 1e-4), (torch.float32, 1e-5))
    check_lengths = (196, 392, 1568, 197)
    glue_rows = 32 * 392
    model, model_batch = "terramind_v1_base", 32

    @classmethod
    def smoke(cls) -> None:
        cls.device, cls.dtype = "cpu", torch.float16  # bf16 tl.dot is wrong in the interpreter
        cls.check_dtypes = ((torch.float16, 1e-4), (torch.float32, 1e-5))
        cls.check_lengths = (17, 40, 33, 9)
        cls.glue_rows = 64
        cls.model, cls.model_batch = "terramind_v1_tiny", 1


def attention_tflops(batch: int, n_q: int, n_kv: int, ms: float) -> float:
    # two matmuls (Q K^T and P V) of 2 * n_q * n_kv * D flops per head
    return 4 * batch * HEADS * n_q * n_kv * HEAD_DIM / (ms * 1e-3) / 1e12


def sdpa_model_path(qkv: torch.Tensor) -> torch.Tensor:
    # What a block does without the fused kernel: strided views -> SDPA -> token-major [B, N, H * D].
    batch, n, _, heads, dim = qkv.shape
    q, k, v = qkv.unbind(dim=2)  # [B, N, H, D] views
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # [B, H, N, D]
    return out.transpose(1, 2).reshape(batch, n, heads * dim)


def triton_model_path(qkv: torch.Tensor) -> torch.Tensor:
    batch, n, _, heads, dim = qkv.shape
    return fused_attention(qkv, impl="triton").view(batch, n, heads * dim)


# ---------------------------------------------------------------------------------------------- CUDA


def check_correctness() -> bool:
    """Triton vs float64 reference, accepted at <= 2x SDPA's own error (+ a small epsilon)."""
    print("== correctness (Triton vs float64 reference; SDPA's error for scale) ==")
    print(f"{'case':<44}{'triton err':>12}{'sdpa err':>12}  ok")
    ok_all = True
    dev = Run.device
    gen = torch.Generator(device=dev).manual_seed(0)
    user_autotune = "autotune" in config.Settings.values_from_env()
    for dtype, eps in Run.check_dtypes:
        # only the timed dtype autotunes here (compiling every config costs minutes); the others take the
        # fixed heuristic config, unless the user chose
        with config.override(**({} if user_autotune else {"autotune": dtype == Run.dtype})):
            ok_all &= _check_dtype(dtype, eps, dev, gen)
    return ok_all


def _check_dtype(dtype: torch.dtype, eps: float, dev: str, gen: torch.Generator) -> bool:
    ok_all = True
    n1, n2, n3, n4 = Run.check_lengths
    for n, masked, cross in ((n1, False, False), (n2, True, False), (n3, False, False), (n4, True, True)):
        batch = 4 if dev == "cuda" else 2
        mask = None
        if masked:
            mask = torch.rand(batch, n, device=dev, generator=gen) > 0.3
            mask[1] = False  # a fully masked sample -> zeros
        if cross:
            q = torch.randn(batch, 64, HEADS, HEAD_DIM, device=dev, dtype=dtype, generator=gen)
            kv = torch.randn(batch, n, 2, HEADS, HEAD_DIM, device=dev, dtype=dtype, generator=gen)
            out = fused_cross_attention(q, kv, mask, impl="triton")
            ref_out = fused_cross_attention(q, kv, mask, impl="sdpa")
            k, v = kv.unbind(2)
        else:
            qkv = torch.randn(batch, n, 3, HEADS, HEAD_DIM, device=dev, dtype=dtype, generator=gen)
            out = fused_attention(qkv, mask, impl="triton")
            ref_out = fused_attention(qkv, mask, impl="sdpa")
            q, k, v = qkv.unbind(2)
        ref = attention_reference(q, k, v, mask)
        err = (out.double() - ref).abs().max().item()
        sdpa_err = (ref_out.double() - ref).abs().max().item()
        ok = math.isfinite(err) and err <= 2 * sdpa_err + eps
        ok_all &= ok
        name = f"{'cross' if cross else 'self'} {str(dtype)[6:]} B={batch} N={n}{' mask' if masked else ''}"
        print(f"{name:<44}{err:>12.3e}{sdpa_err:>12.3e}  {'yes' if ok else 'NO'}")
    return ok_all


def sdpa_backends() -> list[tuple[str, object]]:
    from torch.nn.attention import SDPBackend

    names = (("flash", "FLASH_ATTENTION"), ("cudnn", "CUDNN_ATTENTION"), ("efficient", "EFFICIENT_ATTENTION"))
    return [(label, getattr(SDPBackend, attr)) for label, attr in names if hasattr(SDPBackend, attr)]


def time_ms(fn: Callable[[], object]) -> float:
    if Run.device != "cuda":
        return _median_ms(fn, reps=1)
    from triton.testing import do_bench

    return do_bench(fn, warmup=25, rep=100, return_mode="median")


def bench_attention(batches: tuple[int, ...], lengths: tuple[int, ...]) -> None:
    from torch.nn.attention import sdpa_kernel

    backends = sdpa_backends()
    print(f"\n== self-attention, {str(Run.dtype)[6:]}, H=12, D=64: ms (TFLOP/s); ratio = best SDPA ms / Triton ms ==")
    header = f"{'B':>4}{'N':>6}{'triton':>18}" + "".join(f"{label:>18}" for label, _ in backends) + f"{'ratio':>8}"
    print(header)
    for batch in batches:
        for n in lengths:
            qkv = torch.randn(batch, n, 3, HEADS, HEAD_DIM, device=Run.device, dtype=Run.dtype)
            cells, best_sdpa = [], math.inf
            t_ms = time_ms(lambda qkv=qkv: triton_model_path(qkv))
            cells.append(f"{t_ms:8.3f} ({attention_tflops(batch, n, n, t_ms):5.0f})")
            for _, backend in backends:
                try:
                    with sdpa_kernel(backend):
                        sdpa_model_path(qkv)  # raises when the backend cannot take these inputs
                        ms = time_ms(lambda qkv=qkv: sdpa_model_path(qkv))
                    best_sdpa = min(best_sdpa, ms)
                    cells.append(f"{ms:8.3f} ({attention_tflops(batch, n, n, ms):5.0f})")
                except RuntimeError:
                    cells.append(f"{'n/a':>15}")
            ratio = best_sdpa / t_ms if math.isfinite(best_sdpa) else float("nan")
            print(f"{batch:>4}{n:>6}" + "".join(f"{c:>18}" for c in cells) + f"{ratio:>8.2f}")
            del qkv
            if Run.device == "cuda":
                torch.cuda.empty_cache()


def bench_glue() -> None:
    rows, dim, hidden = Run.glue_rows, 768, 2048
    print(f"\n== glue, {str(Run.dtype)[6:]}, {rows} tokens: ms (GB/s); ratio = torch ms / Triton ms ==")
    x = torch.randn(rows, dim, device=Run.device, dtype=Run.dtype)
    r = torch.randn_like(x)
    w = torch.ones(dim, device=Run.device, dtype=Run.dtype)
    a = torch.randn(rows, hidden, device=Run.device, dtype=Run.dtype)
    b = torch.randn_like(a)
    cases = (
        ("add + LayerNorm (C=768)", 4 * rows * dim * 2, lambda impl: add_layer_norm(x, r, w, 1e-6, impl=impl)),
        ("SwiGLU gate (2048)", 3 * rows * hidden * 2, lambda impl: swiglu(a, b, impl=impl)),
    )
    print(f"{'op':<26}{'triton':>18}{'torch':>18}{'ratio':>8}")
    for name, nbytes, fn in cases:
        times = {impl: time_ms(lambda impl=impl, fn=fn: fn(impl)) for impl in ("triton", "torch")}
        cells = [f"{times[i]:8.3f} ({nbytes / times[i] / 1e6:5.0f})" for i in ("triton", "torch")]
        print(f"{name:<26}" + "".join(f"{c:>18}" for c in cells) + f"{times['torch'] / times['triton']:>8.2f}")


def bench_encoder() -> None:
    batch = Run.model_batch
    print(f"\n== end-to-end {Run.model} encoder, S2L2A 224 px tiles, {str(Run.dtype)[6:]}, batch {batch}: tiles/s ==")
    try:
        from terramind_openeo.model import load_terramind

        model = load_terramind(Run.model, weights="random", device=Run.device, dtype=Run.dtype)
    except Exception as exc:  # noqa: BLE001  (optional part: report any failure, keep the kernel results)
        print(f"skipped: the base model is not available ({type(exc).__name__}: {exc})")
        return
    tiles = {"S2L2A": torch.randn(batch, 12, 224, 224, device=Run.device, dtype=Run.dtype)}
    results = {}
    try:
        for impl in ("sdpa", "triton"):
            with config.override(attention=impl), torch.inference_mode():
                model.encode(tiles, layers=-1)
                results[impl] = time_ms(lambda: model.encode(tiles, layers=-1))
    except Exception as exc:  # noqa: BLE001  (optional part: report any failure, keep the kernel results)
        print(f"failed: {type(exc).__name__}: {exc}")
        return
    for impl, ms in results.items():
        print(f"{impl:<8}{ms:9.2f} ms/batch{batch / (ms * 1e-3):10.1f} tiles/s")
    print(f"speed-up of the Triton path: {results['sdpa'] / results['triton']:.2f}x")


def run_cuda(quick: bool, smoke: bool = False) -> int:
    import triton

    name = "CPU, Triton interpreter (--smoke: timings mean nothing)" if smoke else torch.cuda.get_device_name()
    print(f"device: {name}  torch {torch.__version__}  triton {triton.__version__}")
    start = time.perf_counter()
    if not check_correctness():
        print("correctness check FAILED: no timings")
        return 1
    if smoke:
        bench_attention((1,), (20,))
    else:
        bench_attention(BATCHES[:1] if quick else BATCHES, LENGTHS[:2] if quick else LENGTHS)
    bench_glue()
    if not quick:
        bench_encoder()
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


# ----------------------------------------------------------------------------------------------- CPU


def _median_ms(fn: Callable[[], object], reps: int = 5) -> float:
    fn()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


def run_cpu() -> int:
    print("No CUDA device: ran on CPU, float64 reference vs PyTorch SDPA (float32), small sizes.")
    print("The Triton timings need a GPU: rerun `python benchmarks/bench_attention.py` on a CUDA machine.")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"{'B':>3}{'N':>6}{'reference ms':>14}{'sdpa ms':>10}{'sdpa GFLOP/s':>14}{'max |sdpa - ref|':>18}")
    for batch, n in ((2, 196), (2, 392)):
        qkv = torch.randn(batch, n, 3, HEADS, HEAD_DIM)
        ref_ms = _median_ms(lambda qkv=qkv: fused_attention(qkv, impl="reference"))
        sdpa_ms = _median_ms(lambda qkv=qkv: fused_attention(qkv, impl="sdpa"))
        q, k, v = qkv.unbind(2)
        err = (fused_attention(qkv, impl="sdpa").double() - attention_reference(q, k, v)).abs().max().item()
        gflops = attention_tflops(batch, n, n, sdpa_ms) * 1e3
        print(f"{batch:>3}{n:>6}{ref_ms:>14.2f}{sdpa_ms:>10.2f}{gflops:>14.1f}{err:>18.2e}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B=32, N in {196, 392}, no end-to-end encoder")
    parser.add_argument("--smoke", action="store_true", help="GPU code path on CPU (TRITON_INTERPRET=1), toy sizes")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    if args.smoke:
        if not config.settings().triton_interpret:
            parser.error("--smoke needs TRITON_INTERPRET=1 in the environment")
        Run.smoke()
        return run_cuda(quick=False, smoke=True)
    if torch.cuda.is_available():
        return run_cuda(args.quick)
    return run_cpu()


if __name__ == "__main__":
    sys.exit(main())
