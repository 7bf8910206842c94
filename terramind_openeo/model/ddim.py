"""DDIM sampling as the TerraMind diffusion tokenizers were trained and are decoded.

Schedule (facts of the official tokenizers): 1000 training steps, linear betas 1e-4..0.02 rescaled to zero terminal
SNR (Lin et al. 2023), "trailing" spacing of the inference steps, eta = 0 (deterministic once the start noise is
drawn), the network predicts the clean sample, and that prediction is thresholded before each update.

Thresholding is the Imagen "dynamic thresholding" of the reference with its settings: ratio 0.995 and
``sample_max_value`` = ``threshold``; with the default ``threshold=1.0`` the dynamic bound is clamped to exactly 1,
i.e. the predicted clean sample is clipped to [-1, 1] in standardised units. ``threshold=None`` disables it.

Quirk kept for equivalence: with trailing spacing the step ratio is ``1000 // steps``, so a step count that does
not divide 1000 runs one extra step (e.g. 3 -> timesteps 999, 666, 333, 0), exactly as the reference does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from terramind_openeo.model.generation_errors import SamplingParameterError


def zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Rescale betas so that the last step has zero signal-to-noise ratio (keeping the first step's)."""
    sqrt_abar = torch.cumprod(1 - betas, dim=0).sqrt()
    first, last = sqrt_abar[0].clone(), sqrt_abar[-1].clone()
    sqrt_abar = (sqrt_abar - last) * (first / (first - last))
    abar = sqrt_abar**2
    alphas = torch.cat([abar[0:1], abar[1:] / abar[:-1]])
    return 1 - alphas


@dataclass(frozen=True)
class DDIMSchedule:
    num_train_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    rescale_zero_terminal_snr: bool = True
    dynamic_threshold_ratio: float = 0.995
    alphas_cumprod: torch.Tensor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        betas = torch.linspace(self.beta_start, self.beta_end, self.num_train_timesteps, dtype=torch.float32,
                               device="cpu")  # never on meta, even when built under a meta device
        if self.rescale_zero_terminal_snr:
            betas = zero_terminal_snr(betas)
        object.__setattr__(self, "alphas_cumprod", torch.cumprod(1.0 - betas, dim=0))

    def timesteps(self, steps: int) -> list[int]:
        """Trailing spacing: ``[999, 999 - r, ...]`` with ``r = 1000 // steps`` (see the module note)."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise SamplingParameterError(f"timesteps must be an integer >= 1, got {steps!r}")
        if steps > self.num_train_timesteps:
            raise SamplingParameterError(
                f"timesteps must be at most {self.num_train_timesteps} (the training steps), got {steps}")
        ratio = self.num_train_timesteps // steps
        return [t - 1 for t in range(self.num_train_timesteps, 0, -ratio)]

    def step_ratio(self, steps: int) -> int:
        return self.num_train_timesteps // steps

    def threshold_sample(self, x0: torch.Tensor, threshold: float | None) -> torch.Tensor:
        """Dynamic thresholding of the predicted clean sample ``[B, C, H, W]`` (see the module note)."""
        if threshold is None:
            return x0
        if threshold == 1.0:
            # the per-sample bound s = clamp(quantile, 1, 1) is exactly 1: a plain clip, without the quantile
            return x0.clamp(-1.0, 1.0)
        B = x0.shape[0]
        flat = x0.float().reshape(B, -1)
        s = torch.quantile(flat.abs(), self.dynamic_threshold_ratio, dim=1).clamp(min=1.0, max=threshold)[:, None]
        return (torch.clamp(flat, -s, s) / s).reshape(x0.shape).to(x0.dtype)

    def step(self, x0_pred: torch.Tensor, t: int, sample: torch.Tensor, steps: int,
             threshold: float | None = 1.0) -> torch.Tensor:
        """One eta=0 DDIM update from ``sample`` at step ``t`` given the predicted clean sample."""
        t_prev = t - self.step_ratio(steps)
        abar = self.alphas_cumprod
        a_t = abar[t]
        a_prev = abar[t_prev] if t_prev >= 0 else torch.tensor(1.0, device="cpu")
        x0 = self.threshold_sample(x0_pred, threshold)
        # predicted noise from the *unthresholded* prediction, as the reference does
        eps = (sample - a_t**0.5 * x0_pred) / (1 - a_t) ** 0.5
        return a_prev**0.5 * x0 + (1 - a_prev) ** 0.5 * eps
