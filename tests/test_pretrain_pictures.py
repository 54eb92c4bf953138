"""The pictures of a pretraining run: the PCA pieces, the z-buffered splatting, and the PNGs end to end on the
synthetic world with a tiny SimpleBEV and a random teacher."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import occfeat
from occfeat.data import NuScenesBEV
from occfeat.errors import InputError
from occfeat.pretrain import OccFeatPretrainer, Teacher, TeacherCache
from occfeat.models.geometry import BEVGrid, bev_augmentation_matrix, nuscenes_camera_rig
from occfeat.pretrain import pictures
from occfeat.pretrain.pictures import _splat, apply_pca, fit_pca, pick_samples, save_pretraining_pictures
from occfeat.pretrain.targets import occupancy_grid
from occfeat.pretrain.teacher import WithTeacherFeatures

IMAGE_SIZE = (64, 128)
GRID = {"x_range": (-16.0, 16.0), "y_range": (-16.0, 16.0), "resolution": 1.0}
PCA_FILES = ("pca-bev.png", "pca-cameras-A.png", "pca-cameras-B.png")
OCCUPANCY_FILES = ("occupancy-0.png", "occupancy-1.png")


pytestmark = pytest.mark.usefixtures("one_thread")


# ---- PCA -------------------------------------------------------------------------------------------------------------


def test_first_component_follows_the_largest_variance():
    generator = torch.Generator().manual_seed(0)
    d = 16
    direction = torch.randn(d, generator=generator)
    direction /= direction.norm()
    second = torch.randn(d, generator=generator)
    second -= (second @ direction) * direction
    second /= second.norm()
    # Std 10 along `direction`, 3 along `second`, 0.5 of isotropic noise, around an offset mean.
    n = 2000
    features = (10.0 * torch.randn(n, 1, generator=generator) * direction + 3.0 * torch.randn(n, 1, generator=generator)
                * second + 0.5 * torch.randn(n, d, generator=generator) + 7.0)
    mean, components, lo, hi = fit_pca(features, k=3)
    assert components.shape == (d, 3) and mean.shape == (d,) and lo.shape == hi.shape == (3,)
    assert torch.allclose(mean, features.mean(0), atol=1e-4)
    assert abs(float(components[:, 0] @ direction)) > 0.99
    assert abs(float(components[:, 1] @ second)) > 0.98
    assert torch.allclose(components.T @ components, torch.eye(3), atol=1e-5)  # orthonormal
    assert (hi > lo).all()
    # The robust range of the first component is about +-2.33 std of N(0, 10) (1st / 99th percentiles).
    assert 18.0 < float(hi[0] - lo[0]) * 0.5 < 28.0


def test_colours_are_in_range_and_shared_across_scenes():
    generator = torch.Generator().manual_seed(1)
    scene_a = torch.randn(500, 8, generator=generator) * torch.linspace(5.0, 0.1, 8)
    scene_b = torch.randn(300, 8, generator=generator) * 4.0 + 3.0  # another distribution: some colours clip
    pca = fit_pca(scene_a)
    colours_a, colours_b = apply_pca(scene_a, pca), apply_pca(scene_b, pca)
    assert colours_a.shape == (500, 3) and colours_b.shape == (300, 3)
    for colours in (colours_a, colours_b):
        assert colours.dtype == torch.float32 and colours.min() >= 0.0 and colours.max() <= 1.0
    # The colours of scene A span the range (the fitted percentiles), not a corner of it.
    assert (colours_a.quantile(0.9, dim=0) - colours_a.quantile(0.1, dim=0) > 0.4).all()
    # The same feature vector gets the same colour whichever scene it appears in (one PCA for both)...
    shared = scene_a[:5]
    mixed_b = torch.cat([scene_b, shared])
    assert torch.equal(apply_pca(mixed_b, pca)[-5:], colours_a[:5])
    # ...whereas a PCA fitted on B would colour it differently.
    assert not torch.allclose(apply_pca(shared, fit_pca(mixed_b)), colours_a[:5], atol=0.05)
    # Deterministic: fitting twice gives the same signs and ranges.
    again = fit_pca(scene_a)
    assert all(torch.equal(x, y) for x, y in zip(pca, again))


def test_fit_pca_rejects_bad_inputs():
    with pytest.raises(InputError):
        fit_pca(torch.zeros(0, 8))
    with pytest.raises(InputError):
        fit_pca(torch.zeros(10, 2), k=3)


def test_splat_keeps_the_nearest_point_per_pixel():
    canvas = np.zeros((10, 10, 3), np.uint8)
    uv = np.array([[5.0, 5.0], [5.0, 5.0], [6.0, 5.0]])
    depth = np.array([9.0, 2.0, 5.0])
    half = np.array([2, 1, 1])
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    painted = _splat(canvas, uv, depth, half, colours)
    assert painted.sum() == 25  # the 5x5 square of the largest point covers the others
    assert tuple(canvas[5, 5]) == (0, 255, 0)  # nearest of the three
    assert tuple(canvas[5, 7]) == (0, 0, 255)  # covered by the middle (depth 5) and the far (9) ones only
    assert tuple(canvas[3, 3]) == (255, 0, 0)  # only the far one reaches here
    assert tuple(canvas[0, 0]) == (0, 0, 0)


# ---- rasters and projections -----------------------------------------------------------------------------------------

SMALL_GRID = occupancy_grid(BEVGrid(x_range=(-8.0, 8.0), y_range=(-8.0, 8.0), resolution=1.0), (-1.0, 1.4), 0.4)  # 6x16x16


def flat_index(z, row, col, sample=0, grid=SMALL_GRID):
    (h, w), num_z = grid.shape, grid.num_heights
    return ((sample * num_z + z) * h + row) * w + col


def test_bev_colours_show_the_highest_voxel_of_each_column():
    index = torch.tensor(sorted([flat_index(0, 2, 3), flat_index(4, 2, 3), flat_index(1, 10, 12)]))
    colours = np.zeros((3, 3), np.uint8)
    order = index.tolist()
    colours[order.index(flat_index(0, 2, 3))] = (255, 0, 0)
    colours[order.index(flat_index(4, 2, 3))] = (0, 255, 0)
    colours[order.index(flat_index(1, 10, 12))] = (0, 0, 255)
    raster = pictures._bev_colors(index, colours, SMALL_GRID)
    assert raster.shape == (16, 16, 3)
    assert tuple(raster[2, 3]) == (0, 255, 0)  # z = 4 over z = 0
    assert tuple(raster[10, 12]) == (0, 0, 255)
    assert (raster.max(-1) > 0).sum() == 2  # black elsewhere


def test_occupancy_panels_heights_and_agreement():
    target = torch.zeros(SMALL_GRID.num_heights, 16, 16, dtype=torch.bool)
    predicted = torch.zeros_like(target)
    target[[0, 3], 1, 1] = True
    predicted[[0, 3], 1, 1] = True  # all TP
    predicted[2, 5, 6] = True  # FP
    target[5, 9, 9] = True  # FN
    logits = torch.where(predicted, 4.0, -4.0)
    panels = list(pictures._occupancy_panels(logits, target, SMALL_GRID, "A").values())
    truth, prediction, agreement, probability = panels
    assert tuple(agreement[1, 1]) == (40, 170, 60) and tuple(agreement[5, 6]) == (220, 50, 40)
    assert tuple(agreement[9, 9]) == (40, 90, 220) and tuple(agreement[0, 0]) == (255, 255, 255)
    assert tuple(truth[5, 6]) == (255, 255, 255) and tuple(prediction[9, 9]) == (255, 255, 255)  # empty columns
    assert tuple(truth[9, 9]) == tuple(occfeat.viz.colorize(np.array([[1.2]]), -1.0, 1.4)[0, 0])  # bin 5's centre
    assert tuple(truth[1, 1]) == tuple(prediction[1, 1])
    assert probability[1, 1].sum() > probability[0, 0].sum()  # yellow (p ~ 1) over dark blue (p ~ 0)


def test_camera_tiles_put_a_voxel_ahead_in_the_front_camera_and_follow_bev_aug():
    intrinsics, cam_to_ego = nuscenes_camera_rig(IMAGE_SIZE)
    batch = {"images": torch.zeros(1, 6, 3, *IMAGE_SIZE), "intrinsics": intrinsics[None], "cam_to_ego": cam_to_ego[None],
             "bev_aug": torch.eye(4)[None]}
    row = 8 - 7  # raster row of x = 6.5 m ahead; centre column pair straddles y = 0
    index = torch.tensor([flat_index(4, row, 8)])  # z centre 0.8 m, about camera height - 0.7 m
    colour = np.array([[255, 0, 255]], np.uint8)
    cameras = ("CAM_FRONT_LEFT", "CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_BACK_LEFT", "CAM_BACK", "CAM_BACK_RIGHT")

    def painted(tiles):
        return {name.split(" ")[0]: int((tile[tile.shape[0] // 2:] == colour[0]).all(-1).sum()) for name, tile in tiles.items()}

    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    tiles = pictures._camera_tiles(batch, 0, index, colour, SMALL_GRID, mean, std, cameras)
    counts = painted(tiles)
    assert counts["CAM_FRONT"] > 0 and counts["CAM_BACK"] == 0
    tile = tiles[next(n for n in tiles if n.startswith("CAM_FRONT "))]
    assert tile.shape == (2 * 200, 400, 3)
    assert (tile[:200] == 128).all()  # the un-normalised image: 0 * 0.25 + 0.5 -> grey 128
    columns = np.nonzero((tile[200:] == colour[0]).all(-1).any(0))[0]
    assert abs(columns.mean() - 200) < 40  # straight ahead: near the middle of the image
    # The raster turned by 180 degrees (bev_aug maps raster -> ego): the same raster voxel is now behind the car.
    batch["bev_aug"] = bev_augmentation_matrix(yaw_deg=180.0)[None]
    counts = painted(pictures._camera_tiles(batch, 0, index, colour, SMALL_GRID, mean, std, cameras))
    assert counts["CAM_BACK"] > 0 and counts["CAM_FRONT"] == 0


# ---- end to end --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_config():
    return occfeat.create_model("simplebev-tiny", image_size=IMAGE_SIZE, grid=GRID).config


@pytest.fixture(scope="module")
def dataset(synthetic_world, model_config):
    return NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "all", image_size=IMAGE_SIZE,
                       grid=model_config.grid, lidar_sweeps=3, labels=False)


@pytest.fixture(scope="module")
def teacher(dataset, model_config):
    with pytest.warns(UserWarning, match="RANDOM weights"):
        return Teacher(weights="random", image_size=IMAGE_SIZE, image_mean=model_config.image_mean,
                       image_std=model_config.image_std, cameras=dataset.cameras)


def make_pretrainer(mode: str) -> OccFeatPretrainer:
    model = occfeat.create_model("simplebev-tiny", image_size=IMAGE_SIZE, grid=GRID)
    return OccFeatPretrainer(model, mode=mode, feature_dim=384)


def check_png(path, min_size):
    assert path.is_file(), path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= min_size[0] and image.height >= min_size[1], (path.name, image.size)
        assert image.width < 5000 and image.height < 3000, (path.name, image.size)
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.std() > 5.0, path.name
    assert count_colours(pixels) > 20, path.name
    return pixels


def count_colours(rgb: np.ndarray) -> int:
    packed = rgb.reshape(-1, 3).astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], np.int32)
    return len(np.unique(packed))


def test_two_samples_from_two_scenes_are_picked(dataset):
    picked, labels = pick_samples(WithTeacherFeatures(dataset, cache=None))
    scenes = {dataset.nusc.get("sample", dataset.sample_tokens[i])["scene_token"] for i in picked}
    assert len(picked) == 2 and len(scenes) == 2 and len(labels) == 2


def test_occfeat_pictures_end_to_end(tmp_path, dataset, teacher, monkeypatch):
    fitted, applied = [], []
    monkeypatch.setattr(pictures, "fit_pca", lambda x, *a, **k: fitted.append(x) or fit_pca(x, *a, **k))
    monkeypatch.setattr(pictures, "apply_pca", lambda x, pca: applied.append((x, pca)) or apply_pca(x, pca))
    pretrainer = make_pretrainer("occfeat")
    pretrainer.train()
    # As ``pretrain`` calls it: the validation set wrapped with the teacher cache (empty: the teacher runs).
    cache = TeacherCache(tmp_path / "cache", teacher.spec)
    written = save_pretraining_pictures(pretrainer, WithTeacherFeatures(dataset, cache), tmp_path / "pictures",
                                        teacher=teacher, cache=cache)
    assert sorted(p.name for p in written) == sorted(OCCUPANCY_FILES + PCA_FILES)
    assert all(p.parent == tmp_path / "pictures" for p in written)
    assert pretrainer.training  # the mode is restored
    assert len(cache) == 2  # the two pictured samples' teacher features were stored
    # One PCA, fitted on scene A's features only, applied to A, B and the teacher's A and B.
    assert len(fitted) == 1 and torch.equal(applied[0][0], fitted[0])
    assert len(applied) == 4 and all(pca is applied[0][1] for _, pca in applied)
    assert applied[1][0].shape[0] != fitted[0].shape[0] or not torch.equal(applied[1][0], fitted[0])
    for name in OCCUPANCY_FILES:
        check_png(tmp_path / "pictures" / name, (4 * 32 * 12, 32 * 12))
    bev = check_png(tmp_path / "pictures" / "pca-bev.png", (4 * 32 * 12, 32 * 12))
    # Student A, student B, teacher A, teacher B: every panel shows coloured voxels, not only the background.
    panels = [bev[18:, i * (384 + 8): i * (384 + 8) + 384] for i in range(4)]
    for panel in panels:
        assert (panel.max(-1) > 0).mean() > 0.1
    assert not np.array_equal(panels[0], panels[1])  # two different samples
    for name in PCA_FILES[1:]:
        cameras = check_png(tmp_path / "pictures" / name, (3 * 400, 2 * 2 * 200))
        overlay = cameras[22 + 18 + 200: 22 + 18 + 400, :400]  # CAM_FRONT_LEFT's projection, below its image
        assert count_colours(overlay) > 20


def test_pictures_fall_back_to_lidar_voxels_when_nothing_is_predicted(tmp_path, dataset):
    pretrainer = make_pretrainer("occfeat")
    with torch.no_grad():
        pretrainer.head.occupancy.bias.fill_(-1e3)  # p = 0 everywhere
    written = save_pretraining_pictures(pretrainer, dataset, tmp_path)  # no teacher: no teacher panels
    assert sorted(p.name for p in written) == sorted(OCCUPANCY_FILES + PCA_FILES)
    bev = check_png(tmp_path / "pca-bev.png", (2 * 32 * 12, 32 * 12))
    assert bev.shape[1] < 3 * 384  # two panels
    scene_a = bev[18:, :384]
    # Lidar-occupied voxels only: part of the raster is coloured, part is the black background.
    coloured = (scene_a.max(-1) > 0).mean()
    assert 0.05 < coloured < 0.95


def test_occupancy_mode_writes_only_occupancy_pictures(tmp_path, dataset):
    written = save_pretraining_pictures(make_pretrainer("occupancy"), dataset, tmp_path)
    assert sorted(p.name for p in written) == sorted(OCCUPANCY_FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(OCCUPANCY_FILES)
    for name in OCCUPANCY_FILES:
        check_png(tmp_path / name, (4 * 32 * 12, 32 * 12))


def test_distillation_mode_writes_only_pca_pictures(tmp_path, dataset, teacher):
    written = save_pretraining_pictures(make_pretrainer("distillation"), dataset, tmp_path, teacher=teacher)
    assert sorted(p.name for p in written) == sorted(PCA_FILES)
    check_png(tmp_path / "pca-bev.png", (4 * 32 * 12, 32 * 12))
