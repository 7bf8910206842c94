"""The dispatcher's choices, the CPU path through SDPA, the settings override and bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from terramind_openeo import config
from terramind_openeo.kernels import (
    KernelDeviceError,
    KernelDtypeError,
    KernelShapeError,
    TritonUnavailableError,
    UnknownImplementationError,
    attention,
    dispatch,
    fused_attention,
    fused_cross_attention,
)
from terramind_openeo.kernels.layernorm import add_layer_norm
from terramind_openeo.kernels.swiglu import swiglu

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture(autouse=True)
def _no_override():
    with config.override(attention="auto", layernorm="auto", swiglu="auto"):
        yield


def test_auto_is_triton_on_cuda_and_sdpa_elsewhere(monkeypatch):
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)
    assert dispatch.choose(dispatch.ATTENTION, "auto", CUDA) == "triton"
    assert dispatch.choose(dispatch.ATTENTION, "auto", CPU) == "sdpa"
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    assert dispatch.choose(dispatch.ATTENTION, "auto", CUDA) == "sdpa"


def test_glue_auto_stays_torch_until_measured(monkeypatch):
    monkeypatch.setattr(dispatch, "triton_available", lambda: True)
    for spec in (dispatch.ADD_LAYER_NORM, dispatch.SWIGLU):
        assert dispatch.choose(spec, "auto", CUDA) == "torch"
        assert dispatch.choose(spec, "auto", CPU) == "torch"
        assert dispatch.choose(spec, "triton", CPU) == "triton"


def test_setting_forces_auto_but_not_an_explicit_choice():
    with config.override(attention="Reference"):
        assert dispatch.choose(dispatch.ATTENTION, "auto", CPU) == "reference"
        assert dispatch.choose(dispatch.ATTENTION, "sdpa", CPU) == "sdpa"
    with config.override(attention="auto"):
        assert dispatch.choose(dispatch.ATTENTION, "auto", CPU) == "sdpa"


def test_environment_variable_is_the_setting():
    assert config.Settings.from_env({"TERRAMIND_OPENEO_ATTENTION": "reference"}).attention == "reference"
    assert dispatch.ATTENTION.env_var == "TERRAMIND_OPENEO_ATTENTION"
    assert dispatch.SWIGLU.env_var == "TERRAMIND_OPENEO_SWIGLU"


@pytest.mark.parametrize("source", ["argument", "setting"])
def test_unknown_name_is_an_error_listing_the_valid_ones(source):
    qkv = torch.randn(1, 4, 3, 1, 32)
    with config.override(attention="flash" if source == "setting" else "auto"):
        with pytest.raises(UnknownImplementationError, match="'flash'.*valid: auto, triton, sdpa, reference") as info:
            fused_attention(qkv, impl="flash" if source == "argument" else "auto")
    if source == "setting":
        assert "TERRAMIND_OPENEO_ATTENTION" in str(info.value)
    with pytest.raises(UnknownImplementationError, match="valid: auto, triton, torch, reference"):
        swiglu(torch.randn(3), torch.randn(3), impl="sdpa")


def test_cpu_path_goes_through_sdpa(monkeypatch):
    calls = []
    real_sdpa = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real_sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    qkv = torch.randn(2, 9, 3, 4, 64)
    out = fused_attention(qkv)
    assert calls == [(2, 4, 9, 64)]  # [B, H, N, D] views
    q, k, v = qkv.unbind(dim=2)
    expected = real_sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)
    assert torch.equal(out, expected)  # bit-identical to plain SDPA: the model's parity tests rely on it
    fused_cross_attention(torch.randn(2, 5, 4, 64), torch.randn(2, 9, 2, 4, 64))
    assert calls[-1] == (2, 4, 5, 64)


def test_sdpa_path_gives_zeros_for_fully_masked_rows():
    qkv = torch.randn(2, 6, 3, 2, 32)
    key_mask = torch.tensor([[True, False, True, False, False, False], [False] * 6])
    out = fused_attention(qkv, key_mask)
    assert torch.equal(out[1], torch.zeros_like(out[1])) and not out.isnan().any()


def test_setting_selects_the_reference(monkeypatch):
    seen = []
    real = attention.attention_reference
    monkeypatch.setattr(attention, "attention_reference", lambda *a, **k: seen.append(1) or real(*a, **k))
    with config.override(attention="reference"):
        out = fused_attention(torch.randn(1, 5, 3, 2, 32, dtype=torch.float16))
    assert seen and out.dtype == torch.float16


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    with config.override(triton_interpret=False), pytest.raises(TritonUnavailableError, match="TRITON_INTERPRET=1"):
        fused_attention(torch.randn(1, 4, 3, 1, 32), impl="triton")
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    with pytest.raises(TritonUnavailableError, match="needs the triton package"):
        swiglu(torch.randn(3), torch.randn(3), impl="triton")


QKV = (2, 7, 3, 4, 64)


@pytest.mark.parametrize(
    "make, error, pattern",
    [
        (lambda: fused_attention(torch.randn(7, 3, 4, 64)), KernelShapeError, "rank 5"),
        (lambda: fused_attention(torch.randn(2, 7, 2, 4, 64)), KernelShapeError, r"packed as \[B, N, 3, H, D\]"),
        (lambda: fused_attention(torch.randn(2, 7, 3, 4, 48)), KernelShapeError, "head dim 48"),
        (lambda: fused_attention(torch.randn(*QKV, dtype=torch.float64)), KernelDtypeError, "float64"),
        (lambda: fused_attention(torch.randn(*QKV).numpy()), KernelDtypeError, "torch.Tensor"),
        (lambda: fused_attention(torch.randn(*QKV), torch.ones(2, 6, dtype=torch.bool)), KernelShapeError, "key_mask"),
        (lambda: fused_attention(torch.randn(*QKV), torch.ones(2, 7)), KernelDtypeError, "key_mask must be bool"),
        (lambda: fused_attention(torch.randn(*QKV), out=torch.empty(2, 7, 4, 32)), KernelShapeError, "out"),
        (lambda: fused_cross_attention(torch.randn(2, 5, 4, 64), torch.randn(2, 7, 3, 4, 64)), KernelShapeError,
         r"packed as \[B, N, 2, H, D\]"),
        (lambda: fused_cross_attention(torch.randn(2, 5, 4, 64), torch.randn(2, 7, 2, 2, 64)), KernelShapeError,
         "does not match"),
        (lambda: fused_cross_attention(torch.randn(2, 5, 4, 64), torch.randn(2, 7, 2, 4, 64, dtype=torch.float16)),
         KernelDtypeError, "float16"),
        (lambda: fused_cross_attention(torch.randn(2, 5, 4, 64), torch.randn(2, 7, 2, 4, 64, device="meta")),
         KernelDeviceError, "meta"),
        (lambda: fused_cross_attention(torch.randn(2, 5, 4), torch.randn(2, 7, 2, 4, 64)), KernelShapeError, "rank 4"),
        (lambda: add_layer_norm(torch.randn(3, 8), torch.randn(3, 9), torch.ones(8)), KernelShapeError, "residual"),
        (lambda: add_layer_norm(torch.randn(3, 8), None, torch.ones(9)), KernelShapeError, "weight"),
        (lambda: add_layer_norm(torch.randn(3, 8), None, torch.ones(8, dtype=torch.float16)), KernelDtypeError,
         "weight"),
        (lambda: swiglu(torch.randn(4), torch.randn(4, dtype=torch.bfloat16)), KernelDtypeError, "bfloat16"),
        (lambda: swiglu(torch.arange(4), torch.arange(4)), KernelDtypeError, "int64"),
    ],
)
def test_bad_input_is_a_clear_error(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()
