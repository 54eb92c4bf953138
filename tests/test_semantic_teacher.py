"""The stand-in teacher for generated worlds: side-car maps through NuScenesBEV, features that separate object kinds
and instances, and OccFeat pretraining with it, named as a stand-in."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from occfeat.data import NuScenesBEV
from occfeat.data.nuscenes import Augmentation, image_transform, warp_image
from occfeat.synthetic import SEMANTIC_CLASSES, generate_world, instance_mask_path, semantic_map_path
from occfeat.synthetic.semantic import SEMANTIC_FAMILIES
from occfeat.errors import InputError
from occfeat.models.geometry import NUSCENES_CAMERAS, BEVGrid
from occfeat.pretrain import STAND_IN_TEACHER, SemanticTeacher, pretrain

SMALL = dict(image_size=(64, 128), grid={"x_range": (-16.0, 16.0), "y_range": (-16.0, 16.0), "resolution": 1.0}, dropout=0.0)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def semantic_world(tmp_path_factory):
    return generate_world(tmp_path_factory.mktemp("semantic-world"), scenes=2, samples_per_scene=3, image_hw=(90, 160),
                          seed=2, semantic_maps=True, progress=False)


def test_dataset_warps_the_side_cars_like_the_images(semantic_world):
    data = NuScenesBEV(semantic_world.dataroot, semantic_world.version, "all", image_size=(56, 120), labels=False,
                       semantic_maps=True)
    item = data[1]
    sample = data.nusc.get("sample", item["sample_token"])
    for camera_index, camera in enumerate(NUSCENES_CAMERAS):
        filename = data.nusc.get("sample_data", sample["data"][camera])["filename"]
        classes = np.asarray(Image.open(semantic_map_path(semantic_world.dataroot, filename)))
        affine = image_transform(classes.shape, (56, 120), None, Augmentation())
        expected = warp_image(classes, affine, (56, 120), nearest=True)
        np.testing.assert_array_equal(item["semantic"][camera_index].numpy(), expected)
        instances = np.asarray(Image.open(instance_mask_path(semantic_world.dataroot, filename)))
        np.testing.assert_array_equal(item["instance"][camera_index].numpy(),
                                      warp_image(instances, affine, (56, 120), nearest=True))
    assert item["semantic"].dtype == torch.int64 and item["instance"].max() > 0


def test_missing_side_cars_are_a_typed_error(synthetic_world):
    data = NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "all", labels=False, semantic_maps=True)
    with pytest.raises(InputError, match="occfeat synth DIR --semantic-maps"):
        data[0]


def patch_features(teacher: SemanticTeacher, semantic: torch.Tensor, rgb: torch.Tensor,
                   instance: torch.Tensor | None = None) -> torch.Tensor:
    """(H, W) class ids, (3, H, W) colours in [0, 1] and (H, W) instance ids -> (h*w, D) patch features."""
    instance = torch.zeros_like(semantic) if instance is None else instance
    return teacher(rgb[None, None], semantic[None, None], instance[None, None])[0, 0].flatten(1).T


def flat_teacher(image_size: tuple[int, int], **options) -> SemanticTeacher:
    """The stand-in on images normalised with mean 0 and std 1: the tensors are the colours."""
    return SemanticTeacher(image_size=image_size, cameras=("CAM_FRONT",), image_mean=(0.0,) * 3, image_std=(1.0,) * 3,
                           **options)


def test_stand_in_features_are_a_function_of_what_the_image_shows():
    teacher = flat_teacher((28, 56), patch=14)  # a 2 x 4 patch grid
    car, bus, pedestrian, road = (SEMANTIC_CLASSES.index(c) for c in ("vehicle.car", "vehicle.bus.rigid",
                                                                        "human.pedestrian.adult", "road"))
    semantic = torch.full((28, 56), road)
    instance = torch.zeros(28, 56, dtype=torch.long)
    rgb = torch.full((3, 28, 56), 0.4)
    red, blue = torch.tensor([0.9, 0.1, 0.1])[:, None, None], torch.tensor([0.1, 0.2, 0.9])[:, None, None]
    objects = [(car, 7, red), (car, 9, red), (car, 11, blue), (bus, 12, red)]  # patches 0-3 of the top row
    for column, (kind, identity, colour) in enumerate(objects):
        cells = (slice(0, 14), slice(14 * column, 14 * column + 14))
        semantic[cells], instance[cells], rgb[(slice(None), *cells)] = kind, identity, colour
    semantic[14:, :14], instance[14:, :14], rgb[:, 14:, :14] = pedestrian, 13, red  # patch 4: a pedestrian in red
    features = patch_features(teacher, semantic, rgb, instance)
    cosine = F.normalize(features, dim=1) @ F.normalize(features, dim=1).T
    # Two cars that look alike give the same feature: no component an image could not predict.
    torch.testing.assert_close(features[0], features[1], atol=1e-3, rtol=0)
    # Saturated red against saturated blue: the same class, far apart by appearance (cosine 0.51), still closer than
    # a red pedestrian (0.36, sharing only the colour); a red bus, another vehicle of that colour, between (0.65).
    assert 0.4 < cosine[0, 2] < 0.9 and cosine[0, 2] > cosine[0, 4]
    assert cosine[0, 4] < cosine[0, 3] < 0.95
    assert cosine[5, 6] > 0.99  # road, road
    # Changing only the pixels' colour changes the feature: it is read from the image.
    recoloured = rgb.clone()
    recoloured[:, :14, :14] = blue
    assert not torch.allclose(patch_features(teacher, semantic, recoloured, instance)[0], features[0], atol=1e-2)
    # One object's patches share its appearance however they are lit: car 7 spans patches 0 and 1, one half shaded.
    one_car = instance.clone()
    one_car[:14, :28] = 7
    shaded = rgb.clone()
    shaded[:, :14, 14:28] *= 0.5
    both = patch_features(teacher, semantic, shaded, one_car)
    torch.testing.assert_close(both[0], both[1], atol=1e-3, rtol=0)
    assert not torch.allclose(patch_features(teacher, semantic, shaded)[0], patch_features(teacher, semantic, shaded)[1],
                              atol=1e-2)  # without the object's mask, the pixels' own colours


def test_stand_in_relates_subtypes_within_families_only():
    teacher = flat_teacher((28, 56), family_share=0.5)
    table = teacher.class_embedding
    cos = lambda a, b: float(table[SEMANTIC_CLASSES.index(a)] @ table[SEMANTIC_CLASSES.index(b)])  # noqa: E731
    for a, b in (("vehicle.car", "vehicle.truck"), ("vehicle.bicycle", "vehicle.motorcycle"), ("road", "kerb")):
        assert 0.35 < cos(a, b) < 0.65, (a, b)
    for a, b in (("vehicle.car", "human.pedestrian.adult"), ("vehicle.car", "road"), ("vehicle.bicycle", "vehicle.car")):
        assert abs(cos(a, b)) < 0.2, (a, b)
    assert {SEMANTIC_FAMILIES[c] for c in SEMANTIC_CLASSES if c.startswith("vehicle.")} == {"vehicle", "two-wheeler"}


@pytest.mark.parametrize("image_size, patch", [((112, 240), 7), ((224, 480), 14), ((56, 120), 4)])
def test_stand_in_grid_is_dinov2s_at_224x480_relative_to_the_image(image_size, patch):
    teacher = flat_teacher(image_size)
    assert f"patch={patch}," in teacher.spec.weights
    h, w = teacher.spec.patch_grid
    # DINOv2 ViT-S/14 at 224x480 sees 224x476: 16x34 patches.
    assert (h, w) == (16, 34) or (image_size == (56, 120) and (h, w) == (14, 30))
    maps = torch.zeros(1, 1, *image_size, dtype=torch.long)
    assert teacher(torch.rand(1, 1, 3, *image_size), maps, maps).shape[-2:] == (h, w)


def test_stand_in_features_separate_categories_on_a_generated_world(semantic_world):
    data = NuScenesBEV(semantic_world.dataroot, semantic_world.version, "all", image_size=(112, 224), labels=False,
                       semantic_maps=True)
    teacher = SemanticTeacher(image_size=(112, 224), cameras=data.cameras)
    features, kinds = [], []
    for index in range(len(data)):
        item = data[index]
        maps = teacher.features({k: v[None] for k, v in item.items() if k in ("images", "semantic", "instance")})[0]
        h, w = teacher.spec.patch_grid
        # The dominant class of each patch, and how dominant it is.
        onehot = F.one_hot(item["semantic"], len(SEMANTIC_CLASSES)).permute(0, 3, 1, 2).float()
        share = F.adaptive_avg_pool2d(onehot, (h, w))  # (N, C, h, w)
        top, kind = share.max(dim=1)
        pure = top > 0.9
        features.append(maps.permute(0, 2, 3, 1)[pure])
        kinds.append(kind[pure])
    features, kinds = F.normalize(torch.cat(features), dim=1), torch.cat(kinds)
    cosine = features @ features.T
    same = kinds[:, None] == kinds[None, :]
    assert len(kinds.unique()) >= 4
    assert cosine[same].mean() > 0.8 and cosine[~same].mean() < 0.1


def test_pretraining_with_the_stand_in_teacher_records_it_as_a_stand_in(semantic_world, tmp_path):
    result = pretrain("simplebev-tiny", dataroot=semantic_world.dataroot, version=semantic_world.version,
                      out_dir=tmp_path / "run", recipe="cpu-tiny", device="cpu", progress=False, pictures=False,
                      load_kwargs=SMALL, cache_dir=tmp_path / "cache", max_steps=4, val_split=None,
                      recipe_overrides=dict(teacher=STAND_IN_TEACHER, eval_every=10**6))
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["teacher"]["name"] == STAND_IN_TEACHER and run["teacher"]["weights"].startswith("stand-in:")
    assert "stand-in for DINOv2 on generated worlds" in run["teacher_role"]
    assert result.train.step == 4 and len(list((tmp_path / "cache").rglob("*.safetensors"))) > 0
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    distilled = [r["loss_feat"] for r in log if "loss_feat" in r]
    assert distilled and all(np.isfinite(distilled)) and 0.0 < distilled[0] < 2.0  # 1 - cosine


def test_pretraining_evaluation_reports_the_constant_and_class_level_references(semantic_world):
    """``feature_cosine_constant`` / ``feature_cosine_class``: the best single feature, and the best feature per
    class, fitted to the evaluated voxels. Checked against the same quantities computed here from the targets, and
    against what they mean: the constant reference is no worse than any other constant, the class-level one no
    worse than the constant, and for a teacher made of class vectors alone it is nearly perfect (what keeps it
    below 1: voxels seen through patches that mix classes)."""
    from occfeat.data.nuscenes import collate
    from occfeat.models import create_model
    from occfeat.pretrain import OccFeatPretrainer
    from occfeat.pretrain.training import evaluate_pretraining

    data = NuScenesBEV(semantic_world.dataroot, semantic_world.version, "all", image_size=SMALL["image_size"],
                       labels=False, semantic_maps=True, grid=BEVGrid(**SMALL["grid"]), lidar_sweeps=2)
    data.truncate(2)
    network = create_model("simplebev-tiny", **SMALL)
    scores = {}
    for name, options in (("default", {}), ("classes only", dict(appearance_weight=0.0, family_share=0.0))):
        teacher = SemanticTeacher(image_size=SMALL["image_size"], cameras=data.cameras, **options)
        pretrainer = OccFeatPretrainer(network, feature_dim=teacher.spec.feature_dim)
        scores[name] = evaluate_pretraining(pretrainer, data, teacher=teacher, batch_size=2)
        batch = collate([data[0], data[1]])
        targets = pretrainer.targets(batch, teacher.features(batch)).distilled_features.double()
        classes = pretrainer.targets(batch, teacher.class_shares(batch["semantic"])).distilled_features.argmax(1)
        unit = F.normalize(targets, dim=1)
        constant = F.normalize(unit.sum(0), dim=0)
        assert scores[name]["feature_cosine_constant"] == pytest.approx((unit @ constant).mean().item(), abs=1e-5)
        for _ in range(5):  # any other constant does worse
            other = F.normalize(constant + 0.3 * F.normalize(torch.randn_like(constant), dim=0), dim=0)
            assert (unit @ other).mean() < (unit @ constant).mean()
        per_class = sum((unit[classes == c] @ F.normalize(unit[classes == c].sum(0), dim=0)).sum()
                        for c in classes.unique())
        assert scores[name]["feature_cosine_class"] == pytest.approx(per_class.item() / len(unit), abs=1e-5)
        assert scores[name]["feature_cosine_constant"] < scores[name]["feature_cosine_class"] <= 1.0
    assert scores["classes only"]["feature_cosine_class"] > 0.9
