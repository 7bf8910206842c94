"""What every Triton launch shares: the device context of its tensors and the rule for autograd.

Liger-Kernel's habit: a kernel launched for tensors on ``cuda:1`` while ``cuda:0`` is current would run on
the wrong device (or fault), so each launch enters the device of its inputs. And the package's kernels are
forward-only: a call that autograd records goes to the torch implementation instead (``needs_grad``).
"""

from __future__ import annotations

import contextlib

import torch


def device_guard(device: torch.device) -> contextlib.AbstractContextManager:
    """The CUDA device context of ``device`` (launches go to the tensors' GPU); nothing for other devices."""
    if device.type == "cuda":
        return torch.cuda.device(device)
    return contextlib.nullcontext()


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd records a call on ``tensors`` (grad mode on and one of them requires grad)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
