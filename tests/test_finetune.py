"""Fine-tuning end to end on a generated world: learning works, runs export to the zoo, the CLI drives it all."""

from __future__ import annotations

import json

import pytest
import torch

import occfeat
from occfeat.cli import main
from occfeat.data import NuScenesBEV, data_options
from occfeat.finetune.evaluation import evaluate_model
from occfeat.finetune.recipes import get_recipe, schedule_steps
from occfeat.finetune.training import export_run, finetune
from occfeat.pretrain.training import PRETRAINED_PARTS

# Small enough for the test suite: 64x128 images, a 32 m x 32 m raster at 1 m, no dropout.
SMALL = dict(image_size=(64, 128), grid={"x_range": (-16.0, 16.0), "y_range": (-16.0, 16.0), "resolution": 1.0}, dropout=0.0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("arch", ["bevformer-tiny", "simplebev-tiny"])
def test_tiny_networks_overfit_four_samples(arch, synthetic_world, tmp_path):
    result = finetune(
        arch, dataroot=synthetic_world.dataroot, version=synthetic_world.version, out_dir=tmp_path / "run",
        train_split="all", val_split="all", count=4, recipe="cpu-tiny", max_steps=150, val_samples=2, device="cpu",
        progress=False, recipe_overrides=dict(augment=False, lr=5e-3, batch_size=2, eval_every=10**6),
        load_kwargs=SMALL,
    )
    config = result.model.config
    train = NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "all", count=4, seed=0,
                        image_size=config.image_size, grid=config.grid)
    scores = evaluate_model(result.model, train)
    assert scores["vehicle_iou"] >= 0.9, scores
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["train_samples"] == 4 and run["steps"] == 150 and run["recipe"]["name"] == "cpu-tiny"
    assert len(json.loads((tmp_path / "run" / "subset.json").read_text())) == 4
    assert (tmp_path / "run" / "eval.json").is_file() and list((tmp_path / "run" / "pictures").glob("*.png"))


def test_cli_finetune_evaluate_export_round_trip(synthetic_world, tmp_path, capsys):
    data = ["--dataroot", str(synthetic_world.dataroot), "--version", synthetic_world.version, "--device", "cpu"]
    assert main(["finetune", "simplebev-tiny", *data, "--out", str(tmp_path / "run"), "--recipe", "cpu-tiny",
                 "--steps", "3", "--count", "2", "--val-samples", "2"]) == 0
    assert "finetune: 2 labelled samples, 3 steps" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "export")]) == 0
    model = occfeat.load(f"local-dir:{tmp_path / 'export'}")
    assert model.load_report.clean and model.provenance["source"] == "occfeat finetune"
    assert main(["evaluate", f"local-dir:{tmp_path / 'export'}", *data, "--split", "val", "--samples", "2",
                 "--out", str(tmp_path / "eval"), "--corruption", "Fog", "--severity", "2", "--pictures", "1"]) == 0
    report = json.loads((tmp_path / "eval" / "eval.json").read_text())
    assert set(report["metrics"]) >= {"vehicle_iou", "vehicle_iou_nofilter", "map_iou/drivable_area"}
    assert report["corruption"] == ["Fog", 2]
    assert (tmp_path / "eval" / "pictures" / "prediction-00.png").is_file()
    # The exported weights are the run's: they score what the run's own evaluation wrote (3 steps, evaluated at the
    # last one, so the best weights are the latest).
    export_run(tmp_path / "run", tmp_path / "export2", which="latest")
    written = json.loads((tmp_path / "run" / "eval.json").read_text())["metrics"]
    val = NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "val", **data_options(model.config))
    val.sample_tokens = val.sample_tokens[:2]
    for folder in ("export", "export2"):
        scores = evaluate_model(occfeat.load(f"local-dir:{tmp_path / folder}").eval(), val)
        assert scores["vehicle_iou"] == pytest.approx(written["vehicle_iou"], abs=1e-6)
        assert scores["map_iou/drivable_area"] == pytest.approx(written["map_iou/drivable_area"], abs=1e-6)


def test_schedule_rule_gives_small_fractions_enough_steps():
    recipe = get_recipe("nuscenes-224x480")
    full, tenth, hundredth = (schedule_steps(recipe, n) for n in (28130, 2813, 282))
    assert full == 234417 and tenth == 23442 and hundredth == recipe.min_steps


def test_corruption_table_over_corruptions_and_severities(synthetic_world):
    from occfeat.finetune.evaluation import evaluate_corruptions

    model = occfeat.create_model("simplebev-tiny", **SMALL).eval()

    def dataset(corruption):
        data = NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "val", image_size=model.config.image_size,
                           grid=model.config.grid, corruption=corruption)
        data.sample_tokens = data.sample_tokens[:1]
        return data

    results, table = evaluate_corruptions(model, dataset, corruptions=("Fog", "CameraCrash"), severities=(1, 3))
    assert set(results) == {"clean", "Fog/1", "Fog/3", "CameraCrash/1", "CameraCrash/3", "robustness"}
    assert set(results["robustness"]["vehicle_iou"]["RR"]) == {"Fog", "CameraCrash"}
    assert "| Fog |" in table and "| CameraCrash |" in table


def final_weights(run_dir) -> dict:
    from safetensors.torch import load_file

    from occfeat.engine.checkpoint import latest_checkpoint, MODEL_FILE

    return load_file(str(latest_checkpoint(run_dir) / MODEL_FILE))


@pytest.mark.parametrize("start", ["scratch", "pretrained"])
def test_a_seed_determines_a_fine_tuning_run(start, synthetic_world, tmp_path):
    """Two identical CPU runs end with bit-identical weights, whatever the process drew before: the seed fixes the
    network's initialisation and the heads a pretrained load re-initialises, not only the steps."""
    model = "simplebev-tiny"
    if start == "pretrained":  # weights without heads: the load re-initialises them
        occfeat.save_pretrained(occfeat.create_model(model, **SMALL), tmp_path / "weights", parts=PRETRAINED_PARTS)
        model = f"local-dir:{tmp_path / 'weights'}"

    def run(name: str, seed: int) -> dict:
        finetune(model, dataroot=synthetic_world.dataroot, version=synthetic_world.version, out_dir=tmp_path / name,
                 train_split="all", val_split="all", count=2, recipe="cpu-tiny", max_steps=2, val_samples=1,
                 device="cpu", seed=seed, progress=False, recipe_overrides=dict(eval_every=10**6),
                 load_kwargs=None if start == "pretrained" else SMALL)
        return final_weights(tmp_path / name)

    torch.manual_seed(1)
    first = run("a", seed=3)
    torch.manual_seed(2)  # another global state before the second run
    again = run("b", seed=3)
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first), "same seed, same weights"
    other = run("c", seed=4)
    assert any(not torch.equal(first[k], other[k]) for k in first)
