"""Simple-BEV's released checkpoint in occfeat (issue 14): key conversion, the lifting convention, and the converted
network's forward against an independent computation of Simple-BEV's ``Segnet``.

``SimpleBevSegnet`` below is written from Simple-BEV's code as read (nets/segnet.py, utils/vox.py, utils/geom.py,
utils/basic.py of aharley/simple_bev), with its module names, so its ``state_dict()`` has the checkpoint's exact keys
and shapes; its forward follows Simple-BEV's computation step by step (dense 5-D ``grid_sample`` per camera, the
``2 x / (W - 1) - 1`` normalisation, the validity mask, the non-zero masked mean with 1e-6, the ``c * Y + y`` fold),
not occfeat's code. Small grid and images keep it a CPU test.
"""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

import occfeat
from occfeat.cli import main as cli_main
from occfeat.conventions.geometry import nuscenes_camera_rig
from occfeat.errors import InputError, OccfeatError
from occfeat.zoo.simple_bev import convert_simple_bev_checkpoint, simple_bev_config, simple_bev_inputs

GRID_ZYX = (16, 4, 16)  # Z, Y, X: 6.25 m x 2.5 m x 6.25 m voxels over Simple-BEV's bounds
IMAGE_HW = (64, 128)
EPS = 1e-6
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


# ---- an independent Simple-BEV Segnet (camera-only, res101 encoder), from reading its code ------------------------


class UpsamplingConcat(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.InstanceNorm2d(out_channels), nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), nn.InstanceNorm2d(out_channels), nn.ReLU(),
        )

    def forward(self, x_to_upsample, x):
        return self.conv(torch.cat([x, self.upsample(x_to_upsample)], dim=1))


class UpsamplingAdd(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.upsample_layer = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                            nn.Conv2d(in_channels, out_channels, 1, bias=False),
                                            nn.InstanceNorm2d(out_channels))

    def forward(self, x, x_skip):
        return self.upsample_layer(x) + x_skip


def head(channels: int, out: int, sigmoid: bool = False) -> nn.Sequential:
    layers = [nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.InstanceNorm2d(channels), nn.ReLU(),
              nn.Conv2d(channels, out, 1)]
    return nn.Sequential(*layers, *([nn.Sigmoid()] if sigmoid else []))


