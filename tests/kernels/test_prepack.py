"""Pre-packed CPU weights (kernels/prepack.py): the same numbers as the plain layers, on every x86-64 CPU.

Exact where the same kernel runs (the plain path, the switches off); within float rounding where the packed
call runs another kernel (MKL's packed sgemm, a oneDNN algorithm chosen for the packed weight), since which
micro-kernel MKL and oneDNN pick depends on the CPU (AVX2 vs AVX-512/AMX) and the shape.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from terramind_openeo import config
from terramind_openeo.kernels import cpu_features, prepack
from terramind_openeo.kernels.errors import UnknownImplementationError

FP32_UNIT_ROUNDOFF = 2.0 ** -24


def assert_same_linear(got: torch.Tensor, want: torch.Tensor, x: torch.Tensor, layer: nn.Linear) -> None:
    """``got`` and ``want``: two fp32 evaluations of ``F.linear(x, layer.weight, layer.bias)`` by kernels that may
    sum in another order (MKL's packed sgemm vs the sgemm/gemv torch calls; which micro-kernel runs depends on
    the CPU, AVX2 or AVX-512/AMX, and on the shape). The stated tolerance is the rounding bound of a dot product
    of n terms in any order, with or without FMA (Higham, *Accuracy and Stability of Numerical Algorithms*,
    3.1): each result is within gamma_n * sum|x_k w_k| (+|b|) of the exact value, gamma_n = n u / (1 - n u),
    so the two are within twice that of each other. It scales with the shape and the values, where a fixed
    rtol/atol does not (1e-5/1e-6 failed for K = 768 on values ~10 on this AVX2 EPYC)."""
    n = x.shape[-1] + (layer.bias is not None)
    gamma = n * FP32_UNIT_ROUNDOFF / (1 - n * FP32_UNIT_ROUNDOFF)
    bias = None if layer.bias is None else layer.bias.detach().abs().double()
    magnitude = F.linear(x.detach().abs().double(), layer.weight.detach().abs().double(), bias)
    excess = (got.double() - want.double()).abs() - 2 * gamma * magnitude
    assert got.shape == want.shape and got.dtype == want.dtype == torch.float32
    assert excess.max().item() <= 0, f"beyond the rounding bound by {excess.max().item():.3g}"


@pytest.fixture(autouse=True)
def _room(configured):
    prepack.release()
    configured(prepack_mb=2048, prepack="auto", prepack_linear="auto")
    yield
    prepack.release()


needs_mkldnn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")
needs_mkl = pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="torch built without MKL")


def _conv(cin, cout, k, stride=1, channels_last=True, seed=0):
    torch.manual_seed(seed)
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2).eval().requires_grad_(False)
    return conv.to(memory_format=torch.channels_last) if channels_last else conv


@needs_mkldnn
@pytest.mark.parametrize("channels_last", [True, False], ids=["cl", "nchw"])
@pytest.mark.parametrize("cin,cout,k,stride,hw", [(37, 64, 3, 1, 12), (64, 64, 3, 2, 12), (96, 32, 1, 1, 7),
                                                   (64, 32, 3, 1, 7)], ids=str)
def test_conv2d_matches_the_module(channels_last, cin, cout, k, stride, hw):
    """Within float rounding of the module (the same oneDNN kernel where torch picks it; on this project's
    Sapphire Rapids runner bit-identical at the UNet's shapes, but oneDNN may choose another algorithm for the
    packed call at small shapes or on other CPUs, so the test allows rounding differences)."""
    conv = _conv(cin, cout, k, stride, channels_last)
    x = torch.randn(2, cin, hw, hw)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def same(a, b):
        return torch.allclose(a, b, rtol=1e-5, atol=1e-5)

    with torch.inference_mode():
        want = conv(x)
        for _ in range(2):  # second call: the cached packed weight
            assert same(prepack.conv2d(conv, x), want)
        other = torch.randn_like(want)
        assert same(prepack.conv2d(conv, x, other=other), other + want)
        assert torch.equal(prepack.conv2d(conv, x, impl="torch"), want)
    # a new input shape repacks; changed weights repack
    with torch.no_grad():
        x2 = torch.randn(1, cin, hw + 4, hw + 4)
        assert same(prepack.conv2d(conv, x2), conv(x2))
        conv.weight.mul_(2)
        assert same(prepack.conv2d(conv, x2), conv(x2))
    prepack.release(conv)
    assert not prepack.is_packed(conv)


def test_conv2d_with_autograd_is_the_module():
    conv = nn.Conv2d(8, 8, 3, padding=1)
    x = torch.randn(1, 8, 6, 6, requires_grad=True)
    y = prepack.conv2d(conv, x, other=torch.ones(1, 8, 6, 6))
    y.sum().backward()
    assert x.grad is not None and not prepack.is_packed(conv)


def test_conv2d_setting_switch(configured):
    conv = _conv(8, 8, 3)
    x = torch.randn(1, 8, 6, 6)
    configured(prepack="torch")
    with torch.no_grad():
        assert torch.equal(prepack.conv2d(conv, x), conv(x))
    assert not prepack.is_packed(conv)
    configured(prepack="nonsense")
    with pytest.raises(UnknownImplementationError, match="TERRAMIND_OPENEO_PREPACK"):
        prepack.conv2d(conv, x)


@needs_mkl
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(196, 64), (2, 196, 64), (3, 5, 7, 64), (4, 64)], ids=str)
def test_linear_mkl_matches_f_linear(bias, shape):
    torch.manual_seed(1)
    lin = nn.Linear(64, 96, bias=bias).requires_grad_(False)
    x = torch.randn(*shape)
    with torch.inference_mode():
        want = F.linear(x, lin.weight, lin.bias)
        first = prepack.linear(lin, x, impl="mkl")
        assert_same_linear(first, want, x, lin)
        assert prepack.is_packed(lin)
        assert torch.equal(prepack.linear(lin, x, impl="mkl"), first)  # the cached copy: the same kernel again
        one = prepack.linear(lin, x[..., :1, :], impl="mkl")  # another row count (one row: MKL's gemv in F.linear)
        assert_same_linear(one, want[..., :1, :], x[..., :1, :], lin)
        assert torch.equal(prepack.linear(lin, x, impl="torch"), want)  # the plain path: exact
        assert_same_linear(prepack.linear(lin, x), want, x, lin)  # the default (mkl)


@needs_mkl
def test_linear_mkl_within_the_rounding_bound_at_the_models_shapes():
    """A batch of 8 tiles of the base model (1568 tokens x 768) on values ~10, where a fixed rtol/atol fails."""
    torch.manual_seed(2)
    lin = nn.Linear(768, 768).requires_grad_(False)
    x = 10 * torch.randn(1568, 768)
    with torch.inference_mode():
        assert_same_linear(prepack.linear(lin, x, impl="mkl"), F.linear(x, lin.weight, lin.bias), x, lin)
    assert prepack.is_packed(lin)


@needs_mkl
def test_linear_setting_switch_and_fallbacks(configured):
    lin = nn.Linear(16, 8)
    x = torch.randn(4, 16)
    configured(prepack_linear="torch")
    with torch.no_grad():
        assert torch.equal(prepack.linear(lin, x), F.linear(x, lin.weight, lin.bias))
    assert not prepack.is_packed(lin)
    configured(prepack_linear="mkl")
    y = prepack.linear(lin, x)  # parameters require grad: plain F.linear, autograd intact
    assert y.requires_grad and not prepack.is_packed(lin)
    with torch.no_grad():
        assert_same_linear(prepack.linear(lin, x), F.linear(x, lin.weight, lin.bias), x, lin)
        assert prepack.is_packed(lin)
        double = lin.double()
        assert torch.equal(prepack.linear(double, x.double()), F.linear(x.double(), double.weight, double.bias))


@needs_mkl
def test_budget_first_come_first_served_and_freed_with_the_module(configured):
    a, b = (nn.Linear(256, 256).requires_grad_(False) for _ in range(2))  # 256 KiB of weights each
    x = torch.randn(8, 256)
    configured(prepack_mb="0.4")
    with torch.no_grad():
        ya, yb = prepack.linear(a, x), prepack.linear(b, x)
    assert prepack.is_packed(a) and not prepack.is_packed(b)  # b did not fit: it ran unpacked
    assert torch.equal(yb, F.linear(x, b.weight, b.bias))
    assert_same_linear(ya, F.linear(x, a.weight, a.bias), x, a)  # packed: another kernel
    assert prepack.held_bytes() == 256 * 256 * 4
    with torch.no_grad():
        prepack.linear(a, torch.randn(3, 256))  # a new row count: no room in the budget for a second copy
    assert prepack.held_bytes() == 256 * 256 * 4
    del a
    import gc

    gc.collect()
    assert prepack.held_bytes() == 0  # the copy went with its module
    with torch.no_grad():
        prepack.linear(b, x)
    assert prepack.is_packed(b)
    configured(prepack_mb=0)
    prepack.release()
    with torch.no_grad():
        prepack.linear(b, x)
    assert not prepack.is_packed(b)
    for bad in ("lots", "-1"):
        with pytest.raises(ValueError, match=prepack.BUDGET_VAR):
            config.Settings.from_env({prepack.BUDGET_VAR: bad})


def test_two_row_counts_alternating_keep_their_copies(monkeypatch):
    """A run's full batches and its last, smaller one: each row count packed once, not on every switch."""
    layer = nn.Linear(64, 32).requires_grad_(False)
    packs = []
    original = prepack.PACKED.get

    def spy(module, key, pack):
        return original(module, key, lambda w: (packs.append(key[-1]), pack(w))[1])

    monkeypatch.setattr(prepack.PACKED, "get", spy)
    with torch.no_grad():
        for rows in (196, 40, 196, 40, 196, 7, 196, 40):
            x = torch.randn(rows, 64)
            assert_same_linear(prepack.linear(layer, x), F.linear(x, layer.weight, layer.bias), x, layer)
    # 196 and 40 packed once each; 7 pushed out the least recently used (40), which then came back
    assert packs == [196, 40, 7, 40]
    assert prepack.held_bytes() == 2 * 64 * 32 * 4
    prepack.release(layer)
    assert prepack.held_bytes() == 0 and not prepack.is_packed(layer)


