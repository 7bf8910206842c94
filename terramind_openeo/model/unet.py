"""The patched, code-conditioned UNet that denoises in the diffusion tokenizers (S2L2A, S1GRD, S1RTC, DEM, NDVI).

Architecture as the official checkpoints define it (an ADM/"guided diffusion" UNet run on 4x4 patches, the FSQ
code map upsampled by nearest neighbour and concatenated to the patches): 256 base channels, multipliers
1-2-2-2, 3 residual blocks per level, single-head self-attention at 4x and 8x downsampling, GroupNorm(32).
Module names mirror the checkpoint keys (``decoder.input_blocks.1.0.in_layers.2.weight``...), so the
state dicts load unchanged; the layers are written for inference speed (GroupNorm and SiLU back to back
in place, channels-last friendly attention through SDPA, one timestep embedding per step for the batch).

Spatial sizes: the image side must be a multiple of ``patch_size * 2**(levels-1)`` = 32, so that the three
downsamplings and upsamplings of the patch grid line up (224 px -> 56 -> 28 -> 14 -> 7).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from terramind_openeo.kernels import prepack
from terramind_openeo.model.generation_errors import GenerationError


@dataclass(frozen=True)
class UNetConfig:
    in_channels: int  # image channels (S2L2A 12, S1 2, DEM 1, NDVI 1)
    cond_channels: int = 5  # FSQ code channels
    patch_size: int = 4
    model_channels: int = 256
    num_res_blocks: int = 3
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    attention_resolutions: tuple[int, ...] = (4, 8)
    num_heads: int = 1
    groups: int = 32
    norm_eps: float = 1e-5

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this."""
        return self.patch_size * 2 ** (len(self.channel_mult) - 1)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[N, dim]`` of timesteps ``[N]`` (cosines first, then sines)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


