"""Input checks shared by the glue ops (add + LayerNorm, SwiGLU): names the culprit, raises typed errors."""

from __future__ import annotations

import torch

from terramind_openeo.kernels.errors import KernelDeviceError, KernelDtypeError, KernelShapeError

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_float_tensor(name: str, t: object, min_rank: int = 1) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise KernelDtypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise KernelDtypeError(f"{name} has dtype {t.dtype}; supported: float32, float16, bfloat16")
    if t.dim() < min_rank:
        raise KernelShapeError(f"{name} must have rank >= {min_rank}, got shape {tuple(t.shape)}")
    return t


def check_like(name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor, shape: tuple[int, ...] | None = None) -> None:
    want = tuple(ref.shape) if shape is None else shape
    if tuple(t.shape) != want:
        raise KernelShapeError(f"{name} has shape {list(t.shape)} but must be {list(want)} (from {ref_name})")
    if t.dtype != ref.dtype:
        raise KernelDtypeError(f"{name} has dtype {t.dtype} but {ref_name} has {ref.dtype}; cast them to one dtype")
    if t.device != ref.device:
        raise KernelDeviceError(f"{name} is on {t.device} but {ref_name} is on {ref.device}")


def check_out(name: str, out: object, ref_name: str, ref: torch.Tensor) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise KernelDtypeError(f"{name} must be a torch.Tensor, got {type(out).__name__}")
    check_like(name, out, ref_name, ref)
    if not out.is_contiguous():
        raise KernelShapeError(f"{name} must be contiguous")
    return out
