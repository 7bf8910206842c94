"""Heads of fine-tuned models, as terratorch 1.2 builds them (parameter names ``head.<i>...`` equal its own):
``SegmentationHead`` (class logits per pixel), ``RegressionHead`` (values per pixel), ``ScalarHead`` (one vector
per image: classification or scalar regression). Dropout is kept as a module (identity in eval mode) so the
layer indices, hence the checkpoint keys, match.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from terramind_openeo.model.task.errors import TaskConfigError, UnsupportedComponentError

#: ``final_act`` names a regression head may use (terratorch imports any ``module.Class``; a config from a
#: stranger must not make the server import arbitrary modules).
FINAL_ACTIVATIONS = {f"torch.nn.{name}": getattr(nn, name) for name in (
    "ReLU", "Sigmoid", "Tanh", "Softplus", "Identity", "LeakyReLU", "ELU", "GELU", "SiLU", "Hardtanh", "ReLU6")}


def _dropout(p: float, channels_2d: bool) -> nn.Module:
    return (nn.Dropout2d(p) if channels_2d else nn.Dropout(p)) if p else nn.Identity()


class SegmentationHead(nn.Module):
    """Optional 3x3 conv + ReLU blocks, dropout, a 1x1 convolution to ``num_classes`` logits."""

    def __init__(self, in_channels: int, num_classes: int, channel_list: list[int] | None = None,
                 dropout: float = 0):
        super().__init__()
        self.num_classes = num_classes
        pre: nn.Module = nn.Identity()
        if channel_list is not None:
            chans = [in_channels, *channel_list]
            pre = nn.Sequential(*[nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1), nn.ReLU())
                                  for i in range(len(chans) - 1)])
            in_channels = chans[-1]
        # terratorch puts nn.Dropout (not 2d) here when dropout > 0
        self.head = nn.Sequential(pre, nn.Dropout(dropout) if dropout else nn.Identity(),
                                  nn.Conv2d(in_channels, num_classes, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class PixelShuffleUpscale(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 4, kernel_size=3, stride=1, padding=1)
        self.upscale = nn.PixelShuffle(2)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.upscale(self.conv(x))))


class RegressionHead(nn.Module):
    """Optional 2x pixel-shuffle upscales, optional conv blocks, dropout, a 1x1 convolution to ``num_outputs``,
    an optional final activation."""

    def __init__(self, in_channels: int, num_outputs: int = 1, final_act: str | None = None,
                 learned_upscale_layers: int = 0, channel_list: list[int] | None = None, batch_norm: bool = True,
                 dropout: float = 0):
        super().__init__()
        if final_act is None:
            self.final_act: nn.Module = nn.Identity()
        elif final_act in FINAL_ACTIVATIONS:
            self.final_act = FINAL_ACTIVATIONS[final_act]()
        else:
            raise UnsupportedComponentError("model_args.head_final_act", f"{final_act!r} is not supported; "
                                            f"supported: {', '.join(FINAL_ACTIVATIONS)}")
        layers: list[nn.Module] = []
        if learned_upscale_layers:
            layers.append(nn.Sequential(*[PixelShuffleUpscale(in_channels) for _ in range(learned_upscale_layers)]))
        if channel_list is not None:
            chans = [in_channels, *channel_list]
            layers.append(nn.Sequential(*[nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                                                        nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True))
                                          for i in range(len(chans) - 1)]))
            in_channels = chans[-1]
        self.head = nn.Sequential(*layers, nn.Dropout2d(dropout), nn.Conv2d(in_channels, num_outputs, kernel_size=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_act(self.head(x))


class ScalarHead(nn.Module):
    """Per-image output: linear layers on each position then the mean over positions (or the mean first, with
    ``linear_after_pool``)."""

    def __init__(self, in_dim: int, num_outputs: int | None = None, num_classes: int | None = None,
                 dim_list: list[int] | None = None, dropout: float = 0, linear_after_pool: bool = False):
        super().__init__()
        if num_outputs is None and num_classes is None:
            raise TaskConfigError("model_args.num_classes", "a classification model needs num_classes")
        self.num_outputs = num_outputs or num_classes
        self.linear_after_pool = linear_after_pool
        pre: nn.Module = nn.Identity()
        if dim_list is not None:
            dims = [in_dim, *dim_list]
            pre = nn.Sequential(*[nn.Sequential(nn.Linear(dims[i], dims[i + 1]), nn.ReLU())
                                  for i in range(len(dims) - 1)])
            in_dim = dims[-1]
        self.head = nn.Sequential(pre, _dropout(dropout, False), nn.Linear(in_dim, self.num_outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)  # [B, C, H, W] -> [B, H * W, C]
        if self.linear_after_pool:
            return self.head(x.mean(dim=1))
        return self.head(x).mean(dim=1)


def build_head(task: str, in_channels: int, kwargs: dict, num_classes: int | None,
               num_outputs: int | None) -> nn.Module:
    """The head terratorch's factory builds for ``task`` with the config's ``head_*`` arguments."""
    try:
        if task == "segmentation":
            if num_classes is None:
                raise TaskConfigError("model_args.num_classes", "a segmentation model needs num_classes")
            return SegmentationHead(in_channels, num_classes, **kwargs)
        if task == "regression":
            extra: dict[str, Any] = {"num_outputs": num_outputs} if num_outputs else {}
            return RegressionHead(in_channels, **extra, **kwargs)
        return ScalarHead(in_channels, num_outputs=num_outputs, num_classes=num_classes, **kwargs)
    except TypeError as exc:
        raise TaskConfigError("model_args.head_*", f"{task} head: {exc}") from None
