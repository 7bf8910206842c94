"""Decoders of fine-tuned models, as terratorch 1.2 builds them: ``UNetDecoder`` (segmentation-models-pytorch's
U-Net decoder, first feature duplicated), ``UperNetDecoder`` (MMSegmentation's UPerNet head), ``FCNDecoder``
and ``IdentityDecoder``. Parameter names equal terratorch's (``decoder.blocks.0.conv1.0.weight``,
``psp_modules.0.1.conv.weight``, ``convs.0.2.ln.weight`` ...). Each takes a list of image features
``[B, C_i, H_i, W_i]`` and returns one ``[B, out_channels, H, W]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from terramind_openeo.model.task.errors import TaskConfigError, UnsupportedComponentError


# ------------------------------------------------------------------------------------------------ U-Net
def _norm(use_norm, channels: int) -> nn.Module:
    """The norm of a U-Net convolution (segmentation-models-pytorch's ``use_norm``): BatchNorm or none."""
    kind = {True: "batchnorm", False: "identity"}.get(use_norm, use_norm)
    if isinstance(kind, dict):
        kind = kind.get("type")
    if kind == "batchnorm":
        return nn.BatchNorm2d(channels)
    if kind == "identity":
        return nn.Identity()
    raise UnsupportedComponentError("model_args.decoder_use_batchnorm",
                                    f"{use_norm!r} is not supported (batchnorm, identity, True, False)")


class Conv2dReLU(nn.Sequential):
    """Convolution (bias only without norm), norm, ReLU: ``0``, ``1``, ``2`` as in smp."""

    def __init__(self, cin: int, cout: int, use_norm):
        norm = _norm(use_norm, cout)
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=isinstance(norm, nn.Identity)), norm,
                         nn.ReLU(inplace=True))


class SCSE(nn.Module):
    """Concurrent spatial and channel squeeze & excitation (smp's ``attention_type='scse'``)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.cSE = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, channels // reduction, 1),
                                 nn.ReLU(inplace=True), nn.Conv2d(channels // reduction, channels, 1), nn.Sigmoid())
        self.sSE = nn.Sequential(nn.Conv2d(channels, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.cSE(x) + x * self.sSE(x)


class Attention(nn.Module):
    def __init__(self, kind: str | None, channels: int):
        super().__init__()
        if kind is None:
            self.attention = nn.Identity()
        elif kind == "scse":
            self.attention = SCSE(channels)
        else:
            raise UnsupportedComponentError("model_args.decoder_attention_type",
                                            f"{kind!r} is not supported (None, 'scse')")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attention(x)


class UNetBlock(nn.Module):
    """Nearest upsampling to the skip's size, concatenation, two 3x3 convolutions."""

    def __init__(self, cin: int, skip: int, cout: int, use_norm, attention: str | None):
        super().__init__()
        self.conv1 = Conv2dReLU(cin + skip, cout, use_norm)
        self.attention1 = Attention(attention, cin + skip)
        self.conv2 = Conv2dReLU(cout, cout, use_norm)
        self.attention2 = Attention(attention, cout)

    def forward(self, x: torch.Tensor, size: tuple[int, int], skip: torch.Tensor | None) -> torch.Tensor:
        x = F.interpolate(x, size=size, mode="nearest")
        if skip is not None:
            x = self.attention1(torch.cat([x, skip], dim=1))
        return self.attention2(self.conv2(self.conv1(x)))


class _SmpUnetDecoder(nn.Module):
    """segmentation-models-pytorch 0.5's ``UnetDecoder`` without a centre block."""

    def __init__(self, encoder_channels: list[int], decoder_channels: list[int], use_norm, attention):
        super().__init__()
        reversed_channels = list(encoder_channels[1:])[::-1]  # the first skip (same size) is dropped
        cins = [reversed_channels[0], *decoder_channels[:-1]]
        skips = [*reversed_channels[1:], 0]
        self.center = nn.Identity()
        self.blocks = nn.ModuleList(UNetBlock(ci, sk, co, use_norm, attention)
                                    for ci, sk, co in zip(cins, skips, decoder_channels, strict=True))

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        sizes = [tuple(f.shape[2:]) for f in features][::-1]
        features = features[1:][::-1]
        x = self.center(features[0])
        skips = features[1:]
        for i, block in enumerate(self.blocks):
            x = block(x, sizes[i + 1], skips[i] if i < len(skips) else None)
        return x


class UNetDecoder(nn.Module):
    """terratorch's ``UNetDecoder``: smp's U-Net decoder on ``[f0, f0, f1, ...]`` (the first feature twice)."""

    def __init__(self, embed_dim: list[int], channels: list[int], use_batchnorm="batchnorm",
                 attention_type: str | None = None):
        super().__init__()
        if not isinstance(channels, (list, tuple)) or len(embed_dim) != len(channels):
            raise TaskConfigError("model_args.decoder_channels",
                                  f"needs one channel count per input feature ({len(embed_dim)}), got {channels!r}")
        self.decoder = _SmpUnetDecoder([embed_dim[0], *embed_dim], list(channels), use_batchnorm, attention_type)
        self.out_channels = channels[-1]

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return self.decoder([x[0], *x])


