"""Errors of fine-tuned task models: each names the config field, component or tensor at fault."""

from __future__ import annotations

from terramind_openeo.model.errors import CheckpointError, TerraMindError


class TaskModelError(TerraMindError):
    """Base class: a fine-tuned model that cannot be built, loaded or run as given."""


class TaskConfigError(TaskModelError):
    """A config field that is missing, malformed or not supported; ``field`` is its dotted path."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(f"config field {field!r}: {message}")


class UnsupportedComponentError(TaskConfigError):
    """A neck, decoder, head, backbone or option that this package does not implement."""


class TaskCheckpointError(CheckpointError, TaskModelError):
    """A checkpoint whose tensors do not fit the model its config describes."""
