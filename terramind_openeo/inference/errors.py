"""Typed errors of the inference layer.

Every error is a ``ValueError`` (bad input, not a bug) and names its culprit: a band, a dimension or a
context key. They are raised while the cube and the context are checked, before any model work starts, so
a UDF user or the process layer sees one clear message instead of a trace from deep inside torch.
"""

from __future__ import annotations


class InferenceError(ValueError):
    """Base class: bad cube or context for TerraMind inference."""


class ContextError(InferenceError):
    """A context key is unknown, of the wrong type or out of range."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"context key {key!r}: {message}")


class UnknownContextKeyError(ContextError):
    """The context holds a key that no TerraMind function reads."""

    def __init__(self, key: str, valid: list[str]):
        self.valid = list(valid)
        super().__init__(key, f"unknown key; valid keys are: {', '.join(sorted(valid))}")


class DimensionError(InferenceError):
    """The cube lacks a required dimension, has an extra one, or is too small."""

    def __init__(self, dimension: str, message: str):
        self.dimension = dimension
        super().__init__(f"dimension {dimension!r}: {message}")


class BandError(InferenceError):
    """Band labels do not form the requested modalities."""

    def __init__(self, bands: list[str] | str, message: str):
        self.bands = [bands] if isinstance(bands, str) else list(bands)
        label = "band" if len(self.bands) == 1 else "bands"
        super().__init__(f"{label} {', '.join(self.bands)}: {message}")


class MissingBandError(BandError):
    """A modality needs bands that the cube does not hold."""


class DuplicateBandError(BandError):
    """The same band appears more than once (after resolving aliases)."""


class AmbiguousModalityError(BandError):
    """Band labels fit more than one modality; the context must say which."""


class InputRangeError(BandError):
    """Values outside what the modality can hold (for instance unsigned integer wrap-around)."""


class NoValidDataError(InferenceError):
    """Every pixel of the cube is nodata: nothing to compute."""


class ModelOutputError(InferenceError):
    """The model returned something the inference layer cannot place on the cube grid."""
