"""The context keys shared by the UDF files and the ``terramind_*`` processes, and their strict validation.

``CONTEXT_KEYS`` is the single source of names, types, defaults and meanings: the UDF docstrings, the
process specs and :func:`validate_context` all read it. Unknown keys and wrong types are errors that name
the key (and list the valid ones), raised before any data or model is touched.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from terramind_openeo.model.config import MODEL_NAMES
from terramind_openeo.model.generation_errors import SamplingParameterError
from terramind_openeo.model.sampling import check_sampling

from .bands import MODALITIES
from .errors import ContextError, UnknownContextKeyError

GENERATION_TARGETS = ("LULC", "S2L2A", "S1GRD", "S1RTC", "DEM", "NDVI", "coords")
IMAGE_TARGETS = GENERATION_TARGETS[:-1]
"""Targets with a value per pixel; ``coords`` (the location) has one per tile."""
DIFFUSION_TARGETS = ("S2L2A", "S1GRD", "S1RTC", "DEM", "NDVI")
"""Decoded by a diffusion tokenizer (UNet at half resolution: tiles a multiple of 32 px)."""
DTYPES = ("float32", "bfloat16", "float16", "int8")
KINDS = ("embed", "generate", "predict")
_TERRAMIND = ("embed", "generate")
"""What the pre-trained model reads (a fine-tuned model, ``predict``, brings its own)."""
BLENDS = ("logits", "probabilities")
STANDARDIZATIONS = ("config", "pretraining")


@dataclass(frozen=True)
class ContextKey:
    """One context key: what it accepts and what it means."""

    name: str
    type: str
    """Human-readable type, as written in the UDF docstrings and process specs."""
    default: Any
    doc: str
    kinds: tuple[str, ...] = KINDS
    """Which functions read it (``embed_cube``, ``generate_cube``, ``predict_cube``)."""


CONTEXT_KEYS: dict[str, ContextKey] = {
    k.name: k
    for k in (
        ContextKey("model", "str", "terramind_v1_base", f"model size, one of {', '.join(MODEL_NAMES)}",
                   _TERRAMIND),
        ContextKey("weights", "str", "hub", "'hub' (official checkpoint, cached), a local path or URL, or "
                   "'random' (seeded random weights, for tests only)", _TERRAMIND),
        ContextKey("modalities", "list[str] | str | null", None, "modalities the cube's bands form, in the "
                   f"order fed to the model ({', '.join(MODALITIES)}); null: inferred from band labels", _TERRAMIND),
        ContextKey("missing_bands", "str", "error", "'error': a modality lacking bands is an error naming them; "
                   "'mean': fill missing bands with the pre-training mean (results degrade)", _TERRAMIND),
        ContextKey("nodata", "number | null", None, "input value meaning 'no data' besides NaN (null: the cube's "
                   "own nodata attribute, if any)"),
        ContextKey("s2_offset", "number", 0, "radiometric offset to subtract from Sentinel-2 digital numbers "
                   "(1000 for processing baseline >= 04.00 data that still carries it)"),
        ContextKey("s1_linear", "bool", False, "Sentinel-1 bands are linear power; converted to dB "
                   "(values <= 0 become nodata)"),
        ContextKey("tile_size", "int", 224, "tile edge in pixels, a multiple of 16"),
        ContextKey("overlap", "int", 32, "overlap of neighbouring tiles in pixels (blended with raised-cosine "
                   "weights), 0 <= overlap <= tile_size / 2; a multiple of 16 for patch-resolution embeddings"),
        ContextKey("tile_anchor", "str", "crs", "'crs': tile grid anchored at the CRS origin, so a pixel sees "
                   "the same tiles whatever the cube's extent or chunking; 'cube': anchored at the cube's "
                   "top-left pixel (a 224 px cube is then exactly one tile)"),
        ContextKey("batch_size", "int", 8, "tiles per model call"),
        ContextKey("device", "str | null", None, "torch device ('cpu', 'cuda', 'cuda:1'); null: CUDA when "
                   "present, else CPU"),
        ContextKey("dtype", "str | null", None, f"compute precision ({', '.join(DTYPES)}); null: bfloat16 on "
                   "CUDA, float32 on CPU. On a CPU, bfloat16 needs AMX-BF16 or AVX512-BF16 (float16: AMX-FP16 or "
                   "AVX512-FP16) and is refused without, naming the missing support; int8 (CPU only) runs the "
                   "linear layers in int8, everything else in float32"),
        ContextKey("coords", "bool", False, "feed each tile's location as TerraMind's coords modality: the centre "
                   "of the tile's footprint, transformed from the cube's CRS to WGS84 longitude/latitude (pyproj) "
                   "and rounded to the model's 0.25 degree grid; the cube needs a CRS and regular x/y coordinates "
                   "(across the antimeridian: the centre point's longitude; at the poles (|lat| >= 89.875): "
                   "longitude 0)", _TERRAMIND),
        ContextKey("layer", "int", -1, "encoder layer whose output is returned (negative counts from the "
                   "last)", ("embed",)),
        ContextKey("merge", "str", "mean", "how tokens of several input modalities are merged per patch: "
                   "'mean', 'max' or 'concat' (D bands per modality)", ("embed",)),
        ContextKey("resolution", "str", "patch", "'patch': one value per 16 x 16 px patch (coordinates at "
                   "patch centres); 'pixel': bilinearly upsampled to the input grid (what apply_neighborhood, "
                   "which keeps the pixel grid, needs)", ("embed",)),
        ContextKey("quantize", "str | null", None, "'int8': embeddings as int8 codes plus a per-pixel scale "
                   "code in band emb_scale (value = code * 2 ** (emb_scale / 8); -128 = no data), a quarter of "
                   "the float32 size, error <= 0.43 % of each pixel's largest component; null: float32",
                   ("embed",)),
        ContextKey("tim", "list[str] | null", None, "Thinking-in-Modalities: modalities the model first "
                   f"generates and then also encodes ({', '.join(IMAGE_TARGETS)})", ("embed",)),
        ContextKey("target", "str | list[str]", "LULC", "modality to generate; a list generates them in a "
                   f"chain ({', '.join(GENERATION_TARGETS)}). 'coords' (geo-localisation) gives bands lon, lat "
                   "(float32, WGS84 degrees on the 0.25 degree grid, NaN where the generated text is no "
                   "location): one value per tile, each cell taking the tile whose centre is nearest; on the "
                   "16 px patch grid when coords is the only target, else on the pixel grid",
                   ("generate",)),
        ContextKey("timesteps", "int", 10, "decoding steps of the generation", ("generate",)),
        ContextKey("seed", "int | null", 0, "random seed of generation (and of TiM, and of checkpoint='random' weights); each tile derives its own "
                   "from it and its position so results do not depend on tiling (null: not reproducible)"),
        ContextKey("temperature", "number", 1.0, "sampling temperature (>= 0; 0: the most likely token, as argmax)",
                   ("generate",)),
        ContextKey("top_p", "number", 0.8, "nucleus sampling threshold in (0, 1]", ("generate",)),
        ContextKey("top_k", "int", 0, "top-k sampling (0: off)", ("generate",)),
        ContextKey("argmax", "bool", False, "take the most likely token instead of sampling (deterministic)",
                   ("generate",)),
        ContextKey("probabilities", "bool", False, "also return per-class scores: LULC_P00..LULC_P09 of a LULC "
                   "generation, P_<class name> of a fine-tuned classifier (float32 cube, classes as numbers)",
                   ("generate", "predict")),
        ContextKey("checkpoint", "str | null", None, "fine-tuned model (required): a terratorch checkpoint "
                   "(Lightning .ckpt or state dict) as a hub repo id (e.g. ibm-esa-geospatial/TerraMind-base-Flood), "
                   "a local path or a URL; 'random': seeded random weights for the config's model (tests only)",
                   ("predict",)),
        ContextKey("config", "str | object | null", None, "the checkpoint's terratorch YAML (or the same as "
                   "JSON) as a path, URL or object: backbone, necks, decoder, head, classes, input bands and "
                   "means/stds; null: the one beside the checkpoint or in its hub repo", ("predict",)),
        ContextKey("standardization", "str", "config", "input statistics: 'config' (the config's data "
                   "means/stds; an error if it gives none) or 'pretraining' (TerraMind's pre-training statistics)",
                   ("predict",)),
        ContextKey("blend", "str", "logits", "what overlapping tiles average before the arg-max: 'logits' (as "
                   "terratorch's tiled_inference) or 'probabilities' (softmax first)", ("predict",)),
    )
}


@dataclass(frozen=True)
class InferenceOptions:
    """A validated context, every key present (defaults filled in)."""

    kind: str
    model: str
    weights: str
    modalities: tuple[str, ...] | None
    missing_bands: str
    nodata: float | None
    s2_offset: float
    s1_linear: bool
    coords: bool
    tile_size: int
    overlap: int
    tile_anchor: str
    batch_size: int
    device: str | None
    dtype: str | None
    layer: int
    merge: str
    resolution: str
    quantize: str | None
    tim: tuple[str, ...] | None
    target: tuple[str, ...]
    timesteps: int
    seed: int | None
    temperature: float
    top_p: float
    top_k: int
    argmax: bool
    probabilities: bool
    checkpoint: str | None = None
    config: str | dict | None = None
    standardization: str = "config"
    blend: str = "logits"

    def as_context(self) -> dict[str, Any]:
        """The context dict (JSON types) that yields these options again."""
        out = {}
        for key, value in dataclasses.asdict(self).items():
            if key in CONTEXT_KEYS and self.kind in CONTEXT_KEYS[key].kinds:
                out[key] = list(value) if isinstance(value, tuple) else value
        return out


def _int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ContextError(key, f"expected an integer, got {type(value).__name__} {value!r}")
    if isinstance(value, float) and not value.is_integer():
        raise ContextError(key, f"expected an integer, got {value!r}")
    return int(value)


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ContextError(key, f"expected a finite number, got {type(value).__name__} {value!r}")
    return float(value)


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ContextError(key, f"expected true or false, got {type(value).__name__} {value!r}")
    return value


def _choice(key: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise ContextError(key, f"expected a string (one of {', '.join(choices)}), got {type(value).__name__}")
    if value not in choices:
        raise ContextError(key, f"{value!r} is not one of {', '.join(choices)}")
    return value


def _str_list(key: str, value: Any, choices: tuple[str, ...]) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise ContextError(key, f"expected a name or a non-empty list of names, got {value!r}")
    out = tuple(_choice(key, item, choices) for item in items)
    if len(set(out)) != len(out):
        raise ContextError(key, f"names repeat in {list(out)}")
    return out


MAXIMA = {"tile_size": 2048, "batch_size": 256, "timesteps": 100, "top_k": 65536, "layer": 64,
          "temperature": 100.0, "s2_offset": 100_000.0, "seed": 2**63 - 1}
"""Upper bounds of the numeric keys (``layer``, ``seed`` and ``s2_offset`` also below: ``-max``), so that no
context asks for unbounded memory or time (a million timesteps, a 10^6 px tile)."""


def _bounded(key: str, value: float) -> float:
    top = MAXIMA[key]
    low = -top if key in ("layer", "seed", "s2_offset") else None
    if value > top or (low is not None and value < low):
        raise ContextError(key, f"must be at most {top}" + (f" and at least {low}" if low is not None else "") +
                           f", got {value}")
    return value


def validate_context(kind: str, context: dict | None) -> InferenceOptions:
    """Check a UDF/process context for ``kind`` ('embed', 'generate' or 'predict'); fill defaults.

    Keys that belong to the other kind are rejected as unknown, so a typo or a misplaced key never passes
    silently.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    context = {} if context is None else context
    if not isinstance(context, dict):
        raise ContextError("context", f"expected a dict, got {type(context).__name__}")
    valid = [name for name, key in CONTEXT_KEYS.items() if kind in key.kinds]
    for key in context:
        if key not in valid:
            raise UnknownContextKeyError(str(key), valid)
    raw = {name: key.default for name, key in CONTEXT_KEYS.items()}
    raw.update(context)
    get = raw.__getitem__

    tile_size = int(_bounded("tile_size", _int("tile_size", get("tile_size"))))
    if tile_size < 16 or tile_size % 16:
        raise ContextError("tile_size", f"must be a positive multiple of 16, got {tile_size}")
    overlap = _int("overlap", get("overlap"))
    if not 0 <= overlap <= tile_size // 2:
        raise ContextError("overlap", f"must be within 0..{tile_size // 2} (tile_size / 2), got {overlap}")
    resolution = _choice("resolution", get("resolution"), ("patch", "pixel"))
    if kind == "embed" and resolution == "patch" and overlap % 16:
        raise ContextError("overlap", f"must be a multiple of 16 for patch-resolution embeddings, got {overlap}")
    batch_size = int(_bounded("batch_size", _int("batch_size", get("batch_size"))))
    if batch_size < 1:
        raise ContextError("batch_size", f"must be >= 1, got {batch_size}")
    weights = get("weights")
    if not isinstance(weights, str) or not weights:
        raise ContextError("weights", f"expected 'hub', 'random' or a path/URL string, got {weights!r}")
    device = get("device")
    if device is not None and (not isinstance(device, str) or device.split(":")[0] not in ("cpu", "cuda")):
        raise ContextError("device", f"expected null, 'cpu' or 'cuda[:N]', got {device!r}")
    dtype = get("dtype")
    if dtype is not None:
        dtype = _choice("dtype", dtype, DTYPES)
    nodata = get("nodata")
    nodata = None if nodata is None else _number("nodata", nodata)
    modalities = get("modalities")
    modalities = None if modalities is None else _str_list("modalities", modalities, MODALITIES)
    quantize = get("quantize")
    quantize = None if quantize is None else _choice("quantize", quantize, ("int8",))
    tim = get("tim")
    tim = None if tim is None else _str_list("tim", tim, IMAGE_TARGETS)
    seed = get("seed")
    seed = None if seed is None else int(_bounded("seed", _int("seed", seed)))
    timesteps = int(_bounded("timesteps", _int("timesteps", get("timesteps"))))
    if timesteps < 1:
        raise ContextError("timesteps", f"must be >= 1, got {timesteps}")
    temperature = _bounded("temperature", _number("temperature", get("temperature")))
    top_p = _number("top_p", get("top_p"))
    top_k = int(_bounded("top_k", _int("top_k", get("top_k"))))
    try:
        check_sampling(temperature, top_p, top_k)  # the model's rule, not a second copy
    except SamplingParameterError as exc:
        raise ContextError(exc.parameter or "temperature", str(exc)) from None
    target = _str_list("target", get("target"), GENERATION_TARGETS)
    if kind == "generate" and tile_size % 32 and set(target) & set(DIFFUSION_TARGETS):
        raise ContextError("tile_size", f"must be a multiple of 32 to generate {', '.join(target)}, got {tile_size}")
    checkpoint, config = get("checkpoint"), get("config")
    if checkpoint is not None and (not isinstance(checkpoint, str) or not checkpoint):
        raise ContextError("checkpoint", f"expected a non-empty string, got {checkpoint!r}")
    if config is not None and not (isinstance(config, dict) or isinstance(config, str) and config):
        raise ContextError("config", f"expected a path/URL string or a config object, got {config!r}")
    if kind == "predict" and checkpoint is None:
        raise ContextError("checkpoint", "required: the fine-tuned model to run (hub repo id, path or URL)")
    if checkpoint == "random" and config is None:
        raise ContextError("config", "random weights need the config of the model to build")
    coords = _bool("coords", get("coords"))
    if kind == "generate" and coords and "coords" in target:
        raise ContextError("coords", "the location cannot be both an input (coords: true) and a target")
    return InferenceOptions(
        kind=kind,
        model=_choice("model", get("model"), MODEL_NAMES),
        weights=weights,
        modalities=modalities,
        missing_bands=_choice("missing_bands", get("missing_bands"), ("error", "mean")),
        nodata=nodata,
        s2_offset=_bounded("s2_offset", _number("s2_offset", get("s2_offset"))),
        s1_linear=_bool("s1_linear", get("s1_linear")),
        coords=coords,
        tile_size=tile_size,
        overlap=overlap,
        tile_anchor=_choice("tile_anchor", get("tile_anchor"), ("crs", "cube")),
        batch_size=batch_size,
        device=device,
        dtype=dtype,
        layer=int(_bounded("layer", _int("layer", get("layer")))),
        merge=_choice("merge", get("merge"), ("mean", "max", "concat")),
        resolution=resolution,
        quantize=quantize,
        tim=tim,
        target=target,
        timesteps=timesteps,
        seed=seed,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        argmax=_bool("argmax", get("argmax")),
        probabilities=_bool("probabilities", get("probabilities")),
        checkpoint=checkpoint,
        config=config,
        standardization=_choice("standardization", get("standardization"), STANDARDIZATIONS),
        blend=_choice("blend", get("blend"), BLENDS),
    )


def describe_context(kind: str) -> str:
    """The context keys of ``kind`` as docstring lines: ``name (type, default): meaning``."""
    lines = []
    for key in CONTEXT_KEYS.values():
        if kind in key.kinds:
            lines.append(f"{key.name} ({key.type}, default {json.dumps(key.default)}): {key.doc}")
    return "\n".join(lines)
