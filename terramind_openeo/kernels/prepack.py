"""Convolutions and linear layers with weights pre-packed (CPU inference): the same numbers, without the
per-call repacking of the weights. Both are on by default for CPU inference.

Convolutions (``conv2d``; ``TERRAMIND_OPENEO_PREPACK=torch`` turns it off): ``F.conv2d`` on the CPU runs oneDNN
too, but reorders the weight into a blocked layout on every call; for the diffusion UNet's 3x3 convolutions
at 7x7..28x28 feature maps that reorder costs 10-35 % of the call. ``conv2d(module, x)`` packs the weight once
(cached on the module, keyed by the weight's storage, version, dtype and the input shape) and calls oneDNN
with it. ``other=`` adds a tensor of the output's shape inside the same kernel (binary post-op,
``conv(x) + other``). The packed call may run another oneDNN algorithm than ``module(x)`` (bit-identical at
the UNet's channels-last 3x3 shapes on a Sapphire Rapids CPU; elsewhere within float rounding, ~1e-6 for
the 1x1 skip convolutions that torch runs through im2col). Applies to CPU tensors, fp32 on every CPU, bf16
only where oneDNN's bf16 reorder runs (AVX-NE-CONVERT or AVX-512 BW/VL/DQ, :mod:`cpu_features`; an AVX2-only
CPU gets the plain layer), no autograd, oneDNN built in, zero padding mode; elsewhere it is plain
``module(x)`` / ``+``.

Linear layers (``linear``; ``TERRAMIND_OPENEO_PREPACK_LINEAR=torch`` turns it off): MKL's packed sgemm
(``cblas_sgemm_pack`` / ``_compute``, the kernel inductor's freezing uses for fp32 linears on the CPU; part of
MKL on every x86-64 CPU, AVX2 included). Another MKL entry point than ``F.linear``'s sgemm, so equal only
within float rounding in general: at the model's shapes it was bit-identical single-threaded on Sapphire
Rapids and on an AVX2 AMD EPYC (196 rows), while tiny shapes (4 rows of 16) differ by ~2e-6 on the EPYC,
and with 2 threads at 1568 rows the encoder's features differ by ~7e-6 (the threads split the work
differently). 15-25 % faster per call at 196 rows (one 224 px tile), ~5 % at 1568 on Sapphire Rapids.
The packing is per row count ``M`` (the leading dims of ``x`` flattened); a module keeps copies for the
``COPIES_PER_MODULE`` (2) row counts it used last, so a run's full batches and its last, smaller batch do not
repack on every alternation (repacking costs ~1 ms per 10 MB of weights). fp32 CPU tensors only.

Memory, both kinds: a packed copy costs about its weight's size again in resident memory (MKL reserves
~2.6x in address space but touches ~1x). All copies together stay within ``TERRAMIND_OPENEO_PREPACK_MB``
(default 2048 MiB; 0 = no packing): first come, first served, later layers run unpacked once it is full.
A copy goes when its module is garbage-collected, its weights change, or :func:`release` drops it. Under ``torch.compile`` both functions are the plain layers (inductor packs on its own).

int8 linear layers: :func:`use_int8` marks a model's ``nn.Linear`` layers; their calls through :func:`linear`
on fp32 CPU tensors then run ``kernels/int8_linear.py`` with a weight quantised once and kept in :data:`INT8`
(outside the packing budget, so a marked layer never falls back to float32 silently). ``model/precision.py``
marks them for ``dtype="int8"``.

Where packing linears does not pay: :func:`linear_packing` (``False``) switches it off for the calls made in
a ``with`` block (this thread / task only). The cube runner (``inference.runner``) does so: it calls the model
with full batches of 8 tiles (1568 rows, where packing gains 2-8 % a call) and a last batch whose size
changes from chunk to chunk, and every new row count packs every weight again, a copy per module for the
last two row counts. Over a map that is ~1.2-1.5 GB more resident memory for the tiny model's LULC path,
for no measurable gain end to end (see ``inference/runner.py``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from terramind_openeo import config
from terramind_openeo.kernels import cpu_features, dispatch, int8_linear

PREPACK = dispatch.OpSpec("prepack", "prepack", ("mkldnn", "torch"), "torch", "mkldnn")
PREPACK_LINEAR = dispatch.OpSpec("prepack_linear", "prepack_linear", ("mkl", "torch"), "torch", "mkl")
_DTYPES = (torch.float32, torch.bfloat16)
BUDGET_VAR = "TERRAMIND_OPENEO_PREPACK_MB"


@dataclass
class _Entry:
    ref: weakref.ref
    copies: OrderedDict[tuple, torch.Tensor]  # key -> packed weight, least recently used first
    nbytes: int  # of one copy

    @property
    def total(self) -> int:
        return self.nbytes * len(self.copies)


COPIES_PER_MODULE = 2  # packed copies a module keeps (for different input shapes)


_LINEAR_ON: contextvars.ContextVar[bool] = contextvars.ContextVar("terramind_openeo_prepack_linear", default=True)


def budget_bytes() -> int:
    """Memory the packed copies may take, all modules together (the ``prepack_mb`` setting,
    ``TERRAMIND_OPENEO_PREPACK_MB``, default 2048)."""
    return int(config.settings().prepack_mb * 2**20)


class PackedWeights:
    """Packed copies of module weights within one memory budget, thread-safe.

    Keyed by module identity (a weak reference: a copy goes with its module); each module keeps up to
    ``COPIES_PER_MODULE`` copies, one per key (weight storage, version, dtype and the shape it was packed for).
    ``budget`` (bytes, or a function returning them, asked on every new copy) bounds all copies together.
    """

    def __init__(self, budget=budget_bytes):
        self._budget = budget if callable(budget) else (lambda: budget)
        self._lock = threading.RLock()  # re-entrant: a weakref callback may run inside a locked section (GC)
        self._entries: dict[int, _Entry] = {}  # id(module) -> its packed copies
        self._held = 0  # bytes of weights packed (the resident cost of the packed copies)

    def held_bytes(self) -> int:
        """Bytes of weights currently held in packed form."""
        return self._held

    def is_packed(self, module: nn.Module) -> bool:
        """Whether ``module`` holds a packed copy of its weight."""
        with self._lock:
            entry = self._entries.get(id(module))
            return entry is not None and entry.ref() is module and bool(entry.copies)

    def release(self, module: nn.Module | None = None) -> None:
        """Drop the packed copies of ``module`` and its children (all of them if None)."""
        with self._lock:
            ids = list(self._entries) if module is None else [id(m) for m in module.modules()]
            for module_id in ids:
                entry = self._entries.pop(module_id, None)
                if entry is not None:
                    self._held -= entry.total

    def _forget(self, module_id: int, ref: weakref.ref) -> None:
        with self._lock:
            entry = self._entries.get(module_id)
            if entry is not None and entry.ref is ref:
                self._held -= self._entries.pop(module_id).total

    def _lookup(self, module: nn.Module, key: tuple) -> Any:
        with self._lock:
            entry = self._entries.get(id(module))
            if entry is not None and entry.ref() is module and key in entry.copies:
                entry.copies.move_to_end(key)
                return entry.copies[key]
        return None

    @staticmethod
    def _make_room(entry: _Entry, key: tuple, dry_run: bool) -> int:
        """Bytes freed in ``entry`` for a copy under ``key`` (under the lock): copies of other weights (changed
        storage or version) are stale, and the least recently used copy goes when the module holds its maximum."""
        stale = [k for k in entry.copies if k[:-1] != key[:-1]]
        keep = len(entry.copies) - len(stale)
        drop = stale + [k for k in entry.copies if k not in stale][:max(0, keep - COPIES_PER_MODULE + 1)]
        if not dry_run:
            for k in drop:
                del entry.copies[k]
        return entry.nbytes * len(drop)

    def get(self, module: nn.Module, key: tuple, pack: Callable[[torch.Tensor], Any]) -> Any:
        """The module's packed weight for ``key`` (what ``pack(weight)`` returns: a tensor, or an ``Int8Weight``),
        packed now if the budget allows, else None.

        First come, first served: once the budget is full, further modules run unpacked (no eviction across
        modules, so a model larger than the budget cannot thrash by repacking on every call); within a module, a
        new input shape adds a copy (the least recently used goes beyond ``COPIES_PER_MODULE``) and changed
        weights replace the old copies; copies go with their module, or with :meth:`release`.
        """
        packed = self._lookup(module, key)
        if packed is not None:
            return packed
        nbytes = module.weight.numel() * module.weight.element_size()
        with self._lock:
            entry = self._entries.get(id(module))
            live = entry is not None and entry.ref() is module
            freed = self._make_room(entry, key, dry_run=True) if entry is not None and live else 0
            if self._held - freed + nbytes > self._budget():
                return None
        with torch.inference_mode(False), torch.no_grad():  # an ordinary tensor: it outlives inference_mode blocks
            packed = pack(module.weight.detach())
        with self._lock:
            entry = self._entries.get(id(module))
            if entry is None or entry.ref() is not module:
                if entry is not None:  # a dead module's id reused
                    self._held -= self._entries.pop(id(module)).total
                entry = _Entry(weakref.ref(module, functools.partial(self._forget, id(module))), OrderedDict(),
                               nbytes)
                self._entries[id(module)] = entry
            self._held -= self._make_room(entry, key, dry_run=False)
            entry.copies[key] = packed
            self._held += nbytes
        return packed


PACKED = PackedWeights()
"""The process's packed copies, used by :func:`conv2d` and :func:`linear`."""
INT8 = PackedWeights(budget=float("inf"))
"""int8 copies of the linear layers marked by :func:`use_int8` (no budget: a marked layer never falls back to
fp32 silently; the copy goes with its module or with :func:`release`)."""
INT8_MARK = "terramind_int8"
"""Attribute set to True on an ``nn.Linear`` whose calls through :func:`linear` run in int8."""


