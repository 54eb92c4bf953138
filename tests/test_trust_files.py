"""Trust boundaries of files, sizes and converters (issue 23): files honour the umask, untrusted config sizes and
pickled tensors are bounded before anything is allocated, torch's unpickling advice is never passed on,
``simple_bev_inputs`` finds the reference camera wherever it is, and bad output paths are typed errors."""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path

import pytest
import torch

import occfeat
from occfeat import io
from occfeat.conventions.geometry import nuscenes_camera_rig
from occfeat.errors import ConfigError, InputError
from occfeat.models import BEVModelConfig, create_model, list_models
from occfeat.models.imagenet import convert_efficientnet_pytorch
from occfeat.pretrain.dinov2 import convert_dinov2_checkpoint
from occfeat.zoo.simple_bev import convert_simple_bev_checkpoint, simple_bev_config, simple_bev_inputs

# The independent Simple-BEV Segnet (written from reading its code) and the small grid it is tested at.
from tests import test_simple_bev as simple_bev_reference
from tests.test_simple_bev import GRID_ZYX, IMAGE_HW

# A pickle whose one tensor is 4 bytes of storage seen as this many elements. Refused before any copy; were the
# check to regress, the copy would cost 128 MiB (not the 16 GiB of 2**32, which only read_pickled_weights is given).
EXPANDED_ELEMENTS = 2**25


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(params=[0o022, 0o002], ids=["umask022", "umask002"])
def umask(request):
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


# ---- 1. files honour the umask ---------------------------------------------------------------------------------------


def test_atomic_write_gives_the_mode_a_plain_open_gives(umask, tmp_path):
    plain = tmp_path / "plain.txt"
    with open(plain, "w") as handle:
        handle.write("x")
    target = tmp_path / "new" / "deeper" / "notes.txt"
    io.atomic_write(target, lambda tmp: tmp.write_text("done"))
    assert target.read_text() == "done"
    assert mode_of(target) == mode_of(plain) == 0o666 & ~umask
    assert mode_of(target.parent) == mode_of(tmp_path / "new") == 0o777 & ~umask  # created parents: mkdir's mode
    # Replacing a file written by an older occfeat (0600) gives the umask's mode too.
    target.chmod(0o600)
    io.atomic_write(target, lambda tmp: tmp.write_text("again"))
    assert mode_of(target) == 0o666 & ~umask
    assert [p.name for p in target.parent.iterdir()] == ["notes.txt"]  # no temporary file left behind


def test_make_temp_dir_gives_the_mode_a_plain_mkdir_gives(umask, tmp_path):
    first = io.make_temp_dir(tmp_path / "runs", ".checkpoint.tmp-")
    second = io.make_temp_dir(tmp_path / "runs", ".checkpoint.tmp-")
    assert first != second and first.parent == second.parent == tmp_path / "runs"
    assert first.name.startswith(".checkpoint.tmp-") and first.is_dir() and not any(first.iterdir())
    assert mode_of(first) == mode_of(tmp_path / "runs") == 0o777 & ~umask


def test_converted_weights_are_readable_as_the_umask_allows(umask, tmp_path):
    source = tmp_path / "en.pth"
    torch.save(efficientnet_like_state_dict(), source)
    out = tmp_path / "lite0.safetensors"
    convert_efficientnet_pytorch(source, out)
    assert mode_of(out) == 0o666 & ~umask


# ---- 2. untrusted sizes are bounded before allocation ----------------------------------------------------------------


def tiny_config_dict() -> dict:
    return json.loads(create_model("simplebev-tiny", device="meta").config.to_json())


