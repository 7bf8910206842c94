"""``decoder_logits`` equals the reference's first generation step (GenerationSampler, all target tokens masked)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from terramind_openeo.model import TerraMind, get_config, load_state_dict_strict
from terramind_openeo.model.config import INPUT_MODALITIES, RAW_MODALITIES, TOKEN_MODALITIES

ATOL = 1e-4
CASES = [
    ("tiny", ("S2L2A",), "LULC", 2, 224),
    ("tiny", ("S2L2A", "S1RTC", "DEM"), "S1GRD", 2, 224),
    ("tiny", ("S1GRD",), "S2L2A", 1, 256),
    ("base", ("S2L2A",), "LULC", 1, 224),
]


def _inputs(modalities, batch, size, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, INPUT_MODALITIES[m].channels, size, size, generator=gen) for m in modalities}


@pytest.mark.oracle
@pytest.mark.parametrize("size,modalities,target,batch,px", CASES,
                         ids=[f"{c[0]}-{'+'.join(c[1])}-to-{c[2]}-b{c[3]}-{c[4]}" for c in CASES])
def test_decoder_logits_match_reference(ref, reference_pair, ours, size, modalities, target, batch, px):
    full, _ = reference_pair(size)
    inputs = _inputs(modalities, batch, px)
    expected = ref.decoder_logits(full, {RAW_MODALITIES[m].key: x for m, x in inputs.items()},
                                  TOKEN_MODALITIES[target].key)
    got = ours(size).decoder_logits(inputs, target)
    assert got.shape == expected.shape == (batch, (px // 16) ** 2, TOKEN_MODALITIES[target].vocab_size)
    assert (got - expected).abs().max().item() <= ATOL


@pytest.mark.oracle
def test_decoder_logits_non_square(ours):
    """The reference cannot decode non-square grids (it assumes square token counts); ours decodes the input's
    patch grid in raster order."""
    got = ours("tiny").decoder_logits({"S2L2A": torch.randn(1, 12, 128, 256)}, "LULC")
    assert got.shape == (1, 8 * 16, 4375)
    assert torch.isfinite(got).all()


@pytest.mark.oracle
@pytest.mark.parametrize("size", ["small", "large"])
def test_reduced_depth_sizes_match_reference(ref, size):
    """small and large at their real width and heads but 2 encoder / 1 decoder layers: encoder and logits."""
    full = ref.build_fast_model(size, seed=5, active=("tok_ndvi@224",), encoder_depth=2, decoder_depth=1)
    config = dataclasses.replace(get_config(f"terramind_v1_{size}"), encoder_depth=2, decoder_depth=1)
    model = TerraMind(config)
    load_state_dict_strict(model, full.state_dict())
    model.eval()
    inputs = _inputs(["S2L2A", "DEM"], 1, 224, seed=7)
    with torch.no_grad():
        x = torch.cat([d["x"] + d["emb"] for d in (
            full.encoder_embeddings["untok_sen2l2a@224"]({"tensor": inputs["S2L2A"]}),
            full.encoder_embeddings["untok_dem@224"]({"tensor": inputs["DEM"]}))], dim=1)
        expected = []
        for block in full.encoder:
            x = block(x)
            expected.append(x)
        expected[-1] = full.encoder_norm(x)
    for a, b in zip(model.encode(inputs), expected, strict=True):
        assert (a - b).abs().max().item() <= ATOL
    logits = ref.decoder_logits(full, {"untok_sen2l2a@224": inputs["S2L2A"], "untok_dem@224": inputs["DEM"]},
                                "tok_ndvi@224")
    assert (model.decoder_logits(inputs, "NDVI") - logits).abs().max().item() <= ATOL
