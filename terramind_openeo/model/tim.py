"""Thinking-in-Modalities (TiM): generate intermediate modality tokens, then encode them with the inputs.

``encode_with_tim(model, inputs, tim=["LULC"], layers=None, merge=None, seed=None, ...)`` (also
``model.encode(inputs, ..., tim=[...])``): the frozen generator produces the tokens of each TiM modality in turn
(chained, as :func:`~terramind_openeo.model.generation.generate_tokens` does: each sees the earlier ones), then the
encoder runs over the inputs followed by the TiM tokens (``tok_<NAME>``) and returns features exactly as
:meth:`TerraMind.encode` does (same ``layers`` / ``merge`` meaning; merged image features include the TiM
modality, as the reference's TiM backbone does).

Unlike the reference, nothing else is built: no tokenizer (the tokens go straight into the encoder), no second
copy of the encoder. A TiM modality already among the inputs is not generated again.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from terramind_openeo.model.generation import IMAGE_TARGETS, generate_tokens, prepare_inputs
from terramind_openeo.model.generation_errors import NotGeneratableError

DEFAULT_TIM = ("LULC",)


@torch.inference_mode()
def encode_with_tim(model, inputs: Mapping[str, torch.Tensor], tim=DEFAULT_TIM, layers=None, merge=None,
                    seed: int | None = None, temperature: float = 1.0, top_p: float = 0.8, top_k: int = 0,
                    argmax: bool = False, tokenizers=None):
    """Features of ``inputs`` + generated ``tim`` modalities (see the module docstring)."""
    names = [tim] if isinstance(tim, str) else list(tim or DEFAULT_TIM)
    for name in names:
        if name not in IMAGE_TARGETS:
            raise NotGeneratableError(f"tim: {name!r} is not a TiM modality; expected some of "
                                      f"{', '.join(IMAGE_TARGETS)}")
    todo = [n for n in names if n not in inputs and f"tok_{n}" not in inputs]
    if todo:
        enc_inputs, _, _, _ = generate_tokens(model, inputs, todo, temperature=temperature, top_p=top_p,
                                              top_k=top_k, seed=seed, argmax=argmax, tokenizers=tokenizers)
    else:
        enc_inputs = prepare_inputs(model, inputs, tokenizers)
    return model.encode(enc_inputs, layers=layers, merge=merge)
