"""Small building blocks shared by the neck, the view transforms, the BEV decoder and the heads."""

from __future__ import annotations

from torch import nn


def conv_norm_act(
    in_channels: int, out_channels: int, kernel_size: int = 3, activation: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    """k x k conv (no bias: the norm follows) + InstanceNorm + activation; spatial size kept."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.InstanceNorm2d(out_channels),
        activation(),
    )
