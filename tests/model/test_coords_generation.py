"""coords as input and as generation target against terratorch (TerraMindGeneration, TerraMindViT) on the same
random weights, the same tokenizer file and the same seed.

The reference draws its seed from Python's ``random`` and its samples from torch's global generator; ``_seed_of``
gives ours the seed it draws. Small inputs (32 px) keep the tiny model cheap.
"""

from __future__ import annotations

import importlib
import random
import warnings
from functools import partial

import pytest
import torch
from _coords_fixtures import write_coords_tokenizer
from _gen_fixtures import max_diff, require_reference, tokenizer_pair

from terramind_openeo.model import load_terramind
from terramind_openeo.model.generation import generate
from terramind_openeo.model.generation_errors import CoordsDecodeError, NotGeneratableError
from terramind_openeo.model.tim import encode_with_tim
from terramind_openeo.model.tokenizers import load_tokenizer

pytestmark = pytest.mark.oracle
ATOL = 1e-4


def _ref(path: str):
    require_reference()
    return importlib.import_module(f"terratorch.models.backbones.terramind.{path}")


@pytest.fixture(scope="module")
def coords_file(tmp_path_factory):
    """Without extra sentinels: generated spans are (almost) never cut short."""
    return write_coords_tokenizer(tmp_path_factory.mktemp("coords") / "config.json", sentinels=0)


@pytest.fixture(scope="module")
def sentinel_file(tmp_path_factory):
    """4000 extra sentinels: spans end early, so a batch holds spans of different lengths. (A span cut to nothing
    beside longer ones crashes the reference: its merge builds the empty span as a float tensor; the seeds of the
    tests that use this file avoid that.)"""
    return write_coords_tokenizer(tmp_path_factory.mktemp("coords") / "config.json", sentinels=4000)


@pytest.fixture(scope="module")
def coords_tok(coords_file):
    return load_tokenizer("coords", coords_file)


def _ref_coords_tokenizer(path):
    text = _ref("tokenizer.text.text_tokenizer")
    return text.CoordsTokenizer(tokenizer_file=str(path))


@pytest.fixture(scope="module")
def geo_weights(reference_pair, coords_file):
    """The shared tiny weights ("plain": random sequences, which never read as coordinates), and a copy
    ("steered") whose coords table makes every sequence read ``lat=-33.75 lon=151.25``: rows of [S_1], that
    lat and that lon token, large and aligned so that the tied output projection (after layer norm, roughly
    the direction of the previous token's row) picks lat after [S_1], lon after lat, lon after lon."""
    state = reference_pair("tiny")[1]
    vocab = load_tokenizer("coords", coords_file).text_tokenizer.get_vocab()
    steered = dict(state)
    table = state["decoder_embeddings.coords.token_emb.weight"].clone()
    u, w = torch.eye(table.shape[1])[:2]
    table[5] = 300 * u  # [S_1]
    table[vocab["lat=-33.75"]] = 600 * (u + w) / 2**0.5
    table[vocab["lon=151.25"]] = 1200 * w
    steered["decoder_embeddings.coords.token_emb.weight"] = table
    steered["decoder_embeddings.coords.to_logits.weight"] = table
    return {"plain": (state, load_terramind("terramind_v1_tiny", weights=state)),
            "steered": (steered, load_terramind("terramind_v1_tiny", weights=steered))}


def _ref_generator(state, coords_file, inputs, outputs, temperature=1.0, top_p=0.8, top_k=0):
    ref = require_reference()
    tg = _ref("model.terramind_generation")
    utils = _ref("model.tm_utils")
    names = {"LULC": "tok_lulc@224"}
    tokenizers = {"coords": lambda pretrained=False: _ref_coords_tokenizer(coords_file)}
    tokenizers.update({names[m]: (lambda pretrained=False, m=m: tokenizer_pair(m)[0]) for m in outputs if m in names})
    model = tg.TerraMindGeneration(
        modalities=list(inputs), output_modalities=list(outputs), temps=temperature, top_p=top_p, top_k=top_k,
        timesteps=2, mlp_ratio=4, norm_layer=partial(utils.LayerNorm, eps=1e-6, bias=False),
        tokenizer_dict=tokenizers, **ref.SIZES["tiny"])
    own = model.sampler.model.state_dict()
    model.sampler.model.load_state_dict({k: state[k] for k in own}, strict=True)
    return model.eval()


