"""Compile the Triton kernels for an sm_90 GPU ahead of time, without a GPU (run in its own process).

The interpreter accepts programs that the GPU compiler rejects (scoping, constexpr types, shared memory),
so the CPU tests also compile every kernel to a cubin. Run as ``TRITON_INTERPRET=0 python compile_for_cuda.py``;
prints one line per kernel and exits non-zero on the first failure.
"""

from __future__ import annotations

import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from terramind_openeo.kernels import attention_triton, glue_triton

TARGET = GPUTarget("cuda", 90, 32)


def _compile(fn, types: dict[str, str], constexprs: dict[str, object], **options) -> int:
    # pointers and floats as given, constexprs as such, every other argument (strides, sizes) an i32
    signature = {name: types.get(name, "constexpr" if name in constexprs else "i32") for name in fn.arg_names}
    consts = {(fn.arg_names.index(name),): value for name, value in constexprs.items()}
    kernel = triton.compile(ASTSource(fn, signature, constexprs=consts), target=TARGET, options=options)
    return kernel.metadata.shared


def main() -> int:
    att = attention_triton._attention_fwd
    cases = [
        ("attention bf16 D=64 mask 128x64", att, {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "Out": "*bf16",
         "Mask": "*u8", "qk_scale": "fp32"},
         {"HEAD_DIM": 64, "HAS_MASK": True, "DOT_PRECISION": "tf32", "BLOCK_M": 128, "BLOCK_N": 64},
         {"num_warps": 4, "num_stages": 3}),
        ("attention fp32 D=128 heuristic", att, {"Q": "*fp32", "K": "*fp32", "V": "*fp32", "Out": "*fp32",
         "Mask": "*u8", "qk_scale": "fp32"},
         {"HEAD_DIM": 128, "HAS_MASK": False, "DOT_PRECISION": "ieee",
          **{k: v for k, v in attention_triton._cuda_heuristic(196, 128, attention_triton.torch.float32).items()
             if k.startswith("BLOCK")}},
         {"num_warps": 4, "num_stages": 2}),
        ("add_layer_norm bf16 C=768", glue_triton._add_layer_norm_fwd,
         {"X": "*bf16", "R": "*bf16", "W": "*bf16", "S": "*bf16", "Y": "*bf16", "eps": "fp32"},
         {"HAS_RESIDUAL": True, "BLOCK_C": 1024}, {"num_warps": 4}),
        ("swiglu bf16", glue_triton._swiglu_fwd, {"A": "*bf16", "B": "*bf16", "Out": "*bf16"},
         {"BLOCK": 1024}, {"num_warps": 4}),
    ]
    for name, fn, types, constexprs, options in cases:
        shared = _compile(fn, types, constexprs, **options)
        print(f"{name}: ok, {shared} bytes of shared memory", flush=True)
        if shared > 228 * 1024:
            print(f"{name}: needs more shared memory than an H100 has", flush=True)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
