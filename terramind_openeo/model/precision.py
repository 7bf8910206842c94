"""Compute precision of a model or tokenizer: one name per choice, how it is applied, and whether this CPU
runs it fast.

Precisions (``PRECISIONS``):

* ``float32``: the reference numbers.
* ``bfloat16``: weights converted to bf16 (``module.to(torch.bfloat16)``), activations bf16 between layers.
  Converted weights rather than autocast: autocast casts every weight again on every call (our parameters do
  not require grad, so its cast cache never applies), converted weights are read at half the bytes. The
  reductions that need fp32 keep it inside torch's bf16 kernels: LayerNorm and GroupNorm statistics,
  softmax (SDPA) and the attention accumulators are computed in fp32; the decoder's scores are sampled in
  fp32 (``sampling.py``), and DDIM arithmetic stays fp32 (``tokenizers.py``).
* ``float16``: as bfloat16 with fp16 (for GPUs; on CPUs only with AMX-FP16 / AVX512-FP16).
* ``int8``: fp32 weights and activations everywhere except the linear layers, which run int8 x int8 with
  dynamic per-token activation scales and per-channel weight scales (``kernels/int8_linear.py``).
  Convolutions (the diffusion UNet) stay fp32.

Which CPU runs what fast (:func:`cpu_problem`, from :mod:`terramind_openeo.kernels.cpu_features`): bf16 needs
AMX-BF16 or AVX512-BF16, fp16 needs AMX-FP16 or AVX512-FP16; without them torch emulates the format through
fp32 and the model runs several times *slower* than in float32 (base encoder, batch 8, on an AVX2-only AMD
EPYC: 2177 against 348 ms per tile). int8 runs through oneDNN on every AVX2 CPU, with VNNI / AMX-INT8 where
present. The library warns (:class:`SlowPrecisionWarning`); the openEO entry points refuse (``dtype`` context
key, ``inference/device.py``).
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import nn

from terramind_openeo.kernels import cpu_features, prepack
from terramind_openeo.model.errors import PrecisionError

logger = logging.getLogger(__name__)

PRECISIONS = ("float32", "bfloat16", "float16", "int8")
_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "half": "float16"}
_TORCH = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
_STORAGE = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "int8": torch.float32}


class SlowPrecisionWarning(UserWarning):
    """A precision this CPU runs without hardware support: correct, but slower than float32."""


def precision_name(value: str | torch.dtype | None, default: str = "float32") -> str:
    """``value`` (a name such as ``"bfloat16"``/``"bf16"``, a torch float dtype, or None = ``default``) as one
    of ``PRECISIONS``; anything else is a :class:`PrecisionError` listing the valid names."""
    if value is None:
        return default
    if isinstance(value, torch.dtype):
        if value in _TORCH:
            return _TORCH[value]
    elif isinstance(value, str):
        name = value.strip().lower().removeprefix("torch.")
        name = _ALIASES.get(name, name)
        if name in PRECISIONS:
            return name
    raise PrecisionError(f"unknown dtype {value!r}; expected one of {', '.join(PRECISIONS)}")


def storage_dtype(precision: str | torch.dtype | None) -> torch.dtype:
    """The dtype the parameters and activations are kept in (float32 for ``int8``: only linear layers are int8)."""
    return _STORAGE[precision_name(precision)]


def precision_of(module: nn.Module) -> str:
    """The precision ``module`` was prepared in by :func:`apply` (else the dtype of its first parameter)."""
    name = getattr(module, "precision", None)
    if isinstance(name, str) and name in PRECISIONS:
        return name
    first = next(module.parameters(), None)
    return _TORCH.get(first.dtype, "float32") if first is not None else "float32"


def cpu_problem(precision: str, features: cpu_features.CpuFeatures | None = None) -> str | None:
    """Why ``precision`` runs slowly (or not at all) on this CPU (or ``features``), in words; None if it runs
    fast. The reason names the missing CPU support."""
    cpu = features or cpu_features.current()
    name = precision_name(precision)
    slow = "torch emulates it through fp32, so the model runs several times slower than in float32"
    if name == "bfloat16" and not cpu.bf16_fast:
        return f"bfloat16 on this CPU ({cpu.capability}: {cpu.missing('bf16')}): {slow}"
    if name == "float16" and not cpu.fp16_fast:
        return f"float16 on this CPU ({cpu.capability}: {cpu.missing('fp16')}): {slow}"
    if name == "int8" and not (cpu.int8_fast or cpu.has("avx2")):
        return f"int8 on this CPU ({cpu.capability}: no AVX2, {cpu.missing('int8')}): oneDNN's int8 kernels are slow here"
    return None


def check(precision: str | torch.dtype | None, device: torch.device | str | None) -> str:
    """``precision`` as a name, after the checks every entry point makes: ``int8`` only on the CPU (an error
    elsewhere); a CPU precision without hardware support warns (:class:`SlowPrecisionWarning`, with the reason)."""
    name = precision_name(precision)
    where = torch.device(device if device is not None else "cpu")
    if name == "int8" and where.type != "cpu":
        raise PrecisionError(f"dtype 'int8' is a CPU option (oneDNN int8 linear layers); got device {where}")
    if where.type == "cpu":
        problem = cpu_problem(name)
        if problem:
            logger.warning("%s", problem)
            warnings.warn(problem, SlowPrecisionWarning, stacklevel=3)
    return name


def apply(module: nn.Module, precision: str | torch.dtype | None, device: torch.device | str | None = None) -> nn.Module:
    """Move ``module`` to ``device`` in ``precision`` (see the module docstring) and record it as
    ``module.precision``; checked and warned as :func:`check` says. Returns ``module``."""
    name = check(precision, device)
    module.to(device=device, dtype=_STORAGE[name])
    if name == "int8":
        prepack.use_int8(module)
    elif any(prepack.runs_int8(m) for m in module.modules()):
        prepack.use_int8(module, enabled=False)
    module.precision = name
    return module
