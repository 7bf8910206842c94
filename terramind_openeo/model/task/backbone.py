"""The TerraMind encoder of a fine-tuned model: terratorch's ``TerraMindViT`` (the ``terramind_v1_{size}``
backbone) with the options fine-tune configs use, and terratorch's ``TemporalWrapper`` around it.

* ``backbone_modalities``: the raw input modalities (``S2L2A``, ``S2L1C``, ``S2RGB``/``RGB``, ``S1GRD``, ``S1RTC``,
  ``DEM``), one patch embedding each, in config order;
* ``backbone_bands``: a subset (or reordering) of a modality's pre-training bands; its patch embedding then has
  one input channel per listed band, as terratorch's ``select_modality_patch_embed_weights`` makes it;
* ``backbone_merge_method``: ``mean`` (terratorch's default), ``max`` or ``concat`` of the image modalities'
  tokens per patch (``concat`` holds ``missing_mod_token``, used when fewer modalities are given);
* ``backbone_use_temporal`` + ``backbone_temporal_pooling`` (``mean``, ``max``, ``concat``, ``diff``) +
  ``backbone_temporal_n_timestamps`` (+ ``backbone_temporal_subset_lengths``): the encoder runs on every date
  of ``[B, C, T, H, W]`` inputs and the per-layer features are pooled over the dates.

State-dict keys equal terratorch's (``encoder_embeddings.untok_sen2l1c@224.proj.weight``, ``encoder.3.attn.qkv
.weight``, ``encoder_norm.weight``; ``encoder.`` in front of them all under the temporal wrapper). The blocks are
the ones of :mod:`terramind_openeo.model.blocks` (fused attention kernels, packed linears).
"""

from __future__ import annotations

import torch
from torch import nn

from terramind_openeo.model.blocks import Block, LayerNorm
from terramind_openeo.model.config import RAW_MODALITIES, TerraMindConfig
from terramind_openeo.model.embeddings import PatchEmbedding
from terramind_openeo.model.task.errors import TaskConfigError, UnsupportedComponentError

#: terratorch's band names (``PRETRAINED_BANDS``) -> the band names of this package (``MODALITY_BANDS``).
TERRATORCH_BANDS = {
    "COASTAL_AEROSOL": "B01", "BLUE": "B02", "GREEN": "B03", "RED": "B04", "RED_EDGE_1": "B05", "RED_EDGE_2": "B06",
    "RED_EDGE_3": "B07", "NIR_BROAD": "B08", "NIR_NARROW": "B8A", "WATER_VAPOR": "B09", "CIRRUS": "B10",
    "SWIR_1": "B11", "SWIR_2": "B12", "VV": "VV", "VH": "VH", "DEM": "DEM",
}
_RGB_BANDS = {"RED": "RED", "GREEN": "GREEN", "BLUE": "BLUE"}


def modality_name(name: str) -> str:
    """A config's modality name as this package names it (terratorch's naming rules: ``S1`` means S1GRD,
    ``RGB`` S2RGB); raises for tokenised or unknown modalities."""
    text = str(name).lower().replace("s2", "sen2").replace("s1", "sen1")
    for needle, ours in (("sen2l2a", "S2L2A"), ("sen2l1c", "S2L1C"), ("sen1rtc", "S1RTC"), ("sen1", "S1GRD"),
                         ("rgb", "S2RGB"), ("dem", "DEM")):
        if needle in text:
            return ours
    raise UnsupportedComponentError("model_args.backbone_modalities",
                                    f"modality {name!r} is not supported as a raw input; supported: S2L2A, S2L1C, "
                                    "S2RGB (RGB), S1GRD, S1RTC, DEM")


