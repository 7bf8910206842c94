"""The Triton path as a whole: gradients, the device of a launch, autotuning keys, and the glue kernels in the
model's blocks (parity with the eager blocks under the interpreter)."""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch
from kernel_testing import randn

from terramind_openeo import config
from terramind_openeo.kernels import fused_attention, fused_cross_attention
from terramind_openeo.kernels.launch import device_guard, needs_grad
from terramind_openeo.kernels.layernorm import add_layer_norm
from terramind_openeo.kernels.swiglu import swiglu
from terramind_openeo.model.blocks import Block, DecoderBlock
from terramind_openeo.model.config import get_config


def test_gradients_flow_through_a_triton_call(triton_device, rng):
    """The kernel is forward-only: a call autograd records goes to SDPA, with SDPA's gradients (before, a
    Triton call returned a tensor cut off from the graph)."""
    qkv = randn(rng, 2, 37, 3, 2, 32, dtype=torch.float32, device=triton_device).requires_grad_(True)
    out = fused_attention(qkv, impl="triton")
    assert out.grad_fn is not None
    out.square().sum().backward()
    grad_triton = qkv.grad.clone()
    qkv.grad = None
    fused_attention(qkv, impl="sdpa").square().sum().backward()
    torch.testing.assert_close(grad_triton, qkv.grad)

    q = randn(rng, 2, 5, 2, 32, dtype=torch.float32, device=triton_device).requires_grad_(True)
    kv = randn(rng, 2, 9, 2, 2, 32, dtype=torch.float32, device=triton_device)
    fused_cross_attention(q, kv, impl="triton").sum().backward()
    assert q.grad is not None and q.grad.abs().sum() > 0
    a, b = (randn(rng, 3, 8, dtype=torch.float32, device=triton_device).requires_grad_(True) for _ in range(2))
    swiglu(a, b, impl="triton").sum().backward()
    x, r = (randn(rng, 3, 64, dtype=torch.float32, device=triton_device).requires_grad_(True) for _ in range(2))
    add_layer_norm(x, r, torch.ones(64, device=triton_device), impl="triton")[1].sum().backward()
    assert all(t.grad is not None for t in (a, b, x, r))


def test_inference_calls_still_take_the_kernel(triton_device, rng, monkeypatch):
    kernels = importlib.import_module("terramind_openeo.kernels.attention_triton")
    calls = []
    real = kernels.attention_triton
    monkeypatch.setattr(kernels, "attention_triton", lambda *a, **k: calls.append(1) or real(*a, **k))
    qkv = randn(rng, 1, 20, 3, 2, 32, dtype=torch.float32, device=triton_device).requires_grad_(True)
    with torch.no_grad():
        fused_attention(qkv, impl="triton")
    fused_attention(qkv.detach(), impl="triton")
    assert len(calls) == 2 and not needs_grad(qkv.detach())


def test_launches_enter_the_device_of_their_tensors():
    guard = device_guard(torch.device("cuda", 1))  # made without touching CUDA
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    with device_guard(torch.device("cpu")):
        pass


def test_autotuning_is_keyed_on_length_buckets(triton_device):
    kernels = importlib.import_module("terramind_openeo.kernels.attention_triton")
    assert [kernels.length_bucket(n) for n in (1, 64, 65, 196, 392, 588, 784, 1568)] == \
        [64, 64, 128, 256, 512, 1024, 1024, 2048]
    assert "n_q_bucket" in kernels._autotuned.keys and "n_q" not in kernels._autotuned.keys


def _small(name: str):
    """A model config of ``name``'s kind (gated MLP for base/large) at test size."""
    return dataclasses.replace(get_config(name), dim=64, num_heads=2)


@pytest.mark.parametrize("name", ["terramind_v1_tiny", "terramind_v1_base"])
def test_blocks_with_the_glue_kernels_match_the_eager_blocks(triton_device, rng, name):
    torch.manual_seed(0)
    cfg = _small(name)
    block, decoder = Block(cfg).eval(), DecoderBlock(cfg).eval()
    for module in (block, decoder):
        for p in module.parameters():  # norms with weights that are not all ones
            p.data.add_(0.05 * torch.randn(p.shape, generator=rng))
    block, decoder = block.to(triton_device), decoder.to(triton_device)
    x = randn(rng, 2, 20, 64, dtype=torch.float32, device=triton_device)
    context = randn(rng, 2, 11, 64, dtype=torch.float32, device=triton_device)
    with torch.no_grad(), config.override(attention="sdpa", layernorm="torch", swiglu="torch"):
        eager = block(x.clone()), decoder(x.clone(), context)
    with torch.no_grad(), config.override(attention="sdpa", layernorm="triton", swiglu="triton"):
        fused = block(x.clone()), decoder(x.clone(), context)
    for e, f in zip(eager, fused):
        torch.testing.assert_close(f, e, rtol=1e-5, atol=1e-5)


def test_the_blocks_call_the_glue_kernels_when_chosen(monkeypatch, rng):
    from terramind_openeo.model import blocks

    seen = []
    monkeypatch.setattr(blocks, "add_layer_norm", lambda *a, **k: seen.append("ln") or add_layer_norm(*a, **k,
                                                                                                       impl="torch"))
    monkeypatch.setattr(blocks, "swiglu", lambda *a, **k: seen.append("swiglu") or swiglu(*a, **k, impl="torch"))
    block = Block(_small("terramind_v1_base")).eval()
    x = randn(rng, 1, 4, 64, dtype=torch.float32, device="cpu")
    with torch.no_grad(), config.override(layernorm="torch", swiglu="torch"):
        block(x.clone())
    assert seen == []
    with torch.no_grad(), config.override(layernorm="reference", swiglu="reference"):
        block(x.clone())
    assert seen == ["ln", "swiglu"]
