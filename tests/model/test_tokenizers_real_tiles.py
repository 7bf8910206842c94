"""Real TerraMesh tiles through every tokenizer: standardise -> tokens -> decode -> physical units.

Weights are the seeded random ones (the official checkpoints are not available offline), so the values mean
nothing; what is checked is the data path: shapes, token ranges, dtypes, and units (a one-step DDIM decode returns
the clean-sample prediction clipped to [-1, 1] standard deviations, so the physical output must lie within
mean +- std of each band). The examples hold no S1GRD tile: the S1RTC tile (also VV/VH in dB) stands in.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from terramind_openeo.model import MEAN, STD, destandardize, standardize
from terramind_openeo.model.tokenizers import TOKENIZER_SPECS, load_tokenizer, tokenizer_from_state_dict

rasterio = pytest.importorskip("rasterio")

SITE = "282D_485L_3_3"
SAME_SHAPES = {"S1RTC": "S1GRD", "NDVI": "DEM"}
"""Tokenizers whose tensors have the same shapes: the second reuses the first's random weights (no copy)."""
FOLDER = {"S2L2A": "S2L2A", "S1GRD": "S1RTC", "S1RTC": "S1RTC", "DEM": "DEM", "NDVI": "NDVI", "LULC": "LULC"}


def _read(folder, modality: str) -> torch.Tensor:
    with rasterio.open(folder / FOLDER[modality] / f"{SITE}.tif") as src:
        return torch.from_numpy(src.read().astype(np.float32))[None]  # [1, C, 224, 224]


@functools.lru_cache(maxsize=1)
def _random_tokenizer(modality: str):
    return load_tokenizer(modality, "random")


def _tokenizer(modality: str):
    if modality in SAME_SHAPES:
        return tokenizer_from_state_dict(modality, _random_tokenizer(SAME_SHAPES[modality]).state_dict())
    return _random_tokenizer(modality)


@pytest.mark.parametrize("modality", ["LULC", "S2L2A", "S1GRD", "S1RTC", "DEM", "NDVI"])
def test_real_tile_through_tokenizer(terramind_examples, modality):
    tok = _tokenizer(modality)
    raw = _read(terramind_examples, modality)
    assert raw.shape[-2:] == (224, 224)
    spec = TOKENIZER_SPECS[modality]
    if modality == "LULC":
        tokens = tok.encode(raw[:, 0].long())  # class indices 0..9
    else:
        x = standardize(modality, raw)  # s2_offset unknown for this tile; immaterial with random weights
        assert x.shape[1] == spec.channels
        tokens = tok.encode(x)
    assert tokens.shape == (1, 14, 14) and tokens.dtype == torch.int64
    assert 0 <= int(tokens.min()) and int(tokens.max()) < spec.codebook_size

    if modality == "LULC":
        scores = tok.decode(tokens)
        assert scores.shape == (1, 10, 224, 224) and torch.isfinite(scores).all()
        classes = scores.argmax(1)
        assert 0 <= int(classes.min()) and int(classes.max()) <= 9
    else:
        crop = tokens[:, :2, :2]  # a 32 x 32 px window keeps the UNet cheap
        x = tok.decode(crop, timesteps=1, generator=torch.Generator().manual_seed(0))
        assert x.shape == (1, spec.channels, 32, 32) and x.dtype == torch.float32
        assert float(x.abs().max()) <= 1.0 + 1e-6
        physical = destandardize(modality, x)
        mean = torch.tensor(MEAN[modality])[None, :, None, None]
        std = torch.tensor(STD[modality])[None, :, None, None]
        assert torch.all(physical >= mean - std - 1e-3) and torch.all(physical <= mean + std + 1e-3)
