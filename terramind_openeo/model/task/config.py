"""What a fine-tuned model is, read from the config its author ships: terratorch's Lightning YAML
(``terratorch fit -c config.yaml``) or the same fields as a small JSON.

From the YAML, the model is ``model.init_args.model_args`` (the ``EncoderDecoderFactory`` arguments), the task
``model.class_path`` (``SemanticSegmentationTask`` -> segmentation, ``PixelwiseRegressionTask`` -> regression,
``ClassificationTask`` -> classification), the class names ``model.init_args.class_names``, and the
standardisation ``data.init_args.means`` / ``stds`` (per modality, or one list for a single modality in the
order of ``dataset_bands``/``backbone_bands``). Training-only fields (optimizer, loss, trainer, ...) are accepted
and ignored; a model field this package does not implement is an error naming it, never silently dropped.

The JSON form holds the same information flat::

    {"task": "segmentation", "model_args": {...}, "class_names": ["Others", "Flood"],
     "means": {"S2L1C": [...], "S1GRD": [...]}, "stds": {...}}
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from terramind_openeo.model.config import MODEL_NAMES
from terramind_openeo.model.task.backbone import modality_bands, modality_name
from terramind_openeo.model.task.errors import TaskConfigError, UnsupportedComponentError
from terramind_openeo.model.task.tim_backbone import TIM_KEYS, tim_settings

TASK_CLASSES = {
    "SemanticSegmentationTask": "segmentation",
    "PixelwiseRegressionTask": "regression",
    "ClassificationTask": "classification",
}
TASKS = ("segmentation", "regression", "classification", "scalar_regression")

# model_args keys: the ones that shape the model, and the ones that only matter for training
_BACKBONE_KEYS = {"backbone", "backbone_modalities", "backbone_merge_method", "backbone_bands",
                  "backbone_use_temporal", "backbone_temporal_pooling", "backbone_temporal_n_timestamps",
                  "backbone_temporal_subset_lengths", "backbone_img_size", "backbone_patch_size", *TIM_KEYS}
_TRAINING_ONLY = {"backbone_pretrained", "backbone_ckpt_path", "backbone_drop_path_rate", "backbone_drop_rate",
                  "backbone_attn_drop_rate", "backbone_modality_drop_rate", "backbone_pretrained_bands"}
_MODEL_KEYS = {"backbone", "decoder", "necks", "num_classes", "num_outputs", "rescale"}
_TASK_TRAINING_KEYS = {
    "model_factory", "loss", "ignore_index", "freeze_backbone", "freeze_decoder", "freeze_head", "class_weights",
    "lr", "optimizer", "optimizer_hparams", "scheduler", "scheduler_hparams", "plot_on_val",
    "tiled_inference_parameters",
    "tiled_inference_on_testing", "tiled_inference_on_validation", "test_dataloaders_names", "output_on_inference",
    "output_most_probable", "path_to_record_metrics", "lr_overrides", "class_names", "model_args",
    "aux_loss", "aux_heads", "var_names", "tiled_inference_on_test", "model",
}


@dataclass(frozen=True)
class TaskConfig:
    """A fine-tuned model's architecture, classes and input standardisation."""

    task: str
    """``segmentation``, ``regression``, ``classification`` or ``scalar_regression``."""
    model_args: dict
    """terratorch's ``EncoderDecoderFactory`` arguments, as in the config."""
    class_names: tuple[str, ...] | None = None
    means: dict[str, tuple[float, ...]] = field(default_factory=dict)
    """Per modality (``S2L1C``...), in the order of :attr:`input_bands`; empty when the config gives none."""
    stds: dict[str, tuple[float, ...]] = field(default_factory=dict)
    source: str = "config"
    """Where the config came from (for messages)."""

    # ------------------------------------------------------------------ derived
    @property
    def backbone(self) -> str:
        return self.model_args["backbone"]

    @property
    def terramind_name(self) -> str:
        """The TerraMind architecture of the backbone (``terramind_v1_base`` for ``terramind_v1_base_tim``)."""
        return self.backbone.removesuffix("_tim")

    @property
    def size(self) -> str:
        return self.terramind_name.rsplit("_", 1)[-1]

    @property
    def tim(self) -> dict | None:
        """Thinking-in-Modalities settings (``tim``, ``temperature``, ``top_p``, ``top_k``) of a ``*_tim``
        backbone, else None (:func:`~terramind_openeo.model.task.tim_backbone.tim_settings`)."""
        return tim_settings(self.model_args)

    @property
    def modalities(self) -> tuple[str, ...]:
        """Input modalities in this package's names, config order."""
        return tuple(modality_name(m) for m in self.model_args.get("backbone_modalities") or ["S2L2A"])

    @property
    def input_bands(self) -> dict[str, tuple[str, ...]]:
        """Each modality's input bands in channel order (``backbone_bands`` or the pre-training bands)."""
        bands = self.model_args.get("backbone_bands") or {}
        by_name = {modality_name(k): v for k, v in bands.items()}
        return {m: modality_bands(m, by_name.get(m)) for m in self.modalities}

    @property
    def temporal(self) -> bool:
        return bool(self.model_args.get("backbone_use_temporal", False))

    @property
    def timesteps(self) -> int | None:
        """Dates the model takes at once (``None``: any number, pooled by mean/max; 1 without the wrapper)."""
        if not self.temporal:
            return 1
        return self.model_args.get("backbone_temporal_n_timestamps")

    @property
    def num_classes(self) -> int | None:
        return self.model_args.get("num_classes")


