"""Fine-tuned models with a Thinking-in-Modalities backbone (``terramind_v1_{size}_tim``,
``backbone_tim_modalities``) against terratorch's own ``EncoderDecoderFactory`` on the same random weights.

The oracle is ``tests/terratorch_task_ref.py`` (terratorch 1.2's factory, ``TerraMindTiM``, necks, decoders,
heads). terratorch draws its TiM seed from Python's ``random`` on each forward pass; the tests seed ``random`` and
hand our model the seed it will draw (sampled tokens equal), or set ``backbone_tim_temps: 0`` (arg-max, no seed).
Most oracles are built without the TiM tokenizers (``..._tim_notok``, see the helper); one test builds the
registry's ``terramind_v1_tiny_tim`` whole, LULC tokenizer included, as a fine-tuned checkpoint holds it.
Inputs: S2L1C + S1GRD as in ``configs/terramind_v1_base_tim_lulc_sen1floods11.yaml`` of IBM/terramind, batch 2,
224 px (terratorch's TiM generation takes square grids only).
"""

from __future__ import annotations

import random

import pytest
import terratorch_task_ref
import torch
import yaml

from terramind_openeo.model.task import (
    TaskCheckpointError,
    TaskConfigError,
    UnsupportedComponentError,
    load_task_model,
    task_config,
)

pytestmark = pytest.mark.oracle
TOL = 1e-4
IBM_NECKS = [{"name": "SelectIndices", "indices": [2, 5, 8, 11]},
             {"name": "ReshapeTokensToImage", "remove_cls_token": False}, {"name": "LearnedInterpolateToPyramidal"}]
IBM_ARGS = {"backbone": "terramind_v1_tiny_tim", "backbone_modalities": ["S2L1C", "S1GRD"],
            "backbone_tim_modalities": ["LULC"], "backbone_merge_method": "mean", "necks": IBM_NECKS,
            "decoder": "UNetDecoder", "decoder_channels": [32, 16, 16, 8], "head_dropout": 0.1, "num_classes": 2}
"""The model of IBM/terramind's configs/terramind_v1_base_tim_lulc_sen1floods11.yaml, tiny, narrower decoder."""


@pytest.fixture(scope="module")
def tt():
    return terratorch_task_ref.require()


