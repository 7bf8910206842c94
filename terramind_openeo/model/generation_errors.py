"""Typed errors of tokenizers, sampling and generation; each message names the offending parameter.

All derive from the model layer's :class:`~terramind_openeo.model.errors.TerraMindError` (a ``ValueError``).
"""

from __future__ import annotations

from terramind_openeo.model.errors import TerraMindError, UnknownModalityError

__all__ = ["CoordsDecodeError", "CoordsTokenizerError", "CoordsValueError", "GenerationError",
           "NotGeneratableError", "SamplingParameterError", "TokenRangeError", "TokenizerWeightsError",
           "UnknownModalityError"]


class GenerationError(TerraMindError):
    """Bad input to a tokenizer, the sampler or ``generate``."""


class TokenRangeError(GenerationError):
    """Token indices outside the codebook of the tokenizer (or not integers)."""


class NotGeneratableError(GenerationError):
    """A target modality that TerraMind cannot generate (e.g. S2RGB), or an input that is also a target."""


class SamplingParameterError(GenerationError):
    """timesteps, temperature, top_p, top_k or seed out of range; ``parameter`` names it."""

    def __init__(self, message: str, parameter: str | None = None):
        super().__init__(message)
        self.parameter = parameter


class TokenizerWeightsError(GenerationError):
    """A tokenizer checkpoint that is missing or whose keys or shapes do not match the architecture."""


class CoordsTokenizerError(TokenizerWeightsError):
    """A coords tokenizer file that is missing, unreadable or of another kind (not TerraMind's WordPiece)."""


class CoordsValueError(GenerationError):
    """Longitude/latitude input that is not ``[B, 2]``, not finite or outside -180..180 / -90..90."""


class CoordsDecodeError(GenerationError):
    """A generated coords sequence that does not read as ``lat=<deg> lon=<deg>``."""
