"""The narrow interface between tiles and the model: batch inputs, encoder tokens, generated rasters.

Everything that depends on how ``terramind_openeo.model`` names or shapes things sits here, so the tiling
engine stays model-agnostic and tests can drive it with stand-in models that offer the same methods
(``encode``, ``generate``, ``config.dim``, optionally ``standardize``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .bands import LULC_CLASSES
from .errors import ModelOutputError
from .tiling import Tile

#: Embedding width per model size (checked against ``model.config.dim`` when the model is loaded).
EMBED_DIMS = {"terramind_v1_tiny": 192, "terramind_v1_small": 384, "terramind_v1_base": 768,
              "terramind_v1_large": 1024}
PATCH = 16
#: Modalities the encoder reads as tokens: their tokenizer turns the raw tile into token ids first (coords: the
#: tile's longitude, latitude into the coords text's ids).
TOKENISED_INPUTS = ("LULC", "NDVI", "coords")


def standardizer(model: Any) -> Callable[..., torch.Tensor]:
    """The model's ``standardize(modality, x, s2_offset=0)``, else the model package's."""
    own = getattr(model, "standardize", None)
    if callable(own):
        return own
    from terramind_openeo.model import standardize

    return standardize


def batch_inputs(
    model: Any,
    tiles_by_modality: dict[str, np.ndarray],
    *,
    device: torch.device,
    dtype: torch.dtype,
    s2_offset: float,
) -> dict[str, torch.Tensor]:
    """Standardised model inputs from raw tiles ``{modality: [B, C, T, T]}`` (NaN = no data).

    NaN (nodata pixels, missing bands) becomes the pre-training mean, i.e. 0 after standardisation.
    LULC inputs are class indices ``[B, T, T]`` (long), nodata as class 0. ``coords``: the tiles' longitude,
    latitude ``[B, 2]`` (float64, as given).
    """
    standardize = standardizer(model)
    inputs = {}
    for modality, raw in tiles_by_modality.items():
        x = torch.from_numpy(np.ascontiguousarray(raw)).to(device)
        if modality == "coords":
            inputs[modality] = x
            continue
        if modality == "LULC":
            inputs[modality] = torch.nan_to_num(x[:, 0], nan=0.0).long()
            continue
        x = standardize(modality, x, s2_offset=s2_offset) if "S2" in modality else standardize(modality, x)
        inputs[modality] = torch.nan_to_num(x, nan=0.0).to(dtype)
    return inputs


def encode_grid(model: Any, inputs: dict[str, torch.Tensor], *, tile_size: int, layer: int, merge: str,
                tim: Sequence[str] | None = None, seed: int | None = None) -> torch.Tensor:
    """Merged token features of one encoder layer as a patch grid ``[B, D', h, w]``.

    The model merges the modalities' tokens per patch (``merge``: mean, max or concat), so the numbers are
    those of ``model.encode`` itself. LULC/NDVI inputs are tokenised first (as generation does); with
    ``tim`` the TiM modalities are generated (from ``seed``) and encoded with the inputs.
    """
    with torch.inference_mode():
        if tim:
            from terramind_openeo.model.tim import encode_with_tim

            out = encode_with_tim(model, inputs, tim=list(tim), layers=layer, merge=merge, seed=seed)
        else:
            if any(name in TOKENISED_INPUTS for name in inputs):
                from terramind_openeo.model.generation import prepare_inputs

                inputs = prepare_inputs(model, inputs)
            out = model.encode(inputs, layers=layer, merge=merge)
    if isinstance(out, (list, tuple)) and len(out) == 1:
        out = out[0]
    side = tile_size // PATCH
    if not isinstance(out, torch.Tensor) or out.ndim != 3 or out.shape[1] != side * side:
        raise ModelOutputError(f"encoder returned {type(out).__name__} {tuple(getattr(out, 'shape', ()))}, "
                               f"expected merged tokens [B, {side * side}, D]")
    batch, _, dim = out.shape
    return out.reshape(batch, side, side, dim).permute(0, 3, 1, 2)  # [B, h*w, D] -> [B, D, h, w]


def tile_seed(seed: int, tile: Tile) -> int:
    """A seed per tile from the user's seed and the tile's grid position (not its place in a batch)."""
    offset = 1 << 31
    return int(np.random.SeedSequence([seed, tile.row + offset, tile.col + offset]).generate_state(1)[0] >> 1)


def generate_rasters(model: Any, inputs: dict[str, torch.Tensor], targets: Sequence[str],
                     seed: int | None, **options: object) -> dict[str, torch.Tensor]:
    """``model.generate`` for one batch; every image target as a ``[B, C, T, T]`` tensor, ``coords`` as ``[B, 2]``
    longitude, latitude."""
    with torch.inference_mode():
        out = model.generate(inputs, targets=list(targets), seed=seed, **options)
    missing = [t for t in targets if t not in out]
    if missing:
        raise ModelOutputError(f"generation did not return targets {missing} (got {list(out)})")
    rasters = {}
    for target in targets:
        value = out[target]
        if target == "coords":
            if value.ndim != 2 or value.shape[1] != 2:
                raise ModelOutputError(f"coords: generated shape {tuple(value.shape)}, expected [B, 2] (lon, lat)")
            rasters[target] = value
            continue
        if value.ndim == 3:
            value = value[:, None]
        rasters[target] = value
    return rasters


def lulc_scores(value: torch.Tensor) -> torch.Tensor:
    """LULC output as per-class scores ``[B, 10, H, W]``: probabilities kept, logits softmaxed,
    class indices one-hot encoded (so blending overlaps becomes a weighted vote)."""
    if value.shape[1] == 1 or not torch.is_floating_point(value):
        classes = value[:, 0].long().clamp(0, LULC_CLASSES - 1)
        return torch.nn.functional.one_hot(classes, LULC_CLASSES).permute(0, 3, 1, 2).float()
    if value.shape[1] != LULC_CLASSES:
        raise ModelOutputError(f"LULC output has {value.shape[1]} channels, expected 1 or {LULC_CLASSES}")
    value = value.float()
    sums = value.sum(dim=1)
    if value.min() < 0 or not torch.allclose(sums, torch.ones_like(sums), atol=1e-3):
        value = value.softmax(dim=1)
    return value
