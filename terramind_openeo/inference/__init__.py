"""inference layer of terramind-openeo: data cubes <-> TerraMind (see docs/contracts.md).

``embed_cube``, ``generate_cube`` and ``predict_cube`` (fine-tuned models) are what the UDF files in ``udf/`` and the
``terramind_*`` processes call (``locate_tiles``: the generated location of each tile as GeoJSON),
so both paths give the same numbers.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .bands import MODALITY_BANDS, ModalityLayout, canonical_band, map_bands
    from .cache import MODEL_CACHE, ModelCache
    from .context import CONTEXT_KEYS, InferenceOptions, describe_context, validate_context
    from .errors import InferenceError
    from .locate import locate_tiles
    from .metadata import output_bands, output_classes, output_metadata, output_scale
    from .predict import predict_cube
    from .runner import RunStats, embed_cube, generate_cube, generated_bands

# name -> submodule: imported on first use, so that the light helpers (``inference.tiling``, ``.bands``) do not
# import torch into a process that runs no model (the server of a sandboxed UDF run, for one)
_EXPORTS = {
    "MODALITY_BANDS": "bands",
    "ModalityLayout": "bands",
    "canonical_band": "bands",
    "map_bands": "bands",
    "MODEL_CACHE": "cache",
    "ModelCache": "cache",
    "CONTEXT_KEYS": "context",
    "InferenceOptions": "context",
    "describe_context": "context",
    "validate_context": "context",
    "InferenceError": "errors",
    "locate_tiles": "locate",
    "output_bands": "metadata",
    "output_classes": "metadata",
    "output_metadata": "metadata",
    "output_scale": "metadata",
    "predict_cube": "predict",
    "RunStats": "runner",
    "embed_cube": "runner",
    "generate_cube": "runner",
    "generated_bands": "runner",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "CONTEXT_KEYS",
    "MODALITY_BANDS",
    "MODEL_CACHE",
    "InferenceError",
    "InferenceOptions",
    "ModalityLayout",
    "ModelCache",
    "RunStats",
    "canonical_band",
    "describe_context",
    "embed_cube",
    "generate_cube",
    "generated_bands",
    "locate_tiles",
    "map_bands",
    "output_bands",
    "output_classes",
    "output_metadata",
    "output_scale",
    "predict_cube",
    "validate_context",
]
