"""int8 linear layers (kernels/int8_linear.py, prepack.use_int8): exact integer arithmetic on every x86-64 CPU,
close to fp32, used only where marked, and the activation format that suits the CPU (forced both ways)."""

from __future__ import annotations

import gc

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from terramind_openeo.kernels import cpu_features, int8_linear, prepack
from terramind_openeo.kernels.int8_linear import SIGNED_8, UNSIGNED_7

pytestmark = pytest.mark.skipif(not int8_linear.available(), reason="torch built without oneDNN's int8 ops")


@pytest.fixture(autouse=True)
def _clean():
    prepack.release()
    yield
    prepack.release()


def _layer(k=96, n=80, bias=True, seed=0):
    torch.manual_seed(seed)
    return nn.Linear(k, n, bias=bias).requires_grad_(False)


def _exact(x, layer, weight, fmt):
    """What the int8 path computes, in float64 from the same integers: (q_x @ q_w^T) * scales + bias."""
    q, scale = int8_linear.quantize_rows(x.reshape(-1, x.shape[-1]), fmt)
    qw = torch.round(layer.weight.double() / weight.scale.double()[:, None]).clamp(-127, 127)
    y = ((q.double() - fmt.zero_point) @ qw.t()) * weight.scale.double() * scale.double()
    if layer.bias is not None:
        y = y + layer.bias.double()
    return y.view(*x.shape[:-1], -1)


def _formats_exact_here():
    """Formats whose integer products this CPU sums without saturation: 7-bit everywhere; 8-bit with VNNI/AMX."""
    return [UNSIGNED_7] + ([SIGNED_8] if cpu_features.detect().int8_fast else [])


@pytest.mark.parametrize("shape", [(7, 96), (2, 196, 96), (1, 96)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_int8_linear_is_the_exact_integer_product(shape, bias):
    layer = _layer(bias=bias)
    weight = int8_linear.quantize(layer)
    x = torch.randn(*shape) * 3
    for fmt in _formats_exact_here():
        got = int8_linear.int8_linear(x, weight, layer.bias, fmt)
        assert got.shape == (*shape[:-1], 80) and got.dtype == torch.float32
        torch.testing.assert_close(got.double(), _exact(x, layer, weight, fmt), rtol=1e-5, atol=1e-5)


def test_int8_linear_is_close_to_fp32_but_not_fp32():
    layer = _layer(k=768, n=256)
    x = torch.randn(392, 768)
    want = F.linear(x, layer.weight, layer.bias)
    got = int8_linear.int8_linear(x, int8_linear.quantize(layer), layer.bias)
    rel = float((got - want).norm() / want.norm())
    assert 1e-4 < rel < 3e-2, rel  # quantised (not fp32), within ~2 % (7-bit activations on AVX2 at worst)
    assert F.cosine_similarity(got, want, dim=-1).min() > 0.999


@pytest.mark.parametrize("preset,fmt", [("avx2", UNSIGNED_7), ("avx512", SIGNED_8), ("amx", SIGNED_8)])
def test_activation_format_follows_the_cpu(preset, fmt):
    """AVX2 only: 7-bit activations (oneDNN's vpmaddubsw would saturate 8-bit ones); VNNI / AMX: 8 bits."""
    with cpu_features.forced(preset):
        assert int8_linear.activation_format() is fmt
    assert int8_linear.activation_format(cpu_features.PRESETS[preset]) is fmt


def test_use_int8_routes_marked_layers_through_int8_and_only_them():
    model = nn.Sequential(_layer(seed=1), nn.GELU(), _layer(k=80, n=96, seed=2))
    plain = _layer(seed=3)
    x = torch.randn(5, 96)
    marked = prepack.use_int8(model)
    assert marked == [model[0], model[2]] and all(prepack.runs_int8(m) for m in marked)
    assert all(prepack.INT8.is_packed(m) for m in marked)  # quantised when marked, not on the first call
    assert not prepack.runs_int8(plain)
    first = model[0]
    with torch.no_grad():
        got = prepack.linear(first, x)
        want = _exact(x, first, int8_linear.quantize(first), int8_linear.activation_format())
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
        assert not torch.equal(got, F.linear(x, first.weight, first.bias))
        assert torch.equal(prepack.linear(plain, x, impl="torch"), F.linear(x, plain.weight, plain.bias))
        # another dtype takes the layer's own weight (no int8 path for it)
        wide = nn.Linear(96, 4).double().requires_grad_(False)
        prepack.use_int8(wide)
        assert torch.equal(prepack.linear(wide, x.double()), F.linear(x.double(), wide.weight, wide.bias))
    x.requires_grad_(True)  # autograd: the fp32 weight, gradients intact
    y = prepack.linear(first, x)
    assert y.requires_grad and torch.equal(y, F.linear(x, first.weight, first.bias))
    prepack.use_int8(model, enabled=False)
    assert not any(prepack.runs_int8(m) or prepack.INT8.is_packed(m) for m in marked)
    with torch.no_grad():
        assert torch.equal(prepack.linear(first, x.detach(), impl="torch"),
                           F.linear(x.detach(), first.weight, first.bias))


def test_changed_weights_are_quantised_again_and_copies_go_with_the_layer():
    layer = _layer()
    prepack.use_int8(layer)
    x = torch.randn(4, 96)
    with torch.no_grad():
        before = prepack.linear(layer, x)
        layer.weight.mul_(-1)
        after = prepack.linear(layer, x)
    torch.testing.assert_close(after - layer.bias, -(before - layer.bias), rtol=1e-5, atol=1e-5)
    del layer
    gc.collect()
    assert prepack.INT8.held_bytes() == 0
