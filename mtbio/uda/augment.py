"""Strong intensity augmentation of tensors (the student's target views), seeded, on the device."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mtbio.uda.config import StrongAugment

__all__ = ["gaussian_blur_inplane", "strong_augment"]


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    return (torch.rand(n, generator=generator, device=gen_device) * (high - low) + low).to(device)


def gaussian_blur_inplane(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Gaussian blur along the last two axes (Y, X) with one sigma per image.

    Args:
        x: (B, C, *spatial) float.
        sigma: (B,) sigmas in voxels (> 0).
        max_sigma: an upper bound of ``sigma`` that sets the kernel radius ``ceil(3 * max_sigma)`` (a Python
            float, so the kernel size needs no device-to-host sync).

    Returns:
        blurred tensor, same shape (reflect padding).
    """
    b, c = x.shape[:2]
    radius = max(1, math.ceil(3.0 * max_sigma))
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    k = torch.exp(-0.5 * (t[None, :] / sigma[:, None].to(x.dtype).clamp(min=1e-3)) ** 2)
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (B*C, K)
    spatial = x.shape[2:]
    y = x.reshape(1, b * c, -1, *spatial[-2:]).transpose(0, 2).reshape(-1, b * c, *spatial[-2:])  # (D, BC, H, W)
    y = F.pad(y, (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k[:, None, None, :], groups=b * c)
    y = F.conv2d(y, k[:, None, :, None], groups=b * c)
    return y.reshape(-1, 1, b * c, *spatial[-2:]).transpose(0, 2).reshape(x.shape)


def strong_augment(x: torch.Tensor, params: StrongAugment, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-image random contrast, brightness, gamma, blur and noise on z-scored images.

    Args:
        x: (B, C, H, W) or (B, C, D, H, W) float images (z-scored; C > 1: a 2.5D crop, every channel augmented
            with the image's draws).
        params: augmentation strengths.
        generator: seeded generator; random values are drawn on its device and moved to ``x.device``.

    Returns:
        augmented tensor of the same shape (a new tensor; ``x`` is not modified).
    """
    if x.ndim not in (4, 5):
        raise ValueError(f"x must be (B, C, H, W) or (B, C, D, H, W), got shape {tuple(x.shape)}")
    b, dev = x.shape[0], x.device
    view = (b,) + (1,) * (x.ndim - 1)
    dims = tuple(range(1, x.ndim))
    y = x.float()
    mean = y.mean(dim=dims, keepdim=True)
    contrast = _uniform(b, 1 - params.contrast, 1 + params.contrast, generator, dev).view(view)
    bright = _uniform(b, -params.brightness, params.brightness, generator, dev).view(view)
    y = (y - mean) * contrast + mean + bright
    if params.gamma > 0:
        gamma = torch.exp(_uniform(b, -params.gamma, params.gamma, generator, dev)).view(view)
        lo = y.amin(dim=dims, keepdim=True)
        hi = y.amax(dim=dims, keepdim=True)
        span = (hi - lo).clamp(min=1e-6)
        y = ((y - lo) / span).clamp(0, 1).pow(gamma) * span + lo
    if params.blur_prob > 0 and params.blur_sigma > 0:
        do_blur = _uniform(b, 0.0, 1.0, generator, dev) < params.blur_prob
        sigma = _uniform(b, 0.1, max(params.blur_sigma, 0.1), generator, dev)
        blurred = gaussian_blur_inplane(y, sigma, max(params.blur_sigma, 0.1))
        y = torch.where(do_blur.view(view), blurred, y)
    if params.noise_std > 0:
        std = _uniform(b, 0.0, params.noise_std, generator, dev).view(view)
        gen_device = generator.device if generator is not None else torch.device("cpu")
        noise = torch.randn(y.shape, generator=generator, device=gen_device).to(dev)
        y = y + std * noise
    return y.to(x.dtype)
