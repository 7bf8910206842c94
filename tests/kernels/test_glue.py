"""add_layer_norm and swiglu: the Triton kernels against float64 references, outputs poisoned with NaN."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from kernel_testing import EPS, KERNEL_DTYPES, max_err, randn

from terramind_openeo.kernels.layernorm import add_layer_norm
from terramind_openeo.kernels.reference import add_layer_norm_reference, swiglu_reference
from terramind_openeo.kernels.swiglu import swiglu


@pytest.mark.parametrize("with_residual", [True, False], ids=["residual", "plain"])
@pytest.mark.parametrize("shape", [(2, 7, 192), (1, 3, 768), (5, 100)], ids=str)
@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
def test_add_layer_norm_matches_reference(triton_device, rng, dtype, shape, with_residual):
    x = randn(rng, *shape, dtype=dtype, device=triton_device)
    residual = randn(rng, *shape, dtype=dtype, device=triton_device) if with_residual else None
    weight = (1 + 0.1 * randn(rng, shape[-1], dtype=torch.float32, device=triton_device)).to(dtype)
    s_out = torch.full(shape, float("nan"), dtype=dtype, device=triton_device)
    y_out = torch.full(shape, float("nan"), dtype=dtype, device=triton_device)
    s, y = add_layer_norm(x, residual, weight, 1e-6, impl="triton", out=(s_out, y_out))
    assert y.data_ptr() == y_out.data_ptr() and not y.isnan().any()
    s_torch, y_torch = add_layer_norm(x, residual, weight, 1e-6, impl="torch")
    assert torch.equal(s, s_torch)  # the residual stream is exactly what eager torch stores
    _, y_ref = add_layer_norm_reference(x, residual, weight, 1e-6)
    err, torch_err = max_err(y, y_ref), max_err(y_torch, y_ref)
    assert err <= 2 * torch_err + EPS[dtype], f"kernel {err:.3g} vs torch {torch_err:.3g} (seed {rng.initial_seed()})"


def test_add_layer_norm_torch_path_is_eager_layer_norm(rng):
    x, r, w = (randn(rng, 4, 16, dtype=torch.float32, device="cpu") for _ in range(3))
    s, y = add_layer_norm(x, r, w[0])
    assert torch.equal(s, x + r)
    assert torch.equal(y, F.layer_norm(x + r, (16,), w[0], None, 1e-6))


@pytest.mark.parametrize("shape", [(1,), (3, 1025), (2, 4, 512)], ids=str)
@pytest.mark.parametrize("dtype", KERNEL_DTYPES, ids=str)
def test_swiglu_matches_reference(triton_device, rng, dtype, shape):
    a = 3 * randn(rng, *shape, dtype=dtype, device=triton_device)
    b = randn(rng, *shape, dtype=dtype, device=triton_device)
    out = torch.full(shape, float("nan"), dtype=dtype, device=triton_device)
    result = swiglu(a, b, impl="triton", out=out)
    assert result.data_ptr() == out.data_ptr() and not out.isnan().any()
    ref = swiglu_reference(a, b)
    err, torch_err = max_err(out, ref), max_err(swiglu(a, b, impl="torch"), ref)
    assert err <= 2 * torch_err + EPS[dtype], f"kernel {err:.3g} vs torch {torch_err:.3g} (seed {rng.initial_seed()})"


def test_swiglu_torch_path_is_eager_silu(rng):
    a, b = (randn(rng, 5, 33, dtype=torch.float16, device="cpu") for _ in range(2))
    assert torch.equal(swiglu(a, b), F.silu(a) * b)