def held_bytes() -> int:
    """Bytes of weights currently held in packed form (:data:`PACKED`)."""
    return PACKED.held_bytes()


def is_packed(module: nn.Module) -> bool:
    """Whether ``module`` holds a packed copy of its weight (:data:`PACKED`)."""
    return PACKED.is_packed(module)


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference tensors have no version counter (and cannot change in place outside it)
        return -1


def conv2d_impl(module: nn.Conv2d, x: torch.Tensor, impl: str = "auto") -> str:
    """Which path :func:`conv2d` takes for ``module`` on ``x``: ``"mkldnn"`` (the packed weight) or ``"torch"``
    (the plain layer). An unknown ``impl`` (or environment value) is an error."""
    name = dispatch.choose(PREPACK, impl, x.device)
    w = module.weight
    if x.device.type != "cpu" or w.device.type != "cpu" or x.dtype not in _DTYPES or w.dtype != x.dtype:
        return "torch"
    if module.padding_mode != "zeros" or isinstance(module.padding, str) or x.ndim != 4:
        return "torch"
    if torch.is_grad_enabled() and (w.requires_grad or x.requires_grad):
        return "torch"
    if torch.compiler.is_compiling() or not torch.backends.mkldnn.is_available():
        return "torch"
    if x.dtype == torch.bfloat16 and not cpu_features.current().onednn_bf16:
        return "torch"  # oneDNN's bf16 reorder needs AVX-NE-CONVERT or AVX-512 BW/VL/DQ: the plain layer
    return name


