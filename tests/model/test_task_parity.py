"""Fine-tuned task models against terratorch's own ``EncoderDecoderFactory`` on the same random weights.

The oracle (``tests/terratorch_task_ref.py``) is terratorch 1.2's factory, necks, decoders and heads with
segmentation-models-pytorch's U-Net decoder; our model is loaded strictly from the oracle's state dict (with
the ``model.`` prefix of a Lightning checkpoint). Inputs: S2L1C + S1GRD (the sen1floods11 configs), batch 2,
224 px and 224 x 320 px. Base runs with 4 encoder blocks (terratorch's builder with a smaller depth) except in
the one test of the published flood config, which runs it whole.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import terratorch_task_ref
import torch
import yaml

from terramind_openeo.model.config import get_config
from terramind_openeo.model.task import load_task_model, read_task_config

pytestmark = pytest.mark.oracle
TOL = 1e-4

IBM_CHAIN = [{"name": "ReshapeTokensToImage", "remove_cls_token": False}, {"name": "LearnedInterpolateToPyramidal"}]
CHAINS = {
    "ibm": IBM_CHAIN,  # every configs/terramind_v1_*.yaml of IBM/terramind and IBM/ImpactMesh
    "interpolate": [{"name": "ReshapeTokensToImage"}, {"name": "InterpolateToPyramidal"}],
    "maxpool": [{"name": "ReshapeTokensToImage"}, {"name": "MaxpoolToPyramidal"}],
    "reshape": [{"name": "ReshapeTokensToImage"}],  # remove_cls_token left at terratorch's default (True)
}
CASES = [  # decoder, neck chain, decoder arguments
    ("UNetDecoder", "ibm", {"decoder_channels": [64, 32, 16, 8]}),
    ("UNetDecoder", "maxpool", {"decoder_channels": [32, 16, 16, 8]}),
    ("UperNetDecoder", "ibm", {"decoder_channels": 32}),
    ("UperNetDecoder", "interpolate", {"decoder_channels": 16, "decoder_pool_scales": [1, 2]}),
    ("FCNDecoder", "reshape", {"decoder_channels": 32, "decoder_num_convs": 2}),
    ("IdentityDecoder", "reshape", {}),
]
SHAPES = [(224, 224), (224, 320)]


@pytest.fixture(scope="module")
def tt():
    return terratorch_task_ref.require()


def _select(size: str) -> tuple[str, list[int], object]:
    """(oracle backbone name, SelectIndices for 4 features, our TerraMind config) of a size."""
    if size == "tiny":
        return "terramind_v1_tiny", [2, 5, 8, 11], None
    name = terratorch_task_ref.register_shallow_backbone(size, 4)
    return name, [0, 1, 2, 3], replace(get_config(f"terramind_v1_{size}"), encoder_depth=4)


def _pair(task: str, model_args: dict, ours_args: dict | None = None, terramind=None):
    ref = terratorch_task_ref.perturb(terratorch_task_ref.build(task, model_args))
    state = {"state_dict": {f"model.{k}": v for k, v in ref.state_dict().items()}, "epoch": 3}
    ours = load_task_model(state, {"task": task, "model_args": ours_args or model_args}, terramind=terramind)
    return ref, ours


def _inputs(shape, batch: int = 2, seed: int = 0, temporal: int = 0, modalities=(("S2L1C", 13), ("S1GRD", 2))):
    gen = torch.Generator().manual_seed(seed)
    extra = (temporal,) if temporal else ()
    return {m: torch.randn(batch, c, *extra, *shape, generator=gen) for m, c in modalities}


def _close(ref, ours, inputs) -> float:
    with torch.no_grad():
        a = ref(dict(inputs)).output
        b = ours(dict(inputs))
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.std() > 1e-3  # not a constant output
    return (a - b).abs().max().item()


@pytest.mark.parametrize("size", ["tiny", "base"])
@pytest.mark.parametrize("decoder,chain,decoder_args", CASES, ids=[f"{d}-{c}" for d, c, _ in CASES])
def test_decoders_and_neck_chains(tt, size, decoder, chain, decoder_args):
    backbone, indices, terramind = _select(size)
    args = {"backbone_modalities": ["S2L1C", "S1GRD"], "backbone_merge_method": "mean",
            "necks": [{"name": "SelectIndices", "indices": indices}, *CHAINS[chain]], "decoder": decoder,
            "head_dropout": 0.1, "num_classes": 3, **decoder_args}
    ref, ours = _pair("segmentation", {"backbone": backbone, **args},
                      {"backbone": f"terramind_v1_{size}", **args}, terramind)
    for shape in SHAPES:
        assert _close(ref, ours, _inputs(shape)) <= TOL, shape


def test_published_flood_config_base_full_depth(tt):
    """IBM/terramind configs/terramind_v1_base_sen1floods11.yaml's model, all 12 blocks."""
    args = {"backbone": "terramind_v1_base", "backbone_modalities": ["S2L1C", "S1GRD"], "backbone_merge_method": "mean",
            "necks": [{"name": "SelectIndices", "indices": [2, 5, 8, 11]}, *IBM_CHAIN], "decoder": "UNetDecoder",
            "decoder_channels": [512, 256, 128, 64], "head_dropout": 0.1, "num_classes": 2}
    ref, ours = _pair("segmentation", args)
    assert _close(ref, ours, _inputs((224, 224))) <= TOL