@pytest.mark.parametrize(
    ("field", "value", "limit"),
    [
        ("bev_channels", 1048576, "1024"),  # the 1.7 KB config asking for 300 TB
        ("bev_channels", 4096, "1024"),  # grew to 7 GB before failing
        ("neck_channels", 1 << 20, "4096"),
        ("bevformer_layers", 100_000, "64"),
        ("bevformer_heads", 128, "64"),
        ("bevformer_ffn_channels", 1 << 24, "16384"),
        ("image_size", [1 << 16, 1 << 16], "4096"),
        ("grid", {"resolution": 0.001}, "2048"),  # 64 m at 1 mm: 64000 x 64000 cells
        ("grid", {"z_resolution": 0.01}, "256"),  # 1000 heights
        ("map_classes", [f"class{i}" for i in range(10_000)], "256"),
        ("raster_camera", 1 << 30, "63"),
    ],
)
def test_config_sizes_beyond_any_real_bev_model_are_refused_naming_field_value_limit_and_override(field, value, limit):
    data = tiny_config_dict()
    data[field] = {**data[field], **value} if field == "grid" else value
    if field.startswith("bevformer"):
        data["view_transform"] = "bevformer"
    if field == "bevformer_heads":
        data["bev_channels"] = 128  # divisible by the heads, so that only their number is wrong
    if field == "grid" and "z_resolution" in value:
        data["bevformer_cross_points"] = 1000  # a multiple of the heights, so that only their number is wrong
    with pytest.raises(ConfigError) as error:
        BEVModelConfig.from_dict(data)
    message = str(error.value)
    assert f"BEVModelConfig.{field}" in message and limit in message, message
    assert "allow_large=True" in message and "OCCFEAT_ALLOW_LARGE_MODELS=1" in message


def test_sizes_each_within_bounds_but_together_too_large_are_refused_by_the_estimate():
    data = tiny_config_dict() | {"view_transform": "bevformer", "bev_channels": 1024}
    data["grid"] = {**data["grid"], "x_range": [-51.2, 51.2], "y_range": [-51.2, 51.2], "resolution": 0.05}
    with pytest.raises(ConfigError, match=r"parameters .*over the limit.*allow_large=True"):
        BEVModelConfig.from_dict(data)  # 2048 x 2048 learned queries of 1024 channels: 4.3 G parameters
    data = tiny_config_dict() | {"bev_channels": 1024, "decoder": "none", "heads": ["vehicle"]}
    data["grid"] = {**data["grid"], "x_range": [-51.2, 51.2], "y_range": [-51.2, 51.2], "resolution": 0.1,
                    "z_resolution": 0.125}
    data["bevformer_cross_points"] = 80
    with pytest.raises(ConfigError, match=r"activation .*over the limit"):
        BEVModelConfig.from_dict(data)  # a 1024 x 1024 x 80 x 1024 lifted volume: 86 G values


def test_large_models_opt_out_by_keyword_or_environment(monkeypatch):
    data = tiny_config_dict() | {"bev_channels": 4096}
    assert BEVModelConfig.from_dict(data, allow_large=True).bev_channels == 4096
    assert BEVModelConfig.from_json(json.dumps(data), allow_large=True).bev_channels == 4096
    monkeypatch.setenv("OCCFEAT_ALLOW_LARGE_MODELS", "1")
    assert BEVModelConfig.from_dict(data).bev_channels == 4096
    with pytest.raises(ConfigError, match="bev_channels=4096"):  # an explicit False wins over the environment
        BEVModelConfig.from_dict(data, allow_large=False)
    monkeypatch.setenv("OCCFEAT_ALLOW_LARGE_MODELS", "0")
    with pytest.raises(ConfigError, match="bev_channels=4096"):
        BEVModelConfig.from_json(json.dumps(data))


def test_every_real_config_passes_and_the_estimate_matches_the_built_network():
    configs = [create_model(arch, device="meta").config for arch in list_models()] + [simple_bev_config()]
    for config in configs:
        assert BEVModelConfig.from_dict(config.to_dict()) == config
    for arch in ("bevformer-enb0", "bevformer-r50", "simplebev-r101", "simplebev-tiny"):
        model = create_model(arch, device="meta")
        actual = sum(p.numel() for name, p in model.named_parameters() if not name.startswith("backbone."))
        assert 0.8 < model.config.estimated_size().parameters / actual < 1.25, arch


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bev_channels", "128"),
        ("bev_channels", 128.5),
        ("bev_channels", True),
        ("bev_channels", None),
        ("bevformer_heads", 0),
        ("neck_channels", -64),
        ("image_size", "224x480"),
        ("image_size", [112, "240"]),
        ("image_size", 112),
        ("image_mean", [0.5, 0.5]),
        ("heads", "vehicle"),
        ("heads", [1, 2]),
        ("map_classes", {"drivable_area": 1}),
        ("grid", [1, 2]),
        ("grid", "BEVGrid()"),
        ("grid", {"resolution": "0.5"}),
        ("grid", {"resolution": math.nan}),
        ("grid", {"x_range": 32}),
        ("grid", {"cells": 64}),
        ("dropout", "0.1"),
        ("view_transform", 3),
        ("raster_camera", 1.0),
    ],
)
def test_wrongly_typed_fields_are_config_errors_naming_the_field(field, value):
    data = tiny_config_dict()
    data[field] = {**data[field], **value} if field == "grid" and isinstance(value, dict) else value
    with pytest.raises(ConfigError, match=re.escape(f"BEVModelConfig.{field}")):
        BEVModelConfig.from_dict(data)


