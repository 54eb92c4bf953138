"""OccFeat's pretraining targets against a brute-force reference, the gathered head, the teacher and its cache."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from occfeat.data.nuscenes import collate
from occfeat.errors import ConfigError, InputError
from occfeat.models.backbones import IMAGENET_MEAN, IMAGENET_STD
from occfeat.models.geometry import NUSCENES_CAMERAS, BEVGrid, bev_augmentation_matrix, nuscenes_camera_rig
from occfeat.models.ops import bilinear_taps
from occfeat.pretrain.head import OccFeatHead
from occfeat.pretrain.targets import build_targets, occupancy_grid, voxelize
from occfeat.pretrain.teacher import DEFAULT_TEACHER, Teacher, TeacherCache, WithTeacherFeatures, teacher_maps_for

# A 16 m x 16 m raster at 1 m with the default occupancy heights: (Z, H, W) = (16, 16, 16), small enough for loops.
GRID = occupancy_grid(BEVGrid(x_range=(-8.0, 8.0), y_range=(-8.0, 8.0), resolution=1.0))
TEACHER_IMAGE_HW = (56, 112)  # a 4x8 patch grid for ViT-S/14


pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------------------------------------------------------
# Targets against a brute-force reference written from the spec (targets.py's module docstring)


def reference_targets(points, valid, bev_aug, intrinsics, cam_to_ego, maps, grid, image_hw):
    """Plain Python loops in float64; uses nothing from occfeat but the grid's numbers.

    Returns (occupied flat indices ascending, seen (K,) bool, features (K, D)).
    """
    (x_min, x_max), (y_min, y_max), res = grid.x_range, grid.y_range, grid.resolution
    (z_min, z_max), z_res = grid.z_range, grid.z_resolution
    num_h, num_w, num_z = round((x_max - x_min) / res), round((y_max - y_min) / res), round((z_max - z_min) / z_res)
    b, p = points.shape[:2]
    occupied = set()
    for bi in range(b):
        to_raster = np.eye(4) if bev_aug is None else np.linalg.inv(bev_aug[bi])
        for pi in range(p):
            if not valid[bi, pi]:
                continue
            x, y, z = to_raster[:3, :3] @ points[bi, pi, :3] + to_raster[:3, 3]
            # Row 0 is the far front (+x), column 0 the far left (+y); every cell is half-open on its metric axis.
            row, col = num_h - 1 - math.floor((x - x_min) / res), num_w - 1 - math.floor((y - y_min) / res)
            z_bin = math.floor((z - z_min) / z_res)
            if 0 <= row < num_h and 0 <= col < num_w and 0 <= z_bin < num_z:
                occupied.add(((bi * num_z + z_bin) * num_h + row) * num_w + col)
    index = sorted(occupied)

    n, d, fh, fw = maps.shape[1:]
    img_h, img_w = image_hw
    seen = np.zeros(len(index), dtype=bool)
    features = np.zeros((len(index), d))
    for k, flat in enumerate(index):
        bi, rest = divmod(flat, num_z * num_h * num_w)
        z_bin, rest = divmod(rest, num_h * num_w)
        row, col = divmod(rest, num_w)
        centre = np.array([x_max - (row + 0.5) * res, y_max - (col + 0.5) * res, z_min + (z_bin + 0.5) * z_res, 1.0])
        ego = centre if bev_aug is None else bev_aug[bi] @ centre
        samples = []
        for ni in range(n):
            cam = np.linalg.inv(cam_to_ego[bi, ni]) @ ego
            depth = cam[2]
            if depth <= 1e-3:
                continue
            u, v, w = intrinsics[bi, ni] @ cam[:3]
            u, v = u / w, v / w
            if not (-0.5 <= u < img_w - 0.5 and -0.5 <= v < img_h - 0.5):
                continue
            # Unit image coordinates address the patch grid; grid_sample(align_corners=False, border) by hand.
            gx = min(max((u + 0.5) / img_w * fw - 0.5, 0.0), fw - 1.0)
            gy = min(max((v + 0.5) / img_h * fh - 0.5, 0.0), fh - 1.0)
            x0, y0 = math.floor(gx), math.floor(gy)
            x1, y1 = min(x0 + 1, fw - 1), min(y0 + 1, fh - 1)
            ax, ay = gx - x0, gy - y0
            fmap = maps[bi, ni]
            samples.append(
                (1 - ax) * (1 - ay) * fmap[:, y0, x0] + ax * (1 - ay) * fmap[:, y0, x1]
                + (1 - ax) * ay * fmap[:, y1, x0] + ax * ay * fmap[:, y1, x1]
            )
        if samples:
            seen[k] = True
            features[k] = np.mean(samples, axis=0)
    return index, seen, features


def random_rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A rotation by up to ``max_deg`` about a random axis (Rodrigues)."""
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    angle = math.radians(rng.uniform(-max_deg, max_deg))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * k + (1 - math.cos(angle)) * k @ k


