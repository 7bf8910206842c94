"""inference layer of terramind-openeo: data cubes <-> TerraMind (see docs/contracts.md).

``embed_cube``, ``generate_cube`` and ``predict_cube`` (fine-tuned models) are what the UDF files in ``udf/`` and the
``terramind_*`` processes call (``locate_tiles``: the generated location of each tile as GeoJSON),
so both paths give the same numbers.
"""

from .bands import MODALITY_BANDS, ModalityLayout, canonical_band, map_bands
from .cache import MODEL_CACHE, ModelCache
from .context import CONTEXT_KEYS, InferenceOptions, describe_context, validate_context
from .errors import InferenceError
from .locate import locate_tiles
from .metadata import output_bands, output_classes, output_metadata, output_scale
from .predict import predict_cube
from .runner import RunStats, embed_cube, generate_cube, generated_bands

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