@pytest.mark.parametrize("merge", ["max", "concat"])
def test_merge_methods(tt, merge):
    args = {"backbone": "terramind_v1_tiny", "backbone_modalities": ["S2L1C", "S1GRD"],
            "backbone_merge_method": merge, "necks": [{"name": "SelectIndices", "indices": [2, 5, 8, 11]}, *IBM_CHAIN],
            "decoder": "UNetDecoder", "decoder_channels": [32, 16, 16, 8], "num_classes": 2}
    ref, ours = _pair("segmentation", args)
    assert _close(ref, ours, _inputs((224, 320))) <= TOL
    if merge == "concat":  # one modality given: terratorch fills the other with its missing_mod_token
        only_s2 = {"S2L1C": _inputs((224, 224))["S2L1C"]}
        assert _close(ref, ours, only_s2) <= TOL


def test_band_subset_as_in_the_burn_scar_config(tt):
    """configs/terramind_v1_base_burnscars.yaml: six S2L2A bands (``backbone_bands``) in the HLS order."""
    bands = ["BLUE", "GREEN", "RED", "NIR_NARROW", "SWIR_1", "SWIR_2"]
    args = {"backbone": "terramind_v1_tiny", "backbone_modalities": ["S2L2A"], "backbone_bands": {"S2L2A": bands},
            "necks": [{"name": "SelectIndices", "indices": [2, 5, 8, 11]}, *IBM_CHAIN], "decoder": "UNetDecoder",
            "decoder_channels": [32, 16, 16, 8], "num_classes": 2}
    ref, ours = _pair("segmentation", args)
    assert ours.encoder.modalities["S2L2A"] == ("B02", "B03", "B04", "B8A", "B11", "B12")
    assert _close(ref, ours, _inputs((224, 224), modalities=(("S2L2A", 6),))) <= TOL


@pytest.mark.parametrize("pooling", ["concat", "mean"])
def test_temporal_wrapper_as_in_the_impactmesh_configs(tt, pooling):
    """IBM/ImpactMesh configs: S2L2A + S1RTC + DEM over dates, ``backbone_use_temporal``."""
    args = {"backbone": "terramind_v1_tiny", "backbone_modalities": ["S2L2A", "S1RTC", "DEM"],
            "backbone_use_temporal": True, "backbone_temporal_pooling": pooling, "backbone_temporal_n_timestamps": 3,
            "necks": [{"name": "SelectIndices", "indices": [2, 5, 8, 11]}, *IBM_CHAIN], "decoder": "UNetDecoder",
            "decoder_channels": [32, 16, 16, 8], "num_classes": 2}
    ref, ours = _pair("segmentation", args)
    inputs = _inputs((64, 96), temporal=3, modalities=(("S2L2A", 12), ("S1RTC", 2), ("DEM", 1)))
    assert _close(ref, ours, inputs) <= TOL