class Decoder(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        resnet = torchvision.models.resnet18(weights=None, zero_init_residual=True)
        self.first_conv = nn.Conv2d(channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1, self.relu = resnet.bn1, resnet.relu
        self.layer1, self.layer2, self.layer3 = resnet.layer1, resnet.layer2, resnet.layer3
        self.up3_skip, self.up2_skip, self.up1_skip = UpsamplingAdd(256, 128), UpsamplingAdd(128, 64), UpsamplingAdd(64, channels)
        self.feat_head = head(channels, channels)
        self.segmentation_head = head(channels, 1)
        self.instance_offset_head = head(channels, 2)
        self.instance_center_head = head(channels, 1, sigmoid=True)

    def forward(self, x):
        skip1 = x
        x = self.relu(self.bn1(self.first_conv(x)))
        x = self.layer1(x)
        skip2 = x
        x = self.layer2(x)
        skip3 = x
        x = self.layer3(x)
        x = self.up1_skip(self.up2_skip(self.up3_skip(x, skip3), skip2), skip1)
        return self.segmentation_head(x), self.instance_center_head(x), self.instance_offset_head(x)


class Encoder(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        resnet = torchvision.models.resnet101(weights=None)
        self.backbone = nn.Sequential(*list(resnet.children())[:-4])
        self.layer3 = resnet.layer3
        self.depth_layer = nn.Conv2d(512, channels, 1)
        self.upsampling_layer = UpsamplingConcat(1536, 512)

    def forward(self, x):
        x1 = self.backbone(x)
        return self.depth_layer(self.upsampling_layer(self.layer3(x1), x1))


class SimpleBevSegnet(nn.Module):
    """Simple-BEV's camera-only Segnet at a (Z, Y, X) grid over x, z in [-50, 50], y in [-5, 5] + 1."""

    def __init__(self, grid_zyx=GRID_ZYX, channels: int = 128):
        super().__init__()
        self.Z, self.Y, self.X = grid_zyx
        self.encoder = Encoder(channels)
        self.bev_compressor = nn.Sequential(nn.Conv2d(channels * self.Y, channels, 3, padding=1, bias=False),
                                            nn.InstanceNorm2d(channels), nn.GELU())
        self.decoder = Decoder(channels)
        self.ce_weight = nn.Parameter(torch.tensor(0.0))
        self.center_weight = nn.Parameter(torch.tensor(0.0))
        self.offset_weight = nn.Parameter(torch.tensor(0.0))

    def voxel_centres(self) -> torch.Tensor:
        """(Z*Y*X, 3) camera-0 (x, y, z) of every voxel centre, Z-major then Y then X (gridcloud3d + Mem2Ref)."""
        z, y, x = self.Z, self.Y, self.X
        xs = -50.0 + (torch.arange(x) + 0.5) * (100.0 / x)
        ys = (-5.0 + 1.0) + (torch.arange(y) + 0.5) * (10.0 / y)
        zs = -50.0 + (torch.arange(z) + 0.5) * (100.0 / z)
        gz, gy, gx = torch.meshgrid(zs, ys, xs, indexing="ij")
        return torch.stack([gx, gy, gz], dim=-1).reshape(-1, 3)

    def unproject(self, features, pix_T_cam, camX_T_cam0):
        """unproject_image_to_mem: (C, Hf, Wf) one camera's features -> (C, Z, Y, X)."""
        c, hf, wf = features.shape
        points = torch.cat([self.voxel_centres(), torch.ones(self.Z * self.Y * self.X, 1)], dim=1)  # homogeneous
        in_camera = points @ camX_T_cam0.T
        pixels = points @ (pix_T_cam @ camX_T_cam0).T
        x, y = (pixels[:, :2] / pixels[:, 2:3].clamp(min=1e-6)).unbind(-1)
        valid = (x > -0.5) & (x < wf - 0.5) & (y > -0.5) & (y < hf - 0.5) & (in_camera[:, 2] > 0)
        gx = (2.0 * x / (wf - 1) - 1.0).clamp(-2, 2)
        gy = (2.0 * y / (hf - 1) - 1.0).clamp(-2, 2)
        grid = torch.stack([gx, gy, torch.zeros_like(gx)], dim=-1).view(1, self.Z, self.Y, self.X, 3)
        values = F.grid_sample(features[None, :, None], grid, align_corners=False)[0]  # (C, Z, Y, X)
        return values * valid.view(1, self.Z, self.Y, self.X).float()

    def lift(self, rgb_camXs, pix_T_cams, cam0_T_camXs):
        """-> (B, C, Z, Y, X) feat_mem: the masked mean over cameras."""
        b, s, _, h, w = rgb_camXs.shape
        images = (rgb_camXs.flatten(0, 1) + 0.5 - MEAN) / STD
        features = self.encoder(images)
        _, c, hf, wf = features.shape
        scale = torch.diag(torch.tensor([wf / w, hf / h, 1.0, 1.0]))  # scale_intrinsics: fx, x0 by sx; fy, y0 by sy
        features = features.view(b, s, c, hf, wf)
        mems = torch.stack([
            torch.stack([self.unproject(features[i, j], scale @ pix_T_cams[i, j], torch.linalg.inv(cam0_T_camXs[i, j]))
                         for j in range(s)]) for i in range(b)])  # (B, S, C, Z, Y, X)
        mask = (mems.abs() > 0).float()
        return (mems * mask).sum(dim=1) / (EPS + mask.sum(dim=1))

    def forward(self, rgb_camXs, pix_T_cams, cam0_T_camXs):
        feat_mem = self.lift(rgb_camXs, pix_T_cams, cam0_T_camXs)
        b, c = feat_mem.shape[:2]
        feat_bev = feat_mem.permute(0, 1, 3, 2, 4).reshape(b, c * self.Y, self.Z, self.X)
        return self.decoder(self.bev_compressor(feat_bev))  # seg_e, center_e, offset_e


# ---- fixtures --------------------------------------------------------------------------------------------------------


def _randomise_batch_norms(module: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial BatchNorm statistics, so that the conversion of every BN buffer matters."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=generator))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=generator))
            m.weight.data.copy_(0.5 + 0.5 * torch.rand(m.num_features, generator=generator))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=generator))


@pytest.fixture(scope="module")
def reference():
    torch.manual_seed(0)
    net = SimpleBevSegnet()
    generator = torch.Generator().manual_seed(1)
    _randomise_batch_norms(net, generator)
    for name in ("segmentation_head", "instance_center_head", "instance_offset_head"):
        getattr(net.decoder, name)[3].bias.data.normal_(generator=generator)
    return net.eval()


@pytest.fixture(scope="module")
def simple_bev_batch():
    """Simple-BEV's forward inputs for 3 cameras after move_refcam: CAM_FRONT first, then FRONT_LEFT, FRONT_RIGHT."""
    cameras = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT")
    intrinsics, cam_to_ego = nuscenes_camera_rig(IMAGE_HW, cameras)
    pix_T_cams = torch.eye(4).repeat(3, 1, 1)
    pix_T_cams[:, :3, :3] = intrinsics
    cam0_T_camXs = torch.linalg.inv(cam_to_ego[0]) @ cam_to_ego
    generator = torch.Generator().manual_seed(2)
    rgb = torch.rand(2, 3, 3, *IMAGE_HW, generator=generator) - 0.5
    return rgb, pix_T_cams.expand(2, -1, -1, -1).clone(), cam0_T_camXs.expand(2, -1, -1, -1).clone()


@pytest.fixture(scope="module")
def converted(reference, tmp_path_factory):
    """The reference's weights saved as Simple-BEV's saverloader does (DataParallel prefixes, optimiser state)."""
    folder = tmp_path_factory.mktemp("simple_bev")
    checkpoint = folder / "checkpoints" / "model-000025000.pth"
    checkpoint.parent.mkdir()
    wrapped = {f"module.{k}": v for k, v in reference.state_dict().items()}
    optimizer = torch.optim.Adam(reference.parameters(), lr=1e-4)
    torch.save({"optimizer_state_dict": optimizer.state_dict(), "model_state_dict": wrapped}, checkpoint)
    out = folder / "converted"
    report = convert_simple_bev_checkpoint(checkpoint.parent, out, grid_zyx=GRID_ZYX, image_size=IMAGE_HW)
    return out, report


# ---- tests -------------------------------------------------------------------------------------------------------


def test_the_reference_has_simple_bevs_key_names_and_shapes(reference):
    """Guard on the independent network: names and shapes copied from Simple-BEV's module definitions."""
    state = reference.state_dict()
    c, y = 128, GRID_ZYX[1]
    expected = {
        "encoder.backbone.0.weight": (64, 3, 7, 7), "encoder.backbone.1.running_var": (64,),
        "encoder.backbone.4.0.conv1.weight": (64, 64, 1, 1), "encoder.backbone.5.3.conv3.weight": (512, 128, 1, 1),
        "encoder.layer3.22.bn3.weight": (1024,), "encoder.upsampling_layer.conv.0.weight": (512, 1536, 3, 3),
        "encoder.upsampling_layer.conv.3.weight": (512, 512, 3, 3), "encoder.depth_layer.bias": (c,),
        "bev_compressor.0.weight": (c, c * y, 3, 3), "decoder.first_conv.weight": (64, c, 7, 7),
        "decoder.layer2.0.downsample.0.weight": (128, 64, 1, 1), "decoder.up1_skip.upsample_layer.1.weight": (c, 64, 1, 1),
        "decoder.feat_head.3.bias": (c,), "decoder.segmentation_head.3.weight": (1, c, 1, 1),
        "decoder.instance_center_head.3.bias": (1,), "decoder.instance_offset_head.3.weight": (2, c, 1, 1),
        "ce_weight": (), "center_weight": (), "offset_weight": (),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected


def test_the_checkpoint_converts_with_every_key_accounted_for_and_loads_clean(reference, converted):
    out, report = converted
    dropped = set(report["dropped"])
    assert dropped == {k for k in reference.state_dict() if k.startswith("decoder.feat_head.")} | {
        "ce_weight", "center_weight", "offset_weight"}
    assert report["converted"] + len(dropped) == len(reference.state_dict())
    model = occfeat.load(f"local-dir:{out}")
    assert model.load_report.clean, model.load_report.summary()
    assert not model.load_report.missing and not model.load_report.unexpected
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["raster_frame"] == "camera" and config["model"]["lifting"] == "simple-bev"
    assert config["provenance"]["checkpoint_url"].endswith("rgb_checkpoint.tar.gz")


def test_the_lifting_convention_reproduces_simple_bevs_sampling(reference, converted, simple_bev_batch):
    """occfeat's lifting="simple-bev" volume equals the direct computation (grid_sample at 2 x / (W - 1) - 1, valid
    mask, non-zero masked mean), voxel for voxel: occfeat's (height, row, col) is Simple-BEV's (Y, Z, X)."""
    out, _ = converted
    model = occfeat.load(f"local-dir:{out}").eval()
    rgb, pix_T_cams, cam0_T_camXs = simple_bev_batch
    inputs = simple_bev_inputs(rgb, pix_T_cams, cam0_T_camXs)
    with torch.no_grad():
        expected = reference.lift(rgb, pix_T_cams, cam0_T_camXs)  # (B, C, Z, Y, X)
        features = model.image_features(inputs["images"])
        raster = occfeat.conventions.geometry.raster_to_ego(torch.eye(4).expand(2, 4, 4), inputs["cam_to_ego"], "camera", 1)
        volume = model.view_transform.lift(features, inputs["intrinsics"], inputs["cam_to_ego"], raster, IMAGE_HW)
    ours = volume.permute(0, 1, 3, 2, 4)  # (B, C, Y, Z, X) -> Simple-BEV's (B, C, Z, Y, X)
    assert (expected != 0).float().mean() > 0.2  # the front cameras see a good part of the grid
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    # The convention matters: occfeat's own pixel-centre sampling gives a different volume on the same weights.
    model.view_transform.lifting = "occfeat"
    with torch.no_grad():
        own = model.view_transform.lift(features, inputs["intrinsics"], inputs["cam_to_ego"], raster, IMAGE_HW)
    assert (own.permute(0, 1, 3, 2, 4) - expected).abs().max() > 1e-2 * expected.abs().max()


def assert_outputs_are_segnets(outputs, seg_e, center_e, offset_e) -> None:
    """occfeat's head outputs equal Segnet's (seg_e, center_e, offset_e), in Simple-BEV's conventions."""
    def close(ours, theirs):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * theirs.abs().max().item())

    close(outputs["vehicle"], seg_e)
    close(torch.sigmoid(outputs["center"]), center_e)
    # occfeat's offset is (centre - cell) as (row, col); Simple-BEV's (cell - centre) as (x, z) = (col, row).
    close(outputs["offset"], -offset_e.flip(1))


def test_the_converted_network_computes_simple_bevs_outputs(reference, converted, simple_bev_batch):
    out, _ = converted
    model = occfeat.load(f"local-dir:{out}").eval()
    rgb, pix_T_cams, cam0_T_camXs = simple_bev_batch
    with torch.no_grad():
        seg_e, center_e, offset_e = reference(rgb, pix_T_cams, cam0_T_camXs)
        outputs = model(**simple_bev_inputs(rgb, pix_T_cams, cam0_T_camXs))

    assert_outputs_are_segnets(outputs, seg_e, center_e, offset_e)
    assert seg_e.std() > 1e-3 and offset_e.std() > 1e-3  # not a constant output


def test_the_cli_converts_and_wrong_inputs_say_what_to_do(reference, tmp_path):
    checkpoint = tmp_path / "model-000000010.pth"
    torch.save({"model_state_dict": reference.state_dict()}, checkpoint)
    out = tmp_path / "cli"
    grid = [str(v) for v in GRID_ZYX]
    assert cli_main(["convert", "simple-bev", str(checkpoint), "--out", str(out), "--grid", *grid,
                     "--image-size", *map(str, IMAGE_HW)]) == 0
    assert occfeat.load(f"local-dir:{out}").load_report.clean
    with pytest.raises(InputError, match="--grid Z Y X"):  # trained at another grid
        convert_simple_bev_checkpoint(checkpoint, tmp_path / "wrong", grid_zyx=(16, 8, 16), image_size=IMAGE_HW)
    foreign = tmp_path / "model-000000011.pth"
    torch.save({"model_state_dict": {"encoder.backbone._conv_stem.weight": torch.zeros(1)}}, foreign)
    with pytest.raises(InputError, match="EfficientNet variants are not supported"):
        convert_simple_bev_checkpoint(foreign, tmp_path / "foreign", grid_zyx=GRID_ZYX, image_size=IMAGE_HW)
    with pytest.raises(OccfeatError, match="Z must equal X"):
        simple_bev_config((16, 4, 24))
    with pytest.raises(InputError, match="no model-"):
        convert_simple_bev_checkpoint(tmp_path / "cli", tmp_path / "x")


def test_the_registry_entry_says_to_convert_locally():
    spec = occfeat.get_weights("simplebev-r101.simplebev-nuscenes")
    assert "occfeat convert simple-bev" in spec.status and not spec.published
    config = spec.model_config()
    assert (config.raster_frame, config.raster_camera, config.lifting) == ("camera", 1, "simple-bev")
    assert config == simple_bev_config().replace(arch="simplebev-r101")
    with pytest.raises(occfeat.zoo.loading.WeightsNotPublishedError, match="occfeat convert simple-bev"):
        occfeat.load("simplebev-r101.simplebev-nuscenes")
    assert any(m["value"] == 47.6 and "Simple-BEV" in m["source"] for m in spec.metrics)


def test_occfeat_evaluate_runs_the_converted_model_with_labels_in_its_camera_frame(converted, synthetic_world, tmp_path):
    """The converted network through NuScenesBEV and `occfeat evaluate`: labels come in CAM_FRONT's frame, in
    Simple-BEV's layout, and the report has the vehicle IoU."""
    from occfeat.data import NuScenesBEV, data_options

    out, _ = converted
    model = occfeat.load(f"local-dir:{out}")
    data = NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "all", **data_options(model.config),
                       map_classes=model.config.map_classes)
    assert data.raster_frame == "camera" and data[0]["map"].shape[0] == 0
    # At 0.5 m, the vehicle cells of the camera raster and of the ego raster lie at the same place on the ground, each
    # cell mapped back to ego with its own frame's geometry. (The cell-centre raster: the LSS raster's half-cell bias
    # points along the raster's axes, which differ between the two frames.)
    grid = occfeat.BEVGrid()
    options = dict(image_size=IMAGE_HW, grid=grid, map_classes=(), label_protocol="cell-center")
    camera = NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "all", **options, raster_frame="camera",
                         raster_camera=1)
    ego = NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "all", **options)
    centres = grid.cell_centers(dtype=torch.float64)  # (H, W, 2) raster-frame (x, y)
    for index in range(3):
        in_camera, in_ego = camera[index], ego[index]
        assert in_camera["vehicle"].sum() > 20
        ego_cells = centres[in_ego["vehicle"][0] > 0.5]
        cells = centres[in_camera["vehicle"][0] > 0.5]
        raster_points = torch.cat([cells, torch.zeros(len(cells), 1, dtype=torch.float64)], dim=1)
        to_ego = occfeat.conventions.geometry.raster_to_ego(
            torch.eye(4, dtype=torch.float64)[None], in_camera["cam_to_ego"].double()[None], "camera", 1)[0]
        camera_cells = occfeat.conventions.geometry.transform_points(to_ego, raster_points)[:, :2]
        # Every vehicle cell of one raster has a vehicle cell of the other within a cell's diagonal (0.71 m), away
        # from the edges (the rasters cover different squares: CAM_FRONT sits 1.7 m ahead of the ego origin).
        for cells, others in ((camera_cells, ego_cells), (ego_cells, camera_cells)):
            inner = cells[cells.abs().amax(1) < 45]
            assert torch.cdist(inner, others).amin(1).max() < 0.71
        # Simple-BEV's layout: what is ahead of the car is in the bottom rows (row 0 is behind).
        rows = in_camera["vehicle"][0].nonzero()[:, 0].float()
        assert (rows.mean() > grid.shape[0] / 2) == bool(ego_cells.mean(0)[0] > 1.7)
    report = tmp_path / "eval"
    assert cli_main(["evaluate", f"local-dir:{out}", "--dataroot", str(synthetic_world.dataroot), "--version",
                     synthetic_world.version, "--split", "val", "--out", str(report), "--pictures", "0"]) == 0
    results = json.loads((report / "eval.json").read_text())
    assert "vehicle_iou" in json.dumps(results)
