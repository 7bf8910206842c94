"""A fine-tuned TerraMind model: backbone, necks, decoder and head, run as terratorch's ``PixelWiseModel``
(segmentation, pixel-wise regression) or ``ScalarOutputModel`` (classification, scalar regression) runs it.

Forward pass, as terratorch's: the inputs are reflect-padded to a multiple of twice the patch size (split evenly
on both sides), the backbone gives per-layer features, the necks turn them into images, the decoder and head
give the output; a pixel-wise output is resized bilinearly to the padded input when its size differs and
centre-cropped back to the input size (one output channel is squeezed). Module names (``encoder``, ``neck``,
``decoder``, ``head``) make the state dict terratorch's, without the ``model.`` prefix of a Lightning checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from terramind_openeo.model.task.errors import TaskModelError
from terramind_openeo.model.task.necks import NeckChain, SelectIndices
from terramind_openeo.model.task.tim_backbone import TiMBackbone

PIXEL_TASKS = ("segmentation", "regression")
SCALAR_TASKS = ("classification", "scalar_regression")


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Reflect-pad the last two axes of ``x [B, C, (T,) H, W]`` to multiples of ``multiple``, split evenly
    (the extra pixel at the end), as terratorch's ``pad_images`` does."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if not ph and not pw:
        return x
    pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
    if x.dim() == 5:  # reflect-pad works on 4-D: the dates folded into the channels
        B, C, T = x.shape[:3]
        return F.pad(x.reshape(B, C * T, h, w), pad, mode="reflect").reshape(B, C, T, h + ph, w + pw)
    return F.pad(x, pad, mode="reflect")


def centre_crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = max((h - size[0]) // 2, 0), max((w - size[1]) // 2, 0)
    return x[..., top : top + size[0], left : left + size[1]]


class TaskModel(nn.Module):
    """``forward(inputs)``: ``{modality: [B, C, H, W]}`` (``[B, C, T, H, W]`` for a temporal backbone),
    standardised, -> logits ``[B, classes, H, W]``, values ``[B, outputs, H, W]`` (``[B, H, W]`` for one), or
    ``[B, classes]`` for a scalar task. ``forward(inputs, seed=...)``: the seed of a TiM backbone's sampling.

    Attributes: ``task``, ``config`` (the :class:`~terramind_openeo.model.task.config.TaskConfig` it was built
    from), ``weights`` (where the weights came from).
    """

    def __init__(self, task: str, encoder: nn.Module, neck: NeckChain, decoder: nn.Module, head: nn.Module,
                 rescale: bool = True, config=None):
        super().__init__()
        self.task = task
        self.encoder = encoder
        self.neck = neck
        self.decoder = decoder
        self.head = head
        self.rescale = rescale
        self.config = config
        self.weights = "uninitialised"
        self.patch_size = encoder.patch_size
        # layers the first SelectIndices keeps: blocks after the deepest are never run
        first = neck[0] if len(neck) else None
        if isinstance(first, SelectIndices) and all(i >= 0 for i in first.indices):
            encoder.needed_layers = max(first.indices) + 1

    @property
    def samples(self) -> bool:
        """Whether the output depends on random draws (a TiM backbone that samples; see ``seed``)."""
        return bool(getattr(self.encoder, "samples", False))

    def features(self, inputs: dict[str, torch.Tensor], seed: int | None = None,
                 ) -> tuple[list[torch.Tensor], tuple[int, int]]:
        inputs = {k: pad_to_multiple(v, 2 * self.patch_size) for k, v in inputs.items()}
        size = tuple(next(iter(inputs.values())).shape[-2:])
        features = self.encoder(inputs, seed=seed) if isinstance(self.encoder, TiMBackbone) else self.encoder(inputs)
        return self.neck(features, size), size

    def forward(self, inputs: dict[str, torch.Tensor], seed: int | None = None) -> torch.Tensor:
        """``seed``: of a TiM backbone's token sampling (None: a fresh one, as terratorch draws one per call);
        no other model draws random numbers, and for them it is an error."""
        if seed is not None and not isinstance(self.encoder, TiMBackbone):
            raise TaskModelError(f"seed={seed!r}: this model samples nothing (no Thinking-in-Modalities backbone)")
        out_size = tuple(next(iter(inputs.values())).shape[-2:])
        features, size = self.features(inputs, seed)
        out = self.head(self.decoder(list(features)))
        if self.task in SCALAR_TASKS:
            return out
        if self.rescale and tuple(out.shape[-2:]) != size:
            out = F.interpolate(out, size=size, mode="bilinear")
        if out.shape[1] == 1:
            out = out.squeeze(1)
        return centre_crop(out, out_size)
