"""The coords tokenizer against terratorch's CoordsTokenizer on the same tokenizer file (written at test time)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from _coords_fixtures import grid, write_coords_tokenizer

from terramind_openeo.model.coords import (
    CoordsTokenizer,
    load_coords_tokenizer,
    parse_coords_text,
    synthetic_tokenizer_json,
)
from terramind_openeo.model.generation_errors import CoordsDecodeError, CoordsTokenizerError, CoordsValueError
from terramind_openeo.model.tokenizers import load_tokenizer

# (lon, lat): ties of the 0.25 grid (round half to even), both sides of them, negative longitudes, the poles,
# the antimeridian from both sides; none rounds to -0.0 (see test_negative_zero_is_written_as_zero)
POINTS = [
    (0.12499, 0.12501), (0.125, 0.375), (12.625, -12.625), (45.8749, 45.875), (-73.98, 40.75), (-122.42, 37.77),
    (-179.9, 89.9), (179.9, -89.87), (180.0, 90.0), (-180.0, -90.0), (179.874, -0.126), (-179.876, 0.126),
    (7.375, -33.625), (-0.13, 51.5), (151.21, -33.87), (2.35, 48.86), (-58.38, -34.6), (0.0, 0.0),
]


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    return write_coords_tokenizer(tmp_path_factory.mktemp("coords") / "config.json")


@pytest.fixture(scope="module")
def pair(tokenizer_file):
    """(reference CoordsTokenizer, ours) on the same file."""
    from _gen_fixtures import require_reference

    require_reference()
    from terratorch.models.backbones.terramind.tokenizer.text.text_tokenizer import CoordsTokenizer as Reference

    return Reference(tokenizer_file=str(tokenizer_file)), load_tokenizer("coords", tokenizer_file)


@pytest.mark.oracle
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_token_ids_equal_the_reference(pair, dtype):
    ref, ours = pair
    x = torch.tensor(POINTS, dtype=dtype)
    expected = ref.encode(x)["tensor"]
    got = ours.encode(x)
    assert got.dtype == torch.int64 and got.shape == (len(POINTS), 3)
    assert torch.equal(got, expected)
    vocab = ours.text_tokenizer.get_vocab()
    # the layout the official file gives: lat token, lon token, [EOS]; rounded half to even
    assert got[1].tolist() == [vocab["lat=0.50"], vocab["lon=0.00"], 3]
    assert got[2].tolist() == [vocab["lat=-12.50"], vocab["lon=12.50"], 3]
    assert got[8].tolist() == [vocab["lat=90.00"], vocab["lon=180.00"], 3]
    assert got[6].tolist()[:2] == [vocab["lat=90.00"], vocab["lon=-180.00"]]


@pytest.mark.oracle
def test_negative_zero_is_written_as_zero(pair):
    """The reference writes -0.0 as 'lat=-0.00', which no vocabulary holds ([UNK] pieces); ours writes 0.00."""
    ref, ours = pair
    x = torch.tensor([[-0.1, -0.12]])  # both round to -0.0
    assert ours.texts(x) == ["lat=0.00 lon=0.00 [EOS]"]
    vocab = ours.text_tokenizer.get_vocab()
    assert ours.encode(x).tolist() == [[vocab["lat=0.00"], vocab["lon=0.00"], 3]]
    assert 1 in ref.encode(x)["tensor"].tolist()[0]  # the reference: [UNK] (id 1) pieces


def test_one_meridian_at_plus_minus_180(tmp_path):
    """A vocabulary without lon=180.00 serves +180 with the lon=-180.00 token (the same meridian)."""
    path = write_coords_tokenizer(tmp_path / "config.json", drop=("lon=180.00",))
    tok = load_tokenizer("coords", path)
    vocab = tok.text_tokenizer.get_vocab()
    ids = tok.encode(torch.tensor([[180.0, 10.0], [179.9, 10.0], [-180.0, 10.0]]))
    assert ids[:, 1].tolist() == [vocab["lon=-180.00"]] * 3


@pytest.mark.oracle
def test_decoding_equals_the_reference(pair):
    ref, ours = pair
    vocab = ours.text_tokenizer.get_vocab()
    pad = vocab["[PAD]"]
    rows = [
        [vocab["lat=45.50"], vocab["lon=-12.25"], 3],  # valid, [EOS] after
        [vocab["lat=-90.00"], vocab["lon=180.00"], pad],  # valid, padded
        [vocab["lat=0.00"], vocab["lon=-180.00"], pad],
        [vocab["lon=3.00"], vocab["lat=5.00"], pad],  # swapped
        [vocab["lat=3.00"], pad, pad],  # one token
        [vocab["w7"], vocab["w8"], pad],  # words
        [vocab["lat=3.00"], vocab["lat=4.00"], pad],  # two latitudes
    ]
    ids = torch.tensor(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reference warns for each sequence it cannot read
        expected = torch.tensor(ref.decode_text({"coords": {"tensor": ids}}), dtype=torch.float32)
    got, problems = ours.try_decode(ids)
    assert torch.equal(torch.isnan(got), torch.isnan(expected))
    assert torch.equal(got[:3], expected[:3])
    assert got[:3].tolist() == [[-12.25, 45.5], [180.0, -90.0], [-180.0, 0.0]]
    assert [p.split(" ")[1] for p in problems] == ["3", "4", "5", "6"]
    with pytest.raises(CoordsDecodeError, match=r"sequence 3 \(ids \[.*\]\) reads 'lon=3.00 lat=5.00'"):
        ours.decode(ids)
    assert torch.equal(ours.decode(ids[:3]), got[:3])
    # no generated token at all (every span empty): [B, 0]
    empty, problems = ours.try_decode(torch.zeros(2, 0, dtype=torch.int64))
    assert empty.shape == (2, 2) and bool(torch.isnan(empty).all()) and len(problems) == 2


def test_round_trip_over_the_grid(tokenizer_file):
    """Every grid point comes back from its own ids (decode reads the first two tokens)."""
    tok = load_tokenizer("coords", tokenizer_file)
    lat = torch.arange(-360, 361, 7) / 4
    lon = torch.arange(-720, 721, 13) / 4
    lonlat = torch.stack(torch.meshgrid(lon, lat, indexing="ij"), -1).reshape(-1, 2)
    assert torch.equal(tok.decode(tok.encode(lonlat)), lonlat.float())


def test_span_merging_and_padding(tokenizer_file):
    tok = load_tokenizer("coords", tokenizer_file)
    a, b, c = 100, 200, 300
    s0 = tok.text_tokenizer.token_to_id("[S_0]")
    assert tok.generated_span([5, a, b, 6]) == [a, b]
    assert tok.generated_span([5, a, b, c]) == [a, b, c]
    assert tok.generated_span([5, a, 6, b]) == [a]
    assert tok.generated_span([5, s0, a, b]) == []
    assert tok.generated_span([5, a, 5, b]) == [a, b]
    padded = tok.pad([[a, b], [], [c]])
    assert padded.tolist() == [[a, b], [0, 0], [c, 0]]
    assert tok.pad([[], []]).shape == (2, 0)


def test_synthetic_tokenizer_is_the_official_format():
    tok = load_coords_tokenizer("random")
    assert isinstance(tok, CoordsTokenizer) and tok.weights == "random"
    spec = json.loads(synthetic_tokenizer_json())
    assert spec["model"]["type"] == "WordPiece"
    ids = tok.encode(torch.tensor([[10.0, 20.0], [-180.0, -90.0]]))
    assert ids.shape == (2, 3) and ids[:, 2].tolist() == [3, 3]
    assert tok.decode(ids).tolist() == [[10.0, 20.0], [-180.0, -90.0]]
    assert len(set(grid())) == 721 + 1441


def test_bad_input_names_the_batch_item(tokenizer_file):
    tok = load_tokenizer("coords", tokenizer_file)
    with pytest.raises(CoordsValueError, match=r"shape \[B, 2\]"):
        tok.encode(torch.zeros(3))
    with pytest.raises(CoordsValueError, match=r"shape \[B, 2\]"):
        tok.encode(torch.zeros(2, 3))
    with pytest.raises(CoordsValueError, match=r"coords\[1\] .* not finite"):
        tok.encode(torch.tensor([[0.0, 0.0], [float("nan"), 1.0]]))
    with pytest.raises(CoordsValueError, match=r"coords\[0\] = \(lon 10.0, lat 95.0\) lies outside"):
        tok.encode(torch.tensor([[10.0, 95.0]]))
    with pytest.raises(CoordsValueError, match="lies outside"):
        tok.encode([[181.0, 0.0]])
    # a vocabulary that lacks a grid value: an error naming the text, not [UNK] tokens
    path = write_coords_tokenizer(tokenizer_file.parent / "holes.json", drop=("lat=12.50",))
    with pytest.raises(CoordsValueError, match=r"coords\[0\]: 'lat=12.50 lon=1.00 \[EOS\]' is not in the vocabulary"):
        load_tokenizer("coords", path).encode(torch.tensor([[1.0, 12.5]]))


def test_parse_reasons():
    assert parse_coords_text("lat=1.25 lon=-3.50") == (-3.5, 1.25)
    assert "two words" in parse_coords_text("lat=1.25")
    assert "does not start with 'lat='" in parse_coords_text("lon=1.25 lat=3.00")
    assert "holds no number" in parse_coords_text("lat=x lon=1.00")
    assert "outside -90..90" in parse_coords_text("lat=91.00 lon=1.00")
    assert "outside -180..180" in parse_coords_text("lat=1.00 lon=nan")


def test_a_file_of_another_kind_is_named(tmp_path, tokenizer_file):
    with pytest.raises(CoordsTokenizerError, match="no file at"):
        load_tokenizer("coords", tmp_path / "missing.json")
    pt = tmp_path / "TerraMind_Tokenizer_LULC.pt"
    torch.save({"w": torch.zeros(2)}, pt)
    with pytest.raises(CoordsTokenizerError, match="LULC.pt.*torch checkpoint"):
        load_tokenizer("coords", pt)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"architectures": ["BertModel"], "hidden_size": 768}))
    with pytest.raises(CoordsTokenizerError, match="config.json.*not a 'tokenizers' file"):
        load_tokenizer("coords", config)
    text = tmp_path / "notes.txt"
    text.write_text("lat=1 lon=2")
    with pytest.raises(CoordsTokenizerError, match="notes.txt.*not a JSON file"):
        load_tokenizer("coords", text)
    spec = json.loads(tokenizer_file.read_text())
    bpe = dict(spec, model={"type": "BPE", "vocab": {}, "merges": []})
    (tmp_path / "bpe.json").write_text(json.dumps(bpe))
    with pytest.raises(CoordsTokenizerError, match="bpe.json.*'BPE' tokenizer"):
        load_tokenizer("coords", tmp_path / "bpe.json")
    # a WordPiece tokenizer without TerraMind's fixed ids or grid tokens (e.g. a plain BERT vocabulary)
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordPiece({"[UNK]": 0, "[PAD]": 1, "hello": 2}, unk_token="[UNK]")).save(str(tmp_path / "b.json"))
    with pytest.raises(CoordsTokenizerError, match=r"b.json'.*\[EOS\] has id None"):
        load_tokenizer("coords", tmp_path / "b.json")
    with pytest.raises(CoordsTokenizerError, match="must be 'hub', 'random' or a path"):
        load_tokenizer("coords", 3)
