"""The assembled BEV segmentation network.

Named parts (each one is also its state-dict prefix)::

    backbone        timm trunk, stride-8 and stride-16 taps             images -> 2 maps per camera
    neck            upsample-concat to ``bev_channels`` at stride 8     -> (B, N, C, H/8, W/8)
    view_transform  BEVFormer encoder or SimpleBEV lifting              -> (B, C, H_bev, W_bev)
    decoder         ResNet-18-style BEV decoder, or identity            -> (B, C, H_bev, W_bev)  = forward_features
    heads           one small conv head per output                      -> {"vehicle", "map", "center", "offset"}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..conventions.geometry import raster_to_ego
from ..errors import InputError
from .backbones import FEATURE_STRIDES, UpsampleConcatNeck, build_backbone
from .bevformer import BEVFormerEncoder
from .config import BEVModelConfig
from .decoder import ResNetBEVDecoder
from .heads import build_heads
from .load_report import LoadReport
from .ops import exporting
from .simplebev import BilinearLifting

PARTS: tuple[str, ...] = ("backbone", "neck", "view_transform", "decoder", "heads")


def check_inputs(
    images: Tensor, intrinsics: Tensor, cam_to_ego: Tensor, bev_aug: Tensor | None
) -> tuple[int, int, tuple[int, int]]:
    """Validate a camera batch; returns (B, N, (H, W)). Raises ``InputError`` naming the argument and the shapes."""
    if images.dim() == 5 and images.shape[2] != 3 and images.shape[-1] == 3:
        raise InputError(
            f"images: got shape {tuple(images.shape)}, channels last; expected (B, N, 3, H, W). Move the channels "
            "with images.permute(0, 1, 4, 2, 3)."
        )
    if images.dim() != 5 or images.shape[2] != 3:
        raise InputError(
            f"images: got shape {tuple(images.shape)}, expected (B, N, 3, H, W) (batch, cameras, RGB, height, width). "
            "For a single sample add the batch dimension with images[None]."
        )
    if not images.is_floating_point():
        raise InputError(
            f"images: got {images.dtype}; the network takes float images normalised with config.image_mean / "
            "image_std. Convert them with model.transforms() (uint8 or 0-1 float, any size, with the intrinsics)."
        )
    b, n, _, h, w = images.shape
    expected = {"intrinsics": (b, n, 3, 3), "cam_to_ego": (b, n, 4, 4)}
    for name, tensor in (("intrinsics", intrinsics), ("cam_to_ego", cam_to_ego)):
        if tuple(tensor.shape) != expected[name]:
            hint = (
                f" The camera count differs: images has N={n}, {name} has {tensor.shape[1]}; give every camera its "
                "calibration, in the same order."
                if tensor.dim() == 4 and tensor.shape[0] == b and tensor.shape[1] != n
                else ""
            )
            raise InputError(f"{name}: got shape {tuple(tensor.shape)}, expected {expected[name]} (B, N, ...).{hint}")
        if not exporting() and not torch.isfinite(tensor).all():  # data-dependent: not in a program
            raise InputError(
                f"{name}: contains NaN or Inf. Check the calibration of every camera (a missing sensor record or an "
                "intrinsics update that divided by zero)."
            )
    if not exporting():  # data-dependent: not in a program
        # The principal point of a camera lies in its image; outside it, the intrinsics belong to another image size
        # (the sensor's 1600x900, say) and every projection would land in the wrong place without an error.
        cx, cy = intrinsics[..., 0, 2], intrinsics[..., 1, 2]
        outside = (cx < 0) | (cx > w) | (cy < 0) | (cy > h)
        if outside.any():
            i, j = (int(k) for k in outside.nonzero()[0])
            raise InputError(
                f"intrinsics: camera {j} of sample {i} has its principal point at ({float(cx[i, j]):.0f}, "
                f"{float(cy[i, j]):.0f}) px, outside the {h}x{w} images: they are for another image size. Resize the "
                "images with model.transforms(), which updates the intrinsics with them "
                "(occfeat.models.geometry.update_intrinsics does it for your own resize)."
            )
    if bev_aug is not None:
        if tuple(bev_aug.shape) != (b, 4, 4):
            raise InputError(f"bev_aug: got shape {tuple(bev_aug.shape)}, expected {(b, 4, 4)} (one 4x4 per sample).")
        if not exporting() and not torch.isfinite(bev_aug).all():
            raise InputError("bev_aug: contains NaN or Inf.")
    stride = max(FEATURE_STRIDES)
    if h % stride or w % stride:
        raise InputError(
            f"images: size (H, W) = ({h}, {w}) is not a multiple of {stride} (the backbone's deepest stride). "
            f"Resize or crop to a multiple of {stride}, e.g. {(h // stride * stride, w // stride * stride)}, and "
            "update the intrinsics accordingly (occfeat.models.geometry.update_intrinsics)."
        )
    return b, n, (h, w)


class BEVModel(nn.Module):
    """Camera-only BEV segmentation network (BEVFormer-seg or SimpleBEV).

    >>> model = BEVModel(BEVModelConfig(view_transform="simplebev"))  # doctest: +SKIP
    >>> out = model(images, intrinsics, cam_to_ego)  # doctest: +SKIP
    >>> out["vehicle"].shape  # (B, 1, 200, 200) logits  # doctest: +SKIP
    """

    def __init__(self, config: BEVModelConfig, pretrained_backbone: bool | str = False):
        super().__init__()
        self.config = config
        self.backbone, backbone_init = build_backbone(config.backbone, pretrained_backbone)
        for part in PARTS[1:]:
            setattr(self, part, self.build_part(part))
        # How the network was initialised; ``occfeat.load`` replaces the report and adds where loaded weights came
        # from. ``backbone_init`` (the ImageNet weights' identity) travels on into run.json and exported cards.
        self.provenance: dict[str, Any] = {"backbone_init": backbone_init} if backbone_init else {}
        self.load_report = LoadReport(
            source=config.arch, backbone_init=backbone_init,
            loaded=[f"backbone.{key}" for key in self.backbone.state_dict()] if backbone_init else [],
            skipped_parts=list(PARTS[1:] if backbone_init else PARTS),
        )

    def build_part(self, part: str) -> nn.Module:
        """A freshly (randomly) initialised ``part``: what the zoo uses for a part it does not load, e.g. heads for
        other classes."""
        config, c = self.config, self.config.bev_channels
        if part == "backbone":
            return build_backbone(config.backbone)[0]
        if part == "neck":
            return UpsampleConcatNeck(tuple(self.backbone.feature_info.channels()), config.neck_channels, c)
        if part == "view_transform":
            if config.view_transform == "bevformer":
                return BEVFormerEncoder(
                    config.grid,
                    dim=c,
                    layers=config.bevformer_layers,
                    heads=config.bevformer_heads,
                    self_points=config.bevformer_self_points,
                    cross_points=config.bevformer_cross_points,
                    ffn_dim=config.bevformer_ffn_channels,
                    dropout=config.dropout,
                )
            return BilinearLifting(config.grid, c, lifting=config.lifting)
        if part == "decoder":
            return ResNetBEVDecoder(c) if config.decoder == "resnet18" else nn.Identity()
        if part == "heads":
            return build_heads(c, config.heads, config.map_classes)
        raise InputError(f"part={part!r}: expected one of {list(PARTS)}.")

    def set_activation_checkpointing(self, enabled: bool = True) -> "BEVModel":
        """Trade compute for memory in training: the backbone's stages (timm's grad checkpointing) and BEVFormer's
        encoder layers recompute their activations in backward instead of keeping them (dropout masks replayed, so
        gradients are unchanged). Returns self."""
        if hasattr(self.backbone, "set_grad_checkpointing"):
            self.backbone.set_grad_checkpointing(enabled)
        if hasattr(self.view_transform, "activation_checkpointing"):
            self.view_transform.activation_checkpointing = enabled
        return self

    def image_features(self, images: Tensor) -> Tensor:
        """(B, N, 3, H, W) normalised images -> (B, N, C, H/8, W/8)."""
        b, n = images.shape[:2]
        stride8, stride16 = self.backbone(images.flatten(0, 1))
        features = self.neck(stride8, stride16)
        return features.view(b, n, *features.shape[1:])

    # ---- the Hugging Face habits: thin aliases of the zoo's functions ------------------------------------------
    @classmethod
    def from_pretrained(cls, name: str, **kwargs: Any) -> BEVModel:
        """``occfeat.load(name, **kwargs)``: a weight id or alias, ``hf-hub:REPO``, ``local-dir:PATH`` or a folder."""
        import occfeat  # the top-level API, not the zoo layer: models sit below the zoo

        return occfeat.load(name, **kwargs)

    def save_pretrained(self, folder: str | Path, **kwargs: Any) -> dict[str, str]:
        """``occfeat.save_pretrained(self, folder, **kwargs)``: config.json, model.safetensors and a card."""
        import occfeat

        return occfeat.save_pretrained(self, folder, **kwargs)

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> dict[str, Any]:
        """``occfeat.push_to_hub(self, repo_id, **kwargs)``: saved to a temporary folder, then uploaded."""
        import occfeat

        return occfeat.push_to_hub(self, repo_id, **kwargs)

    def transforms(self) -> Any:
        """The input pipeline this network expects (``occfeat.zoo.transforms.CameraTransform``): camera images at any
        size, uint8 or 0-1 float, and their intrinsics -> normalised images at ``config.image_size`` and the matching
        intrinsics. Any loaded network has one, whatever it was loaded from."""
        import occfeat

        config = self.config
        return occfeat.CameraTransform(tuple(config.image_size), tuple(config.image_mean), tuple(config.image_std))

    def forward_features(
        self, images: Tensor, intrinsics: Tensor, cam_to_ego: Tensor, bev_aug: Tensor | None = None
    ) -> Tensor:
        """The BEV feature map before the heads, (B, C, H_bev, W_bev): what pretraining heads attach to.

        Args:
            images: (B, N, 3, H, W), normalised with ``config.image_mean`` / ``image_std``.
            intrinsics: (B, N, 3, 3) for the given image size.
            cam_to_ego: (B, N, 4, 4).
            bev_aug: (B, 4, 4) augmented-BEV -> ego transform; identity when None.
        """
        b, _, image_hw = check_inputs(images, intrinsics, cam_to_ego, bev_aug)
        if tuple(image_hw) != tuple(self.config.image_size):
            h, w = self.config.image_size
            raise InputError(
                f"images: {image_hw[0]}x{image_hw[1]}, but this network takes {h}x{w} (config.image_size): features "
                "of another scale than it learned, and intrinsics that must match either size. Resize the raw images "
                f"with model.transforms() (it updates the intrinsics), or build the network at your size: "
                f"occfeat.create_model({self.config.arch!r}, image_size=({image_hw[0]}, {image_hw[1]}))."
            )
        weights_dtype = next(self.parameters()).dtype
        if images.dtype != weights_dtype and not torch.is_autocast_enabled(images.device.type):
            raise InputError(
                f"images: got {images.dtype}, the network's weights are {weights_dtype}. Convert the images "
                f"(images.to({weights_dtype})), or run under torch.autocast for mixed precision."
            )
        if bev_aug is None:
            bev_aug = torch.eye(4, device=images.device).expand(b, 4, 4)
        # The raster's own frame (the ego's, or a camera's for Simple-BEV's weights) composed with the augmentation.
        raster = raster_to_ego(bev_aug, cam_to_ego, self.config.raster_frame, self.config.raster_camera)
        features = self.image_features(images)
        bev = self.view_transform(features, intrinsics, cam_to_ego, raster.float(), image_hw)
        return self.decoder(bev)

    def forward(
        self, images: Tensor, intrinsics: Tensor, cam_to_ego: Tensor, bev_aug: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Raw head outputs, each (B, K, H_bev, W_bev): ``vehicle`` and ``map`` logits, ``center`` logit (sigmoid gives
        the centerness), ``offset`` in cells (row, col). Arguments as in ``forward_features``."""
        bev = self.forward_features(images, intrinsics, cam_to_ego, bev_aug)
        return {name: head(bev) for name, head in self.heads.items()}