def _packed_weight(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor | None:
    w = module.weight
    key = ("conv", w.data_ptr(), _version(w), w.dtype, tuple(x.shape))
    return PACKED.get(module, key, lambda weight: torch.ops.mkldnn._reorder_convolution_weight(
        weight, list(module.padding), list(module.stride), list(module.dilation), module.groups, list(x.shape)))


def conv2d(module: nn.Conv2d, x: torch.Tensor, other: torch.Tensor | None = None, impl: str = "auto") -> torch.Tensor:
    """``module(x)`` (plus ``other`` if given, shaped like the output) with the weight packed once for oneDNN."""
    packed = None
    if conv2d_impl(module, x, impl) == "mkldnn" and (other is None or other.dtype == x.dtype):
        packed = _packed_weight(module, x)
    if packed is None:
        y = module(x)
        return y if other is None else y + other
    args = (list(module.padding), list(module.stride), list(module.dilation), module.groups)
    if other is None:
        return torch.ops.mkldnn._convolution_pointwise(x, packed, module.bias, *args, "none", [], "")
    return torch.ops.mkldnn._convolution_pointwise.binary(x, other, packed, module.bias, *args, "add", None,
                                                          None, [], None)


def _mkl_usable(module: nn.Linear, x: torch.Tensor, impl: str) -> bool:
    w = module.weight
    if x.device.type != "cpu" or x.dtype != torch.float32 or w.dtype != torch.float32 or w.device.type != "cpu":
        return False
    if torch.is_grad_enabled() and (w.requires_grad or x.requires_grad):
        return False
    if torch.compiler.is_compiling() or not _LINEAR_ON.get():
        return False
    if dispatch.choose(PREPACK_LINEAR, impl, x.device) != "mkl":
        return False
    return torch.backends.mkl.is_available() and x.ndim >= 1 and x.shape[-1] == w.shape[1] and x.numel() > 0


def linear(module: nn.Linear, x: torch.Tensor, impl: str = "auto") -> torch.Tensor:
    """``module(x)`` (``F.linear(x, weight, bias)``): in int8 where :func:`use_int8` marked the module (fp32 CPU
    inference calls), else through MKL's packed sgemm where opted in (see above), else plain."""
    if getattr(module, INT8_MARK, False) and int8_linear.usable(x, module):
        w = module.weight
        q = INT8.get(module, ("int8", w.data_ptr(), _version(w), 0), functools.partial(_quantize, module))
        if q is None:  # INT8 has no budget, so this would be a bug: never run float32 in silence instead
            raise RuntimeError(f"int8 linear layer {type(module).__name__}: no int8 weight could be kept")
        return int8_linear.int8_linear(x, q, module.bias)
    if not _mkl_usable(module, x, impl):
        return F.linear(x, module.weight, module.bias)
    w = module.weight
    rows = x.numel() // x.shape[-1]
    packed = PACKED.get(module, ("mkl", w.data_ptr(), _version(w), rows),
                        lambda weight: torch.ops.mkl._mkl_reorder_linear_weight(weight, rows))
    if packed is None:
        return F.linear(x, w, module.bias)
    return torch.ops.mkl._mkl_linear(x, packed, w, module.bias, rows)


def _quantize(layer: nn.Linear, _weight: torch.Tensor) -> int8_linear.Int8Weight:
    return int8_linear.quantize(layer)


def use_int8(model: nn.Module, enabled: bool = True) -> list[nn.Linear]:
    """Mark every ``nn.Linear`` in ``model`` to run in int8 (dynamic quantisation, :mod:`int8_linear`) when
    called through :func:`linear` on fp32 CPU tensors; quantised now, so the first call pays nothing.
    ``enabled=False`` unmarks them and drops their int8 copies. Returns the layers marked."""
    if enabled and not int8_linear.available():
        raise RuntimeError("int8 linear layers need torch built with oneDNN (onednn::qlinear_pointwise)")
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    for layer in layers:
        setattr(layer, INT8_MARK, enabled)
        if enabled and layer.weight.device.type == "cpu" and layer.weight.dtype == torch.float32:
            w = layer.weight
            INT8.get(layer, ("int8", w.data_ptr(), _version(w), 0), functools.partial(_quantize, layer))
        else:
            INT8.release(layer)
    return layers


def runs_int8(module: nn.Module) -> bool:
    """Whether ``module`` is a linear layer marked by :func:`use_int8`."""
    return bool(getattr(module, INT8_MARK, False))


@contextlib.contextmanager
def linear_packing(enabled: bool) -> Iterator[None]:
    """Linear packing on or off (``enabled``) for the calls made inside the block, in this thread or task
    only (a context variable: other threads and the environment switch are untouched). Packed copies made
    before stay cached; :func:`release` drops them."""
    token = _LINEAR_ON.set(enabled)
    try:
        yield
    finally:
        _LINEAR_ON.reset(token)


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Both kinds of packing off in this block (their settings ``torch``, in this thread or task only; the
    environment and other threads are untouched): plain ``F.linear`` / ``F.conv2d``, e.g. for a benchmark's
    unpacked row."""
    with config.override(**{PREPACK.setting: "torch", PREPACK_LINEAR.setting: "torch"}):
        yield


def release(module: nn.Module | None = None) -> None:
    """Drop the packed copies of ``module`` and its children (all of them if None); the next call repacks.
    (int8 copies go too; layers marked by :func:`use_int8` quantise again on their next call.)"""
    PACKED.release(module)
    INT8.release(module)
