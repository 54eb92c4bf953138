"""The ResNet-18-style BEV decoder of SimpleBEV (randomly initialised; also selectable for BEVFormer)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 conv + BatchNorm, identity (or 1x1 projection) shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class UpsampleAdd(nn.Module):
    """Upsample to the skip's size (bilinear), 1x1 conv + InstanceNorm, add the skip."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.InstanceNorm2d(out_channels))

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.proj(x) + skip


class ResNetBEVDecoder(nn.Module):
    """(B, C, H, W) -> (B, C, H, W). 7x7 stride-2 stem to 64, stages of 64 / 128 / 256 channels at H/2, H/4, H/8,
    then three "upsample, 1x1 conv + InstanceNorm, add skip" steps back to the input's size and width."""

    def __init__(self, channels: int = 128):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(channels, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        self.layer1 = nn.Sequential(BasicBlock(64, 64), BasicBlock(64, 64))
        self.layer2 = nn.Sequential(BasicBlock(64, 128, stride=2), BasicBlock(128, 128))
        self.layer3 = nn.Sequential(BasicBlock(128, 256, stride=2), BasicBlock(256, 256))
        self.up3 = UpsampleAdd(256, 128)
        self.up2 = UpsampleAdd(128, 64)
        self.up1 = UpsampleAdd(64, channels)

    def forward(self, x: Tensor) -> Tensor:
        s1 = self.layer1(self.stem(x))  # 64 @ H/2
        s2 = self.layer2(s1)  # 128 @ H/4
        s3 = self.layer3(s2)  # 256 @ H/8
        return self.up1(self.up2(self.up3(s3, s2), s1), x)
