"""Errors of the model layer: each names the culprit and what was expected.

All derive from :class:`TerraMindError` (a ``ValueError``), so callers can catch one class; dtype problems are
also ``TypeError``.
"""

from __future__ import annotations


class TerraMindError(ValueError):
    """Base class of every error raised by ``terramind_openeo.model``."""


class UnknownModelError(TerraMindError):
    """A model name that is not one of ``terramind_v1_{tiny,small,base,large}``."""


class UnknownModalityError(TerraMindError):
    """A modality name that TerraMind does not know, or that cannot be used where it was given."""


class InputShapeError(TerraMindError):
    """Wrong rank, channel count, spatial size (not a multiple of the patch size) or batch size."""


class InputValueError(TerraMindError):
    """Non-finite values (NaN, inf) or token ids outside the vocabulary."""


class InputDtypeError(TerraMindError, TypeError):
    """An input tensor of the wrong dtype (e.g. integers for a raw modality, floats for tokens)."""


class CheckpointError(TerraMindError):
    """A checkpoint that cannot be loaded strictly: missing, unexpected or wrongly shaped tensors."""


class PrecisionError(TerraMindError):
    """A precision (``dtype``) that is not one of ``model.precision.PRECISIONS``, or one that cannot run on the
    chosen device (``int8`` off the CPU)."""


class WeightsSourceError(TerraMindError):
    """A ``weights=`` argument that is neither ``"hub"``, ``"random"`` nor an existing file."""


class HubUnavailableError(WeightsSourceError):
    """The official checkpoints are not in the cache and the Hugging Face hub cannot provide them now."""
