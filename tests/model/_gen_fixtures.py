"""Shared helpers of the generation tests: reference tokenizers with random weights, and ours on the same tensors.

The reference tokenizers are big (LULC 184 M, diffusion 287 M parameters), so each pair is built once per
process (``functools.cache``) and ours *shares* the reference's tensors (``tokenizer_from_state_dict`` assigns,
it does not copy): one pair costs the memory of one tokenizer.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import sys
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ for terratorch_ref
import terratorch_ref  # noqa: E402

from terramind_openeo.model.tokenizers import tokenizer_from_state_dict  # noqa: E402

REF_BUILDERS = {
    "S2L2A": "terramind_v1_tokenizer_s2l2a",
    "S1GRD": "terramind_v1_tokenizer_s1grd",
    "S1RTC": "terramind_v1_tokenizer_s1rtc",
    "DEM": "terramind_v1_tokenizer_dem",
    "NDVI": "terramind_v1_tokenizer_ndvi",
    "LULC": "terramind_v1_tokenizer_lulc",
}


def require_reference():
    """terratorch_ref, or skip the calling test with the reason."""
    return terratorch_ref.require()


@contextlib.contextmanager
def skip_init():
    """Build modules without their initialisers (``randomize_`` overwrites every value anyway): seconds saved per
    reference tokenizer."""
    names = ["uniform_", "normal_", "trunc_normal_", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_",
             "kaiming_normal_", "constant_", "zeros_", "ones_"]
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(mock.patch.object(torch.nn.init, name, lambda tensor, *a, **k: tensor))
        yield


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int, std: float = 0.02) -> torch.nn.Module:
    """Seeded random values for every float parameter (norm weights around 1, all biases non-zero, the
    zero-initialised output convolutions of the UNet too); sin-cos ``pos_emb`` tables are left as built."""
    gen = torch.Generator().manual_seed(seed)
    bound = std * 3**0.5  # uniform noise of standard deviation std (twice as fast to draw as normal)
    for name, tensor in module.state_dict(keep_vars=True).items():
        if not tensor.is_floating_point() or name.endswith("pos_emb"):
            continue
        if tensor.ndim == 1 and name.endswith("weight"):  # norm weights around 1
            tensor.uniform_(1.0 - 10 * bound, 1.0 + 10 * bound, generator=gen)
        else:
            tensor.uniform_(-bound, bound, generator=gen)
    return module


@functools.cache
def tokenizer_pair(modality: str, seed: int = 0):
    """(reference tokenizer, ours) with the same random weights, both in eval mode."""
    _, full = require_reference().load()
    torch.manual_seed(seed)
    if importlib.util.find_spec("diffusers") is None:  # terratorch's tokenizers import it
        import pytest

        pytest.skip(f"reference tokenizer {REF_BUILDERS[modality]} needs diffusers (pip install diffusers)")
    with skip_init():
        ref = full.build(REF_BUILDERS[modality]).eval()
    randomize_(ref, seed)
    ours = tokenizer_from_state_dict(modality, ref.state_dict(), source=f"random reference (seed {seed})")
    return ref, ours


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())