# ---------------------------------------------------------------------------------------------- UPerNet
class ConvModule(nn.Module):
    """Bias-free convolution, BatchNorm, ReLU (``conv``, ``norm``, ``act``)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, padding: int = 0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size, padding=padding, bias=False)
        self.norm = nn.BatchNorm2d(cout)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class PPM(nn.ModuleList):
    """Pooling pyramid: adaptive average pools, 1x1 ConvModules, bilinear upsampling to the input size."""

    def __init__(self, pool_scales, cin: int, channels: int, align_corners: bool):
        super().__init__(nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(cin, channels, 1)) for s in pool_scales)
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        return [F.interpolate(ppm(x), size=x.shape[2:], mode="bilinear", align_corners=self.align_corners)
                for ppm in self]


class UperNetDecoder(nn.Module):
    """UPerNet: a pooling pyramid on the last feature, lateral 1x1 and FPN 3x3 convolutions on the others,
    top-down sums, everything upsampled to the first feature's size, concatenated and fused."""

    def __init__(self, embed_dim: list[int], pool_scales=(1, 2, 3, 6), channels: int = 256,
                 align_corners: bool = True):
        super().__init__()
        self.out_channels = channels
        self.align_corners = align_corners
        self.psp_modules = PPM(pool_scales, embed_dim[-1], channels, align_corners)
        self.bottleneck = ConvModule(embed_dim[-1] + len(pool_scales) * channels, channels, 3, padding=1)
        self.lateral_convs = nn.ModuleList(ConvModule(c, channels, 1) for c in embed_dim[:-1])
        self.fpn_convs = nn.ModuleList(ConvModule(channels, channels, 3, padding=1) for _ in embed_dim[:-1])
        self.fpn_bottleneck = ConvModule(len(embed_dim) * channels, channels, 3, padding=1)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        laterals = [conv(inputs[i]) for i, conv in enumerate(self.lateral_convs)]
        last = inputs[-1]
        laterals.append(self.bottleneck(torch.cat([last, *self.psp_modules(last)], dim=1)))
        levels = len(laterals)
        for i in range(levels - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[2:],
                                                              mode="bilinear", align_corners=self.align_corners)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(levels - 1)] + [laterals[-1]]
        for i in range(levels - 1, 0, -1):
            outs[i] = F.interpolate(outs[i], size=outs[0].shape[2:], mode="bilinear", align_corners=self.align_corners)
        return self.fpn_bottleneck(torch.cat(outs, dim=1))


# -------------------------------------------------------------------------------------------------- FCN
class Norm2d(nn.Module):
    """LayerNorm over channels of an image (``ln``)."""

    def __init__(self, channels: int):
        super().__init__()
        self.ln = nn.LayerNorm(channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2).contiguous()


class FCNDecoder(nn.Module):
    """``num_convs`` blocks of (2x transposed convolution, 3x3 convolution, LayerNorm, GELU) on one feature."""

    def __init__(self, embed_dim: list[int], channels: int = 256, num_convs: int = 4, in_index: int = -1):
        super().__init__()
        if num_convs < 1:
            raise TaskConfigError("model_args.decoder_num_convs", f"must be >= 1, got {num_convs}")
        self.in_index = in_index
        self.out_channels = channels
        blocks = []
        for i in range(num_convs):
            cin = embed_dim[in_index] if i == 0 else channels
            blocks.append(nn.Sequential(nn.ConvTranspose2d(cin, channels, kernel_size=2, stride=2),
                                        nn.Conv2d(channels, channels, kernel_size=3, padding=1), Norm2d(channels),
                                        nn.GELU()))
        self.convs = nn.Sequential(*blocks)

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return self.convs(x[self.in_index])


class IdentityDecoder(nn.Module):
    """One of the features unchanged (``out_index``)."""

    def __init__(self, embed_dim: list[int], out_index: int = -1):
        super().__init__()
        self.out_index = out_index
        self.out_channels = embed_dim[out_index]

    def forward(self, x: list[torch.Tensor]) -> torch.Tensor:
        return x[self.out_index]


DECODERS: dict[str, type[nn.Module]] = {
    "UNetDecoder": UNetDecoder, "UperNetDecoder": UperNetDecoder, "FCNDecoder": FCNDecoder,
    "IdentityDecoder": IdentityDecoder,
}


def build_decoder(name: str, channels: list[int], kwargs: dict) -> nn.Module:
    """The decoder ``name`` for features of ``channels``, with the config's ``decoder_*`` arguments."""
    cls = DECODERS.get(name)
    if cls is None:
        raise UnsupportedComponentError("model_args.decoder",
                                        f"decoder {name!r} is not supported; supported: {', '.join(DECODERS)}")
    try:
        return cls(list(channels), **kwargs)
    except TypeError as exc:
        raise TaskConfigError("model_args.decoder_*", f"{name}: {exc}") from None
