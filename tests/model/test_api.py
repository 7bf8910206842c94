"""The names other layers rely on (docs/contracts.md)."""

from __future__ import annotations

import torch

import terramind_openeo.model as model_pkg
from terramind_openeo.model import MODEL_NAMES, TerraMind, get_config


def test_contract_names_exist():
    for name in ("load_terramind", "load_tokenizer", "standardize", "destandardize"):
        assert callable(getattr(model_pkg, name))


def test_model_attributes_and_methods():
    with torch.device("meta"):
        model = TerraMind(get_config("terramind_v1_base"))
    assert model.name == "terramind_v1_base" and model.config.dim == 768 and model.config.patch_size == 16
    for method in ("encode", "decoder_logits", "generate", "embed_inputs", "embed_modality", "run_encoder",
                   "forward_encoder", "decoder_context", "target_embedding", "target_queries", "forward_decoder",
                   "target_logits", "compile_blocks"):
        assert callable(getattr(model, method))


def test_configs_of_every_size():
    expected = {"tiny": (192, 12, 4, 3, False), "small": (384, 12, 6, 6, False), "base": (768, 12, 12, 12, True),
                "large": (1024, 24, 24, 16, True)}
    for name in MODEL_NAMES:
        c = get_config(name)
        assert (c.dim, c.encoder_depth, c.decoder_depth, c.num_heads, c.gated_mlp) == expected[c.size]
        assert c.hub_repo == f"ibm-esa-geospatial/TerraMind-1.0-{c.size}"
        assert c.hub_filename == f"TerraMind_v1_{c.size}.pt"
    assert get_config("terramind_v1_base").mlp_hidden == 2048
