"""Generation of the coords target: autoregressive decoding of a sequence modality, as the reference's
``GenerationSampler.autoregressive_step_batched`` (terratorch 1.2) does it.

The decoder starts from the start sentinel ``[S_1]`` and adds one token per step, at most
``COORDS_MAX_LENGTH - 1 = 3``: decoder token i is ``token_emb(id_i) + pos_emb[i] + mod_emb`` and attends causally
to tokens 0..i and to the whole encoder context; the next token comes from the last position's scores (the tied
output projection), filtered and sampled as image tokens are (top-k, then top-p on the softmax, then the
temperature; :func:`~terramind_openeo.model.sampling.filter_logits`) with one ``torch.multinomial`` over the batch
per step, or by arg-max (``argmax`` or ``temperature == 0``: no random numbers drawn). It stops as soon as every
sequence holds the end sentinel ``[S_2]``. The result is the reference's merge: per sequence the tokens after
``[S_1]`` up to the next sentinel, right-padded with ``[PAD]`` (:meth:`CoordsTokenizer.generated_span`).

Kept for parity, a quirk of the reference: where coords is *not* the last target, its encoder holds a coords
embedding and sees the empty target's input, the single token ``[S_1]``, while coords is generated; where
coords is the last target, the encoder sees the other inputs only (``start_in_encoder``).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from terramind_openeo.kernels import prepack
from terramind_openeo.model.config import COORDS, COORDS_MAX_LENGTH
from terramind_openeo.model.coords import CoordsTokenizer
from terramind_openeo.model.sampling import filter_logits


def _batch_size(inputs: Mapping[str, torch.Tensor]) -> int:
    return int(next(iter(inputs.values())).shape[0])


@torch.inference_mode()
def generate_coords(model, inputs: Mapping[str, torch.Tensor], tokenizer: CoordsTokenizer,
                    generator: torch.Generator | None, *, temperature: float = 1.0, top_p: float = 0.8,
                    top_k: int = 0, argmax: bool = False, start_in_encoder: bool = False,
                    masks: Mapping[str, torch.Tensor] | None = None,
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generate the coords sequence of every batch item from the encoder ``inputs`` (token ids, standardised
    rasters; ``masks`` as :meth:`TerraMind.encoder_context` takes them).

    Returns ``(raw [B, 1 + steps]`` (the decoder's sequence, ``[S_1]`` first), ``ids [B, L]`` (the merged spans,
    ``[PAD]``-padded), ``present [B, L]`` (bool: True where ``ids`` holds a generated token, not padding))``.
    """
    enc_inputs = dict(inputs)
    device = model.mask_token.device
    if start_in_encoder:
        enc_inputs["coords"] = torch.full((_batch_size(inputs), 1), tokenizer.start_id, dtype=torch.int64,
                                          device=device)
    context, key_mask, _ = model.encoder_context(enc_inputs, dict(masks) if masks else None)
    table = model.decoder_embeddings[COORDS.key]
    steps = COORDS_MAX_LENGTH - 1  # the empty target holds [S_1], 2 free slots and [S_2]: 3 decoder positions
    emb = table.pos_emb[:, :steps] + table.mod_emb  # [1, steps, D]
    batch = context.shape[0]
    out = torch.full((batch, 1), tokenizer.start_id, dtype=torch.int64, device=device)
    # B x 1..3 rows per step: packing the decoder's weights for each new row count (kernels/prepack.py) would
    # cost more than the products themselves
    with prepack.linear_packing(False):
        for _ in range(steps):
            n = out.shape[1]
            y = table.token_emb(out) + emb[:, :n]  # [B, n, D]
            y = model.forward_decoder(y, context, context_mask=key_mask, causal=True)
            last = table.logits(y)[:, -1].float()  # [B, n, V] -> [B, V]: scores of the next token
            if argmax or temperature == 0:
                nxt = last.argmax(dim=-1, keepdim=True)
            else:
                filtered = filter_logits(last, top_k=top_k, top_p=top_p)
                if temperature != 1:
                    filtered.div_(temperature)
                nxt = torch.multinomial(F.softmax(filtered, dim=-1), 1, generator=generator)  # [B, 1]
            out = torch.cat([out, nxt], dim=1)
            if bool((out == tokenizer.end_id).any(dim=1).all()):
                break
    spans = [tokenizer.generated_span(row) for row in out.tolist()]
    ids = tokenizer.pad(spans, device=device)
    present = torch.arange(ids.shape[1], device=device)[None] < torch.tensor([len(s) for s in spans],
                                                                              device=device)[:, None]
    return out, ids, present