def test_a_config_that_is_not_an_object_is_a_config_error():
    for document in ("[1, 2]", '"simplebev"'):
        with pytest.raises(ConfigError, match="expected a JSON object"):
            BEVModelConfig.from_dict(json.loads(document))


# ---- 3. converter inputs holding expanded tensors --------------------------------------------------------------------


def expanded(*shape: int) -> torch.Tensor:
    """4 bytes of storage seen as ``shape``: what a hostile .pth can hold."""
    return torch.zeros(1).expand(*shape)


def efficientnet_like_state_dict() -> dict[str, torch.Tensor]:
    return {"_conv_stem.weight": torch.randn(8, 3, 3, 3), "_blocks.0._depthwise_conv.weight": torch.randn(8, 1, 3, 3),
            "_blocks.0._project_conv.weight": torch.randn(4, 8, 1, 1)}


def dinov2_like_state_dict(dim: int = 8) -> dict[str, torch.Tensor]:
    """The official layout of a one-block DINOv2 (mask_token, 14-pixel patches, layer scales)."""
    state = {"cls_token": torch.randn(1, 1, dim), "pos_embed": torch.randn(1, 5, dim), "mask_token": torch.zeros(1, dim),
             "patch_embed.proj.weight": torch.randn(dim, 3, 14, 14), "patch_embed.proj.bias": torch.randn(dim),
             "norm.weight": torch.ones(dim), "norm.bias": torch.zeros(dim)}
    block = {"norm1": (dim,), "attn.qkv": (3 * dim, dim), "attn.proj": (dim, dim), "norm2": (dim,),
             "mlp.fc1": (4 * dim, dim), "mlp.fc2": (dim, 4 * dim)}
    for module, shape in block.items():
        state[f"blocks.0.{module}.weight"] = torch.randn(*shape)
        state[f"blocks.0.{module}.bias"] = torch.randn(shape[0])
    state["blocks.0.ls1.gamma"] = state["blocks.0.ls2.gamma"] = torch.ones(dim)
    return state


def test_read_pickled_weights_refuses_a_16_gib_expanded_view_without_copying_it(tmp_path):
    path = tmp_path / "expanded.pth"
    torch.save({"model": {"weight": expanded(2**32)}}, path)
    assert path.stat().st_size < 4096
    with pytest.raises(InputError, match=r"repeat their memory \(model\.weight \(4294967296,\) over 4 bytes") as error:
        io.read_pickled_weights(path, expected="a state dict")
    assert "16.0 GiB" in str(error.value)


def test_read_pickled_weights_accepts_views_within_the_files_bytes(tmp_path):
    shared = torch.randn(64, 64)
    path = tmp_path / "tied.pth"
    torch.save({"a": shared, "tied": shared, "slice": shared[:8], "step": torch.tensor(3)}, path)
    loaded = io.read_pickled_weights(path, expected="a state dict")
    assert torch.equal(loaded["tied"], shared) and torch.equal(loaded["slice"], shared[:8])


