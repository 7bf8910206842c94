"""Output band labels known before any data is seen (for ``apply_metadata`` and process metadata)."""

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
