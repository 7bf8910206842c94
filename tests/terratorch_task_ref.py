"""terratorch's fine-tuning model code (``EncoderDecoderFactory``, necks, decoders, heads, ``tiled_inference``)
as a test oracle on a CPU-only machine.

``import terratorch`` needs torchvision, albumentations, torchgeo, lightning ...; terratorch's task-model modules
need much less. This module builds on :mod:`terratorch_ref` (TerraMind backbones, minimal registry) and loads, each
from its own file without its package's ``__init__``:

* ``terratorch/registry/registry.py`` (the real ``Registry`` / ``MultiSourceRegistry`` classes): the neck,
  decoder, backbone and model-factory registries are made from them, as ``terratorch.registry`` makes them, but
  without the smp / timm / mmseg sources that pull in torchvision;
* ``terratorch/models/{model,utils,necks,heads,pixel_wise_model,scalar_output_model,embedding_output_model,
  peft_utils,encoder_decoder_factory}.py``, the four decoders (``unet_decoder``, ``upernet_decoder``,
  ``fcn_decoder``, ``identity_decoder``) and ``terratorch/tasks/tiled_inference.py``;
* segmentation-models-pytorch's ``base`` package and ``decoders/unet/decoder.py`` (terratorch's ``UNetDecoder``
  wraps it), without smp's ``__init__`` (its encoders import torchvision models and timm).

Stand-ins for the torchvision symbols that those modules import at module level and never call on the paths the
tests use: ``torchvision.ops.FeaturePyramidNetwork`` (the ``FeaturePyramidNetworkNeck``, not used by TerraMind
configs), ``torchvision.models.detection.image_list.ImageList`` and ``...transform.GeneralizedRCNNTransform``
(object detection), ``torchvision.transforms`` (``scalar_output_model`` imports it unused). Each stand-in raises
if it is ever called. Where a real torchvision imports, nothing is stood in.

Needs terratorch (``pip install --no-deps 'terratorch==1.2.*'``) and segmentation-models-pytorch
(``pip install --no-deps 'segmentation-models-pytorch==0.5.*'``); :func:`require` skips a test when either is
missing.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import types

import terratorch_ref

_STATE: dict = {}


class _NotAvailable:
    """A torchvision class stood in for: importable, unusable."""

    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"{type(self).__name__} is a stand-in (torchvision does not load here)")


def _module(name: str, path: list[str] | None = None) -> types.ModuleType:
    module = types.ModuleType(name)
    if path is not None:
        module.__path__ = path
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module.__spec__.submodule_search_locations = path
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent and parent in sys.modules:
        setattr(sys.modules[parent], child, module)
    return module


def _load_file(name: str, path: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    parent, _, child = name.rpartition(".")
    if parent in sys.modules:
        setattr(sys.modules[parent], child, module)
    return module


def _torchvision_stand_ins() -> None:
    try:
        import torchvision.models.detection  # noqa: F401
        import torchvision.ops  # noqa: F401
        return
    except Exception:
        pass
    terratorch_ref.load()  # its own stand-in (transforms.functional.normalize) first
    tv = sys.modules.get("torchvision") or _module("torchvision", [])
    for name in ("torchvision.ops", "torchvision.models", "torchvision.models.detection",
                 "torchvision.models.detection.image_list", "torchvision.models.detection.transform",
                 "torchvision.transforms"):
        if name not in sys.modules:
            _module(name, [])
    sys.modules["torchvision.ops"].FeaturePyramidNetwork = type("FeaturePyramidNetwork", (_NotAvailable,), {})
    sys.modules["torchvision.models.detection.image_list"].ImageList = type("ImageList", (_NotAvailable,), {})
    sys.modules["torchvision.models.detection.transform"].GeneralizedRCNNTransform = type(
        "GeneralizedRCNNTransform", (_NotAvailable,), {})
    tv.ops = sys.modules["torchvision.ops"]


def _smp() -> None:
    spec = importlib.util.find_spec("segmentation_models_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("segmentation-models-pytorch is not installed "
                          "(pip install --no-deps 'segmentation-models-pytorch==0.5.*')")
    root = list(spec.submodule_search_locations)[0]
    if "segmentation_models_pytorch" not in sys.modules:
        _module("segmentation_models_pytorch", [root])
        _module("segmentation_models_pytorch.decoders", [os.path.join(root, "decoders")])
        _module("segmentation_models_pytorch.decoders.unet", [os.path.join(root, "decoders", "unet")])
    importlib.import_module("segmentation_models_pytorch.base")
    importlib.import_module("segmentation_models_pytorch.decoders.unet.decoder")


def load() -> types.SimpleNamespace:
    """terratorch's task-model modules, as a namespace: ``factory`` (an ``EncoderDecoderFactory``),
    ``necks``, ``decoders`` (dict name -> module), ``utils``, ``tiled_inference`` (the function),
    ``registries`` (the ``terratorch.registry`` module)."""
    if "ns" in _STATE:
        return _STATE["ns"]
    terratorch_ref.load()
    _torchvision_stand_ins()
    _smp()
    root = sys.modules["terratorch"].__path__[0]
    registry = sys.modules["terratorch.registry"]
    if not hasattr(registry, "NECK_REGISTRY"):
        real = _load_file("terratorch.registry_impl", os.path.join(root, "registry", "registry.py"))
        backbones = real.MultiSourceRegistry()
        backbones.register_source("terratorch", registry.TERRATORCH_BACKBONE_REGISTRY)
        registry.BACKBONE_REGISTRY = backbones
        registry.TERRATORCH_NECK_REGISTRY = real.Registry()
        registry.NECK_REGISTRY = real.MultiSourceRegistry(terratorch=registry.TERRATORCH_NECK_REGISTRY)
        registry.TERRATORCH_DECODER_REGISTRY = real.Registry()
        registry.TERRATORCH_DECODER_REGISTRY.includes_head = False
        registry.DECODER_REGISTRY = real.MultiSourceRegistry(terratorch=registry.TERRATORCH_DECODER_REGISTRY)
        registry.MODEL_FACTORY_REGISTRY = real.Registry()
    models = sys.modules["terratorch.models"]
    for sub in ("decoders",):  # not its __init__: it imports every decoder (sklearn, ...)
        name = f"terratorch.models.{sub}"
        if name not in sys.modules:
            _module(name, [os.path.join(root, "models", sub)])
    if "terratorch.tasks" not in sys.modules:
        _module("terratorch.tasks", [os.path.join(root, "tasks")])
    for name in ("model", "utils", "necks", "heads", "pixel_wise_model", "scalar_output_model",
                 "embedding_output_model", "peft_utils", "encoder_decoder_factory"):
        importlib.import_module(f"terratorch.models.{name}")
    heads = importlib.import_module("terratorch.models.heads")  # the real package __init__
    decoders = {name: importlib.import_module(f"terratorch.models.decoders.{name}")
                for name in ("unet_decoder", "upernet_decoder", "fcn_decoder", "identity_decoder")}
    factory_module = sys.modules["terratorch.models.encoder_decoder_factory"]
    tiled = importlib.import_module("terratorch.tasks.tiled_inference")
    ns = types.SimpleNamespace(
        factory=factory_module.EncoderDecoderFactory(), necks=sys.modules["terratorch.models.necks"],
        decoders=decoders, heads=heads, utils=sys.modules["terratorch.models.utils"],
        tiled_inference=tiled.tiled_inference, registries=registry, models=models)
    _STATE["ns"] = ns
    return ns


def require() -> types.SimpleNamespace:
    """The loaded namespace, or ``pytest.skip`` naming what is missing (installed but broken: an error)."""
    import pytest

    for module, install in (("terratorch", "terratorch==1.2.*"),
                            ("segmentation_models_pytorch", "segmentation-models-pytorch==0.5.*")):
        if module not in sys.modules and importlib.util.find_spec(module) is None:
            pytest.skip(f"reference implementation unavailable: pip install --no-deps '{install}'")
    return load()


def build(task: str, model_args: dict, seed: int = 0):
    """terratorch's model for ``model_args`` (a config's ``model.init_args.model_args``), built as
    ``SemanticSegmentationTask`` / ``PixelwiseRegressionTask`` / ``ClassificationTask`` build it (the factory's
    ``build_model(task, **model_args)``), backbone not pretrained, in eval mode, seeded."""
    import torch

    ns = load()
    args = dict(model_args)
    args["backbone_pretrained"] = False
    torch.manual_seed(seed)
    return ns.factory.build_model(task, **args).eval()


def _register(name: str, size: str, builder: str, arch: dict, **fixed) -> str:
    """Register ``name`` in terratorch's backbone registry (once): its ``terramind_register.<builder>`` with the
    ``terramind_v1_{size}`` settings of its registry functions, ``arch`` and ``fixed`` arguments."""
    from functools import partial

    registry = load().registries.TERRATORCH_BACKBONE_REGISTRY
    if name not in registry:
        register = importlib.import_module("terratorch.models.backbones.terramind.model.terramind_register")

        def build(**kwargs):
            return getattr(register, builder)(
                variant=f"terramind_v1_{size}", mlp_ratio=4, num_register_tokens=0,
                norm_layer=partial(register.LayerNorm, eps=1e-6, bias=False),
                pretrained_bands=register.PRETRAINED_BANDS, **fixed, **arch, **kwargs)

        build.__name__ = name
        registry.register(build)
    return name


def register_shallow_backbone(size: str, depth: int) -> str:
    """Register terratorch's ``terramind_v1_{size}`` backbone with only ``depth`` encoder blocks under the name
    ``terramind_v1_{size}_d{depth}`` (terratorch's registry functions fix the depth; its builder,
    ``build_terrammind_vit``, and the model class are used as they are), for cheaper checks of the big sizes."""
    arch = dict(terratorch_ref.SIZES[size])
    arch.pop("decoder_depth")
    arch["encoder_depth"] = depth
    load()  # terratorch importable (its stand-ins in place) before its register module is imported
    register = importlib.import_module("terratorch.models.backbones.terramind.model.terramind_register")
    return _register(f"terramind_v1_{size}_d{depth}", size, "build_terrammind_vit", arch,
                     tokenizer_dict=register.tokenizer_dict["v1"])


def register_tim_backbone_without_tokenizers(size: str) -> str:
    """Register terratorch's ``terramind_v1_{size}_tim`` backbone without its TiM tokenizers under the name
    ``terramind_v1_{size}_tim_notok``: terratorch's builder (``build_terrammind_tim``) and ``TerraMindTiM`` as they
    are, with ``tokenizer_dict=None``. The tokenizers only tokenise inputs of a TiM modality (never on the TiM path),
    and LULC's is a ViT-B VQ-VAE of ~184 M numbers: the tests that need not check them skip building it."""
    return _register(f"terramind_v1_{size}_tim_notok", size, "build_terrammind_tim", dict(terratorch_ref.SIZES[size]),
                     tokenizer_dict=None)


def perturb(model, seed: int = 1, skip: tuple[str, ...] = ()):
    """Non-trivial BatchNorm statistics and parameters (init leaves many at constants), in place; parameters
    whose names start with one of ``skip`` stay as they are. Shared parameters are perturbed once (ties hold)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(skip):
                continue
            if name.endswith("missing_mod_token"):  # terratorch leaves it uninitialised (torch.Tensor(dim))
                p.copy_(torch.randn(p.shape, generator=gen))
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
        for name, buf in model.named_buffers():
            if name.endswith("running_var"):
                buf.copy_(0.5 + torch.rand(buf.shape, generator=gen))
            elif name.endswith("running_mean"):
                buf.copy_(0.1 * torch.randn(buf.shape, generator=gen))
    return model
