"""One input pipeline (issue 13): the dataset and ``WeightSpec.transforms()`` prepare a raw camera image with the same
code, filter when they shrink, normalise with the model's own constants, and the registry's ``input`` and the
recipes' image size are the network's."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import occfeat
from occfeat.data import NuScenesBEV, data_options
from occfeat.data.images import image_size_of, image_transform, warp_image
from occfeat.errors import ConfigError
from occfeat.models import get_model_config
from occfeat.models.geometry import resize_crop_for
from occfeat.zoo.loading import load_for_finetuning
from occfeat.zoo.registry import REGISTRY, get_weights, register_weights

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def raw_camera_world(synthetic_world, tmp_path):
    """The tiny world with the first sample's CAM_FRONT image replaced by a textured raw image of a given size."""

    def make(height: int, width: int):
        root = tmp_path / f"world-{height}x{width}"
        shutil.copytree(synthetic_world.dataroot, root)
        data = NuScenesBEV(root, synthetic_world.version, "all", image_size=(56, 120))
        sample = data.nusc.get("sample", data.sample_tokens[0])
        record = data.nusc.get("sample_data", sample["data"]["CAM_FRONT"])
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        path = root / record["filename"]
        Image.fromarray(pixels).save(path, format="PNG" if path.suffix == ".png" else "JPEG", quality=100)
        return root, data.nusc, record

    return make


def test_a_model_configured_off_imagenet_gets_images_normalised_with_its_own_constants(synthetic_world):
    config = get_model_config("simplebev-tiny", image_mean=(0.5, 0.4, 0.3), image_std=(0.2, 0.25, 0.3))
    ours = NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "all", **data_options(config))[0]["images"]
    imagenet = NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "all", image_size=config.image_size,
                           grid=config.grid)[0]["images"]
    # The same pixels: undo each normalisation and compare.
    mean, std = torch.tensor(config.image_mean).view(3, 1, 1), torch.tensor(config.image_std).view(3, 1, 1)
    im_mean, im_std = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1), torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
    torch.testing.assert_close(ours * std + mean, imagenet * im_std + im_mean, atol=1e-5, rtol=0)
    assert not torch.allclose(ours, imagenet, atol=1e-2)
    assert data_options(config)["image_mean"] == (0.5, 0.4, 0.3)


@pytest.mark.parametrize("raw_hw", [(900, 1600), (720, 1280)], ids=["nuScenes 1600x900", "1280x720 (not an exact scale)"])
def test_transforms_give_the_datasets_images_and_intrinsics(raw_camera_world, synthetic_world, raw_hw):
    root, nusc, record = raw_camera_world(*raw_hw)
    spec = get_weights("simplebev-enb0.occfeat-nuscenes")
    config = spec.model_config()
    data = NuScenesBEV(root, synthetic_world.version, "all", **data_options(config), nusc=None)
    item = data[0]
    camera = data.cameras.index("CAM_FRONT")
    raw = torch.from_numpy(np.array(Image.open(root / record["filename"]).convert("RGB"))).permute(2, 0, 1)
    calib = data.nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
    intrinsics = torch.tensor(calib["camera_intrinsic"], dtype=torch.float32)
    images, new_intrinsics = spec.transforms()(raw[None], intrinsics[None])
    assert raw.shape[-2:] == raw_hw and images.shape == (1, 3, *config.image_size)
    torch.testing.assert_close(images[0], item["images"][camera])
    torch.testing.assert_close(new_intrinsics[0], item["intrinsics"][camera])


def test_shrinking_filters_instead_of_aliasing():
    """One-pixel stripes shrunk 3.3x (nuScenes to 480 wide) are a flat grey after a low-pass; a bilinear warp alone
    samples one pixel in 3.3 and keeps stripes of full contrast."""
    stripes = np.zeros((900, 1600, 3), np.uint8)
    stripes[:, ::2] = 255
    affine = image_transform((900, 1600), (224, 480), None)
    filtered = warp_image(stripes, affine, (224, 480)).astype(float)
    import cv2

    aliased = cv2.warpAffine(stripes, affine[:2], (480, 224), flags=cv2.INTER_LINEAR).astype(float)
    assert abs(filtered.mean() - 127.5) < 3 and filtered.std() < 8
    assert aliased.std() > 40


def test_the_affine_has_one_owner():
    affine = image_transform((900, 1600), (224, 480), None)
    np.testing.assert_array_equal(affine, resize_crop_for((900, 1600), (224, 480)).numpy())
    assert image_size_of("448x800") == (448, 800) and image_size_of((64, 128)) == (64, 128)
    for bad in ("999x", "big", (0, 4), (1, 2, 3)):
        with pytest.raises(ConfigError, match="image_size"):
            image_size_of(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="image_size='999x'"):
        NuScenesBEV("/nonexistent", image_size="999x")


def _entry_like(weight_id: str, architecture: str, **changes):
    source = json.loads(json.dumps(get_weights("simplebev-enb0.occfeat-nuscenes").to_dict()))
    source.update(architecture=architecture, aliases=[], **changes)
    return {"schema": 1, "weights": {weight_id: source}}


def test_a_registry_input_that_is_not_the_networks_is_refused():
    try:
        # simplebev-tiny is 112x240 on a 64 m raster; the entry copied from simplebev-enb0 says 224x480 on 100 m.
        register_weights(_entry_like("simplebev-tiny.mislabelled", "simplebev-tiny"))
        with pytest.raises(ConfigError, match=r"input.image_size is \[224, 480\] but the network has \[112, 240\]"):
            get_weights("simplebev-tiny.mislabelled").transforms()
        with pytest.raises(ConfigError, match="input.image_size"):
            occfeat.load("simplebev-tiny.mislabelled", pretrained=False)
        register_weights(_entry_like("simplebev-enb0.bad-parts", "simplebev-enb0", parts={"backbone": "encoder."}))
        with pytest.raises(ConfigError, match="parts"):
            occfeat.load("simplebev-enb0.bad-parts", pretrained=False)
    finally:
        REGISTRY.reset()
    assert get_weights("simplebev-enb0.occfeat-nuscenes").transforms().image_size == (224, 480)


def test_the_recipes_image_size_is_the_networks():
    network = load_for_finetuning("simplebev-tiny", image_size=(224, 480))
    assert network.config.image_size == (224, 480)
    with pytest.raises(ConfigError, match=r"built for \(224, 480\) images but the recipe trains at \(112, 240\)"):
        load_for_finetuning(network, image_size=(112, 240))


def test_a_fine_tuning_run_trains_at_its_recipes_image_size_and_records_it(synthetic_world, tmp_path):
    from occfeat.finetune.training import finetune

    small = {"grid": {"x_range": (-16.0, 16.0), "y_range": (-16.0, 16.0), "resolution": 1.0}}
    result = finetune("simplebev-tiny", dataroot=synthetic_world.dataroot, version=synthetic_world.version,
                      out_dir=tmp_path / "run", train_split="all", val_split="all", count=1, recipe="cpu-tiny",
                      recipe_overrides={"image_size": "64x128", "eval_every": 0}, max_steps=1, val_samples=1,
                      device="cpu", progress=False, load_kwargs=small)
    assert result.model.config.image_size == (64, 128)
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["model_config"]["image_size"] == [64, 128] and run["recipe"]["image_size"] == "64x128"
