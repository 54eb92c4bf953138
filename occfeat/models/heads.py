"""BEV output heads: vehicle, map (one channel per map class), center, offset."""

from __future__ import annotations

from typing import Sequence

from torch import nn

from ..errors import ConfigError
from .layers import conv_norm_act

HEAD_NAMES: tuple[str, ...] = ("vehicle", "map", "center", "offset")


def head_channels(head: str, map_classes: Sequence[str]) -> int:
    """Output channels of a head: vehicle 1 (logit), map K (logits), center 1 (logit of the centerness), offset 2
    (vector to the instance centre, in cells, (row, col))."""
    channels = {"vehicle": 1, "map": len(map_classes), "center": 1, "offset": 2}
    if head not in channels:
        raise ConfigError(f"heads: unknown head {head!r}; choose from {list(HEAD_NAMES)}.")
    return channels[head]


def build_heads(in_channels: int, heads: Sequence[str], map_classes: Sequence[str]) -> nn.ModuleDict:
    """One small conv head per name: 3x3 conv (no bias) + InstanceNorm + ReLU + 1x1 conv."""
    return nn.ModuleDict(
        {
            name: nn.Sequential(
                conv_norm_act(in_channels, in_channels), nn.Conv2d(in_channels, head_channels(name, map_classes), 1)
            )
            for name in heads
        }
    )