def _as_mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise TaskConfigError(where, f"must be a mapping, got {type(value).__name__}")
    return dict(value)


def _check_model_args(args: dict) -> None:
    """Every key is implemented or training-only; the backbone is a TerraMind v1 encoder."""
    for key in args:
        if key in _MODEL_KEYS or key in _BACKBONE_KEYS or key in _TRAINING_ONLY:
            continue
        if key.startswith(("decoder_", "head_")):
            continue  # checked against the decoder's / head's own arguments when they are built
        if key in ("peft_config", "aux_decoders"):
            raise UnsupportedComponentError(f"model_args.{key}", "not supported")
        raise UnsupportedComponentError(f"model_args.{key}", "not a field this package implements")
    backbone = args.get("backbone")
    if not isinstance(backbone, str):
        raise TaskConfigError("model_args.backbone", f"must name a TerraMind backbone, got {backbone!r}")
    if backbone.removesuffix("_tim") not in MODEL_NAMES:
        raise UnsupportedComponentError("model_args.backbone", f"{backbone!r} is not supported; supported: "
                                        f"{', '.join(MODEL_NAMES)} and each with _tim (Thinking-in-Modalities)")
    tim_settings(args)  # TiM fields: only with a _tim backbone, each value supported
    if args.get("backbone_img_size", 224) != 224 or args.get("backbone_patch_size", 16) != 16:
        raise UnsupportedComponentError("model_args.backbone_img_size", "only 224 px / 16 px patches (TerraMind v1)")
    if not args.get("decoder"):
        raise TaskConfigError("model_args.decoder", "a task model needs a decoder")


def _stats(values, modalities: tuple[str, ...], where: str, bands: dict[str, tuple[str, ...]]) -> dict:
    """Means or stds per modality from a config: ``{modality: [...]}`` or one list for a single modality.
    Modalities the model does not read (the sen1floods11 configs list all of TerraMind's) are dropped."""
    if values is None:
        return {}
    if isinstance(values, (list, tuple)):
        if len(modalities) != 1:
            raise TaskConfigError(where, f"one list for {len(modalities)} modalities; give one list per modality")
        values = {modalities[0]: values}
    if not isinstance(values, Mapping):
        raise TaskConfigError(where, f"must be a list or a mapping of modality -> list, got {values!r}")
    out = {}
    for key, vals in values.items():
        try:
            name = modality_name(key)
        except UnsupportedComponentError:
            continue  # e.g. statistics of a modality the datamodule knows but the model does not read
        if name not in modalities:
            continue
        if not isinstance(vals, (list, tuple)) or not all(isinstance(v, (int, float)) for v in vals):
            raise TaskConfigError(f"{where}.{key}", f"must be a list of numbers, got {vals!r}")
        if len(vals) != len(bands[name]):
            raise TaskConfigError(f"{where}.{key}", f"{len(vals)} values for the {len(bands[name])} input bands "
                                  f"of {name} ({', '.join(bands[name])})")
        out[name] = tuple(float(v) for v in vals)
    return out


