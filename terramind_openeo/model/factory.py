"""``load_terramind``: build a TerraMind v1 model and fill it from the hub, a file, or seeded random numbers."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch

from terramind_openeo.model import precision
from terramind_openeo.model.config import get_config
from terramind_openeo.model.errors import WeightsSourceError
from terramind_openeo.model.terramind import TerraMind
from terramind_openeo.model.weights import (
    download_checkpoint,
    load_state_dict_strict,
    read_checkpoint,
)

logger = logging.getLogger(__name__)


def load_terramind(name: str, weights="hub", device: str | torch.device | None = None,
                   dtype: torch.dtype | str | None = None, seed: int = 0, compile: bool = False) -> TerraMind:
    """TerraMind v1 ``name`` (``terramind_v1_{tiny,small,base,large}``) in eval mode, gradients off.

    ``weights``: ``"hub"`` (``TerraMind_v1_{size}.pt`` from ``ibm-esa-geospatial/TerraMind-1.0-{size}``, through
    the Hugging Face cache; ``HF_HUB_OFFLINE=1`` honoured), a path to such a file (plain or prefixed state dict,
    e.g. terratorch's ``sampler.model.`` layout), a state dict, or ``"random"``: deterministic weights drawn from
    ``seed`` (the same in every process), for tests and benchmarks only. Loading is strict.
    ``device`` / ``dtype``: where and in which precision the model runs (default CPU, float32): a torch float
    dtype or a name of :data:`~terramind_openeo.model.precision.PRECISIONS` (``"bfloat16"``, ``"int8"``...);
    see :mod:`terramind_openeo.model.precision` (a CPU without support for it gets a ``SlowPrecisionWarning``).
    ``compile=True``: ``torch.compile`` the transformer blocks (:meth:`TerraMind.compile_blocks`).
    """
    config = get_config(name)
    precision.precision_name(dtype)  # an unknown dtype fails before any weights are read
    with torch.device("meta"):
        model = TerraMind(config)
    model.to_empty(device="cpu")
    model.tie_weights()
    if isinstance(weights, Mapping):
        load_state_dict_strict(model, weights, source="state dict")
        model.weights = "state_dict"
    elif weights == "random":
        logger.warning("%s: RANDOM weights (seed=%d) - for tests and benchmarks only, the outputs mean nothing",
                       name, seed)
        model.init_random(seed)
        model.weights = "random"
    elif weights == "hub":
        path = download_checkpoint(config)
        load_state_dict_strict(model, read_checkpoint(path), source=f"{config.hub_repo}/{config.hub_filename}")
        model.weights = "hub"
    elif isinstance(weights, (str, os.PathLike)):
        load_state_dict_strict(model, read_checkpoint(weights), source=str(weights))
        model.weights = str(weights)
    else:
        raise WeightsSourceError(
            f"weights must be 'hub', 'random', a checkpoint path or a state dict, got {weights!r}")
    model.seed = seed if weights == "random" else None
    precision.apply(model, dtype, device)
    model.tie_weights()
    model.eval().requires_grad_(False)
    if compile:
        model.compile_blocks()
    return model