def test_regression_and_classification_heads(tt):
    necks = [{"name": "SelectIndices", "indices": [2, 5, 8, 11]}, *IBM_CHAIN]
    reg = {"backbone": "terramind_v1_tiny", "backbone_modalities": ["S2L1C", "S1GRD"], "necks": necks,
           "decoder": "UNetDecoder", "decoder_channels": [32, 16, 16, 8], "head_channel_list": [8],
           "head_final_act": "torch.nn.ReLU", "head_learned_upscale_layers": 1}
    ref, ours = _pair("regression", reg)
    assert _close(ref, ours, _inputs((224, 320))) <= TOL
    cls = {"backbone": "terramind_v1_tiny", "backbone_modalities": ["S2L1C", "S1GRD"],
           "necks": [{"name": "SelectIndices", "indices": [-1]}, {"name": "ReshapeTokensToImage"}],
           "decoder": "IdentityDecoder", "head_dim_list": [16], "num_classes": 4}
    ref, ours = _pair("classification", cls)
    assert _close(ref, ours, _inputs((224, 224))) <= TOL


def test_lightning_checkpoint_and_yaml_load_strictly(tt, tmp_path):
    """A checkpoint written as Lightning writes a ``SemanticSegmentationTask`` (``model.`` prefixes, a loss
    buffer, trainer state) with the tiny sen1floods11 YAML of IBM/terramind beside it."""
    args = {"backbone": "terramind_v1_tiny", "backbone_pretrained": True, "backbone_modalities": ["S2L1C", "S1GRD"],
            "backbone_merge_method": "mean",
            "necks": [{"name": "SelectIndices", "indices": [2, 5, 8, 11]}, *IBM_CHAIN], "decoder": "UNetDecoder",
            "decoder_channels": [256, 128, 64, 32], "head_dropout": 0.1, "num_classes": 2}
    config = {
        "seed_everything": 42, "trainer": {"max_epochs": 100, "precision": "16-mixed"},
        "data": {"class_path": "terratorch.datamodules.GenericMultiModalDataModule", "init_args": {
            "modalities": ["S2L1C", "S1GRD"], "means": {"S2L1C": [1.0] * 13, "S1GRD": [-12.599, -20.293],
                                                         "DEM": [670.665]},
            "stds": {"S2L1C": [2.0] * 13, "S1GRD": [5.195, 5.890], "DEM": [951.272]}}},
        "model": {"class_path": "terratorch.tasks.SemanticSegmentationTask", "init_args": {
            "model_factory": "EncoderDecoderFactory", "model_args": args, "loss": "ce", "ignore_index": -1,
            "freeze_backbone": True, "class_weights": [0.3, 1.3], "class_names": ["Others", "Flood"]}},
        "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 2e-5}},
    }
    (tmp_path / "terramind_v1_tiny_sen1floods11.yaml").write_text(yaml.safe_dump(config))
    ref = terratorch_task_ref.perturb(terratorch_task_ref.build("segmentation", args))
    state = {f"model.{k}": v for k, v in ref.state_dict().items()}
    state["criterion.weight"] = torch.tensor([0.3, 1.3])  # CrossEntropyLoss(weight=class_weights)
    torch.save({"epoch": 7, "global_step": 700, "pytorch-lightning_version": "2.6.1", "state_dict": state,
                "loops": {}, "callbacks": {}}, tmp_path / "best_val_loss.ckpt")
    ours = load_task_model(tmp_path / "best_val_loss.ckpt")  # config found beside it
    assert ours.config.class_names == ("Others", "Flood") and ours.config.means["S1GRD"] == (-12.599, -20.293)
    assert set(ours.config.means) == {"S2L1C", "S1GRD"}  # DEM statistics of the datamodule: not an input
    assert _close(ref, ours, _inputs((224, 320))) <= TOL
    assert read_task_config(tmp_path / "terramind_v1_tiny_sen1floods11.yaml").timesteps == 1
