"""The reference implementation (terratorch's TerraMind) as a test oracle, importable from any test.

``import terratorch`` runs a package initialiser that needs torchvision (which fails beside the CPU torch), so
this module imports ``terratorch/models/backbones/terramind/`` alone: it registers empty parent packages and a
minimal registry, and stands in for the one torchvision function TerraMind uses when torchvision is broken.

Use ``ref = terratorch_ref.require()`` at the top of a test or fixture: it returns this module, or skips the
test with the reason when terratorch is not installed (``pip install --no-deps 'terratorch==1.2.*'`` plus
einops, diffusers, huggingface_hub, tokenizers).
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import sys
import types
from functools import partial

import torch

SIZES = {
    "tiny": dict(dim=192, encoder_depth=12, decoder_depth=4, num_heads=3, qkv_bias=True, proj_bias=True,
                 mlp_bias=True, act_layer=torch.nn.GELU, gated_mlp=False),
    "small": dict(dim=384, encoder_depth=12, decoder_depth=6, num_heads=6, qkv_bias=True, proj_bias=True,
                  mlp_bias=True, act_layer=torch.nn.GELU, gated_mlp=False),
    "base": dict(dim=768, encoder_depth=12, decoder_depth=12, num_heads=12, qkv_bias=False, proj_bias=False,
                 mlp_bias=False, act_layer=torch.nn.SiLU, gated_mlp=True),
    "large": dict(dim=1024, encoder_depth=24, decoder_depth=24, num_heads=16, qkv_bias=False, proj_bias=False,
                  mlp_bias=False, act_layer=torch.nn.SiLU, gated_mlp=True),
}
"""The v1 sizes as terratorch's terramind_register.py defines them."""
ENCODER_KEYS = ["untok_sen2l2a@224", "untok_sen2l1c@224", "untok_sen2rgb@224", "untok_sen1grd@224",
                "untok_sen1rtc@224", "untok_dem@224", "tok_sen2l2a@224", "tok_sen1grd@224", "tok_sen1rtc@224",
                "tok_dem@224", "tok_lulc@224", "tok_ndvi@224", "coords"]
DECODER_KEYS = ["tok_sen2l2a@224", "tok_sen1grd@224", "tok_sen1rtc@224", "tok_dem@224", "tok_lulc@224",
                "tok_ndvi@224", "coords"]
"""Every modality table of a v1 checkpoint (13 encoder, 7 decoder)."""

_STATE: dict = {}


class _Registry(dict):
    def register(self, fn):
        self[fn.__name__] = fn
        return fn

    def build(self, name, *args, **kwargs):
        return self[name](*args, **kwargs)


