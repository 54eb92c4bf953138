"""The zoo without the Hub: registry, load report, strictness, key surgery, local folders, publishing files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import occfeat
from occfeat.errors import ConfigError, UnknownNameError
from occfeat.zoo.loading import LoadError, UnsafeWeightsError, WeightsNotPublishedError
from occfeat.zoo.registry import REGISTRY, get_weights, list_weights, register_weights, validate_entry

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model = occfeat.create_model("simplebev-tiny").eval()
    folder = tmp_path_factory.mktemp("saved")
    occfeat.save_pretrained(model, folder)
    return model, folder


def test_shipped_registry_entries_are_valid():
    raw = json.loads((REPO / "occfeat" / "zoo" / "weights.json").read_text())
    assert {"bevformer-enb0.occfeat-nuscenes", "simplebev-enb0.occfeat-nuscenes"} <= set(raw["weights"])
    for weight_id, entry in raw["weights"].items():
        validate_entry(weight_id, entry)
        assert entry["architecture"] in occfeat.list_models()
        assert all("not measured by occfeat" in m["source"] for m in entry["metrics"]), "reported numbers say so"
    assert get_weights("bevformer-enb0-occfeat").id == "bevformer-enb0.occfeat-nuscenes"
    assert get_weights("simplebev-enb0-occfeat").id == "simplebev-enb0.occfeat-nuscenes"


def test_registry_rejects_malformed_entries():
    entry = dict(json.loads((REPO / "occfeat" / "zoo" / "weights.json").read_text())["weights"]["bevformer-enb0.occfeat-nuscenes"])
    with pytest.raises(ConfigError, match="40-hex"):
        validate_entry("bevformer-enb0.x", {**entry, "hub": {"repo": "a/b", "commit": "main"}})
    with pytest.raises(ConfigError, match="pickles are never loaded"):
        validate_entry("bevformer-enb0.x", {**entry, "files": {"pytorch_model.bin": {"sha256": "0" * 64, "size": 1}}})
    with pytest.raises(ConfigError, match="architecture"):
        validate_entry("simplebev-r50.x", entry)


def test_unpublished_weights_say_how_to_reproduce_them_and_build_untrained():
    with pytest.raises(WeightsNotPublishedError, match="occfeat pretrain bevformer-enb0"):
        occfeat.load("bevformer-enb0-occfeat")
    model = occfeat.load("bevformer-enb0-occfeat", pretrained=False, device="meta")
    assert model.config.arch == "bevformer-enb0" and model.weight_spec.id == "bevformer-enb0.occfeat-nuscenes"


def test_unknown_names_suggest_close_ones():
    with pytest.raises(UnknownNameError, match="bevformer-enb0-occfeat"):
        occfeat.load("bevformer-enb0-ocfeat")


def test_user_registry_files_and_environment(tmp_path, monkeypatch, saved):
    entry = json.loads((REPO / "occfeat" / "zoo" / "weights.json").read_text())["weights"]["bevformer-enb0.occfeat-nuscenes"]
    mine = {"weights": {"simplebev-tiny.mine": {**entry, "architecture": "simplebev-tiny", "aliases": ["my-tiny"]}}}
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(mine))
    try:
        monkeypatch.setenv("OCCFEAT_REGISTRY", str(path))
        REGISTRY.reset()
        assert get_weights("my-tiny").source == str(path)
        REGISTRY.reset()
        monkeypatch.delenv("OCCFEAT_REGISTRY")
        assert "simplebev-tiny.mine" not in list_weights()
        assert register_weights(mine) == ["simplebev-tiny.mine"]
        assert "simplebev-tiny.mine" in list_weights()
    finally:
        REGISTRY.reset()


def test_save_pretrained_then_local_dir_is_bit_exact(saved):
    model, folder = saved
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "README.md"}
    loaded = occfeat.load(f"local-dir:{folder}")
    assert loaded.load_report.clean and not loaded.load_report.reinitialized
    reference = model.state_dict()
    assert all(torch.equal(reference[k], v) for k, v in loaded.state_dict().items())
    assert "simplebev-tiny" in (folder / "README.md").read_text()
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "pt") as handle:
        assert handle.metadata()["architecture"] == "simplebev-tiny"


def test_card_verb_prints_a_model_card(capsys):
    from occfeat.cli import main

    assert main(["card", "bevformer-enb0-occfeat", "--json"]) == 0
    card = json.loads(capsys.readouterr().out)["card"]
    assert card.startswith("---") and "library_name: occfeat" in card and "paper" in card


def test_num_classes_reinitialises_the_map_head_and_says_so(saved):
    _, folder = saved
    model = occfeat.load(f"local-dir:{folder}", num_classes=3)
    report = model.load_report
    assert report.clean and report.reinitialized and all(k.startswith("heads.map.") for k in report.reinitialized)
    assert "re-initialised" in str(report) and "heads.map" in str(report)
    assert model.heads["map"][1].out_channels == 3
    assert not any(t.is_meta for t in model.state_dict().values())


def write_checkpoint(state, path):
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def test_strict_auto_raises_on_undeclared_differences(saved, tmp_path):
    model, folder = saved
    state = load_file(str(folder / "model.safetensors"))
    missing = {k: v for k, v in state.items() if not k.startswith("neck.")}
    with pytest.raises(LoadError, match="missing"):
        occfeat.load(f"local-dir:{folder}", pretrained=False, checkpoint=write_checkpoint(missing, tmp_path / "missing.safetensors"))
    extra = {**state, "view_transform.extra": torch.zeros(3)}
    with pytest.raises(LoadError, match="unexpected"):
        occfeat.load(f"local-dir:{folder}", pretrained=False, checkpoint=write_checkpoint(extra, tmp_path / "extra.safetensors"))
    wrong = {**state, "neck.fuse.2.weight": torch.zeros(1, 1, 1, 1)}
    with pytest.raises(LoadError, match="Shape mismatches"):
        occfeat.load(f"local-dir:{folder}", pretrained=False, checkpoint=write_checkpoint(wrong, tmp_path / "wrong.safetensors"))
    relaxed = occfeat.load(f"local-dir:{folder}", pretrained=False, checkpoint=tmp_path / "extra.safetensors", strict=False)
    assert relaxed.load_report.unexpected == ["view_transform.extra"]


def test_wrapper_prefixes_are_stripped(saved, tmp_path):
    _, folder = saved
    state = load_file(str(folder / "model.safetensors"))
    wrapped = {f"module._orig_mod.{k}": v for k, v in state.items()}
    model = occfeat.load(f"local-dir:{folder}", pretrained=False, checkpoint=write_checkpoint(wrapped, tmp_path / "ddp.safetensors"))
    assert model.load_report.clean


def test_another_prefix_is_diagnosed_with_the_key_map_to_pass(saved, tmp_path):
    _, folder = saved
    state = load_file(str(folder / "model.safetensors"))
    prefixed = write_checkpoint({f"student.net.{k}": v for k, v in state.items()}, tmp_path / "prefixed.safetensors")
    with pytest.raises(LoadError, match=r"key_map=\{'student.net.': ''\}"):
        occfeat.load(f"local-dir:{folder}", pretrained=False, checkpoint=prefixed)
    model = occfeat.load(f"local-dir:{folder}", pretrained=False, checkpoint=prefixed, key_map={"student.net.": ""})
    assert model.load_report.clean


def test_parts_loads_only_those_parts(saved):
    model, folder = saved
    partial = occfeat.load(f"local-dir:{folder}", parts=("backbone", "neck"))
    reference = model.state_dict()
    for key, value in partial.state_dict().items():
        if key.startswith(("backbone.", "neck.")):
            assert torch.equal(value, reference[key]), key
    assert set(partial.load_report.skipped_parts) == {"view_transform", "decoder", "heads"}
    assert not torch.equal(partial.state_dict()["heads.vehicle.1.weight"], reference["heads.vehicle.1.weight"])


def test_pickles_are_never_loaded(saved, tmp_path):
    _, folder = saved
    pickle = tmp_path / "model.pt"
    torch.save({"x": torch.zeros(1)}, pickle)
    with pytest.raises(UnsafeWeightsError, match="never unpickles"):
        occfeat.load(f"local-dir:{folder}", pretrained=False, checkpoint=pickle)


def test_load_to_dtype(saved):
    _, folder = saved
    model = occfeat.load(f"local-dir:{folder}", dtype=torch.bfloat16)
    assert {t.dtype for t in model.parameters()} == {torch.bfloat16}


def test_transforms_resize_crop_normalise_and_update_intrinsics():
    transform = get_weights("bevformer-enb0-occfeat").transforms()
    images = torch.randint(0, 256, (6, 3, 900, 1600), dtype=torch.uint8)
    from occfeat.models.geometry import nuscenes_camera_rig

    raw_k, _ = nuscenes_camera_rig((900, 1600))
    out, k = transform(images, raw_k)
    assert out.shape == (6, 3, 224, 480) and out.dtype == torch.float32
    expected_k, _ = nuscenes_camera_rig((224, 480))
    torch.testing.assert_close(k, expected_k, atol=1e-3, rtol=0)


def test_hub_folder_matches_the_registry(tmp_path):
    occfeat_cli = [sys.executable, "-m", "occfeat", "card", "--out", str(tmp_path)]
    assert subprocess.run(occfeat_cli, capture_output=True).returncode == 0
    committed = sorted(p.relative_to(REPO / "hub") for p in (REPO / "hub").rglob("*") if p.is_file())
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert committed == generated, "run `occfeat card --out hub` after changing the registry"
    for path in generated:
        assert (REPO / "hub" / path).read_text() == (tmp_path / path).read_text(), path


def test_list_and_info_do_not_import_torch():
    for verb in (["list"], ["info", "bevformer-enb0-occfeat"], ["list", "--json"]):
        code = "import sys, runpy; sys.argv = ['occfeat', *%r]; from occfeat.cli import main; main(); print('torch' in sys.modules)" % verb
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1] == "False", verb
