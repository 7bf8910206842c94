"""Output band labels known before any data is seen (for ``apply_metadata`` and process metadata)."""

from __future__ import annotations

from .adapters import EMBED_DIMS
from .context import validate_context
from .runner import generated_bands


def output_bands(kind: str, context: dict | None, input_modalities: int | None = None) -> list[str]:
    """Band labels that ``embed_cube``/``generate_cube`` will return for this context.

    For ``merge='concat'`` embeddings the number of input modalities is needed: from the context's
    ``modalities``, else ``input_modalities`` (default 1).
    """
    opts = validate_context(kind, context)
    if kind == "generate":
        return generated_bands(opts.target, opts.probabilities)
    dim = EMBED_DIMS[opts.model]
    if opts.merge == "concat":
        groups = len(opts.modalities) if opts.modalities else (input_modalities or 1)
        dim *= groups + (len(opts.tim) if opts.tim else 0)
    return [f"emb_{i:03d}" for i in range(dim)]
