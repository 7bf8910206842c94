"""``terramind_embed``, ``terramind_generate`` and ``terramind_predict`` (fine-tuned models): TerraMind as
first-class openEO processes.

Each process takes the cube plus the UDF context keys as its own parameters (same names, same defaults:
the JSON specs in ``specs/`` are generated from ``inference.CONTEXT_KEYS`` by ``build_spec`` and a test
keeps them in sync) and calls the same ``inference`` function as the UDF files, chunk by chunk with
the overlap the inference tiling needs, so both paths give the same numbers.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import xarray as xr

from terramind_openeo.classes import LULC_SCHEME, attach
from terramind_openeo.processes import heap
from terramind_openeo.processes.errors import ProcessParameterInvalid, WeightsUnavailable

logger = logging.getLogger(__name__)

_DESCRIPTIONS = {
    "terramind_embed": ("TerraMind embeddings of a data cube",
                        "Encodes each date of the cube with the TerraMind encoder (tiled with overlap and "
                        "raised-cosine blending) and returns the embeddings as bands `emb_000`..`emb_{D-1}`, at "
                        "patch resolution (16 px) or upsampled to the input grid. Same numbers as the UDF "
                        "`udf/terramind_embed.py`."),
    "terramind_generate": ("TerraMind any-to-any generation on a data cube",
                           "Generates a target modality (e.g. LULC classes, Sentinel-2 L2A, Sentinel-1, DEM, "
                           "NDVI) from the modalities in the cube, per date, on the input's pixel grid, or the "
                           "location of each tile (target `coords`: bands `lon`, `lat`). Same numbers as the UDF "
                           "`udf/terramind_generate.py`."),
    "terramind_predict": ("A fine-tuned TerraMind model (terratorch checkpoint) on a data cube",
                          "Runs a fine-tuned TerraMind model (a terratorch task checkpoint: TerraMind backbone, "
                          "neck, decoder and head, e.g. flood or burn-scar segmentation) over the cube, tiled with "
                          "overlap and raised-cosine blending of the logits: band `class` (uint8 class ids, nodata "
                          "255; class names and colours go with the result into GeoTIFF, STAC and quicklook), "
                          "optionally `P_<class>` probabilities, or `prediction` values of a regression model. The "
                          "input bands, their standardisation and the class names come from the checkpoint's "
                          "config. A model that reads several dates at once (terratorch's temporal wrapper) gives "
                          "one map without `t`. Same numbers as the UDF `udf/terramind_predict.py`."),
    "terramind_locate": ("Where on Earth TerraMind places each tile of a data cube (a vector cube)",
                         "Generates TerraMind's coords modality (geo-localisation) from the modalities in the cube, "
                         "as `terramind_generate` with target `coords` does, and returns it as a vector data cube: "
                         "one point per tile (the centre of the tile's footprint, in the cube's CRS; properties "
                         "`tile_row`, `tile_col`, `centre_lon`, `centre_lat`), dimensions `geometry`, `t` (when "
                         "the cube has one) and `bands` (`lon`, `lat`: the generated location in WGS84 degrees, "
                         "NaN where the generated text is no location or the tile had no data). The tiles are "
                         "those the `lon`/`lat` bands of `terramind_generate` show. `save_result` writes it as "
                         "GeoJSON (one feature per tile and date, in WGS84) or JSON."),
}
_KINDS = {"terramind_embed": "embed", "terramind_generate": "generate", "terramind_predict": "predict",
          "terramind_locate": "generate"}
# context keys a process fixes itself (terramind_locate always generates the location, nothing else)
_FIXED = {"terramind_locate": ("target", "probabilities")}
VECTOR_CUBE_SCHEMA = {"type": "object", "subtype": "datacube", "dimensions": [{"type": "geometry"}]}

_TYPE_SCHEMAS: dict[str, list[dict[str, Any]]] = {
    "str": [{"type": "string"}],
    "int": [{"type": "integer"}],
    "number": [{"type": "number"}],
    "bool": [{"type": "boolean"}],
    "null": [{"type": "null"}],
    "list[str]": [{"type": "array", "items": {"type": "string"}}],
    "object": [{"type": "object"}],
}


def _schema(type_text: str) -> dict | list:
    alts = []
    for part in (p.strip() for p in type_text.split("|")):
        alts += _TYPE_SCHEMAS.get(part, [{}])
    return alts[0] if len(alts) == 1 else alts


def build_spec(process_id: str) -> dict:
    """The openEO process spec of ``process_id`` from ``inference.CONTEXT_KEYS``."""
    from terramind_openeo.inference import CONTEXT_KEYS

    kind = _KINDS[process_id]
    summary, description = _DESCRIPTIONS[process_id]
    params: list[dict[str, Any]] = [{"name": "data", "description": "A raster data cube with dimensions (t, bands, y, x) (t optional) "
               "whose band labels name Sentinel-2, Sentinel-1, DEM ... bands.",
               "schema": {"type": "object", "subtype": "datacube"}}]
    for key in CONTEXT_KEYS.values():
        if kind not in key.kinds or key.name in _FIXED.get(process_id, ()):
            continue
        if kind == "predict" and key.name == "checkpoint":  # the one required argument
            params.append({"name": key.name, "description": key.doc, "schema": {"type": "string"}})
            continue
        params.append({"name": key.name, "description": f"{key.doc} (type {key.type})",
                       "schema": _schema(key.type), "optional": True, "default": key.default})
    return {
        "id": process_id, "summary": summary, "description": description,
        "categories": ["cubes", "machine learning"], "experimental": False,
        "parameters": params,
        "returns": {"description": "A raster data cube with the same spatial reference system and the new bands.",
                    "schema": {"type": "object", "subtype": "datacube"}} if process_id not in _FIXED else
                   {"description": "A vector data cube: one point per tile, bands lon and lat.",
                    "schema": VECTOR_CUBE_SCHEMA},
        "exceptions": {"InferenceError": {"message": "The cube or the parameters do not suit the model."}},
        "links": [{"rel": "about", "href": "https://huggingface.co/ibm-esa-geospatial",
                   "title": "TerraMind models"}],
    }


def _context(kind: str, values: dict[str, Any]) -> dict:
    from terramind_openeo.inference import CONTEXT_KEYS

    return {k: v for k, v in values.items() if k in CONTEXT_KEYS and kind in CONTEXT_KEYS[k].kinds}


def _inference_function(kind: str):
    from terramind_openeo import inference

    return {"embed": inference.embed_cube, "generate": inference.generate_cube,
            "predict": inference.predict_cube}[kind]


def _run(kind: str, data: xr.DataArray, params: dict[str, Any]) -> xr.DataArray:
    from terramind_openeo.inference import InferenceError, validate_context

    if not isinstance(data, xr.DataArray):
        raise ProcessParameterInvalid(f"needs a raster data cube, got {type(data).__name__}", argument="data")
    context = _context(kind, params)
    try:
        options = validate_context(kind, context)
        _check_precision(options)
    except InferenceError as exc:
        raise ProcessParameterInvalid(str(exc), code=type(exc).__name__) from exc
    _check_policy(kind, options)
    modalities = _check_cube(data, options)
    if kind != "predict":  # a fine-tuned model's checkpoint is a file, checked by its own loader
        _ensure_weights(kind, options, modalities)
    return apply_chunked(_inference_function(kind), data, context, kind, options)


def _check_policy(kind: str, options) -> None:
    """The back-end's allow-list (``Policy.allowed_weights``) on the files the model is read from, before any
    of them is touched: ``weights``, or a fine-tuned model's ``checkpoint`` and ``config``."""
    from terramind_openeo.processes import context as _ctx
    from terramind_openeo.processes.policy import weights_allowed

    allowed = _ctx.current().policy.allowed_weights
    if allowed is None:
        return
    sources = {"weights": options.weights} if kind != "predict" else {"checkpoint": options.checkpoint}
    if kind == "predict" and isinstance(options.config, str):  # an inline config object reads no file
        sources["config"] = options.config
    for argument, value in sources.items():
        if not weights_allowed(value, allowed):
            raise ProcessParameterInvalid(f"{argument} {value!r} is not allowed on this back-end",
                                          argument=argument)