def modality_bands(modality: str, bands: list[str] | None) -> tuple[str, ...]:
    """The input bands of ``modality`` in channel order: its pre-training bands, or the config's
    ``backbone_bands`` translated to this package's names."""
    spec = RAW_MODALITIES[modality]
    if bands is None:
        return spec.bands
    table = _RGB_BANDS if modality == "S2RGB" else TERRATORCH_BANDS
    out = []
    for band in bands:
        ours = table.get(str(band).upper())
        if ours is None and str(band) in spec.bands:
            ours = str(band)
        if ours is None or ours not in spec.bands:
            raise TaskConfigError(f"model_args.backbone_bands.{modality}",
                                  f"band {band!r} is not a pre-training band of {modality} "
                                  f"(bands: {', '.join(k for k, v in table.items() if v in spec.bands)})")
        out.append(ours)
    return tuple(out)


class TerraMindBackbone(nn.Module):
    """Encoder-only TerraMind on raw modalities; ``forward(inputs)`` -> per-layer features ``[B, N, D']``."""

    def __init__(self, config: TerraMindConfig, modalities: dict[str, tuple[str, ...]], merge: str | None = "mean"):
        super().__init__()
        if merge not in ("mean", "max", "concat"):
            raise UnsupportedComponentError("model_args.backbone_merge_method",
                                            f"{merge!r} is not supported for a task model (mean, max, concat)")
        self.config = config
        self.modalities = dict(modalities)  # name -> input bands (channel order)
        self.keys = {name: RAW_MODALITIES[name].key for name in modalities}
        self.merge = merge
        self.encoder_embeddings = nn.ModuleDict({
            self.keys[name]: PatchEmbedding(len(bands), config.dim, config.patch_size, config.image_size)
            for name, bands in modalities.items()})
        self.encoder = nn.ModuleList(Block(config) for _ in range(config.encoder_depth))
        self.encoder_norm = LayerNorm(config.dim, config.norm_eps)
        if merge == "concat":
            self.missing_mod_token = nn.Parameter(torch.zeros(config.dim))
        self.patch_size = config.patch_size
        self.needed_layers: int | None = None
        """Run only the first ``needed_layers`` blocks (set by the model when its necks keep no deeper layer)."""
        self.samples = False
        """Whether the output depends on random draws (a TiM backbone that samples its tokens)."""
        self._set_image_count(len(modalities))

    def _set_image_count(self, count: int) -> None:
        """Image modalities merged per patch (``concat``: the width and the missing-modality fill count)."""
        self.image_count = count
        width = self.config.dim * (count if self.merge == "concat" else 1)
        self.out_channels = [width] * self.config.encoder_depth

    def embed(self, inputs: dict[str, torch.Tensor]) -> tuple[list[torch.Tensor], list[int]]:
        """Each given modality's tokens + position/modality embeddings ``[B, n, D]`` (config order), and counts."""
        xs, counts = [], []
        for name in self.modalities:
            if name not in inputs:
                continue
            x, emb = self.encoder_embeddings[self.keys[name]](inputs[name])
            xs.append(x + emb)
            counts.append(x.shape[1])
        if not xs:
            raise TaskConfigError("backbone_modalities", f"none of {list(self.modalities)} among the inputs "
                                  f"({list(inputs)})")
        return xs, counts

    def forward(self, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor | None]:
        return self.run_blocks(*self.embed(inputs))

    def run_blocks(self, xs: list[torch.Tensor], counts: list[int]) -> list[torch.Tensor | None]:
        """The encoder blocks over the embedded modalities, then each layer's tokens merged per patch."""
        x = torch.cat(xs, dim=1) if len(xs) > 1 else xs[0]
        depth = len(self.encoder)
        last = depth if self.needed_layers is None else min(self.needed_layers, depth)
        out: list[torch.Tensor | None] = [None] * depth
        for i, block in enumerate(self.encoder[:last]):
            x = block(x)
            out[i] = x
        if last == depth:
            out[-1] = self.encoder_norm(x)
        return [None if f is None else self._merge(f, counts) for f in out]

    def _merge(self, x: torch.Tensor, counts: list[int]) -> torch.Tensor:
        parts = list(torch.split(x, counts, dim=1)) if len(counts) > 1 else [x]
        if self.merge == "concat":
            missing = self.image_count - len(parts)
            if missing:
                token = self.missing_mod_token.to(x.dtype)
                parts += [token.expand(x.shape[0], parts[0].shape[1], -1)] * missing
            return torch.cat(parts, dim=-1) if len(parts) > 1 else parts[0]
        stacked = torch.stack(parts, dim=1)  # [B, M, N, D], as terratorch stacks before reducing
        return stacked.mean(dim=1) if self.merge == "mean" else stacked.max(dim=1)[0]