def test_efficientnet_conversion_refuses_an_expanded_tensor(tmp_path):
    state = efficientnet_like_state_dict() | {"_blocks.0._depthwise_conv.weight": expanded(EXPANDED_ELEMENTS // 9, 1, 3, 3)}
    torch.save(state, tmp_path / "en.pth")
    with pytest.raises(InputError, match=r"repeat their memory \(_blocks\.0\._depthwise_conv\.weight"):
        convert_efficientnet_pytorch(tmp_path / "en.pth", tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_dinov2_conversion_refuses_an_expanded_tensor(tmp_path):
    state = dinov2_like_state_dict() | {"blocks.0.mlp.fc1.weight": expanded(EXPANDED_ELEMENTS // 8, 8)}
    torch.save(state, tmp_path / "dinov2.pth")
    with pytest.raises(InputError, match=r"repeat their memory \(blocks\.0\.mlp\.fc1\.weight"):
        convert_dinov2_checkpoint(tmp_path / "dinov2.pth", tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_simple_bev_conversion_refuses_an_expanded_tensor(tmp_path):
    channels, heights = 128, GRID_ZYX[1]
    state = {"model_state_dict": {"bev_compressor.0.weight": expanded(channels, channels * heights, 3, 3),
                                  "decoder.first_conv.weight": expanded(64, EXPANDED_ELEMENTS // 64)}}
    torch.save(state, tmp_path / "model-000000001.pth")
    with pytest.raises(InputError, match=r"repeat their memory"):
        convert_simple_bev_checkpoint(tmp_path / "model-000000001.pth", tmp_path / "out", grid_zyx=GRID_ZYX,
                                      image_size=IMAGE_HW)
    assert not (tmp_path / "out").exists()


def test_the_dinov2_like_fixture_converts_when_nothing_is_expanded(tmp_path):
    torch.save(dinov2_like_state_dict(), tmp_path / "dinov2.pth")
    report = convert_dinov2_checkpoint(tmp_path / "dinov2.pth", tmp_path / "out.safetensors")
    assert (report["layout"], report["embed_dim"], report["depth"]) == ("official", 8, 1)


# ---- 4. torch's advice to unpickle code is never passed on -----------------------------------------------------------


class NotAWeight:
    pass


def assert_no_unsafe_advice(message: str) -> None:
    assert not re.search(r"weights_only\W*(=|set to)\W*False", message), message
    assert "can still be loaded" not in message and "Re-running" not in message, message
    assert "safe_globals" not in message, message


def test_refused_pickles_name_the_reason_and_never_suggest_weights_only_false(tmp_path):
    with_class = tmp_path / "class.pth"
    torch.save({"weight": torch.zeros(2), "extra": NotAWeight()}, with_class)
    with pytest.raises(InputError) as error:
        io.read_pickled_weights(with_class, expected="a state dict")
    assert_no_unsafe_advice(str(error.value))
    assert "NotAWeight" in str(error.value) and "never unpickles code" in str(error.value)

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x80\x04\x95garbage")
    with pytest.raises(InputError) as error:
        io.read_pickled_weights(garbage, expected="a state dict")
    assert_no_unsafe_advice(str(error.value))


# ---- 5. simple_bev_inputs finds the reference camera at any index ----------------------------------------------------


@pytest.fixture(scope="module")
def segnet():
    """test_simple_bev's reference Segnet: random weights, non-trivial BatchNorm statistics and head biases."""
    torch.manual_seed(0)
    net = simple_bev_reference.SimpleBevSegnet()
    generator = torch.Generator().manual_seed(1)
    simple_bev_reference._randomise_batch_norms(net, generator)
    for name in ("segmentation_head", "instance_center_head", "instance_offset_head"):
        getattr(net.decoder, name)[3].bias.data.normal_(generator=generator)
    return net.eval()


@pytest.fixture(scope="module")
def segnet_checkpoint(segnet, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("segnet") / "model-000000010.pth"
    torch.save({"model_state_dict": segnet.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def converted_segnet(segnet_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("segnet_converted") / "converted"
    convert_simple_bev_checkpoint(segnet_checkpoint, out, grid_zyx=GRID_ZYX, image_size=IMAGE_HW)
    return occfeat.load(f"local-dir:{out}").eval()


@pytest.fixture(scope="module")
def segnet_batch():
    """Simple-BEV's inputs for 3 cameras, the reference (CAM_FRONT, identity transform) first, as after move_refcam."""
    intrinsics, cam_to_ego = nuscenes_camera_rig(IMAGE_HW, ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT"))
    pix_T_cams = torch.eye(4).repeat(3, 1, 1)
    pix_T_cams[:, :3, :3] = intrinsics
    cam0_T_camXs = torch.linalg.inv(cam_to_ego[0]) @ cam_to_ego
    rgb = torch.rand(2, 3, 3, *IMAGE_HW, generator=torch.Generator().manual_seed(2)) - 0.5
    return rgb, pix_T_cams.expand(2, -1, -1, -1).clone(), cam0_T_camXs.expand(2, -1, -1, -1).clone()


def permute_cameras(batch, orders):
    """Each sample's cameras in its own order (orders[b][new position] = old camera)."""
    index = torch.tensor(orders)
    samples = torch.arange(index.shape[0])[:, None]
    return tuple(tensor[samples, index] for tensor in batch)


@pytest.mark.parametrize("orders", [[[1, 2, 0], [1, 2, 0]], [[0, 1, 2], [2, 0, 1]]],
                         ids=["reference-last", "per-sample-index"])
def test_simple_bev_inputs_with_the_reference_camera_anywhere_give_segnets_outputs(segnet, converted_segnet,
                                                                                    segnet_batch, orders):
    """Segnet's grid lies in the frame cam0_T_camXs maps to, whatever the index of the identity camera: the converted
    network must give Segnet's outputs on the same inputs (the direct computation) wherever the reference is."""
    rgb, pix_T_cams, cam0_T_camXs = permute_cameras(segnet_batch, orders)
    assert not torch.equal(cam0_T_camXs[:, 0], torch.eye(4).expand(2, 4, 4))  # the reference is not first
    with torch.no_grad():
        seg_e, center_e, offset_e = segnet(rgb, pix_T_cams, cam0_T_camXs)
        outputs = converted_segnet(**simple_bev_inputs(rgb, pix_T_cams, cam0_T_camXs))
    simple_bev_reference.assert_outputs_are_segnets(outputs, seg_e, center_e, offset_e)


def test_simple_bev_inputs_put_the_identity_camera_at_the_raster_camera(segnet_batch):
    rgb, pix_T_cams, cam0_T_camXs = permute_cameras(segnet_batch, [[2, 0, 1], [1, 2, 0]])
    inputs = simple_bev_inputs(rgb, pix_T_cams, cam0_T_camXs, reference_camera=1)
    torch.testing.assert_close(inputs["cam_to_ego"][:, 1], torch.eye(4).expand(2, 4, 4))
    # Sample 0 had the reference at 1 (already in place); sample 1 at 2: cameras 1 and 2 swap.
    assert torch.equal(inputs["intrinsics"][0], pix_T_cams[0, :, :3, :3])
    assert torch.equal(inputs["intrinsics"][1], pix_T_cams[1, [0, 2, 1], :3, :3])
    assert torch.equal(inputs["cam_to_ego"][1], cam0_T_camXs[1, [0, 2, 1]])


def test_simple_bev_inputs_without_an_identity_camera_is_an_input_error(segnet_batch):
    rgb, pix_T_cams, cam0_T_camXs = segnet_batch
    shifted = cam0_T_camXs.clone()
    shifted[1, :, :3, 3] += torch.tensor([0.0, 1.0, 0.0])  # sample 1 relative to a frame 1 m below its cameras
    with pytest.raises(InputError, match=r"sample\(s\) \[1\].*identity"):
        simple_bev_inputs(rgb, pix_T_cams, shifted)


# ---- 6. bad output paths are typed errors ----------------------------------------------------------------------------


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("not a folder")
    return path


def test_atomic_write_and_make_temp_dir_name_the_file_in_the_way(tmp_path, a_file):
    with pytest.raises(InputError, match=f"{re.escape(str(a_file))} is a file, not a folder"):
        io.atomic_write(a_file / "sub" / "x.json", lambda tmp: tmp.write_text("{}"))
    with pytest.raises(InputError, match="is a folder"):
        io.atomic_write(tmp_path, lambda tmp: tmp.write_text("{}"))
    with pytest.raises(InputError, match="is a file, not a folder"):
        io.make_temp_dir(a_file, ".tmp-")


def test_file_converters_refuse_bad_output_paths_before_reading_and_create_missing_parents(tmp_path, a_file):
    torch.save(efficientnet_like_state_dict(), tmp_path / "en.pth")
    torch.save(dinov2_like_state_dict(), tmp_path / "dinov2.pth")
    converters = [(convert_efficientnet_pytorch, tmp_path / "en.pth"), (convert_dinov2_checkpoint, tmp_path / "dinov2.pth")]
    for convert, source in converters:
        with pytest.raises(InputError, match="is a file, not a folder"):
            convert(source, a_file / "out.safetensors")
        folder = tmp_path / f"{convert.__name__}.safetensors"
        folder.mkdir()
        with pytest.raises(InputError, match="is a folder"):
            convert(source, folder)
        out = tmp_path / "missing" / convert.__name__ / "out.safetensors"
        convert(source, out)
        assert out.is_file()


def test_simple_bev_conversion_refuses_bad_output_folders(segnet_checkpoint, a_file):
    for out, problem in ((a_file, "is a file; expected a folder"), (a_file / "converted", "is a file, not a folder")):
        with pytest.raises(InputError, match=problem):
            convert_simple_bev_checkpoint(segnet_checkpoint, out, grid_zyx=GRID_ZYX, image_size=IMAGE_HW)
