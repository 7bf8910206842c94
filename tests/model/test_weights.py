"""Checkpoints: official key set, strict loading with readable errors, prefixed layouts, hub path, random weights."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from terramind_openeo.model import (
    CheckpointError,
    TerraMind,
    WeightsSourceError,
    filter_state_dict,
    get_config,
    load_terramind,
)
from terramind_openeo.model.weights import read_checkpoint


@pytest.mark.oracle
@pytest.mark.parametrize("size", ["tiny", "small", "base", "large"])
def test_key_set_and_shapes_equal_reference(ref, size):
    expected = ref.build_full_model(size, meta=True).state_dict()
    with torch.device("meta"):
        ours = TerraMind(get_config(f"terramind_v1_{size}")).state_dict()
    assert list(ours) == list(expected)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in expected.items()}
    if size == "tiny":
        assert len(ours) == 306


@pytest.mark.oracle
def test_official_file_loads_unchanged(tiny_checkpoint):
    state = torch.load(tiny_checkpoint, weights_only=True)
    model = load_terramind("terramind_v1_tiny", weights=str(tiny_checkpoint))
    assert model.weights == str(tiny_checkpoint)
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items())


@pytest.mark.oracle
@pytest.mark.parametrize("layout", ["sampler.model.", "model.", "lightning", "tim"])
def test_prefixed_layouts_load(tiny_checkpoint, layout):
    state = torch.load(tiny_checkpoint, weights_only=True)
    if layout == "lightning":  # terratorch task checkpoint: {"state_dict": {"model.encoder.<key>": ...}}
        wrapped = {"state_dict": {f"model.encoder.{k}": v for k, v in state.items()}, "epoch": 3}
    elif layout == "tim":  # TerraMindTiM: backbone keys un-prefixed + full model under sampler.model. + tokenizers
        wrapped = {k: v for k, v in state.items() if k.startswith(("encoder.", "encoder_norm"))}
        wrapped |= {f"sampler.model.{k}": v for k, v in state.items()}
        wrapped["tokenizer.tok_lulc@224.encoder.weight"] = torch.zeros(3)
    else:  # TerraMindGeneration writes sampler.model.<key> plus tokenizer.* tensors
        wrapped = {f"{layout}{k}": v for k, v in state.items()} | {"tokenizer.x.weight": torch.zeros(2)}
    model = load_terramind("terramind_v1_tiny", weights=wrapped)
    assert torch.equal(model.state_dict()["encoder.0.attn.qkv.weight"], state["encoder.0.attn.qkv.weight"])


def test_filter_is_pure():
    state = {"sampler.model.mask_token": torch.zeros(1), "tokenizer.a": torch.zeros(1)}
    before = dict(state)
    assert filter_state_dict(state, {"mask_token"}) == {"mask_token": state["sampler.model.mask_token"]}
    assert state == before


@pytest.mark.oracle
def test_strict_loading_lists_every_problem(tiny_checkpoint):
    state = torch.load(tiny_checkpoint, weights_only=True)
    del state["encoder.3.mlp.fc1.bias"]
    state["encoder.99.attn.qkv.weight"] = torch.zeros(1)
    state["encoder_norm.weight"] = torch.zeros(7)
    with pytest.raises(CheckpointError) as info:
        load_terramind("terramind_v1_tiny", weights=state)
    message = str(info.value)
    assert "missing (1)" in message and "encoder.3.mlp.fc1.bias" in message
    assert "unexpected (1)" in message and "encoder.99.attn.qkv.weight" in message
    assert "shape mismatch (1)" in message and "encoder_norm.weight: checkpoint [7], model [192]" in message


@pytest.mark.oracle
def test_wrong_size_checkpoint_is_refused(tiny_checkpoint):
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_terramind("terramind_v1_small", weights=str(tiny_checkpoint))


def test_missing_file_and_bad_source(tmp_path):
    with pytest.raises(WeightsSourceError, match="does not exist"):
        load_terramind("terramind_v1_tiny", weights=str(tmp_path / "nope.pt"))
    with pytest.raises(WeightsSourceError, match="'hub', 'random'"):
        load_terramind("terramind_v1_tiny", weights=3)


def _anonymous_rss_mib() -> float:
    """This process's private (heap) resident memory; pages mapped from files are not in it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    pytest.skip("/proc/self/status has no RssAnon (not Linux)")


