"""Tiny deterministic networks for the inference tests (importable from a subprocess too)."""

from __future__ import annotations

import time

import torch


class Identity2(torch.nn.Module):
    """``(B, 1, *S) -> (B, 2, *S)``: the input and its negation (no parameters)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, -x], dim=1)


class Slow(torch.nn.Module):
    """Wraps a network and sleeps ``delay`` seconds per forward (the delay is not part of the state dict)."""

    def __init__(self, network: torch.nn.Module, delay: float = 0.0) -> None:
        super().__init__()
        self.network = network
        self.delay = delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.delay:
            time.sleep(self.delay)
        return self.network(x)


def tiny_unet(spatial_dims: int, seed: int = 0) -> torch.nn.Module:
    """A MONAI UNet with channels (4, 8), one stride-2 level, one residual unit; eval mode, seeded weights."""
    from monai.networks.nets import UNet

    torch.manual_seed(seed)
    return UNet(spatial_dims, 1, 2, channels=(4, 8), strides=(2,), num_res_units=1).eval()


def conv_net(spatial_dims: int, seed: int = 0) -> torch.nn.Module:
    """Two 3-wide convolutions with a ReLU: any input size works."""
    torch.manual_seed(seed)
    conv = torch.nn.Conv3d if spatial_dims == 3 else torch.nn.Conv2d
    return torch.nn.Sequential(conv(1, 4, 3, padding=1), torch.nn.ReLU(), conv(4, 2, 3, padding=1)).eval()