def _run_ref(model, inputs: dict, python_seed: int) -> tuple[dict, dict]:
    """(outputs, the sampler's final mod dict) of one reference generation."""
    captured = {}
    sample = model.sampler.generate

    def keep(*args, **kwargs):
        captured["mod_dict"] = sample(*args, **kwargs)
        return captured["mod_dict"]

    model.sampler.generate = keep
    random.seed(python_seed)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference warns for each coords sequence it cannot read
        out = model(dict(inputs), verbose=False)
    return out, captured["mod_dict"]


def _seed_of(python_seed: int) -> int:
    return random.Random(python_seed).randint(-(2**31), 2**31 - 1)


def _s2(batch=4, seed=0):
    return torch.randn(batch, 12, 32, 32, generator=torch.Generator().manual_seed(seed))


def _same_coords(got: torch.Tensor, expected: list) -> None:
    expected = torch.tensor(expected, dtype=torch.float32)
    assert torch.equal(torch.isnan(got), torch.isnan(expected))
    ok = ~torch.isnan(expected)
    assert torch.equal(got[ok], expected[ok])


@pytest.mark.parametrize("weights", ["plain", "steered"])
@pytest.mark.parametrize("temperature, top_p, top_k, argmax",
                         [(1.0, 0.8, 0, False), (0.7, 0.5, 50, False), (0.0, 0.8, 0, True)],
                         ids=["sampled", "sampled-topk", "argmax"])
def test_generated_coords_equal_the_reference(geo_weights, coords_file, coords_tok, weights, temperature, top_p,
                                              top_k, argmax):
    state, model = geo_weights[weights]
    x = _s2(batch=6, seed=1)
    ref_model = _ref_generator(state, coords_file, ["S2L2A"], ["coords"], temperature, top_p, top_k)
    expected, mod_dict = _run_ref(ref_model, {"S2L2A": x}, python_seed=31)
    out = generate(model, {"S2L2A": x}, ["coords"], seed=_seed_of(31), temperature=temperature, top_p=top_p,
                   top_k=top_k, argmax=argmax, tokenizers={"coords": coords_tok})
    assert torch.equal(out.tokens["coords"], mod_dict["coords"]["tensor"])
    assert out["coords"].shape == (6, 2) and out["coords"].dtype == torch.float32
    _same_coords(out["coords"], expected["coords"])
    if weights == "steered":  # the comparison covers sequences that read as coordinates
        assert out["coords"].tolist() == [[151.25, -33.75]] * 6
    assert len(out.problems.get("coords", [])) == int(torch.isnan(out["coords"][:, 0]).sum())


@pytest.mark.parametrize("targets, python_seed", [(["coords", "LULC"], 32), (["LULC", "coords"], 33)])
def test_chained_with_coords_equals_the_reference(geo_weights, sentinel_file, targets, python_seed):
    """coords before LULC: the reference's encoder sees the empty coords input [S_1] while coords is generated,
    and LULC then sees spans of ragged lengths (padding masked); coords after LULC sees the LULC tokens."""
    state, model = geo_weights["plain"]
    x = _s2(batch=4, seed=2)
    expected, mod_dict = _run_ref(_ref_generator(state, sentinel_file, ["S2L2A"], targets), {"S2L2A": x},
                                  python_seed=python_seed)
    toks = {"coords": load_tokenizer("coords", sentinel_file), "LULC": tokenizer_pair("LULC")[1]}
    out = generate(model, {"S2L2A": x}, targets, seed=_seed_of(python_seed), tokenizers=toks)
    assert torch.equal(out.tokens["coords"], mod_dict["coords"]["tensor"])
    if targets[0] == "coords":  # the case this test is for: spans of different lengths in one batch
        assert mod_dict["coords"]["input_mask"].any() and not mod_dict["coords"]["input_mask"].all()
    _same_coords(out["coords"], expected["coords"])
    assert torch.equal(out.tokens["LULC"].flatten(1), mod_dict["tok_lulc@224"]["tensor"])
    assert max_diff(out["LULC"], expected["LULC"]) <= ATOL


