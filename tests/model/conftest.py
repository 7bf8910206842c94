"""Fixtures of the model tests: the reference implementation and shared random weights (built once per session).

``reference_pair(size)`` returns ``(ref_full_model, state_dict)``: terratorch's full v1 encoder-decoder with
seeded random weights, with norms and biases that are not constants; ``ours(size)`` returns our
TerraMind loaded strictly from the same state dict.
"""

from __future__ import annotations

import pytest
import terratorch_ref
import torch

from terramind_openeo import config
from terramind_openeo.model import load_terramind

# the session keeps many models and tokenizers alive: bound the packed weight copies (kernels/prepack.py) they
# add, unless the run's environment chose a budget; tests of the packing itself raise it for themselves
if "prepack_mb" not in config.Settings.values_from_env():
    config.configure(prepack_mb=1024)


@pytest.fixture(scope="session")
def ref():
    return terratorch_ref.require()


@pytest.fixture(scope="session")
def reference_pair(ref):
    cache: dict[str, tuple] = {}

    def get(size: str):
        if size not in cache:
            if size == "tiny":  # terratorch's own init, every table random
                model = ref.perturb_(ref.build_full_model(size, seed=0), seed=1)
            else:  # cheap fill; token tables random only for the targets the tests decode
                model = ref.build_fast_model(size, seed=0, active=("tok_lulc@224", "tok_sen1grd@224"))
            cache[size] = (model, model.state_dict())
        return cache[size]

    return get


@pytest.fixture(scope="session")
def ours(reference_pair):
    cache: dict[str, torch.nn.Module] = {}

    def get(size: str):
        if size not in cache:
            cache[size] = load_terramind(f"terramind_v1_{size}", weights=reference_pair(size)[1])
        return cache[size]

    return get


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory, ref):
    """A random tiny checkpoint in the official file format (written at test time, never committed)."""
    path = tmp_path_factory.mktemp("ckpt") / "TerraMind_v1_tiny.pt"
    ref.write_checkpoint("tiny", path, seed=3)
    return path
