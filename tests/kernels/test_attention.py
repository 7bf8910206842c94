"""fused_attention / fused_cross_attention: the Triton kernel against a float64 reference.

Each case keeps B * H * ceil(N / 32) near 100 program instances so the interpreter stays quick.
"""

from __future__ import annotations

import pytest
import torch
from kernel_testing import EPS, KERNEL_DTYPES, max_err, randn

from terramind_openeo.kernels import fused_attention, fused_cross_attention
from terramind_openeo.kernels.reference import attention_reference

B, H, D = 2, 3, 64
LENGTHS = [1, 17, 64, 196, 392]  # 64: full blocks only, no ragged tail


def _key_mask(rng: torch.Generator, n: int, device: torch.device) -> torch.Tensor:
    # batch 0: random keys dropped, the leading block(s) all dropped (the running max starts at -inf);
    # batch 1: every key dropped, so every query of it must come out as zeros.
    mask = torch.rand(B, n, generator=rng) > 0.3
    mask[0, : min(40, n - 1)] = False
    mask[0, -1] = True
    mask[1] = False
    return mask.to(device)


def _check(out: torch.Tensor, q, k, v, key_mask, torch_out: torch.Tensor, seed: int) -> None:
    ref = attention_reference(q, k, v, key_mask)
    assert not torch.isnan(out).any(), f"unwritten or NaN outputs (seed {seed})"
    err, torch_err = max_err(out, ref), max_err(torch_out, ref)
    assert err <= 2 * torch_err + EPS[out.dtype], f"kernel err {err:.3g} vs torch {torch_err:.3g} (seed {seed})"
    if key_mask is not None:
        dead = ~key_mask.any(dim=1)
        assert torch.equal(out[dead], torch.zeros_like(out[dead])), f"fully masked rows not zero (seed {seed})"


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("n", LENGTHS)
@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
def test_self_attention_matches_reference(triton_device, rng, dtype, n, masked):
    qkv = randn(rng, B, n, 3, H, D, dtype=dtype, device=triton_device)
    key_mask = _key_mask(rng, n, triton_device) if masked else None
    out = torch.full((B, n, H, D), float("nan"), dtype=dtype, device=triton_device)
    result = fused_attention(qkv, key_mask, impl="triton", out=out)
    assert result.data_ptr() == out.data_ptr() and result.shape == (B, n, H, D)
    q, k, v = qkv.unbind(dim=2)
    _check(out, q, k, v, key_mask, fused_attention(qkv, key_mask, impl="sdpa"), rng.initial_seed())


@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("m,n", [(1, 196), (17, 392), (196, 17), (64, 1), (392, 64)])
@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
def test_cross_attention_matches_reference(triton_device, rng, dtype, m, n, masked):
    q = randn(rng, B, m, H, D, dtype=dtype, device=triton_device)
    kv = randn(rng, B, n, 2, H, D, dtype=dtype, device=triton_device)
    key_mask = _key_mask(rng, n, triton_device) if masked else None
    out = torch.full((B, m, H, D), float("nan"), dtype=dtype, device=triton_device)
    fused_cross_attention(q, kv, key_mask, impl="triton", out=out)
    k, v = kv.unbind(dim=2)
    _check(out, q, k, v, key_mask, fused_cross_attention(q, kv, key_mask, impl="sdpa"), rng.initial_seed())


@pytest.mark.parametrize("head_dim", [32, 128])
@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
def test_other_head_dims(triton_device, rng, dtype, head_dim):
    n = 45
    qkv = randn(rng, 1, n, 3, 2, head_dim, dtype=dtype, device=triton_device)
    key_mask = (torch.rand(1, n, generator=rng) > 0.5).to(triton_device)
    key_mask[0, 0] = True
    out = torch.full((1, n, 2, head_dim), float("nan"), dtype=dtype, device=triton_device)
    fused_attention(qkv, key_mask, impl="triton", out=out)
    q, k, v = qkv.unbind(dim=2)
    _check(out, q, k, v, key_mask, fused_attention(qkv, key_mask, impl="sdpa"), rng.initial_seed())


def test_reads_strided_packed_input_in_place_and_writes_only_its_output(triton_device, rng, monkeypatch):
    # qkv is a strided view into a wider projection buffer; out is a view into a larger NaN buffer.
    n, dtype = 37, torch.float32
    wide = randn(rng, B, n, 3 * H * D + 8, dtype=dtype, device=triton_device)
    qkv = wide[..., : 3 * H * D].unflatten(-1, (3, H, D))  # [B, N, 3, H, D], not contiguous
    buffer = torch.full((B, n + 5, H + 1, D), float("nan"), dtype=dtype, device=triton_device)
    out = buffer[:, 2 : n + 2, :H]

    def no_copies(self, *args, **kwargs):
        raise AssertionError("the Triton path copied an input")

    monkeypatch.setattr(torch.Tensor, "contiguous", no_copies)
    fused_attention(qkv, impl="triton", out=out)
    monkeypatch.undo()

    q, k, v = qkv.unbind(dim=2)
    ref = attention_reference(q, k, v)
    assert max_err(out, ref) <= 2 * max_err(fused_attention(qkv, impl="sdpa"), ref) + EPS[dtype]
    outside = torch.ones_like(buffer, dtype=torch.bool)
    outside[:, 2 : n + 2, :H] = False
    assert torch.isnan(buffer[outside]).all(), "the kernel wrote outside its output view"


def test_allocates_token_major_output(triton_device, rng):
    qkv = randn(rng, 1, 20, 3, 2, D, dtype=torch.float32, device=triton_device)
    out = fused_attention(qkv, impl="triton")
    assert out.shape == (1, 20, 2, D) and out.is_contiguous()
    q, k, v = qkv.unbind(dim=2)
    assert max_err(out, attention_reference(q, k, v)) < 1e-5


def test_reference_impl_matches_sdpa_on_cpu(rng):
    qkv = randn(rng, 2, 30, 3, 2, 32, dtype=torch.float32, device="cpu")
    key_mask = torch.rand(2, 30, generator=rng) > 0.5
    key_mask[:, 0] = True
    ref = fused_attention(qkv, key_mask, impl="reference")
    assert ref.dtype == torch.float32
    assert max_err(fused_attention(qkv, key_mask, impl="sdpa"), ref) < 1e-5