def test_coords_input_to_generation_equals_the_reference(geo_weights, coords_file, coords_tok):
    """S2L2A + the location (lon/lat floats, tokenised first) -> LULC."""
    state, model = geo_weights["plain"]
    x = _s2(batch=2, seed=3)
    lonlat = torch.tensor([[11.35, 46.5], [-58.38, -34.6]])
    ref_model = _ref_generator(state, coords_file, ["S2L2A", "coords"], ["LULC"])
    expected, _ = _run_ref(ref_model, {"S2L2A": x, "coords": lonlat}, python_seed=33)
    toks = {"coords": coords_tok, "LULC": tokenizer_pair("LULC")[1]}
    out = generate(model, {"S2L2A": x, "coords": lonlat}, ["LULC"], seed=_seed_of(33), tokenizers=toks)
    assert max_diff(out["LULC"], expected["LULC"]) <= ATOL
    # the same from the ids, and the location matters
    ids = generate(model, {"S2L2A": x, "coords": coords_tok.encode(lonlat)}, ["LULC"], seed=_seed_of(33),
                   tokenizers=toks)
    assert torch.equal(ids.tokens["LULC"], out.tokens["LULC"])
    without = generate(model, {"S2L2A": x}, ["LULC"], seed=_seed_of(33), tokenizers=toks, argmax=True)
    moved = generate(model, {"S2L2A": x, "coords": lonlat}, ["LULC"], seed=_seed_of(33), tokenizers=toks,
                     argmax=True)
    assert max_diff(without["LULC"], moved["LULC"]) > 1e-3


def test_encoder_features_with_coords_equal_the_reference(ref, geo_weights, coords_file, coords_tok):
    """TerraMindViT with the coords tokenizer (lon/lat in) against our encoder on the tokenised location."""
    state, model = geo_weights["plain"]
    backbone = ref.build_backbone("tiny", ["S2L2A", "coords"], state)
    backbone.tokenizer["coords"] = _ref_coords_tokenizer(coords_file)
    x = torch.randn(2, 12, 64, 64, generator=torch.Generator().manual_seed(4))
    lonlat = torch.tensor([[179.9, -16.5], [-122.42, 37.77]], dtype=torch.float64)
    with torch.no_grad():
        expected = backbone({"S2L2A": x, "coords": lonlat})
    got = model.encode({"S2L2A": x, "coords": coords_tok.encode(lonlat)})
    assert len(got) == len(expected) == 12
    for layer, (a, b) in enumerate(zip(got, expected)):
        assert a.shape == b.shape == (2, 16 + 3, 192), layer
        assert max_diff(a, b) <= ATOL, layer


def test_tim_with_coords_input(geo_weights, coords_tok):
    """TiM features see the location (tokenised from lon/lat); coords is no TiM modality."""
    _, model = geo_weights["plain"]
    x = _s2(batch=1, seed=5)
    lonlat = torch.tensor([[11.35, 46.5]])
    toks = {"coords": coords_tok, "LULC": tokenizer_pair("LULC")[1]}
    a = encode_with_tim(model, {"S2L2A": x, "coords": lonlat}, tim=["LULC"], layers=-1, merge="mean", seed=3,
                        tokenizers=toks)
    b = encode_with_tim(model, {"S2L2A": x}, tim=["LULC"], layers=-1, merge="mean", seed=3, tokenizers=toks)
    assert a.shape == b.shape == (1, 4, 192) and max_diff(a, b) > 1e-4
    with pytest.raises(NotGeneratableError, match="tim: 'coords'"):
        encode_with_tim(model, {"S2L2A": x}, tim=["coords"], tokenizers=toks)


def test_unparsed_sequences_nan_or_error(geo_weights, coords_tok):
    _, model = geo_weights["plain"]  # random weights: the sequences are random words
    x = _s2(batch=2, seed=6)
    out = generate(model, {"S2L2A": x}, ["coords"], seed=1, tokenizers={"coords": coords_tok})
    assert bool(torch.isnan(out["coords"]).all()) and len(out.problems["coords"]) == 2
    with pytest.raises(CoordsDecodeError, match=r"sequence 0 \(ids \[.*\]\) reads"):
        generate(model, {"S2L2A": x}, ["coords"], seed=1, tokenizers={"coords": coords_tok}, strict_coords=True)
    with pytest.raises(NotGeneratableError, match="'coords' is also an input"):
        generate(model, {"S2L2A": x, "coords": torch.zeros(2, 2)}, ["coords"], tokenizers={"coords": coords_tok})