def _check_precision(options) -> None:
    """A dtype this machine cannot run fast (bfloat16 on a CPU without bf16 hardware, int8 on a GPU) is refused
    when the graph is checked, before any chunk runs (each worker checks again for its own CPU)."""
    from terramind_openeo.inference.device import resolve_device, resolve_precision

    resolve_precision(options.dtype, resolve_device(options.device))


def _check_cube(data: xr.DataArray, options) -> list[str]:
    """Dimensions and band mapping checked on the lazy cube, before any work: a missing band is a 400
    naming the argument and the band, not an error deep inside a chunk at compute time. Returns the
    input modalities."""
    from terramind_openeo.inference import InferenceError, map_bands
    from terramind_openeo.inference.cube import check_dims

    try:
        check_dims(data)
        if options.kind == "predict":  # the model's config names its bands: checked when its plan is made
            from terramind_openeo.inference.predict import check_predict_cube

            check_predict_cube(data, options)
            return []
        layouts = map_bands([str(b) for b in data["bands"].values],
                            list(options.modalities) if options.modalities else None,
                            missing_bands=options.missing_bands)
    except InferenceError as exc:
        raise ProcessParameterInvalid(str(exc), code=type(exc).__name__, argument="data") from exc
    return [layout.modality for layout in layouts]