def random_calibration(rng: np.random.Generator, batch: int, image_hw: tuple[int, int]):
    """The nominal nuScenes rig with every camera of every sample moved, turned (yaw, pitch, roll) and refocused."""
    intrinsics0, cam_to_ego0 = nuscenes_camera_rig(image_hw)
    n = intrinsics0.shape[0]
    intrinsics = np.repeat(intrinsics0.double().numpy()[None], batch, axis=0)
    cam_to_ego = np.repeat(cam_to_ego0.double().numpy()[None], batch, axis=0)
    for bi in range(batch):
        for ni in range(n):
            focal = rng.uniform(0.7, 1.3)
            intrinsics[bi, ni, 0, 0] *= focal
            intrinsics[bi, ni, 1, 1] *= focal * rng.uniform(0.95, 1.05)
            intrinsics[bi, ni, :2, 2] += rng.uniform(-6, 6, 2)
            cam_to_ego[bi, ni, :3, :3] = random_rotation(rng, 15.0) @ cam_to_ego[bi, ni, :3, :3]
            cam_to_ego[bi, ni, :3, 3] += rng.uniform(-0.4, 0.4, 3)
    return torch.from_numpy(intrinsics).float(), torch.from_numpy(cam_to_ego).float()


def random_points(rng: np.random.Generator, batch: int, count: int, padding: tuple[int, ...]):
    """(B, P, 5) ego points around and beyond the grid, some duplicated into the same voxels, and the last
    ``padding[b]`` of sample b marked invalid (placed inside the grid, so that counting them would show)."""
    xyz = np.stack([rng.uniform(-12, 12, (batch, count)), rng.uniform(-12, 12, (batch, count)),
                    rng.uniform(-2.5, 7.0, (batch, count))], axis=-1)
    xyz[:, : count // 10] = xyz[:, count // 10 : 2 * (count // 10)] + rng.uniform(-0.05, 0.05, (batch, count // 10, 3))
    valid = np.ones((batch, count), dtype=bool)
    for bi, pad in enumerate(padding):
        if pad:
            valid[bi, -pad:] = False
            xyz[bi, -pad:] = np.stack([rng.uniform(-5, 5, pad), rng.uniform(-5, 5, pad), rng.uniform(0, 4, pad)], axis=-1)
    points = np.concatenate([xyz, rng.uniform(0, 1, (batch, count, 2))], axis=-1)
    return torch.from_numpy(points).float(), torch.from_numpy(valid)


@pytest.mark.parametrize("seed, augment", [(0, True), (1, True), (2, True), (3, False)])
def test_targets_equal_a_brute_force_reference(seed, augment):
    rng = np.random.default_rng(seed)
    b, image_hw, patch_grid, d = 2, (48, 96), (5, 9), 8
    points, valid = random_points(rng, b, 400, padding=(40, 0))
    intrinsics, cam_to_ego = random_calibration(rng, b, image_hw)
    bev_aug = None
    if augment:  # a yaw about z and a translation, different for each sample
        bev_aug = torch.stack([
            bev_augmentation_matrix(tuple(rng.uniform(-3, 3, 2)), rng.uniform(-30, 30)) for _ in range(b)
        ])
    maps = torch.from_numpy(rng.standard_normal((b, 6, d, *patch_grid))).float()

    got = build_targets(points, valid, GRID, bev_aug=bev_aug, teacher_maps=maps, intrinsics=intrinsics,
                        cam_to_ego=cam_to_ego, image_hw=image_hw)
    # The reference sees the very same (float32) inputs, in float64.
    as64 = lambda t: None if t is None else t.double().numpy()  # noqa: E731
    index, seen, features = reference_targets(as64(points), valid.numpy(), as64(bev_aug), as64(intrinsics),
                                              as64(cam_to_ego), as64(maps), GRID, image_hw)

    expected_occupancy = torch.zeros(b * GRID.num_heights * GRID.shape[0] * GRID.shape[1], dtype=torch.bool)
    expected_occupancy[index] = True
    assert got.occupancy.shape == (b, GRID.num_heights, *GRID.shape) and got.occupancy.dtype == torch.bool
    assert torch.equal(got.occupancy, expected_occupancy.view_as(got.occupancy))
    assert got.occupied_index.tolist() == index
    assert torch.equal(got.seen, torch.from_numpy(seen))
    assert got.features.shape == (len(index), d) and got.features.dtype == torch.float32
    torch.testing.assert_close(got.features.double(), torch.from_numpy(features), rtol=0, atol=1e-5)
    assert not got.features[~got.seen].any(), "voxels seen by no camera get zero features"
    torch.testing.assert_close(got.distilled_features, got.features[got.seen])
    assert torch.equal(got.distilled_index, got.occupied_index[got.seen])

    # The comparison is not vacuous: both samples have occupied voxels, most but not all of them are seen, and the
    # padded points (inside the grid) would have changed the occupancy had they been counted.
    per_sample = got.occupancy.flatten(1).sum(1)
    assert (per_sample > 50).all(), per_sample
    assert 0.3 < seen.mean() < 1.0, seen.mean()
    everything, _, _ = reference_targets(as64(points), np.ones_like(valid.numpy()), as64(bev_aug), as64(intrinsics),
                                         as64(cam_to_ego), as64(maps[:, :, :1]), GRID, image_hw)
    assert everything != index


def test_cell_membership_is_half_open_on_every_axis():
    # The spec: x in [x_min, x_max), y in [y_min, y_max), z in [z_min, z_max), each cell half-open on the metric
    # axis. Points exactly on boundaries (float64, identity bev_aug; 1 m cells are exact in binary):
    points = torch.tensor([[
        [-8.0, 0.5, 0.1],  # x = x_min: inside, the last row (15)
        [8.0, 0.5, 0.1],  # x = x_max: outside
        [0.5, -8.0, 0.1],  # y = y_min: inside, the last column (15)
        [0.5, 8.0, 0.1],  # y = y_max: outside
        [0.5, 0.5, -1.0],  # z = z_min: inside, the first height
        [0.5, 0.5, 5.4],  # z = z_max: outside
        [0.0, 0.0, 2.1],  # x = y = 0 starts the cell [0, 1) x [0, 1) m: row 7, column 7 (centre (0.5, 0.5))
    ]], dtype=torch.float64)
    occupancy = voxelize(points, None, None, GRID)
    z_01, z_21 = math.floor((0.1 + 1.0) / 0.4), math.floor((2.1 + 1.0) / 0.4)
    expected = {(z_01, 15, 7), (z_01, 7, 15), (0, 7, 7), (z_21, 7, 7)}
    assert {tuple(i) for i in occupancy[0].nonzero().tolist()} == expected


# --------------------------------------------------------------------------------------------------------------------
# bilinear_taps


@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("hw", [(5, 9), (1, 4), (7, 1)])
def test_bilinear_taps_equal_grid_sample(padding, hw):
    h, w = hw
    fmap = torch.randn(3, h, w, dtype=torch.float64)
    # Inside, in the outer half cells, outside the map, and exactly on the edges and the outer cell centres.
    unit = torch.rand(500, 2, dtype=torch.float64) * 1.6 - 0.3
    special = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5 / w, 0.5 / h], [1 - 0.5 / w, 1 - 0.5 / h], [1.0, 0.0]],
                           dtype=torch.float64)
    unit = torch.cat([unit, special])
    index, weight = bilinear_taps(unit, hw, padding=padding)
    assert index.shape == weight.shape == (unit.shape[0], 4)
    assert index.min() >= 0 and index.max() < h * w
    ours = (fmap.flatten(1)[:, index] * weight).sum(-1)  # (3, L)
    theirs = F.grid_sample(fmap[None], (unit * 2 - 1).view(1, 1, -1, 2), mode="bilinear", padding_mode=padding,
                           align_corners=False)[0, :, 0]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-10)


