"""Convolutions and linear layers with weights pre-packed (CPU inference): the same numbers, without the
per-call repacking of the weights. Both are on by default for CPU inference.

Convolutions (``conv2d``; ``TERRAMIND_OPENEO_PREPACK=torch`` turns it off): ``F.conv2d`` on the CPU runs oneDNN
too, but reorders the weight into a blocked layout on every call; for the diffusion UNet's 3x3 convolutions
at 7x7..28x28 feature maps that reorder costs 10-35 % of the call. ``conv2d(module, x)`` packs the weight once
(cached on the module, keyed by the weight's storage, version, dtype and the input shape) and calls oneDNN
with it. ``other=`` adds a tensor of the output's shape inside the same kernel (binary post-op,
``conv(x) + other``). At the UNet's shapes on this project's Sapphire Rapids CPU the outputs are bit-identical
to ``module(x)`` (channels-last 3x3); elsewhere oneDNN may pick another algorithm for the packed call, so the
tests allow float rounding (the UNet's 1x1 skip convolutions, which torch runs through im2col, differ by
~1e-6). Applies to CPU tensors, fp32 or bf16, no autograd, oneDNN built in, zero padding mode; elsewhere it
is plain ``module(x)`` / ``+``.

Linear layers (``linear``; ``TERRAMIND_OPENEO_PREPACK_LINEAR=torch`` turns it off): MKL's packed sgemm
(``cblas_sgemm_pack`` / ``_compute``, the kernel inductor's freezing uses for fp32 linears on the CPU),
bit-identical to ``F.linear`` single-threaded at the model's shapes (tested at 196 rows; with 2 threads at
1568 rows the encoder's features differ by ~7e-6, the threads split the work differently), 15-25 % faster
per call at 196 rows (one 224 px tile), ~5 % at 1568.
The packing is per row count ``M`` (the leading dims of ``x`` flattened); a module keeps copies for the
``COPIES_PER_MODULE`` (2) row counts it used last, so a run's full batches and its last, smaller batch do not
repack on every alternation (repacking costs ~1 ms per 10 MB of weights). fp32 CPU tensors only.

Memory, both kinds: a packed copy costs about its weight's size again in resident memory (MKL reserves
~2.6x in address space but touches ~1x). All copies together stay within ``TERRAMIND_OPENEO_PREPACK_MB``
(default 2048 MiB; 0 = no packing): first come, first served, later layers run unpacked once it is full.
A copy goes when its module is garbage-collected, its weights change, or :func:`release` drops it. Under ``torch.compile`` both functions are the plain layers (inductor packs on its own).

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
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from terramind_openeo import config
from terramind_openeo.kernels import dispatch

PREPACK = dispatch.OpSpec("prepack", "prepack", ("mkldnn", "torch"), "torch", "mkldnn")
PREPACK_LINEAR = dispatch.OpSpec("prepack_linear", "prepack_linear", ("mkl", "torch"), "torch", "mkl")
_DTYPES = (torch.float32, torch.bfloat16)
BUDGET_VAR = "TERRAMIND_OPENEO_PREPACK_MB"


@dataclass
class _Entry:
    ref: weakref.ref
    copies: "OrderedDict[tuple, torch.Tensor]"  # key -> packed weight, least recently used first
    nbytes: int  # of one copy

    @property
    def total(self) -> int:
        return self.nbytes * len(self.copies)


COPIES_PER_MODULE = 2  # packed copies a module keeps (for different input shapes)


_LINEAR_ON: contextvars.ContextVar[bool] = contextvars.ContextVar("terramind_openeo_prepack_linear", default=True)
_LOCK = threading.RLock()  # re-entrant: a weakref callback may run inside a locked section (GC)
_CACHE: dict[int, _Entry] = {}  # id(module) -> its packed weight
_held = [0]  # bytes of weights packed (the resident cost of the packed copies)


def budget_bytes() -> int:
    """Memory the packed copies may take, all modules together (the ``prepack_mb`` setting,
    ``TERRAMIND_OPENEO_PREPACK_MB``, default 2048)."""
    return int(config.settings().prepack_mb * 2**20)


def held_bytes() -> int:
    """Bytes of weights currently held in packed form."""
    return _held[0]


def _forget(module_id: int, ref: weakref.ref) -> None:
    with _LOCK:
        entry = _CACHE.get(module_id)
        if entry is not None and entry.ref is ref:
            _held[0] -= _CACHE.pop(module_id).total


def _lookup(module: nn.Module, key: tuple) -> torch.Tensor | None:
    with _LOCK:
        entry = _CACHE.get(id(module))
        if entry is not None and entry.ref() is module and key in entry.copies:
            entry.copies.move_to_end(key)
            return entry.copies[key]
    return None


def _make_room(entry: _Entry, key: tuple, dry_run: bool) -> int:
    """Bytes freed in ``entry`` for a copy under ``key`` (under ``_LOCK``): copies of other weights (changed
    storage or version) are stale, and the least recently used copy goes when the module holds its maximum."""
    stale = [k for k in entry.copies if k[:-1] != key[:-1]]
    keep = len(entry.copies) - len(stale)
    drop = stale + list(k for k in entry.copies if k not in stale)[:max(0, keep - COPIES_PER_MODULE + 1)]
    if not dry_run:
        for k in drop:
            del entry.copies[k]
    return entry.nbytes * len(drop)


def _packed(module: nn.Module, key: tuple, pack) -> torch.Tensor | None:
    """The module's packed weight for ``key``, packed now by ``pack()`` if the budget allows, else None.

    First come, first served: once the budget is full, further modules run unpacked (no eviction across
    modules, so a model larger than the budget cannot thrash by repacking on every call); within a module, a
    new input shape adds a copy (the least recently used goes beyond ``COPIES_PER_MODULE``) and changed
    weights replace the old copies; copies go with their module, or with :func:`release`.
    """
    packed = _lookup(module, key)
    if packed is not None:
        return packed
    nbytes = module.weight.numel() * module.weight.element_size()
    with _LOCK:
        entry = _CACHE.get(id(module))
        live = entry is not None and entry.ref() is module
        freed = _make_room(entry, key, dry_run=True) if live else 0
        if _held[0] - freed + nbytes > budget_bytes():
            return None
    with torch.inference_mode(False), torch.no_grad():  # an ordinary tensor: it outlives inference_mode blocks
        packed = pack(module.weight.detach())
    with _LOCK:
        entry = _CACHE.get(id(module))
        if entry is None or entry.ref() is not module:
            if entry is not None:  # a dead module's id reused
                _held[0] -= _CACHE.pop(id(module)).total
            entry = _Entry(weakref.ref(module, functools.partial(_forget, id(module))), OrderedDict(), nbytes)
            _CACHE[id(module)] = entry
        _held[0] -= _make_room(entry, key, dry_run=False)
        entry.copies[key] = packed
        _held[0] += nbytes
    return packed


def is_packed(module: nn.Module) -> bool:
    """Whether ``module`` holds a packed copy of its weight."""
    with _LOCK:
        entry = _CACHE.get(id(module))
        return entry is not None and entry.ref() is module and bool(entry.copies)


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # inference tensors have no version counter (and cannot change in place outside it)
        return -1


def _usable(module: nn.Conv2d, x: torch.Tensor, impl: str) -> bool:
    w = module.weight
    if x.device.type != "cpu" or w.device.type != "cpu" or x.dtype not in _DTYPES or w.dtype != x.dtype:
        return False
    if module.padding_mode != "zeros" or isinstance(module.padding, str) or x.ndim != 4:
        return False
    if torch.is_grad_enabled() and (w.requires_grad or x.requires_grad):
        return False
    if torch.compiler.is_compiling() or not torch.backends.mkldnn.is_available():
        return False
    return dispatch.choose(PREPACK, impl, x.device) == "mkldnn"


def _packed_weight(module: nn.Conv2d, x: torch.Tensor) -> torch.Tensor | None:
    w = module.weight
    key = ("conv", w.data_ptr(), _version(w), w.dtype, tuple(x.shape))
    return _packed(module, key, lambda weight: torch.ops.mkldnn._reorder_convolution_weight(
        weight, list(module.padding), list(module.stride), list(module.dilation), module.groups, list(x.shape)))


def conv2d(module: nn.Conv2d, x: torch.Tensor, other: torch.Tensor | None = None, impl: str = "auto") -> torch.Tensor:
    """``module(x)`` (plus ``other`` if given, shaped like the output) with the weight packed once for oneDNN."""
    packed = None
    if _usable(module, x, impl) and (other is None or other.dtype == x.dtype):
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
    """``module(x)`` (``F.linear(x, weight, bias)``), through MKL's packed sgemm where opted in (see above)."""
    if not _mkl_usable(module, x, impl):
        return F.linear(x, module.weight, module.bias)
    w = module.weight
    rows = x.numel() // x.shape[-1]
    packed = _packed(module, ("mkl", w.data_ptr(), _version(w), rows),
                     lambda weight: torch.ops.mkl._mkl_reorder_linear_weight(weight, rows))
    if packed is None:
        return F.linear(x, w, module.bias)
    return torch.ops.mkl._mkl_linear(x, packed, w, module.bias, rows)


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
    """Both kinds of packing off in this block (their settings ``torch``, in this thread or task): plain
    ``F.linear`` / ``F.conv2d``, e.g. for a benchmark's unpacked row."""
    with config.override(**{PREPACK.setting: "torch", PREPACK_LINEAR.setting: "torch"}):
        yield


def release(module: nn.Module | None = None) -> None:
    """Drop the packed copies of ``module`` and its children (all of them if None); the next call repacks."""
    with _LOCK:
        ids = list(_CACHE) if module is None else [id(m) for m in module.modules()]
        for module_id in ids:
            entry = _CACHE.pop(module_id, None)
            if entry is not None:
                _held[0] -= entry.total
