"""Image backbones (timm ``features_only`` trunks, optionally ImageNet-initialised) and the upsample-concat neck to 128
channels at stride 8."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..io import sha256_file
from .imagenet import PACKAGED_IMAGENET
from .layers import conv_norm_act

logger = logging.getLogger(__name__)

# ImageNet normalisation of timm's own backbones, written once in the conventions layer. TensorFlow ports (tf_*, e.g.
# Lite0) were trained with mean = std = 0.5: their architectures' configs say so.
from ..conventions import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402,F401

# The taps we read: stride 8 and stride 16. For timm's EfficientNet and ResNet feature pyramids (strides 2, 4, 8, 16,
# 32) these are feature indices 2 and 3; FeatureListNet then drops every layer after the stride-16 stage.
FEATURE_STRIDES: tuple[int, int] = (8, 16)
_OUT_INDICES: tuple[int, int] = (2, 3)


def build_backbone(name: str, pretrained: bool | str = False) -> tuple[nn.Module, dict[str, Any] | None]:
    """A timm trunk returning ``[stride-8 map, stride-16 map]``, and the identity of the ImageNet weights it was
    initialised from (None: random init).

    Args:
        name: timm model name, e.g. ``efficientnet_b0``, ``tf_efficientnet_lite0``, ``resnet50``.
        pretrained: ``False`` random init; ``True`` ImageNet weights: from an installed package for the backbones of
            ``occfeat.models.imagenet.PACKAGED_IMAGENET`` (no network; a typed error when the package is missing),
            else timm's file on the Hugging Face Hub (from the cache without a request; offline, the cache only; a
            typed error naming the file when it cannot be had, never a random backbone); a path: ImageNet weights in
            timm's layout from that local file.
    """
    kwargs: dict = dict(features_only=True, out_indices=_OUT_INDICES)
    identity: dict[str, Any] | None = None
    if isinstance(pretrained, (str, Path)) and not isinstance(pretrained, bool):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"pretrained_backbone={str(pretrained)!r}: no such file. Pass the path of a timm checkpoint of "
                f"{name!r} (.safetensors or .pth), True to fetch it through timm, or False for random init."
            )
        body = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
        identity = {"weights": "a local file", "file": path.name, "sha256": sha256_file(path), "timm_model": name}
        logger.info("backbone %s: ImageNet weights loaded from %s", name, path)
    elif pretrained and name in PACKAGED_IMAGENET:
        body = _create(name, **kwargs)
        identity = PACKAGED_IMAGENET[name].load_into(body)
        logger.info("backbone %s: %s from the package %s", name, identity["weights"], identity["package"])
    elif pretrained:
        body, identity = _from_timm_hub(name, **kwargs)
    else:
        body = _create(name, **kwargs)
    _drop_unused_stages(body)
    reductions = tuple(body.feature_info.reduction())
    if reductions != FEATURE_STRIDES:
        raise ConfigError(
            f"backbone={name!r}: feature taps {_OUT_INDICES} have strides {reductions}, expected {FEATURE_STRIDES}. "
            "Use a timm CNN with the usual 5-stage stride-2 pyramid (EfficientNet, ResNet, RegNet, ...)."
        )
    return body, identity


def _from_timm_hub(name: str, **kwargs: Any) -> tuple[nn.Module, dict[str, Any]]:
    """timm's ImageNet weights of ``name``, fetched by occfeat rather than by timm: timm's download retries an
    unreachable Hub for about 46 s, and a failure must stop the build, never leave a random backbone. From the cache
    without a request when it is there; offline, from the cache only; otherwise one attempt. Raises
    ``WeightsNotCachedError`` / ``HubError`` naming the file and the fixes."""
    import occfeat  # the top-level API, not the zoo layer: models sit below the zoo

    if not timm.is_model(name.split(".")[0]):
        _create(name, **kwargs)  # raises the ConfigError for an unknown backbone
    path, source = occfeat.fetch_timm_weights(name, what=f"ImageNet weights of backbone {name!r}",
                                      local_option="pretrained_backbone=PATH")
    body = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=str(path)), **kwargs)
    logger.info("backbone %s: ImageNet weights loaded through the Hub (%s)", name, source["hf_hub_id"])
    return body, {"weights": "timm's ImageNet weights", "timm_model": name, **source, "sha256": sha256_file(path)}


def _create(name: str, **kwargs: Any) -> nn.Module:
    # Only an unknown name is the backbone's fault: any other RuntimeError (e.g. no CUDA under a cuda device context)
    # must reach the user as itself, not as a backbone problem.
    if not timm.is_model(name.split(".")[0]):
        raise ConfigError(f"backbone={name!r}: timm knows no such model. Any timm CNN with stride-8/16 feature taps "
                          "works, e.g. efficientnet_b0, tf_efficientnet_lite0, resnet50.")
    return timm.create_model(name, pretrained=False, **kwargs)


def _drop_unused_stages(body: nn.Module) -> None:
    """Remove the stages after the deepest tap. timm's ``FeatureListNet`` (ResNet, ...) already stops there, but
    ``EfficientNetFeatures`` keeps and runs every block: 2.7 M unused parameters for EN-B0 that would also make DDP
    complain about parameters without gradients."""
    stage_out = getattr(body, "_stage_out_idx", None)
    if stage_out is not None and hasattr(body, "blocks"):
        body.blocks = body.blocks[: max(stage_out)]


class UpsampleConcatNeck(nn.Module):
    """Stride-16 map upsampled x2 (bilinear) and concatenated with the stride-8 map, two 3x3 conv + InstanceNorm +
    ReLU to ``mid_channels``, then a 1x1 conv to ``out_channels``.

    Input: stride-8 (B, C8, H/8, W/8) and stride-16 (B, C16, H/16, W/16). Output: (B, out_channels, H/8, W/8).
    """

    def __init__(self, in_channels: tuple[int, int], mid_channels: int, out_channels: int = 128):
        super().__init__()
        self.fuse = nn.Sequential(
            conv_norm_act(sum(in_channels), mid_channels),
            conv_norm_act(mid_channels, mid_channels),
            nn.Conv2d(mid_channels, out_channels, kernel_size=1),
        )

    def forward(self, stride8: Tensor, stride16: Tensor) -> Tensor:
        up = F.interpolate(stride16, size=stride8.shape[-2:], mode="bilinear", align_corners=False)
        return self.fuse(torch.cat([stride8, up], dim=1))