def test_bilinear_taps_reject_an_unknown_padding():
    with pytest.raises(InputError, match="padding"):
        bilinear_taps(torch.rand(4, 2), (3, 3), padding="reflection")


# --------------------------------------------------------------------------------------------------------------------
# The head


class LargestTensors(TorchDispatchMode):
    """Records the largest tensor any op produces (forward and backward) and the names of the ops that ran."""

    def __init__(self):
        super().__init__()
        self.largest, self.largest_op, self.ops = 0, None, set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.add(func.overloadpacket.__name__)
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.numel() > self.largest:
                self.largest, self.largest_op = tensor.numel(), str(func)
        return out


def test_head_never_allocates_a_dense_feature_volume():
    b, c, d = 2, 8, 256
    num_z, (h, w) = GRID.num_heights, GRID.shape
    head = OccFeatHead(c, GRID, c3d=4, feature_dim=d)
    bev = torch.randn(b, c, h, w, requires_grad=True)
    wanted = torch.randperm(b * num_z * h * w)[:300].sort().values
    with LargestTensors() as mode:
        out = head(bev, wanted)
        (out["features"].square().mean() + out["occupancy"].mean()).backward()
    assert out["features"].shape == (300, d)
    assert out["occupancy"].shape == (b, num_z, h, w)
    assert bev.grad is not None and head.features.weight.grad is not None
    assert "convolution_backward" in mode.ops, "the backward pass must have been recorded too"
    # Not even one sample's dense (D, Z, H, W) volume (the brief's bound is B times that).
    assert mode.largest < d * num_z * h * w, (mode.largest, mode.largest_op)


