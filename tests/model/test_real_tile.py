"""A real TerraMesh tile, standardised with the official constants, encodes as the reference encodes it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from terramind_openeo.model import standardize

SITE = "282D_485L_3_3"


def _read(folder, modality):
    rasterio = pytest.importorskip("rasterio")
    with rasterio.open(folder / modality / f"{SITE}.tif") as src:
        return src.read().astype(np.float32)


@pytest.mark.oracle
def test_real_tile_matches_reference(terramind_examples, ref, reference_pair, ours):
    modalities = ["S2L2A", "S1RTC", "DEM"]
    inputs = {m: torch.from_numpy(standardize(m, _read(terramind_examples, m)))[None] for m in modalities}
    assert inputs["S2L2A"].shape == (1, 12, 224, 224)
    backbone = ref.build_backbone("tiny", modalities, reference_pair("tiny")[1], merge_method=None)
    with torch.no_grad():
        expected = backbone(dict(inputs))
    got = ours("tiny").encode(inputs)
    for a, b in zip(got, expected, strict=True):
        assert (a - b).abs().max().item() <= 1e-4
    # the standardised tile is in the range pre-training saw, not raw digital numbers
    assert inputs["S2L2A"].abs().mean() < 3
