"""Simple-BEV's released camera-only checkpoint (aharley/simple_bev, ``get_rgb_model.sh``) as an occfeat network.

Simple-BEV (Harley et al., ICRA 2023) trains a ResNet-101 SimpleBEV on nuScenes and reports 47.6 vehicle IoU at 448x800.
occfeat's ``simplebev-r101`` is the same design; ``convert_simple_bev_checkpoint`` maps the checkpoint's tensors onto
it and writes a ``save_pretrained`` folder whose config makes the network compute what Simple-BEV's ``Segnet``
computes, with no special code path in the user's script:

- ``raster_frame="camera"``, ``raster_camera=1``: the raster is CAM_FRONT's frame (occfeat's camera order puts it at
  index 1; Simple-BEV's ``move_refcam`` puts it at 0), axes as ``conventions.geometry.SIMPLE_BEV_RASTER_TO_CAMERA``;
  occfeat's default grid then has Simple-BEV's voxel centres (x, z in [-50, 50], y in [-4, 6] after its
  ``scene_centroid``), so row = Simple-BEV's Z index, column = its X index, height = its Y index;
- ``lifting="simple-bev"``: Simple-BEV's feature sampling and masked mean (``models.simplebev.BilinearLifting``);
- the channel fold: Simple-BEV folds the volume as channel ``c * Y + y``, occfeat as ``y * C + c``: the compressor's
  input channels are permuted here, at conversion;
- the offset head: Simple-BEV predicts (cell - centre) as (X, Z) = (column, row); occfeat's ``offset`` is
  (centre - cell) as (row, column): its last convolution is negated and its two output channels swapped here.

So, element-wise, on the same inputs (``simple_bev_inputs``): ``vehicle`` = ``seg_e``, ``sigmoid(center)`` =
``center_e`` (Simple-BEV's head ends in a sigmoid, occfeat's returns the logit), ``offset[:, 0]`` = ``-offset_e[:, 1]``
and ``offset[:, 1]`` = ``-offset_e[:, 0]``. Simple-BEV's ``feat_e`` head and its three loss-balancing scalars are not
part of occfeat's network; the conversion drops them and says so.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor

from ..conventions import IMAGENET_MEAN, IMAGENET_STD
from ..conventions.geometry import BEVGrid
from ..errors import ConfigError, InputError
from ..io import check_output_path, read_pickled_weights

SOURCE = "https://github.com/aharley/simple_bev"
CHECKPOINT_URL = "https://www.dropbox.com/s/n93ryvrqyiram56/rgb_checkpoint.tar.gz"
# Simple-BEV's evaluation setting (eval_nuscenes.py): the grid over x, z in [-50, 50] m and y in [-5, 5] m shifted by
# its scene_centroid (0, 1, 0), and the images (res_scale 2: 448x800).
GRID_ZYX = (200, 8, 200)
IMAGE_SIZE = (448, 800)
BOUNDS_XZ = (-50.0, 50.0)
BOUNDS_Y = (-4.0, 6.0)  # [-5, 5] + scene_centroid y
REFERENCE_CAMERA = 1  # CAM_FRONT in occfeat's (and Simple-BEV's data_aug_conf) camera order

# Simple-BEV module prefixes -> occfeat's. The torchvision ResNet-101 trunk is nn.Sequential(conv1, bn1, relu,
# maxpool, layer1, layer2) plus layer3; timm's ResNet-101 has the same modules under their own names.
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("encoder.backbone.0.", "backbone.conv1."),
    ("encoder.backbone.1.", "backbone.bn1."),
    ("encoder.backbone.4.", "backbone.layer1."),
    ("encoder.backbone.5.", "backbone.layer2."),
    ("encoder.layer3.", "backbone.layer3."),
    ("encoder.upsampling_layer.conv.0.", "neck.fuse.0.0."),
    ("encoder.upsampling_layer.conv.3.", "neck.fuse.1.0."),
    ("encoder.depth_layer.", "neck.fuse.2."),
    ("bev_compressor.0.", "view_transform.compress.0."),
    ("decoder.first_conv.", "decoder.stem.0."),
    ("decoder.bn1.", "decoder.stem.1."),
    ("decoder.up3_skip.upsample_layer.1.", "decoder.up3.proj.0."),
    ("decoder.up2_skip.upsample_layer.1.", "decoder.up2.proj.0."),
    ("decoder.up1_skip.upsample_layer.1.", "decoder.up1.proj.0."),
    ("decoder.segmentation_head.0.", "heads.vehicle.0.0."),
    ("decoder.segmentation_head.3.", "heads.vehicle.1."),
    ("decoder.instance_center_head.0.", "heads.center.0.0."),
    ("decoder.instance_center_head.3.", "heads.center.1."),
    ("decoder.instance_offset_head.0.", "heads.offset.0.0."),
    ("decoder.instance_offset_head.3.", "heads.offset.1."),
)
_DECODER_STAGE = re.compile(r"^decoder\.(layer[123])\.(\d+)\.(.*)$")
# Not part of occfeat's network: the 'feat' head (Simple-BEV's feat_e, unused by its losses and its evaluation) and
# the uncertainty weights that balance its three losses.
_DROPPED = re.compile(r"^(decoder\.feat_head\..*|ce_weight|center_weight|offset_weight)$")
_DROPPED_GROUPS = ("decoder.feat_head (feat_e)", "ce_weight / center_weight / offset_weight (loss balancing)")


def simple_bev_config(grid_zyx: Sequence[int] = GRID_ZYX, image_size: Sequence[int] = IMAGE_SIZE):  # type: ignore[no-untyped-def]
    """The ``BEVModelConfig`` of Simple-BEV's RGB model with a (Z, Y, X) voxel grid over its bounds."""
    from ..models import get_model_config

    z, y, x = (int(v) for v in grid_zyx)
    if z != x or min(z, y) < 1:
        raise ConfigError(f"grid {tuple(grid_zyx)}: occfeat's raster has square cells, so Z must equal X (Simple-BEV "
                          "uses 200 x 8 x 200); give --grid Z Y X with Z == X.")
    if z % 8:
        raise ConfigError(f"grid {tuple(grid_zyx)}: Simple-BEV's decoder halves the raster three times and upsamples "
                          "by exactly 2, so Z and X must be multiples of 8.")
    span_xz, span_y = BOUNDS_XZ[1] - BOUNDS_XZ[0], BOUNDS_Y[1] - BOUNDS_Y[0]
    grid = BEVGrid(x_range=BOUNDS_XZ, y_range=BOUNDS_XZ, resolution=span_xz / x, z_range=BOUNDS_Y,
                   z_resolution=span_y / y)
    return get_model_config(
        "simplebev-r101", image_size=tuple(int(s) for s in image_size), grid=grid, heads=("vehicle", "center", "offset"),
        map_classes=(), raster_frame="camera", raster_camera=REFERENCE_CAMERA, lifting="simple-bev",
        image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
    )