def task_config(data: Mapping, source: str = "config") -> TaskConfig:
    """A :class:`TaskConfig` from a parsed terratorch YAML or the JSON form (see the module docstring)."""
    if not isinstance(data, Mapping):
        raise TaskConfigError("(root)", f"must be a mapping, got {type(data).__name__}")
    if "model_args" in data:  # the JSON form
        known = {"task", "model_args", "class_names", "means", "stds"}
        for key in data:
            if key not in known:
                raise UnsupportedComponentError(key, f"not a field of the JSON form ({', '.join(sorted(known))})")
        task = data.get("task", "segmentation")
        model_args = _as_mapping(data["model_args"], "model_args")
        class_names, means, stds = data.get("class_names"), data.get("means"), data.get("stds")
    else:
        model = _as_mapping(data.get("model"), "model")
        if not model:
            raise TaskConfigError("model", "missing: not a terratorch config (no model section)")
        class_path = str(model.get("class_path", "SemanticSegmentationTask")).rsplit(".", 1)[-1]
        task = TASK_CLASSES.get(class_path)
        if task is None:
            raise UnsupportedComponentError("model.class_path", f"{class_path!r} is not supported; supported: "
                                            f"{', '.join(TASK_CLASSES)}")
        init = _as_mapping(model.get("init_args"), "model.init_args")
        for key in init:
            if key not in _TASK_TRAINING_KEYS:
                raise UnsupportedComponentError(f"model.init_args.{key}", "not a field this package implements")
        if init.get("model_factory", "EncoderDecoderFactory") != "EncoderDecoderFactory":
            raise UnsupportedComponentError("model.init_args.model_factory",
                                            f"{init['model_factory']!r}; only EncoderDecoderFactory is supported")
        if init.get("aux_heads"):
            raise UnsupportedComponentError("model.init_args.aux_heads", "auxiliary heads are not supported")
        model_args = _as_mapping(init.get("model_args"), "model.init_args.model_args")
        class_names = init.get("class_names")
        data_args = _as_mapping(_as_mapping(data.get("data"), "data").get("init_args"), "data.init_args")
        means, stds = data_args.get("means"), data_args.get("stds")
    if task not in TASKS:
        raise UnsupportedComponentError("task", f"{task!r} is not supported; supported: {', '.join(TASKS)}")
    _check_model_args(model_args)
    if class_names is not None:
        if not isinstance(class_names, (list, tuple)) or not all(isinstance(c, str) for c in class_names):
            raise TaskConfigError("class_names", f"must be a list of strings, got {class_names!r}")
        class_names = tuple(class_names)
        num = model_args.get("num_classes")
        if num is not None and len(class_names) != num:
            raise TaskConfigError("class_names", f"{len(class_names)} names for num_classes={num}")
    config = TaskConfig(task, model_args, class_names, source=source)
    modalities, bands = config.modalities, config.input_bands
    means = _stats(means, modalities, "means", bands)
    stds = _stats(stds, modalities, "stds", bands)
    if set(means) != set(stds):
        raise TaskConfigError("stds", f"means are given for {sorted(means)}, stds for {sorted(stds)}")
    for name, values in stds.items():
        if any(v <= 0 for v in values):
            raise TaskConfigError(f"stds.{name}", f"must be positive, got {list(values)}")
    return TaskConfig(task, model_args, class_names, means, stds, source)


def read_task_config(path: str | os.PathLike) -> TaskConfig:
    """A :class:`TaskConfig` from a terratorch YAML or a JSON file."""
    path = Path(path)
    if not path.is_file():
        raise TaskConfigError("(file)", f"config file {str(path)!r} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml and json raise many types
        raise TaskConfigError("(file)", f"cannot parse {str(path)!r}: {exc}") from None
    return task_config(data, source=str(path))
