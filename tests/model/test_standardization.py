"""Standardisation constants and the Sentinel-2 offset."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terramind_openeo.model import MEAN, STD, InputShapeError, UnknownModalityError, destandardize, standardize
from terramind_openeo.model.config import RAW_MODALITIES


def test_one_statistic_per_band():
    for name, spec in RAW_MODALITIES.items():
        assert len(MEAN[name]) == len(STD[name]) == spec.channels


def test_values_of_reference():
    assert MEAN["S2L2A"][0] == 1390.458 and STD["S2L2A"][-1] == 1334.311
    assert MEAN["S1RTC"] == (-10.93, -17.329) and STD["DEM"] == (951.272,)


@pytest.mark.oracle
def test_constants_equal_terratorch(ref):
    register = ref._terramind_module("terramind_register")
    for name, spec in RAW_MODALITIES.items():
        assert list(MEAN[name]) == list(register.v1_pretraining_mean[spec.key])
        assert list(STD[name]) == list(register.v1_pretraining_std[spec.key])
    assert MEAN["NDVI"] == tuple(register.v1_pretraining_mean["tok_ndvi@224"])


def test_offset_and_round_trip():
    x = np.full((12, 2, 2), 1000.0 + MEAN["S2L2A"][0], dtype=np.float32)
    z = standardize("S2L2A", x, s2_offset=1000)
    assert z.dtype == np.float32 and abs(float(z[0, 0, 0])) < 1e-6
    back = destandardize("S2L2A", torch.from_numpy(z), s2_offset=1000)
    assert torch.allclose(back, torch.from_numpy(x))
    # the offset is for Sentinel-2 only
    dem = torch.full((1, 1, 2, 2), MEAN["DEM"][0])
    assert torch.equal(standardize("DEM", dem, s2_offset=1000), torch.zeros(1, 1, 2, 2))


def test_integer_input_becomes_float32():
    out = standardize("S2L2A", torch.zeros(1, 12, 4, 4, dtype=torch.int16))
    assert out.dtype == torch.float32


def test_bad_modality_and_band_count():
    with pytest.raises(UnknownModalityError, match="'S3'"):
        standardize("S3", np.zeros((1, 2, 2)))
    with pytest.raises(InputShapeError, match="12 band"):
        standardize("S2L2A", np.zeros((3, 2, 2)))