def _ensure_weights(kind: str, options, modalities: list[str]) -> None:
    """The checkpoints fetched (or checked) once here, while the graph is evaluated: an unreachable hub or a
    missing file is one error before any tile runs (``inference.weights``)."""
    from terramind_openeo.inference.weights import ensure_weights
    from terramind_openeo.model.errors import WeightsSourceError

    try:
        ensure_weights(kind, options, modalities)
    except WeightsSourceError as exc:
        raise weights_error(exc) from None
    if options.weights == "random":  # said in the run's own log, which the client reads (not only a worker's)
        from terramind_openeo.processes import context as _ctx

        _ctx.current().logger.warning("terramind_%s: RANDOM weights (model %s) - for tests and benchmarks only, "
                                      "the outputs mean nothing", kind, options.model)


def weights_error(exc: Exception):
    """The openEO error of a weights failure: the hub unreachable is ``WeightsUnavailable`` (503), anything
    else (no such file, a bad checkpoint) a 400 on the ``weights`` argument."""
    from terramind_openeo.model.errors import HubUnavailableError

    if isinstance(exc, HubUnavailableError) or "Hugging Face hub" in str(exc):
        return WeightsUnavailable(str(exc), argument="weights")
    return ProcessParameterInvalid(str(exc), argument="weights")


def _edge_coords(cube: xr.DataArray) -> tuple[float, float, float, float]:
    """First and last ``y``, first and last ``x`` coordinate (array order)."""
    y, x = cube["y"].values, cube["x"].values
    return float(y[0]), float(y[-1]), float(x[0]), float(x[-1])


class _InferenceFn:
    """Picklable chunk function: ``inference.<kind>_cube(chunk, context)``.

    ``edges``: the whole cube's first and last ``y`` and ``x`` coordinates. A chunk side on the cube's edge
    has no neighbour, so its border tiles are not kept in the shared tile cache for one."""

    def __init__(self, kind: str, context: dict, edges: tuple[float, float, float, float]):
        self.kind, self.context, self.edges = kind, context, edges
        self.token = ("terramind", kind, repr(sorted(context.items())), edges)

    def _sides(self, chunk: xr.DataArray) -> tuple[bool, bool, bool, bool]:
        """(top, bottom, left, right) in array order: True where a neighbouring chunk exists."""
        top, bottom, left, right = (a != b for a, b in zip(_edge_coords(chunk), self.edges))
        return top, bottom, left, right

    def __call__(self, chunk: xr.DataArray) -> xr.DataArray:
        from terramind_openeo import inference

        func = _inference_function(self.kind)
        try:  # a chunk without data (clouds, outside the swath) is nodata, not an error
            # tiles on a border with a neighbouring chunk (its halo) run once: see inference.TileCache
            # tile_anchor='cube': the whole cube's tiles, anchored at its first pixel, whichever chunk this is
            return func(chunk, self.context, allow_empty=True, share_tiles=self._sides(chunk),
                        grid_origin=(self.edges[0], self.edges[2]))
        except inference.InferenceError as exc:  # the openEO error of the process, not a 500
            raise ProcessParameterInvalid(f"terramind_{self.kind}: {exc}", argument="data") from exc
        except ValueError as exc:  # weights errors of the model layer (e.g. a worker on another machine)
            from terramind_openeo.model.errors import WeightsSourceError
            from terramind_openeo.model.generation_errors import TokenizerWeightsError

            if isinstance(exc, (WeightsSourceError, TokenizerWeightsError)):
                raise weights_error(exc) from None
            raise
        finally:
            heap.trim()  # the chunk's activations go back to the OS (see processes/heap.py)


