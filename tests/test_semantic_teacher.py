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
from occfeat.errors import InputError
from occfeat.models.geometry import NUSCENES_CAMERAS
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


def patch_features(teacher: SemanticTeacher, semantic: torch.Tensor, instance: torch.Tensor) -> torch.Tensor:
    return teacher(semantic[None, None], instance[None, None])[0, 0].flatten(1).T  # (h*w, D)


def test_stand_in_features_separate_object_kinds_and_instances():
    teacher = SemanticTeacher(image_size=(28, 56), cameras=("CAM_FRONT",))  # a 2 x 4 patch grid
    car, bus, road = (SEMANTIC_CLASSES.index(c) for c in ("vehicle.car", "vehicle.bus.rigid", "road"))
    semantic = torch.full((28, 56), road)
    instance = torch.zeros(28, 56, dtype=torch.long)
    semantic[:14, :14], instance[:14, :14] = car, 7  # patch (0, 0): car #7
    semantic[:14, 14:28], instance[:14, 14:28] = car, 9  # patch (0, 1): car #9
    semantic[:14, 28:42], instance[:14, 28:42] = bus, 7  # patch (0, 2): a bus
    features = F.normalize(patch_features(teacher, semantic, instance), dim=1)
    cosine = features @ features.T
    same_kind, other_kind, road_road = cosine[0, 1], cosine[0, 2], cosine[4, 5]
    assert same_kind > 0.6 and abs(other_kind) < 0.25 and road_road > 0.99  # kinds apart, instances close but apart
    assert same_kind < 0.95
    mixed = semantic.clone()
    mixed[14:, :7] = car  # half a patch of car over road: the feature lies between the two
    between = F.normalize(patch_features(teacher, mixed, instance), dim=1)[4]
    assert between @ features[4] > 0.3 and between @ features[0] > 0.3


def test_stand_in_features_separate_categories_on_a_generated_world(semantic_world):
    data = NuScenesBEV(semantic_world.dataroot, semantic_world.version, "all", image_size=(112, 224), labels=False,
                       semantic_maps=True)
    teacher = SemanticTeacher(image_size=(112, 224), cameras=data.cameras)
    features, kinds = [], []
    for index in range(len(data)):
        item = data[index]
        maps = teacher(item["semantic"][None], item["instance"][None])[0]  # (N, D, h, w)
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