def test_gathered_features_equal_a_dense_evaluation_at_those_voxels():
    b, c, d, c3d = 2, 8, 16, 4
    num_z, (h, w) = GRID.num_heights, GRID.shape
    head = OccFeatHead(c, GRID, c3d=c3d, feature_dim=d).eval()
    volumes = []
    head.volume.register_forward_hook(lambda module, inputs, output: volumes.append(output.detach().clone()))
    bev = torch.randn(b, c, h, w)
    wanted = torch.randperm(b * num_z * h * w)[:200].sort().values
    with torch.no_grad():
        got = head(bev, wanted)["features"]
    # The per-voxel linear as a dense 1x1x1 conv over the (B, c3d, Z, H, W) volume, read at each voxel by hand.
    dense = F.conv3d(volumes[0], head.features.weight.view(d, c3d, 1, 1, 1), head.features.bias)
    expected = []
    for flat in wanted.tolist():
        bi, rest = divmod(flat, num_z * h * w)
        z, rest = divmod(rest, h * w)
        row, col = divmod(rest, w)
        expected.append(dense[bi, :, z, row, col])
    torch.testing.assert_close(got, torch.stack(expected), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------------------------
# The teacher and its cache


def make_teacher(name: str = DEFAULT_TEACHER, image_size=TEACHER_IMAGE_HW, weights="random") -> Teacher:
    return Teacher(name, image_size=image_size, weights=weights, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
                   cameras=NUSCENES_CAMERAS)


@pytest.fixture(scope="module")
def teacher() -> Teacher:
    # Random weights must never pass unnoticed: the warning is loud and says so.
    with pytest.warns(UserWarning, match="RANDOM weights"):
        teacher = make_teacher()
    assert teacher.spec.weights == "random:0"
    assert teacher.spec.map_shape == (6, 384, 4, 8)
    return teacher


def teacher_items(count: int, seed: int = 0) -> list[dict]:
    """Dataset items as NuScenesBEV gives them (without labels): images, calibration, Lidar, a sample token."""
    generator = torch.Generator().manual_seed(seed)
    intrinsics, cam_to_ego = nuscenes_camera_rig(TEACHER_IMAGE_HW)
    items = []
    for i in range(count):
        lidar = torch.rand(300 + 50 * i, 5, generator=generator) * torch.tensor([16.0, 16.0, 4.0, 1.0, 1.0])
        lidar[:, :3] -= torch.tensor([8.0, 8.0, 1.0])
        items.append(dict(images=torch.randn(6, 3, *TEACHER_IMAGE_HW, generator=generator), intrinsics=intrinsics,
                          cam_to_ego=cam_to_ego, bev_aug=torch.eye(4), lidar=lidar, sample_token=f"sample-{i}"))
    return items


def targets_of(batch: dict, maps: torch.Tensor):
    return build_targets(batch["lidar"], batch["lidar_valid"], GRID, bev_aug=batch["bev_aug"], teacher_maps=maps,
                         intrinsics=batch["intrinsics"], cam_to_ego=batch["cam_to_ego"], image_hw=TEACHER_IMAGE_HW)


def test_cached_teacher_maps_are_bit_identical_to_computed_ones(teacher, tmp_path):
    cache = TeacherCache(tmp_path, teacher.spec)
    data = WithTeacherFeatures(teacher_items(3), cache)
    calls = []
    hook = teacher.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    try:
        # First pass: nothing cached, every map is computed and stored.
        batch = collate([data[0], data[1]])
        assert not batch["teacher_cached"].any()
        maps = teacher_maps_for(batch, teacher, cache)
        assert calls == [2]
        # A batch with one cached sample and one missing: only the missing one is computed.
        mixed = collate([data[1], data[2]])
        assert mixed["teacher_cached"].tolist() == [True, False]
        mixed_maps = teacher_maps_for(mixed, teacher, cache)
        assert calls == [2, 1]
        # Second pass: everything comes from disk, the teacher does not run.
        loaded = collate([data[0], data[1], data[2]])
        assert loaded["teacher_cached"].all()
        loaded_maps = teacher_maps_for(loaded, teacher, cache)
        assert calls == [2, 1]
    finally:
        hook.remove()

    # Against the uncached teacher on the same images: bit for bit.
    assert torch.equal(maps, teacher(batch["images"]))
    assert torch.equal(mixed_maps, teacher(mixed["images"]))
    uncached = teacher(loaded["images"])
    assert loaded_maps.dtype == uncached.dtype == torch.float32
    assert torch.equal(loaded_maps, uncached)
    assert torch.equal(teacher_maps_for(loaded, teacher, None), uncached)
    # ... and so are the feature targets made from them.
    from_cache, from_teacher = targets_of(loaded, loaded_maps), targets_of(loaded, uncached)
    assert from_cache.seen.sum() > 100
    assert torch.equal(from_cache.features, from_teacher.features)
    assert all(cache.path(f"sample-{i}").is_file() for i in range(3)) and len(cache) == 3
    assert (cache.folder / "teacher.json").is_file()
    # A new cache object on the same spec (a new run, a data-loader worker) finds them.
    assert torch.equal(TeacherCache(tmp_path, teacher.spec).load("sample-2").float(), uncached[2])


def test_another_teacher_image_size_or_weights_does_not_reuse_the_cache(teacher, tmp_path):
    cache = TeacherCache(tmp_path, teacher.spec)
    for i in range(2):
        cache.store(f"sample-{i}", torch.randn(teacher.spec.map_shape))
    assert cache.load("sample-0") is not None

    with pytest.warns(UserWarning, match="RANDOM weights"):
        other_size = make_teacher(image_size=(70, 140))
    with pytest.warns(UserWarning, match="RANDOM weights"):
        other_name = make_teacher("vit_tiny_patch16_224")
    assert other_name.spec.map_shape == (6, 192, 4, 7)
    others = [
        other_size.spec,
        other_name.spec,
        dataclasses.replace(teacher.spec, weights="file:" + "0" * 64),
        dataclasses.replace(teacher.spec, cameras=tuple(reversed(NUSCENES_CAMERAS))),
        dataclasses.replace(teacher.spec, storage_dtype="bfloat16"),
    ]
    for spec in others:
        other = TeacherCache(tmp_path, spec)
        assert spec.key != teacher.spec.key and other.folder != cache.folder
        assert other.load("sample-0") is None and other.load("sample-1") is None and len(other) == 0
    assert dataclasses.replace(teacher.spec).key == teacher.spec.key  # the key is a function of the spec only


def test_stale_or_truncated_cache_files_are_misses_and_get_rewritten(teacher, tmp_path):
    from safetensors.torch import save_file

    cache = TeacherCache(tmp_path, teacher.spec)
    features = torch.randn(teacher.spec.map_shape)
    cache.store("good", features)
    assert torch.equal(cache.load("good"), features.half())

    # A file whose recorded key is not its folder's, one of the wrong shape, and a truncated one.
    save_file({"features": features.half()}, str(cache.path("stale")), metadata={"key": "someone-else"})
    save_file({"features": features[:, :, :2].half().contiguous()}, str(cache.path("shape")),
              metadata={"key": teacher.spec.key})
    data = cache.path("good").read_bytes()
    cache.path("truncated").write_bytes(data[: len(data) // 2])
    for token in ("stale", "shape", "truncated", "absent"):
        assert cache.load(token) is None, token

    # Through the dataset, the stale file is a miss; the training step recomputes and rewrites it.
    item = teacher_items(1)[0]
    item["sample_token"] = "stale"
    batch = collate([WithTeacherFeatures([item], cache)[0]])
    assert not batch["teacher_cached"].any() and not batch["teacher_maps"].any()
    maps = teacher_maps_for(batch, teacher, cache)
    assert torch.equal(cache.load("stale").float(), maps[0])
    assert collate([WithTeacherFeatures([item], cache)[0]])["teacher_cached"].all()


def test_teacher_weights_from_a_local_safetensors_file(teacher, tmp_path):
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1234)  # not the random teacher's seed: equal weights below cannot be a coincidence
    source = timm.create_model(DEFAULT_TEACHER, pretrained=False)  # at its default (518) size
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / "dinov2.safetensors"
    save_file(state, str(path))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = make_teacher(weights=path)
    assert not [w for w in caught if "RANDOM" in str(w.message)], "real weights must not warn about random ones"
    assert loaded.spec.weights == "file:" + hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.spec.key != teacher.spec.key
    assert loaded.spec.input_size == (56, 112) and loaded.spec.patch_grid == (4, 8)
    for name in ("patch_embed.proj.weight", "patch_embed.proj.bias", "cls_token", "blocks.0.attn.qkv.weight"):
        assert torch.equal(loaded.model.state_dict()[name], state[name]), name
    assert not torch.equal(loaded.model.patch_embed.proj.weight, teacher.model.patch_embed.proj.weight)
    assert loaded(torch.randn(1, 6, 3, *TEACHER_IMAGE_HW)).shape == (1, 6, 384, 4, 8)

    # Pickles are refused (they can run code), as is a missing file.
    with pytest.raises(InputError, match="safetensors"):
        make_teacher(weights=tmp_path / "dinov2.pth")
    with pytest.raises(InputError, match="do not exist"):
        make_teacher(weights=tmp_path / "missing.safetensors")


# --------------------------------------------------------------------------------------------------------------------
# Typed errors


def test_typed_errors_for_wrong_shapes():
    with pytest.raises(InputError, match="points"):
        voxelize(torch.zeros(100, 3), None, None, GRID)
    with pytest.raises(InputError, match="intrinsics"):
        build_targets(torch.zeros(1, 10, 3), None, GRID, teacher_maps=torch.zeros(1, 6, 8, 4, 8))
    head = OccFeatHead(8, GRID, c3d=4, feature_dim=16)
    with pytest.raises(ConfigError, match="occupancy grid"):
        head(torch.zeros(1, 8, 20, 16))


@pytest.mark.parametrize("branch", ["shared", "separate"])
def test_a_separate_feature_branch_meets_the_occupancy_branch_only_in_the_network(branch):
    """With ``feature_branch="separate"`` the feature loss never reaches the occupancy branch's head layers (nor the
    occupancy loss the feature branch's); shared, both losses reach the one unsplatting. Both reach the BEV map."""
    c, d = 8, 16
    head = OccFeatHead(c, GRID, c3d=4, feature_dim=d, feature_branch=branch)
    bev = torch.randn(2, c, *GRID.shape, requires_grad=True)
    wanted = torch.randperm(2 * GRID.num_heights * GRID.shape[0] * GRID.shape[1])[:50]
    out = head(bev, wanted)
    shared_weight = head.unsplat[1].weight
    feature_grad = torch.autograd.grad(out["features"].square().mean(), [bev, shared_weight], retain_graph=True,
                                       allow_unused=True)
    assert feature_grad[0].abs().sum() > 0
    if branch == "shared":
        assert feature_grad[1] is not None and feature_grad[1].abs().sum() > 0
        assert head.feature_unsplat is None
    else:
        assert feature_grad[1] is None  # the feature loss does not touch the occupancy branch's layers
        separate_weight = head.feature_unsplat[1].weight
        occupancy_grad = torch.autograd.grad(out["occupancy"].mean(), [separate_weight], allow_unused=True)
        assert occupancy_grad[0] is None
        assert sum(p.numel() for p in head.feature_unsplat.parameters()) == sum(p.numel() for p in head.unsplat.parameters())
    with pytest.raises(ConfigError, match="feature_branch"):
        OccFeatHead(c, GRID, feature_branch="split")
    # The recipe's field reaches the pretrainer's head (what `occfeat pretrain --feature-branch` sets).
    from occfeat.models import create_model
    from occfeat.pretrain import OccFeatPretrainer

    network = create_model("simplebev-tiny", device="meta")
    pretrainer = OccFeatPretrainer(network, feature_dim=d, feature_branch=branch)
    assert (pretrainer.head.feature_unsplat is not None) == (branch == "separate")
