"""Thinking-in-Modalities features against terratorch's TerraMindTiM (same random weights, same seed)."""

from __future__ import annotations

import importlib
import random
from functools import partial

import pytest
import torch
from _gen_fixtures import max_diff, require_reference

from terramind_openeo.model.generation_errors import NotGeneratableError
from terramind_openeo.model.tim import encode_with_tim

pytestmark = pytest.mark.oracle


def _ref_tim(state: dict, merge_method):
    ref = require_reference()
    tim = importlib.import_module("terratorch.models.backbones.terramind.model.terramind_tim")
    utils = importlib.import_module("terratorch.models.backbones.terramind.model.tm_utils")
    register = importlib.import_module("terratorch.models.backbones.terramind.model.terramind_register")
    model = tim.TerraMindTiM(modalities=["S2L2A"], tim_modalities=["LULC"], merge_method=merge_method, mlp_ratio=4,
                             norm_layer=partial(utils.LayerNorm, eps=1e-6, bias=False), **ref.SIZES["tiny"])
    model.load_state_dict(register.checkpoint_filter_fn_tim(state, model), strict=True)
    return model.eval()


@pytest.mark.parametrize("merge", ["mean", None])
def test_tim_features_match_reference(reference_pair, ours, merge):
    state = reference_pair("tiny")[1]
    model = ours("tiny")
    x = torch.randn(2, 12, 32, 32, generator=torch.Generator().manual_seed(0))  # 2 x 2 tokens (ref: square only)
    random.seed(21)
    with torch.no_grad():
        expected = _ref_tim(state, merge)({"S2L2A": x})
    seed = random.Random(21).randint(-(2**31), 2**31 - 1)
    got = encode_with_tim(model, {"S2L2A": x}, tim=["LULC"], merge=merge, seed=seed)
    assert len(got) == len(expected) == 12
    for layer, (a, b) in enumerate(zip(got, expected)):
        assert a.shape == b.shape, layer
        assert max_diff(a, b) <= 1e-4, layer
    # the same through model.encode(tim=...), last layer only
    last = model.encode({"S2L2A": x}, layers=-1, merge=merge, tim=["LULC"], seed=seed)
    assert max_diff(last, expected[-1]) <= 1e-4


def test_tim_through_encode_is_reproducible_with_a_seed(ours):
    model = ours("tiny")
    x = torch.randn(1, 12, 32, 32, generator=torch.Generator().manual_seed(1))
    a = model.encode({"S2L2A": x}, layers=-1, tim=["LULC"], seed=5, temperature=2.0)
    b = model.encode({"S2L2A": x}, layers=-1, tim=["LULC"], seed=5, temperature=2.0)
    assert torch.equal(a, b)


def test_generator_options_without_tim_are_refused(ours):
    with pytest.raises(ValueError, match="seed: only valid together with tim"):
        ours("tiny").encode({"S2L2A": torch.zeros(1, 12, 32, 32)}, seed=1)


def test_tim_bad_modality(ours):
    with pytest.raises(NotGeneratableError, match="tim: 'S2RGB'"):
        encode_with_tim(ours("tiny"), {"S2L2A": torch.zeros(1, 12, 32, 32)}, tim=["S2RGB"])
