"""Bad input: each a clear error naming the culprit and what was expected."""

from __future__ import annotations

import pytest
import torch

from terramind_openeo.model import (
    InputDtypeError,
    InputShapeError,
    InputValueError,
    TerraMindError,
    UnknownModalityError,
    UnknownModelError,
    load_terramind,
)


@pytest.fixture(scope="module")
def model():
    return load_terramind("terramind_v1_tiny", weights="random")


def test_unknown_model_name():
    with pytest.raises(UnknownModelError, match="terramind_v1_huge.*terramind_v1_tiny"):
        load_terramind("terramind_v1_huge", weights="random")


def test_unknown_modality(model):
    with pytest.raises(UnknownModalityError, match="'S3OLCI'.*S2L2A"):
        model.encode({"S3OLCI": torch.zeros(1, 3, 32, 32)})


def test_raw_lulc_points_to_tokens(model):
    with pytest.raises(UnknownModalityError, match="tok_LULC"):
        model.encode({"LULC": torch.zeros(1, 1, 32, 32)})


def test_unknown_target(model):
    with pytest.raises(UnknownModalityError, match="'S2L1C'.*LULC"):
        model.decoder_logits({"S2L2A": torch.zeros(1, 12, 32, 32)}, "S2L1C")


def test_wrong_channel_count(model):
    with pytest.raises(InputShapeError, match="'S2L2A' must have 12 channels.*got 13"):
        model.encode({"S2L2A": torch.zeros(1, 13, 32, 32)})


def test_size_not_multiple_of_16(model):
    with pytest.raises(InputShapeError, match="'S1RTC' has spatial size 30x32.*multiples of 16"):
        model.encode({"S1RTC": torch.zeros(1, 2, 30, 32)})


def test_wrong_rank(model):
    with pytest.raises(InputShapeError, match=r"'DEM' must have shape \[B, 1, H, W\]"):
        model.encode({"DEM": torch.zeros(1, 32, 32)})


def test_nan_in_input(model):
    x = torch.zeros(1, 12, 32, 32)
    x[0, 3, 5, 5] = float("nan")
    with pytest.raises(InputValueError, match="'S2L2A' holds 1 non-finite \\(NaN\\)"):
        model.encode({"S2L2A": x})


def test_wrong_dtype(model):
    with pytest.raises(InputDtypeError, match="'S2L2A' must be a floating-point tensor.*torch.int16"):
        model.encode({"S2L2A": torch.zeros(1, 12, 32, 32, dtype=torch.int16)})
    with pytest.raises(TypeError):
        model.encode({"tok_LULC": torch.zeros(1, 2, 2)})


def test_token_ids_out_of_vocabulary(model):
    with pytest.raises(InputValueError, match="'tok_LULC'.*0..4374"):
        model.encode({"tok_LULC": torch.full((1, 2, 2), 5000)})


def test_mismatched_batch_and_grid(model):
    with pytest.raises(InputShapeError, match="batch size 2 but 'S2L2A' has 1"):
        model.encode({"S2L2A": torch.zeros(1, 12, 32, 32), "DEM": torch.zeros(2, 1, 32, 32)})
    with pytest.raises(InputShapeError, match="same area"):
        model.encode({"S2L2A": torch.zeros(1, 12, 32, 32), "DEM": torch.zeros(1, 1, 64, 32)})


def test_empty_inputs_layers_and_merge(model):
    with pytest.raises(TerraMindError, match="non-empty dict"):
        model.encode({})
    with pytest.raises(TerraMindError, match="layer 12 out of range"):
        model.encode({"DEM": torch.zeros(1, 1, 32, 32)}, layers=12)
    with pytest.raises(TerraMindError, match="unknown merge 'sum'"):
        model.encode({"DEM": torch.zeros(1, 1, 32, 32)}, merge="sum")


def test_errors_are_value_errors():
    assert issubclass(InputShapeError, ValueError) and issubclass(InputDtypeError, TypeError)
