"""Tokenizers against terratorch's on the same random weights: token indices, LULC decoding, UNet steps, DDIM."""

from __future__ import annotations

import contextlib
import importlib
import logging

import pytest
import torch
from _gen_fixtures import max_diff, require_reference, tokenizer_pair

from terramind_openeo.kernels import cpu_features, prepack
from terramind_openeo.model.ddim import DDIMSchedule
from terramind_openeo.model.fsq import FSQ, LEVELS_4375, LEVELS_15360
from terramind_openeo.model.generation_errors import (
    GenerationError,
    TokenizerWeightsError,
    TokenRangeError,
    UnknownModalityError,
)
from terramind_openeo.model.tokenizer_vit import sincos_table_2d
from terramind_openeo.model.tokenizers import load_tokenizer, tokenizer_from_state_dict

pytestmark = pytest.mark.oracle


def _ref_module(path: str):
    require_reference()
    return importlib.import_module(f"terratorch.models.backbones.terramind.{path}")


# ------------------------------------------------------------------------------------------------- FSQ


@pytest.mark.parametrize("levels, size", [(LEVELS_15360, 15360), (LEVELS_4375, 4375)])
def test_fsq_index_code_roundtrip_and_reference(levels, size):
    fsq = FSQ(levels)
    assert fsq.codebook_size == size
    indices = torch.arange(size)
    codes = fsq.indices_to_codes(indices)  # [size, 5]
    assert codes.min() == 0 and codes.max() == 1
    assert torch.equal(fsq.codes_to_indices(codes), indices)

    ref = _ref_module("tokenizer.quantizers.quantize_finite_scalar").FiniteScalarQuantizer("-".join(map(str, levels)))
    assert torch.equal(codes, ref.indice_to_code(indices))
    latent = torch.randn(2, 5, 3, 4, generator=torch.Generator().manual_seed(1)) * 3
    ours_codes, ours_idx = fsq.quantize(latent)
    ref_codes, _, ref_idx = ref(latent)
    assert torch.equal(ours_idx, ref_idx.long())
    assert torch.equal(ours_codes, ref_codes)


def test_fsq_rejects_out_of_range_tokens():
    fsq = FSQ(LEVELS_4375)
    with pytest.raises(TokenRangeError, match=r"tokens must lie in \[0, 4374\]"):
        fsq.indices_to_codes(torch.tensor([0, 4375]))
    with pytest.raises(TokenRangeError, match="tokens"):
        fsq.indices_to_codes(torch.tensor([-1]))
    with pytest.raises(TokenRangeError, match="integer"):
        fsq.indices_to_codes(torch.tensor([1.0]))


def test_sincos_table_matches_reference():
    vit = _ref_module("tokenizer.models.vit_models")
    assert torch.equal(sincos_table_2d(16, 16, 768), vit.build_2d_sincos_posemb(16, 16, 768))
    assert torch.equal(sincos_table_2d(4, 6, 32), vit.build_2d_sincos_posemb(4, 6, 32))


# ------------------------------------------------------------------------------------------- encoders


def test_lulc_encode_matches_reference_non_square():
    ref, ours = tokenizer_pair("LULC")
    classes = torch.randint(0, 10, (2, 32, 48), generator=torch.Generator().manual_seed(2))
    ours_tokens = ours.encode(classes)
    assert ours_tokens.shape == (2, 2, 3) and ours_tokens.dtype == torch.int64
    with torch.no_grad():
        ref_tokens = ref.tokenize(classes)
    assert torch.equal(ours_tokens, ref_tokens.long())
    # [B, 1, H, W] class maps and one-hot scores give the same tokens
    assert torch.equal(ours.encode(classes[:, None]), ours_tokens)
    one_hot = torch.nn.functional.one_hot(classes, 10).permute(0, 3, 1, 2).float()
    assert torch.equal(ours.encode(one_hot), ours_tokens)


