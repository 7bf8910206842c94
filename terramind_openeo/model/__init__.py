"""TerraMind v1 in plain PyTorch: model, checkpoints, standardisation.

``load_tokenizer`` comes from :mod:`terramind_openeo.model.tokenizers` (generation issue) and is imported lazily.
"""

from __future__ import annotations

import importlib

from terramind_openeo.model.config import CONFIGS, MODEL_NAMES, TerraMindConfig, get_config
from terramind_openeo.model.errors import (
    CheckpointError,
    HubUnavailableError,
    InputDtypeError,
    InputShapeError,
    InputValueError,
    TerraMindError,
    UnknownModalityError,
    UnknownModelError,
    WeightsSourceError,
)
from terramind_openeo.model.factory import load_terramind
from terramind_openeo.model.standardization import MEAN, STD, destandardize, standardize
from terramind_openeo.model.terramind import TerraMind
from terramind_openeo.model.weights import filter_state_dict, load_state_dict_strict

__all__ = [
    "CONFIGS", "MODEL_NAMES", "MEAN", "STD", "CheckpointError", "HubUnavailableError", "InputDtypeError",
    "InputShapeError", "InputValueError", "TerraMind", "TerraMindConfig", "TerraMindError", "UnknownModalityError",
    "UnknownModelError", "WeightsSourceError", "destandardize", "filter_state_dict", "get_config",
    "load_state_dict_strict", "load_terramind", "load_tokenizer", "standardize",
]


def __getattr__(name: str):
    if name == "load_tokenizer":
        try:
            module = importlib.import_module("terramind_openeo.model.tokenizers")
        except ModuleNotFoundError as exc:
            if exc.name != "terramind_openeo.model.tokenizers":
                raise
            raise AttributeError("load_tokenizer is not available yet (terramind_openeo.model.tokenizers is "
                                 "missing)") from exc
        return module.load_tokenizer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
