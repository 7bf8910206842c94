"""Checks on model inputs, so that bad input fails early with an error naming the modality and what was expected,
never deep inside torch."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from terramind_openeo.model.config import ModalitySpec, input_spec
from terramind_openeo.model.errors import InputDtypeError, InputShapeError, InputValueError, TerraMindError

_INT_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _as_tensor(name: str, value) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    raise InputDtypeError(f"input {name!r} must be a torch.Tensor (or numpy array), got {type(value).__name__}")


def _check_raw(spec: ModalitySpec, x: torch.Tensor, patch_size: int) -> None:
    if not x.is_floating_point():
        raise InputDtypeError(
            f"input {spec.name!r} must be a floating-point tensor of standardised values, got {x.dtype} "
            f"(standardise it first: terramind_openeo.model.standardize({spec.name!r}, x))")
    if x.ndim != 4:
        raise InputShapeError(
            f"input {spec.name!r} must have shape [B, {spec.channels}, H, W], got {list(x.shape)}")
    if x.shape[1] != spec.channels:
        raise InputShapeError(
            f"input {spec.name!r} must have {spec.channels} channels ({' '.join(spec.bands)}), "
            f"got {x.shape[1]} (shape {list(x.shape)})")
    H, W = x.shape[-2:]
    if H == 0 or W == 0 or H % patch_size or W % patch_size:
        raise InputShapeError(
            f"input {spec.name!r} has spatial size {H}x{W}; height and width must be positive multiples of "
            f"{patch_size}")
    # one reduction pass in the common case; the exact count only when something is off (or the sum overflows)
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        kind = "NaN" if bool(torch.isnan(x).any()) else "infinite"
        raise InputValueError(
            f"input {spec.name!r} holds {bad} non-finite ({kind}) values; fill nodata before encoding")


def _check_ids(spec: ModalitySpec, ids: torch.Tensor, ndim: int, layout: str) -> None:
    if ids.dtype not in _INT_DTYPES:
        raise InputDtypeError(f"input {spec.name!r} must hold integer token ids {layout}, got {ids.dtype}")
    if ids.ndim != ndim:
        raise InputShapeError(f"input {spec.name!r} must have shape {layout}, got {list(ids.shape)}")
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= spec.vocab_size):
        raise InputValueError(
            f"input {spec.name!r} holds token ids in [{int(ids.min())}, {int(ids.max())}]; "
            f"expected 0..{spec.vocab_size - 1}")


def validate_inputs(inputs, patch_size: int) -> dict[str, tuple[ModalitySpec, torch.Tensor]]:
    """Check ``inputs`` (modality name -> tensor) and return ``{name: (spec, tensor)}`` in input order.

    Raw modalities: float ``[B, C, H, W]``, finite, H and W multiples of ``patch_size``. Token inputs
    (``tok_<NAME>``): integer ``[B, h, w]`` within the vocabulary. ``coords``: integer ``[B, L]``. All share B,
    and all image modalities share one patch grid.
    """
    if not isinstance(inputs, Mapping) or not inputs:
        raise TerraMindError(
            f"inputs must be a non-empty dict of modality name -> tensor, got {type(inputs).__name__}"
            + (" (empty)" if isinstance(inputs, Mapping) else ""))
    checked: dict[str, tuple[ModalitySpec, torch.Tensor]] = {}
    batch: tuple[str, int] | None = None
    grid: tuple[str, tuple[int, int]] | None = None
    this_grid: tuple[int, int] | None
    for name, value in inputs.items():
        spec = input_spec(name)
        x = _as_tensor(name, value)
        if spec.kind == "raw":
            _check_raw(spec, x, patch_size)
            this_grid = (x.shape[-2] // patch_size, x.shape[-1] // patch_size)
        elif spec.kind == "tokens":
            _check_ids(spec, x, 3, "[B, h, w]")
            this_grid = (x.shape[-2], x.shape[-1])
        else:
            _check_ids(spec, x, 2, "[B, L]")
            this_grid = None
        if batch is None:
            batch = (name, x.shape[0])
        elif x.shape[0] != batch[1]:
            raise InputShapeError(
                f"input {name!r} has batch size {x.shape[0]} but {batch[0]!r} has {batch[1]}; all inputs must match")
        if this_grid is not None:
            if grid is None:
                grid = (name, this_grid)
            elif this_grid != grid[1]:
                raise InputShapeError(
                    f"input {name!r} covers {this_grid[0]}x{this_grid[1]} patches but {grid[0]!r} covers "
                    f"{grid[1][0]}x{grid[1][1]}; all image inputs must cover the same area at the same size")
        checked[name] = (spec, x)
    if batch is not None and batch[1] == 0:  # (inputs is non-empty: batch is set)
        raise InputShapeError(f"input {batch[0]!r} has batch size 0")
    return checked
