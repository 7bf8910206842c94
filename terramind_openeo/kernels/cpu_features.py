"""What this CPU can run fast, read once: the one place that decides which CPU-specific kernels are used.

Private or ISA-specific kernels (oneDNN's bf16 weight reorder, bf16/int8 matrix units) are used only where
the CPU supports them; everywhere else the plain torch path runs. Every such decision asks :func:`current`,
never the hardware directly, so tests can force a CPU with :func:`forced` and exercise the AVX2-only case
and the AMX case on any machine (a forced CPU changes the *choices*; a kernel the real CPU lacks still fails
if it is actually called, so tests of forced capabilities check the decisions, not the private kernels).

Where the flags come from: ``/proc/cpuinfo`` (Linux; the names the kernel prints, e.g. ``amx_bf16``,
``avx512_vnni``, ``avx_ne_convert``); elsewhere torch's own checks (``torch.cpu._is_*``), which cover AVX2,
AVX-512, AVX512-BF16, VNNI and AMX. AMX counts only where torch also reports AMX tile support (the kernel
must grant the tile state to the process, else oneDNN cannot use it either). torch's dispatch level
(``torch.backends.cpu.get_cpu_capability()``: ``DEFAULT``, ``AVX2``, ``AVX512``...) is recorded beside them.

What the derived properties mean (why each flag set matters to this project):

* :attr:`CpuFeatures.onednn_bf16`: oneDNN's bf16 convolution weight reorder (``kernels/prepack.py``) needs
  AVX-NE-CONVERT or AVX-512 BW+VL+DQ (torch raises "bf16 path needs the cpu support ..." otherwise).
* :attr:`CpuFeatures.bf16_fast`: bf16 matrix products in hardware (AMX-BF16 or AVX512-BF16). Without them
  torch emulates bf16 by converting to fp32 and back: correct, but several times slower than fp32.
* :attr:`CpuFeatures.fp16_fast`: fp16 matrix products in hardware (AMX-FP16 or AVX512-FP16).
* :attr:`CpuFeatures.int8_fast`: int8 dot products in hardware (AMX-INT8, AVX512-VNNI or AVX-VNNI). oneDNN's
  int8 products also run on plain AVX2 (no dot-product instruction, still faster than fp32 there: see
  ``model/precision.py``).
"""

from __future__ import annotations

import contextlib
import functools
import platform
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import torch

