"""Token sampling of TerraMind generation: temperature, top-k, top-p (nucleus), argmax; reproducible per seed.

Randomness protocol (so that a test can feed the reference the same random numbers). For each target, with a
``torch.Generator`` seeded as the reference seeds its global generator for that step:

1. ``u = torch.rand(N, generator)``: the reference's random decoding order ("ROAR" with one step decodes all
   ``N`` tokens at once, but visits them in the order ``argsort(u * 1e-6)``);
2. ``torch.multinomial(probs, 1, generator)`` over the ``B * N`` rows taken batch-major, tokens in that order.

Filtering as the reference: top-k on the raw scores, then top-p on ``softmax(scores)`` (the temperature is not
applied before top-p), then ``softmax(filtered / temperature)``; the most likely token is always kept.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from terramind_openeo.model.generation_errors import SamplingParameterError


def check_sampling(temperature: float, top_p: float, top_k: int) -> None:
    """Raise :class:`SamplingParameterError` naming the first parameter out of range: the one sampling rule
    (the inference context applies it too)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not math.isfinite(temperature) \
            or temperature < 0:
        raise SamplingParameterError(f"temperature must be a finite number >= 0 (0 = argmax), got {temperature!r}",
                                     "temperature")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise SamplingParameterError(f"top_p must lie in (0, 1] (1 = no nucleus filtering), got {top_p!r}", "top_p")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise SamplingParameterError(f"top_k must be an integer >= 0 (0 = no top-k filtering), got {top_k!r}", "top_k")


def _nucleus_drop_sorted(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """The reference's top-p mask ``[R, V]`` (True = drop): a full sort with indices, scattered back."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    cum = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    drop = cum > top_p
    drop[..., 1:] = drop[..., :-1].clone()  # keep the first token above the threshold too
    drop[..., 0] = False
    return torch.zeros_like(drop).scatter_(-1, order, drop)


def _nucleus_drop(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """The same mask as :func:`_nucleus_drop_sorted`, from a values-only sort where that is exact.

    The kept tokens are a prefix of the descending order, so a row's nucleus is "score >= its last kept score"
    unless equal scores straddle that boundary (which of them the reference keeps depends on its sort's tie
    order) or the row holds a NaN: such rows go through the reference's sort. The sorted values, their
    softmax and cumsum are the reference's exactly (same tensor, same ops), so the boundary is too. numpy's
    vectorised sort is about 10x ``torch.sort`` on the CPU (which also sorts indices); on other devices
    ``torch.sort`` is used directly.
    """
    if logits.device.type != "cpu" or logits.dtype != torch.float32 or logits.ndim != 2:
        return _nucleus_drop_sorted(logits, top_p)
    values = np.sort(logits.numpy(), axis=-1)[:, ::-1]  # ascending, read backwards
    sorted_logits = torch.from_numpy(np.ascontiguousarray(values))
    cum = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    # [R, 1] tokens the reference keeps: 1 + #(cum[:-1] <= top_p), by binary search (cum never decreases)
    below = torch.searchsorted(cum, torch.full((len(cum), 1), float(top_p)), right=True)
    kept = 1 + below.clamp_(max=cum.shape[-1] - 1)
    last = torch.gather(sorted_logits, 1, kept - 1)  # [R, 1] the smallest kept score
    drop = logits < last
    exact = (logits.shape[-1] - drop.sum(dim=-1, keepdim=True)) == kept  # no tie across the boundary
    exact &= ~torch.isnan(sorted_logits[:, :1]) & ~torch.isnan(sorted_logits[:, -1:])  # NaN sorts to one end
    redo = torch.nonzero(~exact[:, 0]).flatten()
    if redo.numel():
        drop[redo] = _nucleus_drop_sorted(logits[redo], top_p)
    return drop


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 0.0, inplace: bool = False) -> torch.Tensor:
    """``logits [R, V]`` with the tokens outside top-k / the top-p nucleus set to -inf (a new tensor, or
    ``logits`` itself with ``inplace=True``)."""
    if not inplace:
        logits = logits.clone()
    if top_k > 0:
        k = min(top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # [R, 1]
        logits.masked_fill_(logits < kth, float("-inf"))
    if top_p > 0:
        logits.masked_fill_(_nucleus_drop(logits, top_p), float("-inf"))
    return logits


def decoding_order(batch: int, n: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """The reference's random visiting order ``[B, N]`` (the same permutation for every batch item)."""
    u = torch.rand(n, generator=generator, device=device)
    keys = torch.zeros(batch, n, dtype=torch.bool, device=device) + u[None] * 1e-6  # exactly the reference's keys
    return torch.argsort(keys, dim=1)


def sample_tokens(logits: torch.Tensor, generator: torch.Generator | None = None, temperature: float = 1.0,
                  top_p: float = 0.8, top_k: int = 0, argmax: bool = False) -> torch.Tensor:
    """Tokens ``[B, N]`` (int64) from decoder scores ``[B, N, V]`` (see the module note for the protocol).

    ``argmax`` (or ``temperature == 0``) picks the most likely token everywhere; it still draws the order so
    that later random numbers (e.g. the diffusion noise) are the same as with sampling.
    """
    check_sampling(temperature, top_p, top_k)
    B, N, V = logits.shape
    order = decoding_order(B, N, generator, logits.device)  # [B, N]
    if argmax or temperature == 0:
        return logits.argmax(dim=-1)
    ordered = torch.gather(logits.float(), 1, order[..., None].expand(B, N, V)).reshape(B * N, V)
    filtered = filter_logits(ordered, top_k=top_k, top_p=top_p, inplace=True)  # ``ordered`` is a fresh copy
    if temperature != 1:  # x / 1 == x exactly: no pass over the scores for the default temperature
        filtered.div_(temperature)
    probs = F.softmax(filtered, dim=-1)
    picks = torch.multinomial(probs, 1, generator=generator)[:, 0].view(B, N)  # tokens in visiting order
    return torch.empty_like(picks).scatter_(1, order, picks)  # back to raster order
