"""Every script in examples/ runs, at tiny size, on a generated world (what a newcomer runs first must not rot)."""

from __future__ import annotations

import pytest

from .scripts import ROOT, load_script

EXAMPLES = ROOT / "examples"
pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore:(?s).*RANDOM weights:UserWarning")]


def run_example(name: str, argv: list[str]) -> None:
    load_script(f"examples/{name}.py").main(argv)


def test_every_example_has_a_smoke_test():
    tested = {"load_and_predict", "finetune_low_data", "reproduce_pretraining", "robustness_nuscenes_c", "publish_to_hub"}
    assert {p.stem for p in EXAMPLES.glob("*.py")} == tested


@pytest.mark.slow
def test_load_and_predict(tmp_path, capsys):
    run_example("load_and_predict", ["--out", str(tmp_path)])
    printed = capsys.readouterr().out
    assert "vehicle probability map (1, 1, 64, 64)" in printed and (tmp_path / "prediction.png").is_file()


@pytest.mark.slow
def test_finetune_low_data(tmp_path, capsys):
    run_example("finetune_low_data", ["--out", str(tmp_path), "--steps", "2", "--scenes", "3"])
    printed = capsys.readouterr().out
    assert printed.count("finetune: ") == 1 and (tmp_path / "run" / "eval.json").is_file()  # one summary line


@pytest.mark.slow
def test_reproduce_pretraining(tmp_path, capsys):
    run_example("reproduce_pretraining", ["--out", str(tmp_path), "--steps", "2", "--scenes", "3",
                                          "--teacher-weights", "random", "--arch", "simplebev-lite0-tiny",
                                          "--pretrained-backbone"])
    printed = capsys.readouterr().out
    assert printed.count("pretrain (occfeat)") == 1 and "missing 0, unexpected 0" in printed  # one summary line
    assert "backbone: EfficientNet-Lite0, ImageNet-1k" in printed  # --pretrained-backbone reached the network
    assert (tmp_path / "weights" / "model.safetensors").is_file()


@pytest.mark.slow
def test_robustness_nuscenes_c(tmp_path, capsys):
    run_example("robustness_nuscenes_c", ["--out", str(tmp_path), "--corruptions", "Fog", "Snow", "--severities", "1",
                                          "--samples", "1"])
    printed = capsys.readouterr().out
    assert "clean vehicle IoU" in printed and "| Fog |" in printed and "| Snow |" in printed


@pytest.mark.slow
def test_publish_to_hub(tmp_path, capsys):
    from occfeat.zoo.registry import REGISTRY

    try:
        run_example("publish_to_hub", ["--out", str(tmp_path)])
    finally:
        REGISTRY.reset()
    printed = capsys.readouterr().out
    assert "pushed occfeat-example/simplebev-tiny@" in printed and "missing 0, unexpected 0" in printed
    assert "'pinned': True" in printed