def test_checkpoints_are_mapped_not_read(tmp_path):
    """A 256 MiB tensor of a checkpoint that nothing copies (a TiM tokenizer, checked by shape only) costs no
    heap memory: read_checkpoint maps the file. Before: the whole file was read (+256 MiB)."""
    path = tmp_path / "big.pt"
    torch.save({"unused": torch.ones(64 * 2**20), "small": torch.arange(4.0)}, path)
    before = _anonymous_rss_mib()
    state = read_checkpoint(path)
    grown = _anonymous_rss_mib() - before
    assert torch.equal(state["small"], torch.arange(4.0)) and state["unused"].shape == (64 * 2**20,)
    assert grown < 64, f"reading the checkpoint grew the heap by {grown:.0f} MiB"
    assert float(state["unused"][-1]) == 1.0  # readable (from the file) when asked


def test_legacy_format_checkpoints_are_read_whole(tmp_path):
    """Files written before torch's zip format (``_use_new_zipfile_serialization=False``) cannot be mapped:
    they are read as before, not refused."""
    path = tmp_path / "legacy.pt"
    torch.save({"w": torch.arange(6.0).reshape(2, 3)}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(read_checkpoint(path)["w"], torch.arange(6.0).reshape(2, 3))


@pytest.mark.oracle
def test_hub_download_path(monkeypatch, tiny_checkpoint, tmp_path):
    """weights="hub": fetched once from the hub (a local stand-in) into the cache, then read from it."""
    import huggingface_hub.constants as constants
    from hub_standin import hub_standin, point_hub_at, resolve_requests

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    files = {("ibm-esa-geospatial/TerraMind-1.0-tiny", "TerraMind_v1_tiny.pt"): tiny_checkpoint.read_bytes()}
    with hub_standin(files) as standin:
        point_hub_at(monkeypatch, standin.url)
        model = load_terramind("terramind_v1_tiny", weights="hub")
        first = len(resolve_requests(standin))
        again = load_terramind("terramind_v1_tiny", weights="hub")
    assert model.weights == again.weights == "hub"
    assert first >= 2 and len(resolve_requests(standin)) == first  # the second load reads the cache only


def test_hub_offline_without_cache_says_so(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsSourceError, match="HF_HUB_OFFLINE"):
        load_terramind("terramind_v1_tiny", weights="hub")


def test_random_weights_are_deterministic(caplog):
    """Seeded from an own generator: independent of global RNG state, hence equal in every process."""
    with caplog.at_level(logging.WARNING):
        model = load_terramind("terramind_v1_tiny", weights="random")
    assert "RANDOM weights" in caplog.text and model.weights == "random"
    torch.manual_seed(12345)
    torch.rand(7)
    again = load_terramind("terramind_v1_tiny", weights="random").state_dict()
    assert all(torch.equal(v, again[k]) for k, v in model.state_dict().items())
    seeded = load_terramind("terramind_v1_tiny", weights="random", seed=1)
    assert not torch.equal(seeded.mask_token, model.mask_token)
    assert not torch.equal(seeded.encoder[0].attn.qkv.weight, model.encoder[0].attn.qkv.weight)


@pytest.mark.oracle
def test_random_init_position_tables_equal_reference(reference_pair):
    _, state = reference_pair("tiny")
    ours = load_terramind("terramind_v1_tiny", weights="random").state_dict()
    for key in [k for k in state if k.endswith("pos_emb")]:
        assert torch.allclose(ours[key], state[key], atol=1e-6), key


def test_device_and_dtype():
    model = load_terramind("terramind_v1_tiny", weights="random", dtype=torch.bfloat16)
    assert model.mask_token.dtype == torch.bfloat16
    head = model.decoder_embeddings["tok_lulc@224"]
    assert head.to_logits.weight is head.token_emb.weight
    out = model.encode({"S2L2A": torch.randn(1, 12, 32, 32)}, layers=-1)
    assert out.dtype == torch.bfloat16