def test_disabled_turns_both_kinds_off_in_this_thread_only_and_restores_them(configured):
    configured(prepack="mkldnn")
    layer, other = nn.Linear(64, 32).requires_grad_(False), nn.Linear(64, 32).requires_grad_(False)
    conv = _conv(8, 8, 3)
    x, image = torch.randn(8, 64), torch.randn(1, 8, 6, 6)
    seen = []
    with prepack.disabled(), torch.no_grad():
        assert torch.equal(prepack.linear(layer, x), F.linear(x, layer.weight, layer.bias))
        assert torch.equal(prepack.conv2d(conv, image), conv(image))
        assert prepack.conv2d_impl(conv, image) == "torch"
        import threading

        worker = threading.Thread(target=lambda: seen.append(prepack.linear(other, x)))  # a fresh context
        worker.start()
        worker.join()
    assert config.settings().prepack == "mkldnn" and config.settings().prepack_linear == "auto"
    assert not prepack.is_packed(layer) and not prepack.is_packed(conv)
    assert seen and prepack.is_packed(other) == torch.backends.mkl.is_available()
    with torch.no_grad():
        prepack.conv2d(conv, image)
    assert prepack.is_packed(conv) == torch.backends.mkldnn.is_available()  # the block is over


@needs_mkl
def test_a_store_of_its_own_has_its_own_budget_and_accounting():
    """The packed copies live in an object (``PackedWeights``): a second store does not touch the process's."""
    store = prepack.PackedWeights(budget=64 * 32 * 4)
    a, b = (nn.Linear(64, 32).requires_grad_(False) for _ in range(2))
    packs = []

    def pack(weight):
        packs.append(weight.shape)
        return weight.clone()

    assert store.get(a, ("k", 1), pack) is store.get(a, ("k", 1), pack)  # packed once, then cached
    assert store.get(b, ("k", 1), pack) is None  # over this store's budget: the caller runs unpacked
    assert packs == [(32, 64)] and store.held_bytes() == 64 * 32 * 4 and store.is_packed(a)
    assert prepack.held_bytes() == 0 and not prepack.is_packed(a)
    store.release(a)
    assert store.held_bytes() == 0 and not store.is_packed(a)


