"""Output band labels, class names and grid known before any data is seen (for ``apply_metadata`` and
process metadata)."""

from __future__ import annotations

from .adapters import EMBED_DIMS
from .bands import map_bands
from .context import validate_context
from .quantize import SCALE_BAND
from .runner import generated_bands

#: Inputs the encoder reads as images (their tokens are merged per patch).
_IMAGE_INPUTS = ("S2L2A", "S2L1C", "S2RGB", "S1GRD", "S1RTC", "DEM")


def output_bands(kind: str, context: dict | None, band_labels: list[str] | None = None) -> list[str]:
    """Band labels that ``embed_cube``/``generate_cube``/``predict_cube`` return for this context (for
    ``predict`` read from the fine-tuned model's config).

    For ``merge='concat'`` embeddings the number of input modalities matters: from the context's
    ``modalities``, else inferred from ``band_labels`` (the input cube's), else 1.
    """
    opts = validate_context(kind, context)
    if kind == "predict":
        from .predict import _task_config, predicted_bands

        return predicted_bands(_task_config(opts), opts.probabilities)
    if kind == "generate":
        return generated_bands(opts.target, opts.probabilities)
    dim = EMBED_DIMS[opts.model]
    if opts.merge == "concat":
        if opts.modalities:
            modalities = list(opts.modalities)
        elif band_labels:
            modalities = [layout.modality for layout in map_bands(band_labels, None, missing_bands="mean")]
        else:
            modalities = ["S2L2A"]
        groups = sum(m in _IMAGE_INPUTS for m in modalities) + (len(opts.tim) if opts.tim else 0)
        dim *= max(groups, 1)
    return [f"emb_{i:03d}" for i in range(dim)] + ([SCALE_BAND] if opts.quantize else [])


def output_scale(kind: str, context: dict | None) -> int:
    """Input pixels per output cell along x and y: 16 for patch-resolution embeddings and for the location
    when it is the only generated target (one value per tile, on the patch grid), else 1."""
    opts = validate_context(kind, context)
    if kind == "embed":
        return 16 if opts.resolution == "patch" else 1
    return 16 if kind == "generate" and tuple(opts.target) == ("coords",) else 1


def output_classes(kind: str, context: dict | None, band_labels: list[str] | None = None):
    """The ``ClassScheme`` (``terramind_openeo.classes``) of the class band that ``generate_cube`` (``LULC``) or
    ``predict_cube`` (a classification model's ``class``) returns for this context, else None."""
    from dataclasses import replace

    from terramind_openeo.classes import LULC_SCHEME

    opts = validate_context(kind, context)
    if kind == "predict":
        from .predict import _task_config, class_scheme

        return class_scheme(_task_config(opts), opts.probabilities)
    bands = output_bands(kind, context, band_labels) if kind == "generate" else []
    if "LULC" in bands:  # alone a uint8 map with no-data 255; beside other bands floats, NaN for no data
        return LULC_SCHEME if bands == ["LULC"] else replace(LULC_SCHEME, nodata=None)
    return None


def output_metadata(kind: str, metadata, context: dict | None):
    """What a UDF's ``apply_metadata`` returns: ``metadata`` with the result's band labels and, for a class map,
    its class names and colours (``classes.declare_classes``), so that a back-end running the UDF inside
    ``apply_neighborhood`` can write them into the COG and STAC as the ``terramind_*`` processes do; at patch
    resolution the x/y step grows 16 times, so that ``apply_neighborhood`` (which keeps the pixel grid) can
    refuse the context before running anything."""
    from terramind_openeo.classes import declare_classes

    labels = metadata.band_names if metadata.has_band_dimension() else None
    renamed = metadata.rename_labels(dimension="bands", target=output_bands(kind, context, labels))
    scale = output_scale(kind, context)
    dims = [d for d in renamed.spatial_dimensions if getattr(d, "step", None)]
    if scale != 1 and len(dims) == 2:  # the patch grid: a caller that keeps the pixels refuses it up front
        renamed = renamed.resample_spatial(resolution=[float(d.step) * scale for d in dims])
    return declare_classes(renamed, output_classes(kind, context, labels))
