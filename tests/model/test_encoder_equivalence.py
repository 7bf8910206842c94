"""Our encoder equals terratorch's backbone (TerraMindViT) layer by layer, on the same random weights."""

from __future__ import annotations

import pytest
import torch

from terramind_openeo.model.config import INPUT_MODALITIES

ATOL = 1e-4


def _inputs(modalities, batch, height, width, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return {m: torch.randn(batch, INPUT_MODALITIES[m].channels, height, width, generator=gen) for m in modalities}


def _compare_layers(ours_out, ref_out):
    assert len(ours_out) == len(ref_out)
    for i, (a, b) in enumerate(zip(ours_out, ref_out)):
        assert a.shape == b.shape, f"layer {i}: {a.shape} vs {b.shape}"
        diff = (a - b).abs().max().item()
        assert diff <= ATOL, f"layer {i}: max abs diff {diff}"


CASES = [
    ("tiny", ("S2L2A",), 2, 224, 224),
    ("tiny", ("S2L2A", "S1RTC", "DEM"), 2, 224, 224),
    ("tiny", ("S2L2A", "S1RTC", "DEM"), 2, 256, 512),
    ("tiny", ("S2L1C", "S2RGB", "S1GRD"), 1, 224, 224),
    ("tiny", ("S2L2A",), 1, 96, 160),
    ("small", ("S2L2A", "S1GRD"), 1, 224, 224),
    ("base", ("S2L2A", "S1RTC", "DEM"), 2, 224, 224),
    ("base", ("S2L2A",), 1, 256, 512),
]


@pytest.mark.oracle
@pytest.mark.parametrize("size,modalities,batch,height,width", CASES,
                         ids=[f"{c[0]}-{'+'.join(c[1])}-b{c[2]}-{c[3]}x{c[4]}" for c in CASES])
def test_every_layer_matches_reference(ref, reference_pair, ours, size, modalities, batch, height, width):
    _, state = reference_pair(size)
    backbone = ref.build_backbone(size, list(modalities), state, merge_method=None)
    inputs = _inputs(modalities, batch, height, width)
    with torch.no_grad():
        expected = backbone(dict(inputs))
    _compare_layers(ours(size).encode(inputs), expected)


@pytest.mark.oracle
@pytest.mark.parametrize("merge", ["mean", "max", "concat", "dict"])
def test_merge_methods_match_reference(ref, reference_pair, ours, merge):
    modalities = ["S2L2A", "S1RTC", "DEM"]
    backbone = ref.build_backbone("tiny", modalities, reference_pair("tiny")[1], merge_method=merge)
    inputs = _inputs(modalities, 2, 224, 224, seed=1)
    with torch.no_grad():
        expected = backbone(dict(inputs))
    got = ours("tiny").encode(inputs, merge=merge)
    for a, b in zip(got, expected):
        if merge == "dict":
            assert list(a) == list(b) == modalities
            for m in modalities:
                assert (a[m] - b[m]).abs().max().item() <= ATOL
        else:
            assert a.shape == b.shape
            assert (a - b).abs().max().item() <= ATOL


@pytest.mark.oracle
def test_layer_selection(ours):
    model = ours("tiny")
    inputs = _inputs(["S2L2A"], 1, 224, 224, seed=2)
    every = model.encode(inputs)
    assert torch.equal(model.encode(inputs, layers=-1), every[-1])
    picked = model.encode(inputs, layers=[3, 0, -1])
    for got, i in zip(picked, [3, 0, 11]):
        assert torch.allclose(got, every[i], atol=1e-6)


@pytest.mark.oracle
def test_token_and_coords_inputs_match_reference(reference_pair, ours):
    """``tok_LULC`` ids and ``coords`` ids beside raw S2L2A, against the reference's own embedding modules."""
    full, _ = reference_pair("tiny")
    gen = torch.Generator().manual_seed(4)
    s2 = torch.randn(2, 12, 224, 224, generator=gen)
    lulc = torch.randint(0, 4375, (2, 14, 14), generator=gen)
    coords = torch.randint(0, 30000, (2, 4), generator=gen)
    with torch.no_grad():
        parts = [full.encoder_embeddings["untok_sen2l2a@224"]({"tensor": s2}),
                 full.encoder_embeddings["tok_lulc@224"]({"tensor": lulc}),
                 full.encoder_embeddings["coords"]({"tensor": coords,
                                                    "input_mask": torch.zeros(2, 4, dtype=torch.bool)})]
        x = torch.cat([d["x"] + d["emb"] for d in parts], dim=1)
        expected = []
        for block in full.encoder:
            x = block(x)
            expected.append(x)
        expected[-1] = full.encoder_norm(x)
    got = ours("tiny").encode({"S2L2A": s2, "tok_LULC": lulc, "coords": coords})
    _compare_layers(got, expected)
    # merge="mean" keeps image modalities only (coords dropped), as the reference backbone does
    merged = ours("tiny").encode({"S2L2A": s2, "tok_LULC": lulc, "coords": coords}, layers=-1, merge="mean")
    assert merged.shape == (2, 196, 192)
