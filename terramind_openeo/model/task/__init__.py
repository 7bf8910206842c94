"""Fine-tuned TerraMind models: terratorch's ``EncoderDecoderFactory`` models (TerraMind backbone, necks,
decoder, head) in plain PyTorch, loading terratorch's checkpoints unchanged.

``load_task_model(checkpoint, config=None, weights="checkpoint")`` gives a :class:`TaskModel`; see
:mod:`~terramind_openeo.model.task.loading` for what it reads and :mod:`~terramind_openeo.model.task.config` for
the config fields it understands.
"""

from terramind_openeo.model.task.config import TaskConfig, read_task_config, task_config
from terramind_openeo.model.task.errors import (
                                                TaskCheckpointError,
                                                TaskConfigError,
                                                TaskModelError,
                                                UnsupportedComponentError,
)
from terramind_openeo.model.task.loading import build_task_model, load_task_model
from terramind_openeo.model.task.model import TaskModel

__all__ = ["TaskCheckpointError", "TaskConfig", "TaskConfigError", "TaskModel", "TaskModelError",
           "UnsupportedComponentError", "build_task_model", "load_task_model", "read_task_config", "task_config"]
