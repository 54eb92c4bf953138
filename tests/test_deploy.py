"""Deployment (issue 15): every registered tiny architecture exports to ONNX and to a torch.export program, both run
(ONNX Runtime, the program's module) and equal the PyTorch model at two batch sizes; bad input names the expected
shape; the full-size networks export the same way (slow)."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

import occfeat
from occfeat.cli import main as cli_main
from occfeat.deploy import OnnxModel, ProgramModel, compare, example_inputs, export_onnx
from occfeat.errors import InputError

TOLERANCE = 1e-4  # relative to each output's largest magnitude
# The registered tiny networks (Lite0's TF "same" padding once, on the cheaper SimpleBEV: the other parts are the
# EN-B0 networks'), and SimpleBEV with Simple-BEV's lifting and camera raster (its converted weights).
VARIANTS = {
    **{name: {} for name in occfeat.list_models() if name.endswith("-tiny") and name != "bevformer-lite0-tiny"},
    "simplebev-tiny+simple-bev-lifting": {"lifting": "simple-bev", "raster_frame": "camera", "raster_camera": 1},
}


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def exported(request, tmp_path_factory):
    """Each variant saved as a local-dir and exported by the CLI (`occfeat export-onnx local-dir:... --pt2`)."""
    name = request.param
    torch.manual_seed(0)
    model = occfeat.create_model(name.split("+")[0], **VARIANTS[name]).eval()
    folder = tmp_path_factory.mktemp(name)
    occfeat.save_pretrained(model, folder / "weights")
    check = ["--check"] if name == sorted(VARIANTS)[0] else []  # the CLI's own comparison, once
    assert cli_main(["export-onnx", f"local-dir:{folder / 'weights'}", "--out", str(folder / "model.onnx"),
                     "--pt2", str(folder / "model.pt2"), *check]) == 0
    return model, folder


def test_onnx_runtime_and_the_program_equal_pytorch_at_two_batch_sizes(exported):
    model, folder = exported
    for runner in (OnnxModel(folder / "model.onnx"), ProgramModel(folder / "model.pt2")):
        worst = compare(model, runner, batch_sizes=(1, 3))
        assert set(worst) == set(model.config.heads)
        assert max(worst.values()) <= TOLERANCE, worst


def test_the_onnx_file_names_its_outputs_after_the_heads_and_carries_the_input_spec(exported):
    model, folder = exported
    proto = onnx.load(str(folder / "model.onnx"))
    assert [o.name for o in proto.graph.output] == list(model.config.heads)
    assert [i.name for i in proto.graph.input] == ["images", "intrinsics", "cam_to_ego"]
    batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # dynamic batch
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    spec = meta["occfeat.input_spec"]
    assert spec["image_size"] == list(model.config.image_size) and spec["mean"] == list(model.config.image_mean)
    assert meta["occfeat.config"] == json.loads(json.dumps(model.config.to_dict()))
    assert "GridSample" in {node.op_type for node in proto.graph.node} | {
        node.op_type for f in proto.functions for node in f.node}


def test_bad_input_to_an_exported_network_names_the_expected_shape(exported):
    model, folder = exported
    images, intrinsics, cam_to_ego = example_inputs(model, 1)
    h, w = model.config.image_size
    for runner in (OnnxModel(folder / "model.onnx"), ProgramModel(folder / "model.pt2")):
        five_cameras = {"images": images[:, :5], "intrinsics": intrinsics[:, :5], "cam_to_ego": cam_to_ego[:, :5]}
        with pytest.raises(InputError, match=rf"\(1, 6, 3, {h}, {w}\).*N=6 cameras"):
            runner(five_cameras)
        small = {"images": images[..., : h - 16, :], "intrinsics": intrinsics, "cam_to_ego": cam_to_ego}
        with pytest.raises(InputError, match=rf"images {h}x{w}"):
            runner(small)
        with pytest.raises(InputError, match="lacks"):
            runner({"images": images})


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["bevformer-enb0", "simplebev-enb0"])
def test_the_full_size_networks_export_and_run_in_onnx_runtime(arch, tmp_path):
    torch.manual_seed(0)
    model = occfeat.create_model(arch).eval()
    export_onnx(model, tmp_path / "model.onnx")
    worst = compare(model, OnnxModel(tmp_path / "model.onnx"), batch_sizes=(1,))
    assert max(worst.values()) <= TOLERANCE, worst
