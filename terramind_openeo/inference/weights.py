"""The checkpoints a TerraMind run needs, made available once before any of its chunks runs.

The processes call :func:`ensure_weights` while the graph is evaluated (in the driver, before a cluster
starts or a tile is computed), so a hub that cannot be reached, a checkpoint path that does not exist or a
URL that does not answer is one clear error at once, not one slow failure per tile. Chunks then find the
files in the cache (on one machine; workers on other machines still fetch their own copy, once each).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from terramind_openeo.model.errors import WeightsSourceError

from .context import InferenceOptions


def needed_hub_files(kind: str, opts: InferenceOptions, modalities: list[str]) -> list:
    """The hub checkpoints of this run: the model's for ``weights="hub"``; the tokenizers of the generated
    targets and of tokenised inputs (LULC, NDVI) for any non-random weights (they always come from the hub)."""
    from terramind_openeo.model.generation import TOKENISED_RAW_INPUTS
    from terramind_openeo.model.hub import hub_file

    if opts.weights == "random":
        return []
    names = [opts.model] if opts.weights == "hub" else []
    tokenizers = [m for m in modalities if m in TOKENISED_RAW_INPUTS]
    if kind == "generate":
        tokenizers += list(opts.target)
    names += list(dict.fromkeys(tokenizers))
    return [hub_file(n) for n in names]


def ensure_weights(kind: str, opts: InferenceOptions, modalities: list[str]) -> None:
    """Fetch (once) or check what the run needs; raises ``WeightsSourceError`` (``HubUnavailableError`` when
    the hub cannot provide official checkpoints) with a message saying how to give them instead."""
    from terramind_openeo.model.hub import fetch_all

    weights = opts.weights
    scheme = urlparse(weights).scheme
    if scheme in ("http", "https", "file"):
        from .weights_download import resolve_weights

        try:
            resolve_weights(weights)
        except Exception as exc:  # noqa: BLE001 - any download failure: one message naming the URL
            raise WeightsSourceError(f"cannot download the weights {weights}: {type(exc).__name__}: {exc}") from exc
    elif weights not in ("hub", "random") and not Path(weights).is_file():
        raise WeightsSourceError(f"checkpoint file {weights!r} does not exist (weights: 'hub', 'random', a local "
                                 "checkpoint file or a URL)")
    fetch_all(needed_hub_files(kind, opts, modalities))