class TemporalBackbone(nn.Module):
    """terratorch's ``TemporalWrapper``: the encoder on every date, then the features pooled over the dates."""

    def __init__(self, encoder: TerraMindBackbone, pooling: str = "mean", n_timestamps: int | None = None,
                 subset_lengths: list[int] | None = None):
        super().__init__()
        if pooling not in ("mean", "max", "concat", "diff"):
            raise UnsupportedComponentError("model_args.backbone_temporal_pooling",
                                            f"{pooling!r} is not supported (mean, max, concat, diff)")
        if pooling == "concat" and not n_timestamps:
            raise TaskConfigError("model_args.backbone_temporal_n_timestamps", "needed with pooling 'concat'")
        if subset_lengths is not None and n_timestamps and sum(subset_lengths) != n_timestamps:
            raise TaskConfigError("model_args.backbone_temporal_subset_lengths",
                                  f"sum {sum(subset_lengths)} != n_timestamps {n_timestamps}")
        self.encoder = encoder
        self.pooling = pooling
        self.n_timestamps = n_timestamps
        self.subset_lengths = list(subset_lengths) if subset_lengths else None
        factor = (n_timestamps or 1) if pooling == "concat" else 1  # (concat: checked above to be set)
        self.out_channels = [c * factor for c in encoder.out_channels]
        self.patch_size = encoder.patch_size

    @property
    def needed_layers(self) -> int | None:
        return self.encoder.needed_layers

    @needed_layers.setter
    def needed_layers(self, value: int | None) -> None:
        self.encoder.needed_layers = value

    def forward(self, inputs: dict[str, torch.Tensor]) -> list[torch.Tensor | None]:
        sample = next(iter(inputs.values()))
        if sample.dim() != 5:
            raise TaskConfigError("model_args.backbone_use_temporal",
                                  f"a temporal model needs inputs [B, C, T, H, W], got {tuple(sample.shape)}")
        B, T = sample.shape[0], sample.shape[2]
        if self.pooling == "concat" and T != self.n_timestamps:
            raise TaskConfigError("model_args.backbone_temporal_n_timestamps",
                                  f"the model concatenates {self.n_timestamps} dates, the input has {T}")
        # [B, C, T, H, W] -> [B * T, C, H, W], dates of one sample adjacent
        flat = {k: v.permute(0, 2, 1, 3, 4).reshape(B * T, v.shape[1], *v.shape[3:]) for k, v in inputs.items()}
        return [None if f is None else self._pool(f.reshape(B, T, *f.shape[1:])) for f in self.encoder(flat)]

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, T, N, D]`` -> ``[B, N, D']``."""
        if self.subset_lengths is not None:
            if sum(self.subset_lengths) != x.shape[1]:
                raise TaskConfigError("model_args.backbone_temporal_subset_lengths",
                                      f"sum {sum(self.subset_lengths)} != {x.shape[1]} dates")
            x = torch.stack([part.mean(dim=1) for part in torch.split(x, self.subset_lengths, dim=1)], dim=1)
        if self.pooling == "concat":  # terratorch: channels date-major, [t0 d0..dD-1, t1 d0 ...]
            return x.permute(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1)
        if self.pooling == "max":
            return x.max(dim=1).values
        if self.pooling == "diff":
            if x.shape[1] != 2:
                raise TaskConfigError("model_args.backbone_temporal_pooling",
                                      f"'diff' needs exactly two dates (or subsets), got {x.shape[1]}")
            return x[:, 0] - x[:, 1]
        return x.mean(dim=1)