def _inputs(batch: int = 2, seed: int = 0, only_s2: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    inputs = {"S2L1C": torch.randn(batch, 13, 224, 224, generator=gen),
              "S1GRD": torch.randn(batch, 2, 224, 224, generator=gen)}
    return {"S2L1C": inputs["S2L1C"]} if only_s2 else inputs


def _oracle(args: dict, tokenizers: bool = False):
    """terratorch's model for ``args`` (our ``terramind_v1_tiny_tim`` built by its factory), perturbed."""
    backbone = args["backbone"] if tokenizers else terratorch_task_ref.register_tim_backbone_without_tokenizers("tiny")
    ref = terratorch_task_ref.build("segmentation", {**args, "backbone": backbone})
    return terratorch_task_ref.perturb(ref, skip=("encoder.tokenizer.",))


def _lightning(ref) -> dict:
    return {"state_dict": {f"model.{k}": v for k, v in ref.state_dict().items()}, "epoch": 3}


def _compare(ref, ours, inputs, python_seed: int = 21) -> float:
    """Max |terratorch - ours|, with our model given the seed terratorch draws from ``random``."""
    random.seed(python_seed)
    seed = random.Random(python_seed).randint(-(2**31), 2**31 - 1)  # TerraMindTiM.forward's draw
    with torch.no_grad():
        a = ref(dict(inputs)).output
        b = ours(dict(inputs), seed=seed)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.std() > 1e-3  # not a constant output
    return (a - b).abs().max().item()


CASES = {  # name: changes to IBM_ARGS
    "unet-ibm-sampled": {},
    "upernet-interpolate-argmax-two-tim": {
        "decoder": "UperNetDecoder", "decoder_channels": 16, "backbone_tim_modalities": ["LULC", "NDVI"],
        "backbone_tim_temps": 0.0,
        "necks": [{"name": "SelectIndices", "indices": [2, 5, 8, 11]}, {"name": "ReshapeTokensToImage"},
                  {"name": "InterpolateToPyramidal"}]},
    "unet-ibm-concat-topk": {"backbone_merge_method": "concat", "backbone_tim_temps": 0.7, "backbone_tim_top_k": 50,
                             "backbone_tim_top_p": 0.9},
}


@pytest.mark.parametrize("case", list(CASES))
def test_tim_task_models_match_terratorch(tt, case):
    args = {**IBM_ARGS, **CASES[case]}
    ref = _oracle(args)
    ours = load_task_model(_lightning(ref), {"task": "segmentation", "model_args": args})
    assert ours.samples == (args.get("backbone_tim_temps", 1.0) > 0)
    assert _compare(ref, ours, _inputs()) <= TOL
    if args["backbone_merge_method"] == "concat":  # S1GRD missing: terratorch fills it with missing_mod_token
        assert _compare(ref, ours, _inputs(only_s2=True), python_seed=5) <= TOL


def test_sampled_tim_depends_on_the_seed_and_only_on_it(tt):
    ours = load_task_model(None, {"task": "segmentation", "model_args": IBM_ARGS}, weights="random")
    x = _inputs(batch=1, seed=3)
    with torch.no_grad():
        a, b, c = ours(x, seed=1), ours(x, seed=1), ours(x, seed=2)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_published_tim_checkpoint_with_its_lulc_tokenizer_loads_strictly(tt, tmp_path):
    """The registry's ``terramind_v1_tiny_tim`` as terratorch builds it for a fine-tune (the LULC tokenizer under
    ``tokenizer.tok_lulc@224``), as a Lightning checkpoint with the YAML of IBM/terramind's TiM config."""
    ref = _oracle(IBM_ARGS, tokenizers=True)
    state = _lightning(ref)["state_dict"]
    tokenizer = [k for k in state if k.startswith("model.encoder.tokenizer.tok_lulc@224.")]
    assert len(tokenizer) > 100 and "model.encoder.sampler.model.decoder_embeddings.tok_lulc@224.token_emb.weight" \
        in state
    config = {"model": {"class_path": "terratorch.tasks.SemanticSegmentationTask", "init_args": {
        "model_factory": "EncoderDecoderFactory", "model_args": {**IBM_ARGS, "backbone_pretrained": True},
        "loss": "dice", "ignore_index": -1, "freeze_backbone": False, "class_names": ["Others", "Flood"]}},
        "data": {"init_args": {"means": {"S2L1C": [1.0] * 13, "S1GRD": [-12.599, -20.293]},
                               "stds": {"S2L1C": [2.0] * 13, "S1GRD": [5.195, 5.890]}}}}
    yaml_path = tmp_path / "terramind_v1_tiny_tim_lulc_sen1floods11.yaml"
    yaml_path.write_text(yaml.safe_dump(config))
    # the checkpoint as Lightning holds it (in memory: written out it would be ~0.8 GB, the tokenizer's)
    ckpt = {"epoch": 7, "global_step": 70, "state_dict": {**state, "criterion.weight": torch.ones(2)}}
    ours = load_task_model(ckpt, yaml_path)
    assert not any("tokenizer" in k for k in ours.state_dict())  # checked, not kept
    assert _compare(ref, ours, _inputs()) <= TOL

    # the tokenizer is checked as strictly as the rest: a missing tensor, a wrong shape, another modality's
    cfg = {"task": "segmentation", "model_args": IBM_ARGS}
    key = tokenizer[3]
    with pytest.raises(TaskCheckpointError, match=r"(?s)tokenizer\.tok_lulc@224.*missing.*" + key.split("224.")[1]):
        load_task_model({k: v for k, v in state.items() if k != key}, cfg)
    with pytest.raises(TaskCheckpointError, match="shape mismatch"):
        load_task_model({**state, key: torch.zeros(3)}, cfg)
    with pytest.raises(TaskCheckpointError, match="tok_ndvi@224, which is no TiM modality"):
        load_task_model({**state, "model.encoder.tokenizer.tok_ndvi@224.encoder.proj.weight": torch.zeros(1)}, cfg)


def test_checkpoints_that_do_not_fit_a_tim_config(tt):
    ref = _oracle(IBM_ARGS)
    state = _lightning(ref)["state_dict"]
    cfg = {"task": "segmentation", "model_args": IBM_ARGS}
    # the generator's copy of a shared embedding differs from the encoder's: loading would keep one silently
    bad = dict(state)
    key = "model.encoder.sampler.model.encoder_embeddings.untok_sen1grd@224.proj.weight"
    bad[key] = bad[key] + 1
    with pytest.raises(TaskCheckpointError, match=r"(?s)shares differ.*untok_sen1grd@224\.proj\.weight"):
        load_task_model(bad, cfg)
    # a checkpoint without TiM for a TiM config: the generator's tensors are named as missing
    no_tim = {**{k: v for k, v in IBM_ARGS.items() if k != "backbone_tim_modalities"}, "backbone": "terramind_v1_tiny"}
    plain = terratorch_task_ref.build("segmentation", no_tim)
    with pytest.raises(TaskCheckpointError, match=r"(?s)missing.*encoder\.sampler\.model\."):
        load_task_model(_lightning(plain), cfg)
    # the TiM checkpoint for the config without TiM: its generator is unexpected
    with pytest.raises(TaskCheckpointError, match=r"(?s)unexpected.*encoder\.sampler\.model\."):
        load_task_model(state, {"task": "segmentation", "model_args": no_tim})


@pytest.mark.parametrize("change,error,match", [
    ({"backbone_tim_modalities": ["RADAR"]}, UnsupportedComponentError,
     r"model_args\.backbone_tim_modalities.*'RADAR' is not a TiM modality"),
    ({"backbone_tim_modalities": ["coords"]}, UnsupportedComponentError, r"backbone_tim_modalities.*'coords'"),
    ({"backbone": "terramind_v1_tiny"}, UnsupportedComponentError,
     r"model_args\.backbone_tim_modalities.*'terramind_v1_tiny' has no Thinking-in-Modalities"),
    ({"backbone": "terramind_v1_tiny", "backbone_tim_modalities": ..., "backbone_tim_temps": 0},
     UnsupportedComponentError, r"model_args\.backbone_tim_temps.*needs a TiM backbone"),
    ({"backbone": "terramind_v2_tiny_tim"}, UnsupportedComponentError, r"model_args\.backbone.*terramind_v2_tiny_tim"),
    ({"backbone_tim_modalities": ["S1GRD"]}, UnsupportedComponentError, r"'S1GRD' is also a raw input"),
    ({"backbone_tim_modalities": ["LULC", "lulc"]}, TaskConfigError, r"LULC is named twice"),
    ({"backbone_tim_modalities": "LULC"}, TaskConfigError, r"backbone_tim_modalities.*must be a list"),
    ({"backbone_tim_decoding_steps": 4}, UnsupportedComponentError, r"backbone_tim_decoding_steps.*only one"),
    ({"backbone_tim_chained_generations": False}, UnsupportedComponentError, r"backbone_tim_chained_generations"),
    ({"backbone_tim_temps": -1}, TaskConfigError, r"backbone_tim_temps.*-1"),
    ({"backbone_tim_top_p": 0.0}, UnsupportedComponentError, r"backbone_tim_top_p.*1\.0 keeps every token"),
    ({"backbone_tim_top_k": 0.5}, TaskConfigError, r"backbone_tim_top_k.*an integer"),
    ({"backbone_bands": {"S2L1C": ["RED"]}}, UnsupportedComponentError, r"backbone_bands.*pre-training bands"),
    ({"backbone_use_temporal": True}, UnsupportedComponentError, r"backbone_use_temporal.*TiM"),
])
def test_bad_tim_configs_are_named(change, error, match):
    args = {k: v for k, v in {**IBM_ARGS, **change}.items() if v is not ...}  # ...: the field left out
    with pytest.raises(error, match=match):
        task_config({"task": "segmentation", "model_args": args})


def test_tim_defaults_as_terratorch():
    """``terramind_v1_{size}_tim`` alone means TiM on LULC, sampled at temperature 1, top-p 0.8."""
    args = {k: v for k, v in IBM_ARGS.items() if k != "backbone_tim_modalities"}
    config = task_config({"task": "segmentation", "model_args": args})
    assert config.tim == {"tim": ("LULC",), "temperature": 1.0, "top_p": 0.8, "top_k": 0}
    assert config.terramind_name == "terramind_v1_tiny" and config.size == "tiny"
    s2 = task_config({"task": "segmentation", "model_args": {**args, "backbone_tim_modalities": ["S2", "S1"]}})
    assert s2.tim is not None and s2.tim["tim"] == ("S2L2A", "S1GRD")  # terratorch's naming rules
    plain = load_task_model(None, {"task": "segmentation", "model_args": {**args, "backbone": "terramind_v1_tiny"}},
                            weights="random")
    with pytest.raises(ValueError, match="seed=1: this model samples nothing"):
        plain(_inputs(batch=1), seed=1)