_AVX512_CORE = ("avx512f", "avx512bw", "avx512vl", "avx512dq")
_AMX = ("amx_tile", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class CpuFeatures:
    """The instruction-set extensions of a CPU, and what they allow this project to run fast."""

    flags: frozenset[str]
    """Feature flags, lower case, as Linux's ``/proc/cpuinfo`` spells them (``avx2``, ``amx_bf16``...)."""
    capability: str
    """torch's CPU dispatch level (``torch.backends.cpu.get_cpu_capability()``), e.g. ``AVX2``, ``AVX512``."""
    source: str = "detected"
    """``detected`` or ``forced: <name>`` (a test or a user chose it)."""

    def has(self, *names: str) -> bool:
        """Whether every flag in ``names`` is present."""
        return all(name in self.flags for name in names)

    @property
    def avx512_core(self) -> bool:
        """AVX-512 F, BW, VL and DQ (Skylake-SP and later Intel, AMD Zen 4 and later)."""
        return self.has(*_AVX512_CORE)

    @property
    def onednn_bf16(self) -> bool:
        """oneDNN's bf16 kernels and weight reorders run (AVX-NE-CONVERT, or AVX-512 BW+VL+DQ)."""
        return self.has("avx_ne_convert") or self.avx512_core

    @property
    def bf16_fast(self) -> bool:
        """bf16 matrix products run in hardware (AMX-BF16 or AVX512-BF16)."""
        return self.has("amx_bf16") or self.has("avx512_bf16")

    @property
    def fp16_fast(self) -> bool:
        """fp16 matrix products run in hardware (AMX-FP16 or AVX512-FP16)."""
        return self.has("amx_fp16") or self.has("avx512_fp16")

    @property
    def int8_fast(self) -> bool:
        """int8 dot products run in hardware (AMX-INT8, AVX512-VNNI or AVX-VNNI)."""
        return self.has("amx_int8") or self.has("avx512_vnni") or self.has("avx_vnni")

    def missing(self, what: str) -> str:
        """The CPU support that ``what`` (``"bf16"``, ``"fp16"`` or ``"int8"``) lacks here, in words ("" if none)."""
        if what == "bf16":
            return "" if self.bf16_fast else "no AMX-BF16 and no AVX512-BF16"
        if what == "fp16":
            return "" if self.fp16_fast else "no AMX-FP16 and no AVX512-FP16"
        if what == "int8":
            return "" if self.int8_fast else "no AMX-INT8, no AVX512-VNNI and no AVX-VNNI"
        raise ValueError(f"what must be 'bf16', 'fp16' or 'int8', got {what!r}")

    def describe(self) -> str:
        """One line for logs and benchmark headers, e.g. ``AVX2 (detected): bf16 emulated, int8 no VNNI``."""
        shown = [f for f in ("avx2", *_AVX512_CORE, "avx512_bf16", "avx512_fp16", "avx512_vnni", "avx_vnni",
                             "avx_ne_convert", *_AMX, "amx_fp16") if f in self.flags]
        bf16 = "bf16 in hardware" if self.bf16_fast else f"bf16 emulated ({self.missing('bf16')})"
        int8 = "int8 in hardware" if self.int8_fast else f"int8 without dot-product units ({self.missing('int8')})"
        return f"{self.capability} ({self.source}; {' '.join(shown) or 'no AVX2'}): {bf16}, {int8}"


def _flags_from_proc(path: Path = Path("/proc/cpuinfo")) -> frozenset[str] | None:
    try:
        text = path.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return None


def _torch_check(name: str) -> bool:
    check = getattr(torch.cpu, f"_is_{name}_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def _flags_from_torch() -> frozenset[str]:
    flags = set()
    if _torch_check("avx2"):
        flags |= {"avx2", "fma"}
    if _torch_check("avx512"):
        flags |= set(_AVX512_CORE)
    if _torch_check("avx512_bf16"):
        flags.add("avx512_bf16")
    if _torch_check("vnni"):
        flags.add("avx512_vnni")
    if _torch_check("amx_tile"):
        flags |= set(_AMX)
    return frozenset(flags)


@functools.cache
def detect() -> CpuFeatures:
    """This machine's CPU (read once per process)."""
    flags = _flags_from_proc() if platform.system() == "Linux" else None
    if flags is None:
        flags = _flags_from_torch()
    elif hasattr(torch.cpu, "_is_amx_tile_supported") and not _torch_check("amx_tile"):
        flags = flags - set(_AMX)  # listed by the CPU but not usable by this process (torch/oneDNN cannot either)
    return CpuFeatures(flags, torch.backends.cpu.get_cpu_capability())


PRESETS: dict[str, CpuFeatures] = {
    "avx2": CpuFeatures(frozenset({"sse4_2", "avx", "avx2", "fma", "f16c"}), "AVX2", "forced: avx2"),
    "avx512": CpuFeatures(frozenset({"sse4_2", "avx", "avx2", "fma", "f16c", *_AVX512_CORE, "avx512_vnni"}),
                          "AVX512", "forced: avx512"),
    "amx": CpuFeatures(frozenset({"sse4_2", "avx", "avx2", "fma", "f16c", *_AVX512_CORE, "avx512_vnni",
                                  "avx512_bf16", "avx512_fp16", "avx_vnni", *_AMX}), "AVX512", "forced: amx"),
}
"""CPUs tests can force: AVX2 only (AMD Zen 2/3, Intel Haswell..Comet Lake), AVX-512 with VNNI but no bf16
(Cascade Lake), and AMX (Sapphire Rapids and later)."""

_LOCK = threading.Lock()
_forced: list[CpuFeatures] = []  # a stack: the innermost forced() block wins


def current() -> CpuFeatures:
    """The CPU that kernel choices are made for: the innermost :func:`forced` one, else :func:`detect`."""
    with _LOCK:
        if _forced:
            return _forced[-1]
    return detect()


@contextlib.contextmanager
def forced(features: CpuFeatures | str) -> Iterator[CpuFeatures]:
    """Make :func:`current` report ``features`` (a :class:`CpuFeatures` or a :data:`PRESETS` name) inside the
    block, in every thread of this process (the choice is process-wide, like the hardware it stands for)."""
    if isinstance(features, str):
        if features not in PRESETS:
            raise ValueError(f"unknown CPU preset {features!r}; valid: {', '.join(PRESETS)}")
        features = PRESETS[features]
    elif not features.source.startswith("forced"):
        features = replace(features, source="forced")
    with _LOCK:
        _forced.append(features)
    try:
        yield features
    finally:
        with _LOCK:
            _forced.remove(features)