def _torchvision_stand_in() -> None:
    try:
        import diffusers.models.embeddings  # noqa: F401  (let diffusers probe the real torchvision first)
    except Exception:
        pass
    try:
        import torchvision.transforms.functional  # noqa: F401
        return
    except Exception:
        for name in [n for n in sys.modules if n.startswith("torchvision")]:
            del sys.modules[name]

    def normalize(tensor, mean, std, inplace=False):
        mean = torch.as_tensor(mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        std = torch.as_tensor(std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        return (tensor - mean) / std

    modules = {}
    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional"):
        module = types.ModuleType(name)
        module.__path__ = []
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        modules[name] = module
    modules["torchvision"].transforms = modules["torchvision.transforms"]
    modules["torchvision.transforms"].functional = modules["torchvision.transforms.functional"]
    modules["torchvision.transforms.functional"].normalize = normalize
    sys.modules.update(modules)


def load() -> tuple[dict, dict]:
    """Import terratorch's TerraMind modules; return (backbone registry, full-model registry).

    Raises ImportError when terratorch or one of its TerraMind needs is missing."""
    if "registries" in _STATE:
        return _STATE["registries"]
    spec = importlib.util.find_spec("terratorch")
    if spec is None or spec.origin is None:
        raise ImportError("terratorch is not installed (pip install --no-deps 'terratorch==1.2.*')")
    for needed in ("einops", "huggingface_hub"):
        if importlib.util.find_spec(needed) is None:
            raise ImportError(f"terratorch's TerraMind needs {needed}, which is not installed")
    _torchvision_stand_in()
    root = os.path.dirname(spec.origin)
    for name, sub in [("terratorch", ""), ("terratorch.models", "models"),
                      ("terratorch.models.backbones", "models/backbones")]:
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [os.path.join(root, sub)]
            sys.modules[name] = module
    registry = sys.modules.get("terratorch.registry")
    if registry is None or not hasattr(registry, "TERRATORCH_BACKBONE_REGISTRY"):
        registry = types.ModuleType("terratorch.registry")
        registry.TERRATORCH_BACKBONE_REGISTRY = _Registry()
        registry.TERRATORCH_FULL_MODEL_REGISTRY = _Registry()
        registry.BACKBONE_REGISTRY = registry.TERRATORCH_BACKBONE_REGISTRY
        registry.FULL_MODEL_REGISTRY = registry.TERRATORCH_FULL_MODEL_REGISTRY
        sys.modules["terratorch.registry"] = registry
    import terratorch.models.backbones.terramind  # noqa: F401  (registers the models)

    _STATE["registries"] = (registry.TERRATORCH_BACKBONE_REGISTRY, registry.TERRATORCH_FULL_MODEL_REGISTRY)
    return _STATE["registries"]


def require():
    """This module with terratorch loaded, or ``pytest.skip`` with the reason."""
    if "terratorch" not in sys.modules and importlib.util.find_spec("terratorch") is None:
        import pytest

        pytest.skip("reference implementation unavailable: pip install --no-deps 'terratorch==1.2.*'")
    load()  # installed but broken: an error, never a silent skip
    return sys.modules[__name__]


def _terramind_module(name: str):
    load()
    return importlib.import_module(f"terratorch.models.backbones.terramind.model.{name}")


def build_full_model(size: str, seed: int = 0, decoder_depth: int | None = None,
                     encoder_depth: int | None = None, meta: bool = False) -> torch.nn.Module:
    """terratorch's whole v1 encoder-decoder (class TerraMind) with every table, seeded random init, eval mode.

    Its state dict has the key set of the official ``TerraMind_v1_{size}.pt`` (306 tensors for tiny). Depths can
    be reduced for cheaper checks of the large sizes; ``meta=True`` builds it without memory (shapes only)."""
    if meta:
        linspace = torch.linspace  # the reference calls .item() on a linspace (drop-path rates)
        try:
            torch.linspace = partial(linspace, device="cpu")
            with torch.device("meta"):
                return build_full_model(size, seed, decoder_depth, encoder_depth)
        finally:
            torch.linspace = linspace
    info = _terramind_module("modality_info").MODALITY_INFO
    tm = _terramind_module("terramind")
    utils = _terramind_module("tm_utils")
    config = dict(SIZES[size])
    if decoder_depth is not None:
        config["decoder_depth"] = decoder_depth
    if encoder_depth is not None:
        config["encoder_depth"] = encoder_depth
    torch.manual_seed(seed)
    enc, _ = tm.build_modality_embeddings(info, ENCODER_KEYS, img_size=224, dim=config["dim"], patch_size=16)
    dec, _ = tm.build_output_modality_embeddings(info, DECODER_KEYS, img_size=224, dim=config["dim"], patch_size=16)
    model = tm.TerraMind(encoder_embeddings=enc, decoder_embeddings=dec, modality_info=info, mlp_ratio=4,
                         num_register_tokens=0, norm_layer=partial(utils.LayerNorm, eps=1e-6, bias=False), **config)
    return model.eval()


@torch.no_grad()
def build_fast_model(size: str, seed: int = 0, active: tuple[str, ...] = (), decoder_depth: int | None = None,
                     encoder_depth: int | None = None) -> torch.nn.Module:
    """Like :func:`build_full_model` (same class, same key set) but cheap for the big sizes: built without
    terratorch's init, then filled from an own seeded generator. Raw-pixel tables, blocks and norms get random
    values (norm weights and biases too, so they are exercised); the token/sequence tables of modalities not in
    ``active`` (checkpoint keys such as ``tok_lulc@224``) are zero, since a test that does not use them need not
    pay for 15360 x D random numbers each."""
    utils = _terramind_module("tm_utils")
    model = build_full_model(size, seed, decoder_depth, encoder_depth, meta=True)
    model.to_empty(device="cpu")
    for emb in model.decoder_embeddings.values():  # to_empty replaced the shared parameters: tie them again
        emb.to_logits.weight = emb.token_emb.weight
    model.share_modality_embeddings()
    gen = torch.Generator().manual_seed(seed)
    dim = model.dim
    seen = set()
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        table = name.split(".")[1] if name.startswith(("encoder_embeddings.", "decoder_embeddings.")) else None
        data = tensor.data
        if name.endswith("pos_emb"):
            data.copy_(utils.build_1d_sincos_posemb(512, dim)[:4] if table == "coords"
                       else utils.build_2d_sincos_posemb(14, 14, dim))
        elif table and "token_emb" in name and table not in active:
            data.zero_()
        elif data.ndim == 2:  # linear weights [out, in] and embedding tables [vocab, D]
            std = 0.02 if "token_emb" in name else data.shape[1] ** -0.5
            data.copy_(torch.randn(data.shape, generator=gen) * std)
        elif name.endswith("weight"):  # norm weights
            data.copy_(1 + 0.1 * torch.randn(data.shape, generator=gen))
        else:  # biases, norm biases, mod_emb, mask_token
            data.copy_(0.05 * torch.randn(data.shape, generator=gen))
    return model.eval()


@torch.no_grad()
def perturb_(model: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Add seeded noise to every parameter and norm buffer (shared tensors once), so that equivalence tests
    also exercise LayerNorm weights/biases, biases and mod embeddings that MAE init leaves at constants."""
    gen = torch.Generator().manual_seed(seed)
    seen = set()
    for name, tensor in list(model.named_parameters(remove_duplicate=False)) + list(model.named_buffers()):
        if tensor.data_ptr() in seen or name.endswith("pos_emb") or not tensor.is_floating_point():
            continue
        seen.add(tensor.data_ptr())
        tensor.add_(torch.randn(tensor.shape, generator=gen) * scale)
    return model


def build_backbone(size: str, modalities: list[str], state_dict: dict, merge_method=None) -> torch.nn.Module:
    """terratorch's encoder-only backbone ``terramind_v1_{size}`` (TerraMindViT) for ``modalities``, with the
    matching tensors of a full state dict loaded strictly."""
    backbones, _ = load()
    model = backbones.build(f"terramind_v1_{size}", pretrained=False, modalities=list(modalities),
                            merge_method=merge_method)
    own = model.state_dict()
    # missing_mod_token exists only for merge="concat" and is not part of a checkpoint
    missing = [k for k in own if k not in state_dict and k != "missing_mod_token"]
    if missing:
        raise KeyError(f"state dict lacks backbone keys: {missing[:5]}")
    model.load_state_dict({k: state_dict.get(k, own[k]) for k in own}, strict=True)
    return model.eval()


@torch.no_grad()
def decoder_logits(full_model: torch.nn.Module, inputs: dict[str, torch.Tensor], target_key: str) -> torch.Tensor:
    """The reference's first generation step for ``target_key`` (e.g. ``tok_lulc@224``): logits ``[B, N, V]`` of
    all target tokens, through GenerationSampler.forward_enc_dec_maskgit_batched (deterministic token order).

    ``inputs`` maps checkpoint keys (``untok_sen2l2a@224``) to standardised raw tensors [B, C, H, W]."""
    gen = _terramind_module("generate")
    info = _terramind_module("modality_info").MODALITY_INFO
    batch = next(iter(inputs.values())).shape[0]
    mod_dict = {}
    num_tokens = None
    for key, x in inputs.items():
        num_tokens = (x.shape[-2] // 16) * (x.shape[-1] // 16)
        mod_dict[key] = {
            "tensor": x,
            "input_mask": torch.zeros(batch, num_tokens, dtype=torch.bool),
            "target_mask": torch.ones(batch, num_tokens, dtype=torch.bool),
            "decoder_attention_mask": torch.zeros(batch, num_tokens, dtype=torch.bool),
        }
    mod_dict[target_key] = gen.init_empty_target_modality(info, target_key, batch, num_tokens, torch.device("cpu"))
    sampler = gen.GenerationSampler(full_model)
    logits, _ = sampler.forward_enc_dec_maskgit_batched(mod_dict, target_key)
    return logits


def write_checkpoint(size: str, path, seed: int = 0, prefix: str = "") -> int:
    """Write a random v1 state dict in the official file format (optionally under a key prefix)."""
    state = build_full_model(size, seed).state_dict()
    torch.save({prefix + k: v for k, v in state.items()}, path)
    return len(state)
