"""Necks between a TerraMind backbone and a decoder, as terratorch 1.2 names and computes them.

A neck takes the list of per-layer features and returns a new list; ``out_channels(channels)`` says how the
list of channel counts changes, so the next component can be sized. Parameter names (``fpn1.0.weight`` ...)
equal terratorch's, so a fine-tuned checkpoint loads unchanged. Supported: ``SelectIndices``,
``ReshapeTokensToImage``, ``InterpolateToPyramidal``, ``MaxpoolToPyramidal``, ``LearnedInterpolateToPyramidal``,
``AddBottleneckLayer``, ``PermuteDims``.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import nn

from terramind_openeo.model.task.errors import TaskConfigError


class Neck(nn.Module):
    """Base: ``forward(features, image_size)``; ``image_size`` is the ``(H, W)`` of the model input."""

    def out_channels(self, channels: list[int]) -> list[int]:
        return list(channels)


class SelectIndices(Neck):
    """Keep the features of the listed layers (negative indices count from the end)."""

    def __init__(self, channels: list[int], indices: list[int]):
        super().__init__()
        if not isinstance(indices, (list, tuple)) or not indices or not all(isinstance(i, int) for i in indices):
            raise TaskConfigError("necks.SelectIndices.indices", f"must be a list of layer indices, got {indices!r}")
        for i in indices:
            if not -len(channels) <= i < len(channels):
                raise TaskConfigError("necks.SelectIndices.indices",
                                      f"index {i} out of range for {len(channels)} backbone layers")
        self.indices = list(indices)

    def forward(self, features: list, image_size=None) -> list:
        return [features[i] for i in self.indices]

    def out_channels(self, channels: list[int]) -> list[int]:
        return [channels[i] for i in self.indices]


class ReshapeTokensToImage(Neck):
    """Tokens ``[B, N, D]`` -> images ``[B, t * D, h, w]`` (features that already are images pass through).

    With ``remove_cls_token`` the first token is dropped first, as in terratorch; TerraMind has no class token,
    and terratorch then finds that the grid does not fit and falls back to keeping every token. The grid is the
    input's patch grid (``image_size / 16``); terratorch takes ``sqrt(N)`` whenever ``N`` is a perfect square,
    which differs from the patch grid only for non-square inputs whose patch count is a square (8 x 18 = 12^2).
    """

    def __init__(self, channels: list[int], remove_cls_token: bool = True, effective_time_dim: int = 1,
                 h: int | None = None, patch_size: int = 16):
        super().__init__()
        if not isinstance(effective_time_dim, int) or effective_time_dim < 1:
            raise TaskConfigError("necks.ReshapeTokensToImage.effective_time_dim",
                                  f"must be a positive integer, got {effective_time_dim!r}")
        self.remove_cls_token = bool(remove_cls_token)
        self.effective_time_dim = effective_time_dim
        self.h = h
        self.patch_size = patch_size

    def _grid_height(self, tokens: int, image_size) -> int | None:
        """Rows of the patch grid of ``tokens`` tokens per time step, or None if they form no grid."""
        per_step = tokens // self.effective_time_dim
        if self.h:
            return int(self.h)
        if image_size is not None:
            H, W = int(image_size[0]), int(image_size[1])
            if (H // self.patch_size) * (W // self.patch_size) == per_step:
                return H // self.patch_size
        root = math.isqrt(per_step)
        if root * root == per_step:
            return root
        if image_size is None or per_step == 0:
            return None
        patch = (int(image_size[0]) * int(image_size[1]) / per_step) ** 0.5  # terratorch's rule
        return None if patch % 1 else int(int(image_size[0]) // patch)

    def forward(self, features: list, image_size=None) -> list:
        out = []
        for x in features:
            if x.dim() >= 4:
                out.append(x)
                continue
            if x.dim() != 3:
                raise TaskConfigError("necks.ReshapeTokensToImage",
                                      f"expected tokens [B, N, D] or images [B, C, H, W], got {tuple(x.shape)}")
            tokens, h = x, None
            if self.remove_cls_token:
                h = self._cls_grid_height(x.shape[1] - 1, image_size)
                if h is not None:
                    tokens = x[:, 1:]
            if h is None:  # no class token (TerraMind has none): terratorch warns and keeps every token
                h = self._grid_height(tokens.shape[1], image_size)
            if h is None:
                raise TaskConfigError("necks.ReshapeTokensToImage",
                                      f"cannot find the patch grid of {tokens.shape[1]} tokens (input {image_size})")
            B, N, D = tokens.shape
            t = self.effective_time_dim
            w = N // (t * h)
            # [B, (t h w), D] -> [B, t, h, w, D] -> [B, t, D, h, w] -> [B, t * D, h, w]
            out.append(tokens.reshape(B, t, h, w, D).permute(0, 1, 4, 2, 3).reshape(B, t * D, h, w))
        return out

    def _cls_grid_height(self, tokens: int, image_size) -> int | None:
        """terratorch's test whether the tokens after a class token form a grid: a square count, or a whole
        patch size for the input size."""
        per_step = tokens // self.effective_time_dim
        if self.h:
            return int(self.h)
        root = math.isqrt(max(per_step, 0))
        if per_step > 0 and root * root == per_step:
            return root
        if image_size is None or per_step <= 0:
            return None
        patch = (int(image_size[0]) * int(image_size[1]) / per_step) ** 0.5
        return None if patch % 1 else int(int(image_size[0]) // patch)


class InterpolateToPyramidal(Neck):
    """Upsample feature ``i`` of ``n`` by ``scale_factor ** (n - i)`` (first the largest)."""

    def __init__(self, channels: list[int], scale_factor: int = 2, mode: str = "nearest"):
        super().__init__()
        self.scale_factor = scale_factor
        self.mode = mode

    def forward(self, features: list, image_size=None) -> list:
        n = len(features)
        return [F.interpolate(x, scale_factor=self.scale_factor ** (n - i), mode=self.mode)
                for i, x in enumerate(features)]


class MaxpoolToPyramidal(Neck):
    """Max-pool feature ``i`` by ``kernel_size ** i`` (the first unchanged)."""

    def __init__(self, channels: list[int], kernel_size: int = 2):
        super().__init__()
        self.kernel_size = kernel_size

    def forward(self, features: list, image_size=None) -> list:
        return [x if i == 0 else F.max_pool2d(x, kernel_size=self.kernel_size ** i) for i, x in enumerate(features)]


class LearnedInterpolateToPyramidal(Neck):
    """Four features to strides 4, 8, 16, 32 of the input: two learned 2x up-convolutions (with BatchNorm and
    GELU between), one, identity, a 2x max-pool."""

    def __init__(self, channels: list[int]):
        super().__init__()
        if len(channels) != 4:
            raise TaskConfigError("necks.LearnedInterpolateToPyramidal",
                                  f"needs exactly 4 input features, got {len(channels)}")
        c0, c1 = channels[0], channels[1]
        self.fpn1 = nn.Sequential(nn.ConvTranspose2d(c0, c0 // 2, 2, 2), nn.BatchNorm2d(c0 // 2), nn.GELU(),
                                  nn.ConvTranspose2d(c0 // 2, c0 // 4, 2, 2))
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(c1, c1 // 2, 2, 2))
        self.fpn3 = nn.Sequential(nn.Identity())
        self.fpn4 = nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2))

    def forward(self, features: list, image_size=None) -> list:
        return [self.fpn1(features[0]), self.fpn2(features[1]), self.fpn3(features[2]), self.fpn4(features[3])]

    def out_channels(self, channels: list[int]) -> list[int]:
        return [channels[0] // 4, channels[1] // 2, channels[2], channels[3]]


class AddBottleneckLayer(Neck):
    """Append a 1x1 convolution of the last feature to half its channels."""

    def __init__(self, channels: list[int]):
        super().__init__()
        self.bottleneck = nn.Conv2d(channels[-1], channels[-1] // 2, kernel_size=1)

    def forward(self, features: list, image_size=None) -> list:
        return [*features, self.bottleneck(features[-1])]

    def out_channels(self, channels: list[int]) -> list[int]:
        return [*channels, channels[-1] // 2]


class PermuteDims(Neck):
    """``tensor.permute(*new_order)`` on every feature."""

    def __init__(self, channels: list[int], new_order: list[int]):
        super().__init__()
        self.new_order = list(new_order)

    def forward(self, features: list, image_size=None) -> list:
        return [x.permute(*self.new_order).contiguous() for x in features]


NECKS: dict[str, type[Neck]] = {cls.__name__: cls for cls in (
    SelectIndices, ReshapeTokensToImage, InterpolateToPyramidal, MaxpoolToPyramidal, LearnedInterpolateToPyramidal,
    AddBottleneckLayer, PermuteDims)}


class NeckChain(nn.Sequential):
    """The necks of a config in order; parameter names ``neck.<i>.*`` as terratorch's ``NeckSequential``."""

    def forward(self, features: list, image_size=None) -> list:  # type: ignore[override]
        for neck in self:
            features = neck(features, image_size)
        return features


