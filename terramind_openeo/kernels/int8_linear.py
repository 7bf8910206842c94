"""int8 linear layers for CPU inference: dynamic quantisation through oneDNN's int8 matrix product.

``quantize(linear)`` turns an ``nn.Linear``'s fp32 weight into int8 once: symmetric, one scale per output
channel, packed for oneDNN (``onednn::qlinear_prepack``). ``int8_linear(x, weight)`` then quantises the
activations on every call, symmetric with one scale per token (row), and runs ``onednn::qlinear_pointwise``
(integer products summed in int32, result fp32), then scales each row and adds the bias in fp32.

Activations by CPU (:func:`activation_format`): with int8 dot-product units (AMX-INT8, AVX512-VNNI, AVX-VNNI)
signed 8 bits (-127..127). Without them (AVX2 only) oneDNN multiplies unsigned by signed bytes with
``vpmaddubsw``, which adds each pair of products in 16 bits and *saturates* past 32767: int8 activations (which
oneDNN shifts to 0..255) overflow there, and the encoder's features drifted to cosine 0.97 after one layer.
So on such CPUs activations get 7 bits, stored unsigned 1..127 around a zero point of 64: every pair then
fits (127 x 127 x 2 < 32768) and the integer result is exact again, at twice the rounding step.

Why these choices: per-token activation scales keep a token with large values from flattening the others (one
scale per tensor, the other oneDNN mode, had 3x the error on a layer with an outlier channel); the scales are
applied after the product, so the kernel needs no per-row zero points. The weight and activation quantisation
is the only loss: accumulation is exact int32, outputs fp32. These are the ops inductor's x86 int8 path
calls, not the deprecated ``torch.ao`` quantised tensors.

fp32 CPU tensors only; :func:`usable` says whether a call can take this path (other devices, dtypes and
autograd take the fp32 weight instead).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from terramind_openeo.kernels import cpu_features

_QMAX = 127.0


@dataclass(frozen=True)
class Int8Weight:
    """An ``nn.Linear`` weight quantised for :func:`int8_linear`."""

    packed: torch.Tensor
    """int8 weight ``[out, in]`` in oneDNN's layout (opaque)."""
    scale: torch.Tensor
    """fp32 ``[out]``: weight = int8 value x scale."""
    zero_point: torch.Tensor
    """int64 ``[out]`` zeros (symmetric)."""
    in_features: int
    source: tuple
    """(data pointer, version) of the fp32 weight quantised, to notice a weight changed since."""


def available() -> bool:
    """Whether this torch build has oneDNN's int8 linear ops."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference tensors have no version counter
        return -1


def quantize(linear: nn.Linear) -> Int8Weight:
    """The int8 copy of ``linear.weight`` (per output channel, symmetric)."""
    with torch.inference_mode(False), torch.no_grad():
        w = linear.weight.detach().float()
        scale = (w.abs().amax(dim=1) / _QMAX).clamp_(min=torch.finfo(torch.float32).tiny)  # [out]
        q = torch.round(w / scale[:, None]).clamp_(-_QMAX, _QMAX).to(torch.int8)
        packed = torch.ops.onednn.qlinear_prepack(q, None)
        zero = torch.zeros(w.shape[0], dtype=torch.int64)
    return Int8Weight(packed, scale, zero, w.shape[1], (linear.weight.data_ptr(), _version(linear.weight)))


def is_current(weight: Int8Weight, linear: nn.Linear) -> bool:
    """Whether ``weight`` was quantised from ``linear``'s present weight (same storage, not changed since)."""
    return weight.source == (linear.weight.data_ptr(), _version(linear.weight))


def usable(x: torch.Tensor, linear: nn.Linear) -> bool:
    """Whether :func:`int8_linear` can run ``linear`` on ``x``: fp32 CPU tensors, no autograd, rows to compute."""
    if x.device.type != "cpu" or x.dtype != torch.float32 or x.ndim < 1 or x.numel() == 0:
        return False
    return not (torch.is_grad_enabled() and (x.requires_grad or linear.weight.requires_grad))


@dataclass(frozen=True)
class ActivationFormat:
    """How activations are stored for the int8 product."""

    qmax: int
    """Largest magnitude: values are round(x / scale) in -qmax..qmax."""
    zero_point: int
    """Added before storing (0: signed int8; 64: unsigned 7-bit)."""
    dtype: torch.dtype


SIGNED_8 = ActivationFormat(127, 0, torch.int8)
UNSIGNED_7 = ActivationFormat(63, 64, torch.uint8)


def activation_format(features: cpu_features.CpuFeatures | None = None) -> ActivationFormat:
    """Signed 8 bits where the CPU sums int8 products in 32 bits (VNNI, AMX), else 7 bits (see the module note)."""
    return SIGNED_8 if (features or cpu_features.current()).int8_fast else UNSIGNED_7


def quantize_rows(x2d: torch.Tensor, fmt: ActivationFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """``x2d [M, K]`` quantised with one symmetric scale per row: ``(q [M, K] in fmt, scale [M, 1] fp32)``."""
    scale = (x2d.abs().amax(dim=1, keepdim=True) / fmt.qmax).clamp_(min=torch.finfo(torch.float32).tiny)
    q = torch.round(x2d / scale).clamp_(-fmt.qmax, fmt.qmax)
    if fmt.zero_point:
        q.add_(fmt.zero_point)
    return q.to(fmt.dtype), scale


def int8_linear(x: torch.Tensor, weight: Int8Weight, bias: torch.Tensor | None,
                fmt: ActivationFormat | None = None) -> torch.Tensor:
    """``F.linear(x, w, bias)`` with int8 weight and per-token quantised activations; fp32 in, fp32 out.
    ``fmt``: the activation format (default: :func:`activation_format` for this CPU)."""
    fmt = fmt or activation_format()
    lead = x.shape[:-1]
    q, scale = quantize_rows(x.reshape(-1, weight.in_features), fmt)  # [M, K], [M, 1]
    y = torch.ops.onednn.qlinear_pointwise(q, 1.0, fmt.zero_point, weight.packed, weight.scale, weight.zero_point,
                                           None, 1.0, 0, torch.float32, "none", [], "")  # [M, N] = (q @ w_int8^T) * w_scale
    y.mul_(scale)
    if bias is not None:
        y.add_(bias)
    return y.view(*lead, y.shape[-1])