def _group_norm_silu(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    # GroupNorm in fp32 (as the reference), then SiLU in place on the fresh tensor: one allocation, not two
    y = F.group_norm(x.float(), norm.num_groups, norm.weight.float(), norm.bias.float(), norm.eps)
    return F.silu(y, inplace=True).to(x.dtype)


class ResBlock(nn.Module):
    """GN-SiLU-conv, + timestep bias, GN-SiLU-conv, + skip (1x1 conv when the width changes)."""

    def __init__(self, channels: int, emb_channels: int, out_channels: int, cfg: UNetConfig):
        super().__init__()
        self.in_layers = nn.Sequential(nn.GroupNorm(cfg.groups, channels, eps=cfg.norm_eps), nn.SiLU(),
                                       nn.Conv2d(channels, out_channels, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        self.out_layers = nn.Sequential(nn.GroupNorm(cfg.groups, out_channels, eps=cfg.norm_eps), nn.SiLU(),
                                        nn.Dropout(0.0), nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = (nn.Identity() if out_channels == channels
                                else nn.Conv2d(channels, out_channels, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = prepack.conv2d(self.in_layers[2], _group_norm_silu(self.in_layers[0], x))
        h = h + self.emb_layers[1](F.silu(emb)).to(h.dtype)[:, :, None, None]  # [B|1, C, 1, 1]
        skip = x if isinstance(self.skip_connection, nn.Identity) else prepack.conv2d(self.skip_connection, x)
        # skip + conv(h), the addition inside the convolution kernel (same numbers)
        return prepack.conv2d(self.out_layers[3], _group_norm_silu(self.out_layers[0], h), other=skip)


class AttentionBlock(nn.Module):
    """Self-attention over all positions of a feature map (heads split before q/k/v, as the "legacy" order)."""

    def __init__(self, channels: int, cfg: UNetConfig):
        super().__init__()
        self.num_heads = cfg.num_heads
        self.norm = nn.GroupNorm(cfg.groups, channels, eps=cfg.norm_eps)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        heads, ch = self.num_heads, C // self.num_heads
        h = F.group_norm(x.float(), self.norm.num_groups, self.norm.weight.float(), self.norm.bias.float(),
                         self.norm.eps)
        h = h.to(x.dtype).permute(0, 2, 3, 1).reshape(B, H * W, C)  # [B, T, C] (free for channels-last input)
        qkv = F.linear(h, self.qkv.weight[:, :, 0], self.qkv.bias)  # [B, T, 3C], channels ordered (head, q|k|v, ch)
        qkv = qkv.view(B, H * W, heads, 3, ch).permute(3, 0, 2, 1, 4)  # [3, B, heads, T, ch]
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # [B, heads, T, ch]
        y = y.transpose(1, 2).reshape(B, H * W, C)  # [B, T, C], channels ordered (head, ch)
        y = F.linear(y, self.proj_out.weight[:, :, 0], self.proj_out.bias)
        return x + y.view(B, H, W, C).permute(0, 3, 1, 2)  # back to [B, C, H, W] (channels-last strides)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return prepack.conv2d(self.op, x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return prepack.conv2d(self.conv, F.interpolate(x, scale_factor=2, mode="nearest"))


class StepSequential(nn.ModuleList):
    """Layers applied in turn; residual blocks also get the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, nn.Conv2d):
                x = prepack.conv2d(layer, x)
            else:
                x = layer(x)
        return x


class PatchedUNet(nn.Module):
    """``forward(sample [B, C, H, W], t, cond [B, 5, H/16, W/16]) -> prediction [B, C, H, W]``."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        mc, p = cfg.model_channels, cfg.patch_size
        emb_dim = 4 * mc
        in_p = cfg.in_channels * p * p + cfg.cond_channels
        out_p = cfg.in_channels * p * p
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

        ch = int(cfg.channel_mult[0] * mc)
        self.input_blocks = nn.ModuleList([StepSequential([nn.Conv2d(in_p, ch, 3, padding=1)])])
        skip_chans, ds = [ch], 1
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers: list[nn.Module] = [ResBlock(ch, emb_dim, int(mult * mc), cfg)]
                ch = int(mult * mc)
                if ds in cfg.attention_resolutions:
                    layers.append(AttentionBlock(ch, cfg))
                self.input_blocks.append(StepSequential(layers))
                skip_chans.append(ch)
            if level != len(cfg.channel_mult) - 1:
                self.input_blocks.append(StepSequential([Downsample(ch)]))
                skip_chans.append(ch)
                ds *= 2
        self.middle_block = StepSequential([ResBlock(ch, emb_dim, ch, cfg), AttentionBlock(ch, cfg),
                                            ResBlock(ch, emb_dim, ch, cfg)])
        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(cfg.channel_mult))[::-1]:
            for i in range(cfg.num_res_blocks + 1):
                layers = [ResBlock(ch + skip_chans.pop(), emb_dim, int(mc * mult), cfg)]
                ch = int(mc * mult)
                if ds in cfg.attention_resolutions:
                    layers.append(AttentionBlock(ch, cfg))
                if level and i == cfg.num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(StepSequential(layers))
        self.out = nn.Sequential(nn.GroupNorm(cfg.groups, ch, eps=cfg.norm_eps), nn.SiLU(),
                                 nn.Conv2d(ch, out_p, 3, padding=1))

    def check_size(self, height: int, width: int) -> None:
        m = self.cfg.size_multiple
        if height % m or width % m:
            raise GenerationError(f"the diffusion decoder needs image sides that are multiples of {m} px, "
                             f"got {height}x{width}")

    def forward(self, sample: torch.Tensor, t: torch.Tensor | int, cond: torch.Tensor,
                channels_last: bool = False) -> torch.Tensor:
        B, C, H, W = sample.shape
        p = self.cfg.patch_size
        self.check_size(H, W)
        nh, nw = H // p, W // p
        # patchify [B, C, H, W] -> [B, C*p*p, nh, nw] (channel-major, then row and column inside the patch)
        x = sample.reshape(B, C, nh, p, nw, p).permute(0, 1, 3, 5, 2, 4).reshape(B, C * p * p, nh, nw)
        cond = F.interpolate(cond.to(x.dtype), size=(nh, nw), mode="nearest")  # [B, 5, nh, nw]
        h = torch.cat([x, cond], dim=1)
        if channels_last:
            h = h.contiguous(memory_format=torch.channels_last)

        t = torch.as_tensor(t, device=sample.device).reshape(-1)  # [1] or [B]
        t_emb = timestep_embedding(t, self.cfg.model_channels).to(self.time_embed[0].weight.dtype)
        emb = self.time_embed(t_emb).to(h.dtype)  # [1|B, 4*mc]

        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        h = prepack.conv2d(self.out[2], _group_norm_silu(self.out[0], h))  # [B, C*p*p, nh, nw]
        # unpatchify back to [B, C, H, W]
        return h.reshape(B, C, p, p, nh, nw).permute(0, 1, 4, 2, 5, 3).reshape(B, C, H, W)