def build_necks(specs: list | None, channels: list[int]) -> tuple[NeckChain, list[int]]:
    """The neck chain of a config's ``necks`` list (``[{"name": ..., <args>}, ...]``) and the channels after it."""
    if specs is None:
        specs = []
    if not isinstance(specs, list):
        raise TaskConfigError("model_args.necks", f"must be a list of {{name: ..., ...}} objects, got {specs!r}")
    necks = []
    channels = list(channels)
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or "name" not in spec:
            raise TaskConfigError(f"model_args.necks[{i}]", f"needs a 'name', got {spec!r}")
        name = spec["name"]
        cls = NECKS.get(name)
        if cls is None:
            raise TaskConfigError(f"model_args.necks[{i}].name",
                                  f"neck {name!r} is not supported; supported: {', '.join(NECKS)}")
        args = {k: v for k, v in spec.items() if k != "name"}
        if name == "ReshapeTokensToImage" and args.pop("temporal_inputs", False):
            raise TaskConfigError(f"model_args.necks[{i}].temporal_inputs", "not supported (embedding workflows)")
        try:
            neck = cls(channels, **args)
        except TypeError as exc:
            raise TaskConfigError(f"model_args.necks[{i}]", f"{name}: {exc}") from None
        channels = neck.out_channels(channels)
        necks.append(neck)
    return NeckChain(*necks), channels