def test_diffusion_encode_matches_reference():
    ref, ours = tokenizer_pair("S1GRD")
    x = torch.randn(2, 2, 32, 48, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref_tokens = ref.tokenize(x)
    assert torch.equal(ours.encode(x), ref_tokens.long())


def test_encode_bad_input():
    _, lulc = tokenizer_pair("LULC")
    with pytest.raises(GenerationError, match="0..9"):
        lulc.encode(torch.full((1, 16, 16), 10))
    _, s1 = tokenizer_pair("S1GRD")
    with pytest.raises(GenerationError, match=r"\[B, 2, H, W\]"):
        s1.encode(torch.zeros(1, 3, 16, 16))
    with pytest.raises(GenerationError, match="multiples of 16"):
        s1.encode(torch.zeros(1, 2, 20, 16))
    with pytest.raises(GenerationError, match="NaN"):
        s1.encode(torch.full((1, 2, 16, 16), float("nan")))
    with pytest.raises(TokenRangeError, match="tokens"):
        s1.decode(torch.full((1, 2, 2), 15360), timesteps=1)
    with pytest.raises(TokenRangeError, match="tokens"):
        lulc.decode(torch.full((1, 2, 2), 4375))


# ------------------------------------------------------------------------------------------- decoders


def test_lulc_decode_matches_reference():
    ref, ours = tokenizer_pair("LULC")
    tokens = torch.randint(0, 4375, (2, 2, 3), generator=torch.Generator().manual_seed(4))
    scores = ours.decode(tokens)
    assert scores.shape == (2, 10, 32, 48)
    with torch.no_grad():
        expected = ref.decode_tokens(tokens)
    assert max_diff(scores, expected) <= 1e-4


@pytest.mark.parametrize("channels_last", [True, False])
def test_unet_denoising_step_matches_reference(channels_last):
    ref, ours = tokenizer_pair("S1GRD")
    gen = torch.Generator().manual_seed(5)
    sample = torch.randn(1, 2, 32, 64, generator=gen)
    codes = ours.tokens_to_latent(torch.randint(0, 15360, (1, 2, 4), generator=gen))
    ours.channels_last = channels_last
    try:
        for t in (999, 499) if channels_last else (499,):
            got = ours.denoise_step(sample, t, codes)
            with torch.no_grad():
                expected = ref.decoder(sample, torch.tensor(t), codes)
            assert max_diff(got, expected) <= 1e-4, t
    finally:
        ours.channels_last = True


def test_ddim_schedule_and_step_match_reference():
    sched = _ref_module("tokenizer.scheduling.scheduling_ddim").DDIMScheduler(
        num_train_timesteps=1000, thresholding=True, clip_sample=True, beta_schedule="linear",
        prediction_type="sample", zero_terminal_snr=True)
    ours = DDIMSchedule()
    assert torch.equal(ours.alphas_cumprod, sched.alphas_cumprod)
    for steps in (1, 2, 3, 10, 50, 1000):
        sched.set_timesteps(steps, mode="trailing")
        assert ours.timesteps(steps) == sched.timesteps.tolist(), steps
    gen = torch.Generator().manual_seed(6)
    sample, x0 = torch.randn(2, 3, 8, 8, generator=gen), 2 * torch.randn(2, 3, 8, 8, generator=gen)
    sched.set_timesteps(10, mode="trailing")
    for t in sched.timesteps.tolist():
        expected = sched.step(x0, t, sample).prev_sample
        assert max_diff(ours.step(x0, t, sample, 10, threshold=1.0), expected) <= 1e-6
    sched.config.sample_max_value = 1.5  # dynamic thresholding proper
    expected = sched.step(x0, 599, sample).prev_sample
    assert max_diff(ours.step(x0, 599, sample, 10, threshold=1.5), expected) <= 1e-6
    unclipped = ours.step(x0, 599, sample, 10, threshold=None)
    assert max_diff(unclipped, expected) > 1e-3


def test_diffusion_decode_matches_reference_with_same_noise():
    ref, ours = tokenizer_pair("S1GRD")
    tokens = torch.randint(0, 15360, (1, 2, 2), generator=torch.Generator().manual_seed(7))
    got = ours.decode(tokens, timesteps=2, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        expected = ref.decode_tokens(tokens, timesteps=2, generator=torch.Generator().manual_seed(8), verbose=False)
    assert got.shape == (1, 2, 32, 32)
    assert max_diff(got, expected) <= 1e-4
    assert got.abs().max() <= 1.0 + 1e-6  # the last step returns the thresholded clean sample
    with pytest.raises(GenerationError, match="multiples of 32"):
        ours.decode(torch.zeros(1, 1, 3, dtype=torch.long), timesteps=1)
    with pytest.raises(GenerationError, match="timesteps"):
        ours.decode(tokens, timesteps=0)


# -------------------------------------------------------------------------------------------- loading


def test_strict_loading_names_keys(tmp_path):
    _, ours = tokenizer_pair("LULC")
    state = dict(ours.state_dict())
    state.pop("decoder.out_proj.bias")
    state["encoder.extra"] = torch.zeros(1)
    state["quant_proj.bias"] = torch.zeros(7)
    with pytest.raises(TokenizerWeightsError) as info:
        tokenizer_from_state_dict("LULC", state)
    message = str(info.value)  # the model's strict check (weights.check_state_dict) names every culprit
    assert "missing (1):\n    decoder.out_proj.bias" in message
    assert "unexpected (1):\n    encoder.extra" in message
    assert "quant_proj.bias: checkpoint [7], model [5]" in message

    bogus = tmp_path / "bogus.pt"
    torch.save({"something": torch.zeros(2)}, bogus)
    with pytest.raises(TokenizerWeightsError, match="missing"):
        load_tokenizer("DEM", bogus)
    with pytest.raises(TokenizerWeightsError, match="absent.pt' does not exist"):
        load_tokenizer("DEM", tmp_path / "absent.pt")
    with pytest.raises(UnknownModalityError, match="S2RGB"):
        load_tokenizer("S2RGB", "random")

    # prefixed layouts (e.g. a tokenizer saved inside a bigger model) load too
    prefixed = {f"tokenizer.tok_lulc@224.{k}": v for k, v in ours.state_dict().items()}
    again = tokenizer_from_state_dict("LULC", prefixed)
    assert torch.equal(again.quant_proj.weight, ours.quant_proj.weight)


def test_hub_offline_without_cache_is_a_clear_error(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(TokenizerWeightsError, match="TerraMind_Tokenizer_DEM.pt.*HF_HUB_OFFLINE"):
        load_tokenizer("DEM", "hub")


def test_random_tokenizer_is_deterministic_and_warned(caplog):
    with caplog.at_level(logging.WARNING):
        a = load_tokenizer("LULC", "random")
    assert any("random" in r.getMessage() for r in caplog.records)
    b = load_tokenizer("LULC", "random")
    assert a.weights == "random"
    for key in ("encoder.proj.weight", "decoder.out_proj.weight", "quant_proj.weight"):
        assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    classes = torch.randint(0, 10, (1, 32, 32), generator=torch.Generator().manual_seed(9))
    assert torch.equal(a.encode(classes), b.encode(classes))


def test_bf16_tokenizers_run_close_to_fp32():
    """The opt-in reduced precision path (generate(..., tokenizer_dtype=torch.bfloat16)): same tokens for clear
    inputs is not guaranteed, so decode fixed tokens and compare loosely.

    On every x86-64 CPU, both cases: this CPU as it is (the UNet's bf16 convolutions packed for oneDNN where its
    bf16 reorder runs: AVX-512 BW/VL/DQ or AVX-NE-CONVERT), and forced AVX2-only (plain torch convolutions;
    on an AVX2-only machine the two are the same case). Forcing AVX-512/AMX on a CPU without it is not
    meaningful here: oneDNN would refuse the bf16 reorder, which is what the capability check prevents."""
    for modality in ("LULC", "S1GRD"):
        _, ours = tokenizer_pair(modality)
        half = tokenizer_from_state_dict(modality, {k: v.to(torch.bfloat16) for k, v in ours.state_dict().items()})
        convs = [m for m in half.modules() if isinstance(m, torch.nn.Conv2d)]
        tokens = torch.randint(0, ours.codebook_size, (1, 2, 2), generator=torch.Generator().manual_seed(10))
        kwargs = {} if modality == "LULC" else {"timesteps": 1, "generator": torch.Generator().manual_seed(0)}
        full = ours.decode(tokens, **kwargs)
        for preset in (None, "avx2"):
            prepack.release()
            with contextlib.ExitStack() as stack:
                if preset:
                    stack.enter_context(cpu_features.forced(preset))
                kwargs = {} if modality == "LULC" else {"timesteps": 1, "generator": torch.Generator().manual_seed(0)}
                low = half.decode(tokens, **kwargs).float()
            assert low.shape == full.shape
            assert max_diff(low, full) <= 0.1 * max(1.0, float(full.abs().max())), preset
            packed = any(prepack.is_packed(m) for m in convs)  # only the diffusion UNet packs its convolutions
            assert packed == (modality == "S1GRD" and preset is None and cpu_features.detect().onednn_bf16), preset
        prepack.release()
        x = torch.randn(1, ours.spec.channels, 32, 32, generator=torch.Generator().manual_seed(11))
        assert half.encode(x).shape == (1, 2, 2)