@needs_mkl
def test_linear_packing_off_in_a_block_only_and_only_in_this_thread(monkeypatch):
    layer, other = (nn.Linear(64, 32).requires_grad_(False) for _ in range(2))
    x = torch.randn(8, 64)
    seen = []
    with torch.no_grad(), prepack.linear_packing(False):
        assert torch.equal(prepack.linear(layer, x), F.linear(x, layer.weight, layer.bias))
        assert not prepack.is_packed(layer)
        import threading

        worker = threading.Thread(target=lambda: seen.append(prepack.linear(other, x)))  # a fresh context
        worker.start()
        worker.join()
    assert seen and prepack.is_packed(other)
    with torch.no_grad():
        prepack.linear(layer, x)  # the block is over: packing is back
    assert prepack.is_packed(layer)


@needs_mkldnn
def test_bf16_convolutions_pack_only_where_onednn_runs_bf16():
    """The AVX2-only case and the AVX-512/AMX case, on any machine: the choice follows the forced CPU (the
    packed bf16 kernel itself runs only where this machine really has it, in the test below)."""
    conv, full = _conv(16, 16, 3).to(torch.bfloat16), _conv(16, 16, 3)
    x = torch.randn(1, 16, 8, 8, dtype=torch.bfloat16)
    with torch.no_grad():
        with cpu_features.forced("avx2"):
            assert prepack.conv2d_impl(conv, x) == "torch"
            assert prepack.conv2d_impl(full, x.float()) == "mkldnn"  # fp32 packs on every CPU
        for preset in ("avx512", "amx"):
            with cpu_features.forced(preset):
                assert prepack.conv2d_impl(conv, x) == "mkldnn"
                assert prepack.conv2d_impl(conv, x, impl="torch") == "torch"
        with cpu_features.forced("avx2"), pytest.raises(UnknownImplementationError, match="valid"):
            prepack.conv2d_impl(conv, x, impl="fast")


@needs_mkldnn
@pytest.mark.parametrize("preset", [None, "avx2"], ids=["this-cpu", "forced-avx2"])
def test_bf16_conv2d_runs_on_this_cpu(preset):
    """bf16 convolutions give the plain layer's numbers within bf16 rounding on whatever CPU runs the test:
    packed where this CPU (or the forced one, which may only take away) has oneDNN's bf16 support, plain
    otherwise; never the "bf16 path needs the cpu support ..." error of an AVX2-only CPU."""
    conv = _conv(16, 24, 3).to(torch.bfloat16)
    x = torch.randn(2, 16, 12, 12).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    expect_packed = cpu_features.detect().onednn_bf16 and preset is None
    with contextlib.ExitStack() as stack, torch.no_grad():
        if preset:
            stack.enter_context(cpu_features.forced(preset))
        want = conv(x)
        other = torch.randn_like(want)
        want = want.float()
        got = prepack.conv2d(conv, x).float()
        summed = prepack.conv2d(conv, x, other=other).float()
    assert prepack.is_packed(conv) == expect_packed
    torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(summed, want + other.float(), rtol=2e-2, atol=4e-2)