def apply_chunked(func, data: xr.DataArray, context: dict, kind: str, options) -> xr.DataArray:
    """Chunks aligned to the inference tile grid, with the halo that makes results chunking-invariant.

    Tiles start at multiples of the stride ``s = tile_size - overlap`` from the CRS origin; a core chunk
    whose bounds are multiples of ``s`` gets the same tiles as in the whole cube if it sees ``s`` pixels
    before and ``overlap`` pixels after it, so its pixels get the same values however the cube is cut.
    """
    from terramind_openeo.inference import InferenceError, output_bands, output_scale
    from terramind_openeo.processes import context as _ctx
    from terramind_openeo.processes.chunked import lcm, map_chunks, plan_for

    if "bands" not in data.dims or "x" not in data.dims or "y" not in data.dims:
        raise ProcessParameterInvalid(f"needs dimensions bands, y, x (got {data.dims})", argument="data")
    try:
        bands = output_bands(kind, context, [str(b) for b in data.bands.values])
    except InferenceError as exc:
        raise ProcessParameterInvalid(f"terramind_{kind}: {exc}", code=type(exc).__name__) from exc
    scale = output_scale(kind, context)
    stride = options.tile_size - options.overlap
    align = lcm(stride, 16)
    # large cores keep the halo's recomputation small: (core + s + overlap)^2 / core^2 ~ 1.25 at 2048 px
    core = max(_ctx.current().chunk_size * 4, align)
    # tile_anchor='cube': chunks cut at multiples of the stride from the cube's first pixel, each chunk's tiles
    # anchored there too (grid_origin), so that the chunks together make the whole cube's tiles
    anchored = options.tile_anchor == "crs"
    plan = plan_for(data, core, align, stride, options.overlap, scale=scale, anchored=anchored)
    classes = bands == ["LULC"] if kind == "generate" else bands == ["class"] if kind == "predict" else False
    dtype = "uint8" if classes else "float32"
    if kind == "embed" and options.quantize:  # int8 codes + a per-pixel scale code (inference/quantize.py)
        dtype = "int8"
    scheme, temporal = None, False
    if kind == "predict":
        from terramind_openeo.inference.predict import _task_config, class_scheme

        config = _task_config(options)
        scheme, temporal = class_scheme(config, options.probabilities), config.temporal
    elif kind == "generate" and "LULC" in bands:
        scheme = LULC_SCHEME if classes else replace(LULC_SCHEME, nodata=None)
    # a temporal fine-tuned model reads every date of a chunk at once and gives one map
    out = map_chunks(data, _InferenceFn(kind, context, _edge_coords(data)), plan, bands, dtype,
                     per_date=not temporal, name=f"terramind_{kind}", reduces_t=temporal)
    if temporal and "t" in out.dims:
        out = out.isel(t=0, drop=True)
    if dtype == "uint8":
        out.attrs["nodata"] = 255
    elif dtype == "int8":
        from terramind_openeo.inference.quantize import NODATA

        out.attrs["nodata"] = NODATA
    if scheme is not None:  # class names and colours for the writers (terramind_openeo.classes)
        attach(out, scheme)
    return out


def terramind_embed(data: xr.DataArray, **params: Any) -> xr.DataArray:
    return _run("embed", data, params)


def terramind_generate(data: xr.DataArray, **params: Any) -> xr.DataArray:
    return _run("generate", data, params)


def terramind_predict(data: xr.DataArray, **params: Any) -> xr.DataArray:
    return _run("predict", data, params)