def read_simple_bev_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The model state dict of a Simple-BEV ``saverloader`` checkpoint: a ``model-NNNNNNNNN.pth`` file, or its folder
    (the highest step, as ``saverloader.load`` picks). Read with ``torch.load(weights_only=True)``: tensors and plain
    containers only, no code runs. ``module.`` prefixes (``DataParallel``) are stripped."""
    path = Path(path).expanduser()
    if path.is_dir():
        steps = sorted(path.glob("model-*.pth"), key=lambda p: int(re.sub(r"\D", "", p.stem) or 0))
        if not steps:
            raise InputError(f"{path}: no model-*.pth in this folder. Give Simple-BEV's checkpoint file or the folder "
                             f"`tar -xf rgb_checkpoint.tar.gz` wrote ({CHECKPOINT_URL}).")
        path = steps[-1]
    if not path.is_file():
        raise InputError(f"{path} does not exist. Download Simple-BEV's checkpoint ({CHECKPOINT_URL}, as its "
                         "get_rgb_model.sh does) and give the model-*.pth it holds.")
    checkpoint = read_pickled_weights(path, expected="Simple-BEV's model-*.pth (a saverloader checkpoint)")
    state = checkpoint.get("model_state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise InputError(f"{path}: expected Simple-BEV's saverloader format ({{'model_state_dict': ..., "
                         "'optimizer_state_dict': ...}}) or a bare state dict of tensors.")
    return {k.removeprefix("module."): v for k, v in state.items()}


def simple_bev_to_occfeat(state: dict[str, Tensor], config: Any) -> tuple[dict[str, Tensor], list[str]]:
    """Simple-BEV ``Segnet`` tensors -> occfeat ``BEVModel`` tensors for ``config``; returns (state, dropped keys).

    Raises ``InputError`` naming every key that is neither mapped nor a known drop (a different Simple-BEV variant:
    radar/Lidar inputs, an EfficientNet encoder)."""
    converted: dict[str, Tensor] = {}
    dropped, unknown = [], []
    for key, tensor in state.items():
        if _DROPPED.match(key):
            dropped.append(key)
            continue
        target = None
        if stage := _DECODER_STAGE.match(key):
            layer, block, rest = stage.groups()
            target = f"decoder.{layer}.{block}.{rest.replace('downsample.', 'shortcut.')}"
        else:
            for source, destination in _PREFIXES:
                if key.startswith(source):
                    target = destination + key[len(source):]
                    break
        if target is None:
            unknown.append(key)
            continue
        converted[target] = tensor
    if unknown:
        raise InputError(
            f"{len(unknown)} Simple-BEV key(s) have no place in occfeat's simplebev-r101: {unknown[:6]}"
            f"{' ...' if len(unknown) > 6 else ''}. occfeat converts the camera-only ResNet-101 model "
            "(get_rgb_model.sh); radar/Lidar and EfficientNet variants are not supported."
        )
    compressor = "view_transform.compress.0.weight"
    if compressor in converted:
        converted[compressor] = _permute_fold(converted[compressor], channels=config.bev_channels,
                                              heights=config.grid.num_heights)
    for name in ("heads.offset.1.weight", "heads.offset.1.bias"):
        if name in converted:  # (cell - centre) as (x, z) -> (centre - cell) as (row, column)
            converted[name] = -converted[name].flip(0)
    return converted, dropped


def _permute_fold(weight: Tensor, *, channels: int, heights: int) -> Tensor:
    """Input channels of the compressor from Simple-BEV's fold (``c * Y + y``) to occfeat's (``y * C + c``)."""
    if weight.shape[1] != channels * heights:
        raise InputError(f"bev_compressor.0.weight has {weight.shape[1]} input channels, expected {channels} x "
                         f"{heights} heights: convert with the grid the checkpoint was trained at (--grid Z Y X).")
    out, _, kh, kw = weight.shape
    return weight.view(out, channels, heights, kh, kw).transpose(1, 2).reshape(out, heights * channels, kh, kw)


def convert_simple_bev_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    grid_zyx: Sequence[int] = GRID_ZYX,
    image_size: Sequence[int] = IMAGE_SIZE,
) -> dict[str, Any]:
    """Write Simple-BEV's checkpoint as a ``save_pretrained`` folder; ``occfeat.load("local-dir:OUT")`` loads it with
    a clean report. Returns ``{"converted", "dropped", "dropped_groups", "load_report", "files"}``.

    ``out`` is checked before the checkpoint is read (an ``InputError`` for a file in its place or in the place of a
    parent folder); missing parent folders are created. The checkpoint's tensors are bounded before any is copied
    (``occfeat.io.read_pickled_weights``)."""
    from ..models import BEVModel
    from .loading import load
    from .publishing import save_pretrained

    out = check_output_path(out, kind="folder", what="occfeat convert simple-bev: the output folder")
    config = simple_bev_config(grid_zyx, image_size)
    state, dropped = simple_bev_to_occfeat(read_simple_bev_checkpoint(checkpoint), config)
    with torch.device("meta"):
        model = BEVModel(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    shapes = {k: (tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
              if k in state and state[k].shape != v.shape}
    if missing or shapes:
        raise InputError(
            f"{checkpoint}: the converted tensors do not fill occfeat's simplebev-r101 at grid {tuple(grid_zyx)} and "
            f"images {tuple(image_size)}: missing {missing[:6]}, shape mismatches {dict(list(shapes.items())[:4])}. "
            "Convert with the grid and image size the checkpoint was trained at (--grid Z Y X --image-size H W)."
        )
    model.load_state_dict(state, assign=True)
    provenance = {
        "converted_from": "Simple-BEV RGB checkpoint (Harley et al., ICRA 2023)", "source": SOURCE,
        "checkpoint_url": CHECKPOINT_URL, "checkpoint": str(Path(checkpoint).name), "dropped": dropped,
        "reported": "47.6 vehicle IoU, nuScenes val, 448x800 (Simple-BEV README); not measured by occfeat",
    }
    files = save_pretrained(model, out, weight_id="simplebev-r101.simplebev-nuscenes", provenance=provenance)
    report = load(f"local-dir:{out}").load_report
    return {"converted": len(state), "dropped": dropped, "dropped_groups": list(_DROPPED_GROUPS),
            "load_report": report, "files": files}


def simple_bev_inputs(
    rgb_camXs: Tensor, pix_T_cams: Tensor, cam0_T_camXs: Tensor, *, reference_camera: int = REFERENCE_CAMERA,
    image_mean: Sequence[float] = IMAGENET_MEAN, image_std: Sequence[float] = IMAGENET_STD,
) -> dict[str, Tensor]:
    """Simple-BEV's forward inputs -> occfeat's ``images``, ``intrinsics``, ``cam_to_ego``.

    Args:
        rgb_camXs: (B, S, 3, H, W) images in [-0.5, 0.5] (Simple-BEV's ``imgs - 0.5``).
        pix_T_cams: (B, S, 4, 4) intrinsics in pixels of those images.
        cam0_T_camXs: (B, S, 4, 4) camera -> reference-camera transforms. The reference camera is the one whose
            transform is the identity: index 0 after Simple-BEV's ``move_refcam`` (CAM_FRONT), but any index (and a
            different one per sample) is fine, as it is for ``Segnet``, whose voxel grid lies in the frame these
            transforms map to whatever the camera order.
        reference_camera: where the converted config expects the reference camera (its ``raster_camera``).

    "ego" becomes the reference camera's frame, and in each sample the reference camera and the camera at
    ``reference_camera`` swap places (with the reference at index 0, this undoes ``move_refcam``), so that the
    converted network's raster is the reference camera's frame, as Segnet's grid is. Outputs do not depend on the
    order of the other cameras. Raises ``InputError`` when no camera of a sample has the identity transform.
    """
    if rgb_camXs.dim() != 5 or tuple(pix_T_cams.shape[-2:]) != (4, 4) or tuple(cam0_T_camXs.shape[-2:]) != (4, 4):
        raise InputError(f"simple_bev_inputs: rgb_camXs {tuple(rgb_camXs.shape)}, pix_T_cams {tuple(pix_T_cams.shape)}, "
                         f"cam0_T_camXs {tuple(cam0_T_camXs.shape)}: expected (B, S, 3, H, W), (B, S, 4, 4), (B, S, 4, 4).")
    batch, cameras = rgb_camXs.shape[:2]
    if tuple(pix_T_cams.shape[:2]) != (batch, cameras) or tuple(cam0_T_camXs.shape[:2]) != (batch, cameras):
        raise InputError(f"simple_bev_inputs: rgb_camXs has (B, S) = {(batch, cameras)}, pix_T_cams "
                         f"{tuple(pix_T_cams.shape[:2])}, cam0_T_camXs {tuple(cam0_T_camXs.shape[:2])}: give every "
                         "camera its intrinsics and its transform, in the same order.")
    if not 0 <= reference_camera < cameras:
        raise InputError(f"simple_bev_inputs: reference_camera={reference_camera} but there are {cameras} cameras.")
    reference = _reference_camera_per_sample(cam0_T_camXs)
    order = torch.arange(cameras, device=reference.device).repeat(batch, 1)  # (B, S): new position -> old camera
    samples = torch.arange(batch, device=reference.device)
    order[samples, reference] = reference_camera
    order[:, reference_camera] = reference
    mean = rgb_camXs.new_tensor(image_mean).view(1, 1, 3, 1, 1)
    std = rgb_camXs.new_tensor(image_std).view(1, 1, 3, 1, 1)
    pick = (samples[:, None], order.to(rgb_camXs.device))
    return {
        "images": ((rgb_camXs + 0.5 - mean) / std)[pick],
        "intrinsics": pix_T_cams[pick][..., :3, :3],
        "cam_to_ego": cam0_T_camXs[pick],
    }


# A transform counts as the identity within this (float32 round-off of Simple-BEV's inverse(ref) @ ref is ~1e-7).
_IDENTITY_TOLERANCE = 1e-4


def _reference_camera_per_sample(cam0_T_camXs: Tensor) -> Tensor:
    """(B,) the index of each sample's first camera whose camera -> reference transform is the identity."""
    identity = torch.eye(4, dtype=cam0_T_camXs.dtype, device=cam0_T_camXs.device)
    is_reference = (cam0_T_camXs - identity).abs().flatten(-2).amax(-1) <= _IDENTITY_TOLERANCE  # (B, S)
    missing = (~is_reference.any(dim=1)).nonzero().flatten().tolist()
    if missing:
        raise InputError(
            f"simple_bev_inputs: in sample(s) {missing[:5]}, no camera has the identity transform in cam0_T_camXs: the "
            "converted network's raster is the frame of one camera of the batch (Simple-BEV's reference camera, "
            "CAM_FRONT). Give the transforms relative to one of the cameras (cam0_T_camXs = inverse(world_T_cam0) "
            "@ world_T_camX, as Simple-BEV's data loader computes them)."
        )
    return is_reference.int().argmax(dim=1)  # the first True
