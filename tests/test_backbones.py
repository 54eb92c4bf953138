"""Image backbones: taps, ImageNet weights from a local file, a typed error (never a random backbone) when the Hub
cannot give them."""

from __future__ import annotations

import huggingface_hub
import pytest
import timm
import torch
from safetensors.torch import save_file

from occfeat.errors import ConfigError, WeightsNotCachedError
from occfeat.models import create_model
from occfeat.models.backbones import UpsampleConcatNeck, build_backbone


@pytest.mark.parametrize("name, channels", [("efficientnet_b0", [40, 112]), ("resnet50", [512, 1024])])
def test_backbone_taps_are_stride_8_and_16(name, channels):
    body, _ = build_backbone(name)
    stride8, stride16 = body(torch.randn(1, 3, 64, 128))
    assert [stride8.shape[1], stride16.shape[1]] == channels
    assert stride8.shape[-2:] == (8, 16) and stride16.shape[-2:] == (4, 8)


def test_efficientnet_stages_after_the_stride_16_tap_are_dropped():
    body, _ = build_backbone("efficientnet_b0")
    # EN-B0's blocks 5 and 6 (stride 32) would add 2.7 M parameters that never receive a gradient.
    assert sum(p.numel() for p in body.parameters()) < 1.0e6


def test_neck_gives_128_channels_at_stride_8():
    neck = UpsampleConcatNeck((40, 112), mid_channels=128, out_channels=128)
    out = neck(torch.randn(2, 40, 28, 60), torch.randn(2, 112, 14, 30))
    assert out.shape == (2, 128, 28, 60)


def test_pretrained_backbone_from_a_local_file(tmp_path):
    torch.manual_seed(1)
    imagenet = timm.create_model("efficientnet_b0")  # stands in for downloaded ImageNet weights
    path = tmp_path / "efficientnet_b0.safetensors"
    save_file({k: v.contiguous() for k, v in imagenet.state_dict().items()}, str(path))
    model = create_model("simplebev-tiny", pretrained_backbone=str(path))
    assert torch.equal(model.backbone.conv_stem.weight, imagenet.conv_stem.weight)
    assert torch.equal(model.backbone.blocks[2][0].conv_pw.weight, imagenet.blocks[2][0].conv_pw.weight)


def test_missing_pretrained_file_is_a_typed_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        create_model("simplebev-tiny", pretrained_backbone=str(tmp_path / "missing.safetensors"))


def test_unreachable_imagenet_weights_are_a_typed_error_never_a_random_backbone(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # a cold cache and no network
    with pytest.raises(WeightsNotCachedError, match=r"pretrained_backbone=PATH"):  # was: a random backbone, warned
        create_model("simplebev-tiny", pretrained_backbone=True)


def test_unknown_backbone_is_a_typed_error():
    with pytest.raises(ConfigError, match="backbone='not_a_timm_model'"):
        create_model("simplebev-tiny", backbone="not_a_timm_model")
