"""OccFeat pretraining end to end on a generated world: learning, modes, export to the zoo and fine-tuning from it,
the CLI, and DDP against one process.

The runs use a random-weight teacher (no DINOv2 weights offline) and the tiny SimpleBEV at 64x128 on a 32 m x 32 m
raster: seconds per run on one thread.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import occfeat
from occfeat.cli import EXIT_ERROR, main
from occfeat.data import NuScenesBEV, collate
from occfeat.errors import ConfigError
from occfeat.finetune.training import finetune
from occfeat.pretrain import OccFeatPretrainer, Teacher, export_pretrain_run, pretrain
from occfeat.pretrain.recipes import get_recipe

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(image_size=(64, 128), grid={"x_range": (-16.0, 16.0), "y_range": (-16.0, 16.0), "resolution": 1.0}, dropout=0.0)

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore:(?s).*RANDOM weights:UserWarning")]


def run_pretraining(world, out: Path, cache: Path, **kwargs):
    settings = dict(recipe="cpu-tiny", device="cpu", progress=False, pictures=False, teacher_weights="random",
                    load_kwargs=SMALL, cache_dir=cache)
    settings.update(kwargs)
    return pretrain("simplebev-tiny", dataroot=world.dataroot, version=world.version, out_dir=out, **settings)


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def pretrained_run(synthetic_world, tmp_path_factory):
    """40 steps of OccFeat on the train scene, evaluated on the held-out val scene."""
    root = tmp_path_factory.mktemp("pretrain")
    result = run_pretraining(synthetic_world, root / "run", root / "cache", max_steps=40,
                             recipe_overrides=dict(lr=3e-3, eval_every=10**6))
    return result, root


def test_short_pretraining_lowers_both_losses_and_beats_the_trivial_occupancy(pretrained_run):
    result, root = pretrained_run
    log = [r for r in read_log(root / "run") if "loss_occ" in r]
    first, last = log[:3], log[-3:]
    for key in ("loss_occ", "loss_feat"):
        before, after = (sum(r[key] for r in rows) / len(rows) for rows in (first, last))
        assert after < 0.8 * before, (key, before, after)
    held_out = result.metrics
    # All-empty scores 0; all-occupied scores the occupied fraction. The head must beat both on unseen key frames.
    assert held_out["occupancy_iou"] > 2 * held_out["occupancy_iou_all_occupied"] > 0, held_out
    assert 0 < held_out["feature_cosine"] <= 1
    run = json.loads((root / "run" / "run.json").read_text())
    assert run["labels_read"] is False and run["recipe"]["mode"] == "occfeat" and run["teacher"]["weights"] == "random:0"
    assert json.loads((root / "run" / "eval.json").read_text())["metrics"] == pytest.approx(held_out)


def test_pretraining_reads_no_labels(synthetic_world):
    item = NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "train", image_size=(64, 128),
                       lidar_sweeps=2, labels=False)[0]
    assert not {"vehicle", "map", "center", "offset", "vehicle_ignore"} & item.keys()
    assert item["lidar"].shape[1] == 5 and set(item["lidar"][:, 4].unique().tolist()) <= {0.0, 1.0}


def test_export_drops_every_head_and_fine_tuning_loads_it_cleanly(pretrained_run, synthetic_world):
    result, root = pretrained_run
    export_pretrain_run(root / "run", root / "export", weight_id="simplebev-tiny.occfeat-synthetic")
    keys = load_file(str(root / "export" / "model.safetensors")).keys()
    assert keys and not [k for k in keys if k.startswith(("head.", "heads.", "network.", "loss."))]
    config = json.loads((root / "export" / "config.json").read_text())
    assert config["parts"] == ["backbone", "neck", "view_transform", "decoder"]
    assert config["provenance"]["source"] == "occfeat pretrain" and config["provenance"]["mode"] == "occfeat"
    assert config["provenance"]["recipe"]["name"] == "cpu-tiny" and config["weight_id"] == "simplebev-tiny.occfeat-synthetic"

    loaded = occfeat.load(f"local-dir:{root / 'export'}")
    assert loaded.load_report.clean and not loaded.load_report.missing
    assert {k.split(".")[0] for k in loaded.load_report.reinitialized} == {"heads"}
    for name, tensor in result.pretrainer.network.state_dict().items():
        if not name.startswith("heads."):
            torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)

    tuned = finetune(
        f"local-dir:{root / 'export'}", dataroot=synthetic_world.dataroot, version=synthetic_world.version,
        out_dir=root / "finetune", count=2, recipe="cpu-tiny", max_steps=3, val_samples=1, device="cpu", progress=False,
    )
    assert tuned.model.load_report.clean and tuned.steps == 3


def test_exported_weights_publish_to_a_hub_and_load_by_name(pretrained_run, tmp_path, capsys):
    from occfeat.testing import HubServer
    from occfeat.zoo.registry import REGISTRY, register_weights

    result, root = pretrained_run
    weight_id = "simplebev-tiny.occfeat-synthetic"
    export_pretrain_run(root / "run", tmp_path / "export", weight_id=weight_id)
    with HubServer() as hub:
        pushed = occfeat.push_to_hub(tmp_path / "export", "occfeat-test/occfeat-synthetic", endpoint=hub.endpoint,
                                     token="test-token")
        entry = pushed["registry_entry"]
        # The entry rebuilds this network, not the default simplebev-tiny: the run's raster and image size travel.
        assert entry["model_args"]["image_size"] == [64, 128] and entry["model_args"]["grid"]["resolution"] == 1.0
        assert entry["recipe"]["mode"] == "occfeat" and set(entry["parts"]) == {"backbone", "neck", "view_transform", "decoder"}
        register_weights({"weights": {weight_id: entry}})
        try:
            model = occfeat.load(weight_id, endpoint=hub.endpoint, cache_dir=tmp_path / "cache")
        finally:
            REGISTRY.reset()
    assert model.load_report.clean and model.provenance["commit"] == pushed["commit"]
    assert model.config == result.pretrainer.network.config
    for name, tensor in result.pretrainer.network.state_dict().items():
        if not name.startswith("heads."):
            assert torch.equal(model.state_dict()[name], tensor), name


@pytest.mark.parametrize("mode", ["occupancy", "distillation"])
def test_ablation_modes_build_only_their_outputs_and_train_the_network(mode, synthetic_world):
    network = occfeat.create_model("simplebev-tiny", **SMALL)
    pretrainer = OccFeatPretrainer(network, mode=mode, feature_dim=384)
    assert (pretrainer.head.occupancy is None) == (mode == "distillation")
    assert (pretrainer.head.features is None) == (mode == "occupancy")
    data = NuScenesBEV(synthetic_world.dataroot, synthetic_world.version, "train", image_size=(64, 128),
                       grid=network.config.grid, lidar_sweeps=2, labels=False)
    batch = collate([data[0], data[1]])
    maps = None
    if mode == "distillation":
        teacher = Teacher(image_size=(64, 128), weights="random", image_mean=network.config.image_mean,
                          image_std=network.config.image_std, cameras=data.cameras)
        maps = teacher(batch["images"])
    loss, metrics = pretrainer(batch, maps)
    loss.backward()
    assert set(metrics) >= ({"loss_occ"} if mode == "occupancy" else {"loss_feat", "distilled"})
    assert network.backbone.conv_stem.weight.grad is not None  # the signal reaches the image backbone
    assert all(p.grad is None for p in network.heads.parameters())  # segmentation heads are not pretrained


def test_recipes_are_recorded_data_and_reject_bad_settings():
    recipe = get_recipe("occfeat-nuscenes")
    assert recipe.mode == "occfeat" and recipe.teacher_weights == "hub" and recipe.z_range == (-1.0, 5.4)
    assert recipe.steps(28130) == 42195
    with pytest.raises(ConfigError, match="mode"):
        recipe.replace(mode="contrastive")
    assert recipe.feature_branch == "shared" and recipe.replace(feature_branch="separate").to_dict()["feature_branch"] == "separate"
    with pytest.raises(ConfigError, match="feature_branch"):
        recipe.replace(feature_branch="split")
    with pytest.raises(occfeat.errors.UnknownNameError):
        get_recipe("nope")


def test_cli_pretrain_then_export_then_load(synthetic_world, tmp_path, capsys):
    data = ["--dataroot", str(synthetic_world.dataroot), "--version", synthetic_world.version, "--device", "cpu"]
    assert main(["pretrain", "simplebev-tiny", *data, "--recipe", "cpu-tiny", "--mode", "occupancy", "--steps", "2",
                 "--out", str(tmp_path / "run"), "--val-samples", "1", "--teacher-weights", "random"]) == 0
    assert "pretrain (occupancy): 3 samples, 2 steps" in capsys.readouterr().out
    assert list((tmp_path / "run" / "pictures").glob("occupancy-*.png"))
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "export")]) == 0
    model = occfeat.load(f"local-dir:{tmp_path / 'export'}")
    assert model.load_report.clean and model.provenance["mode"] == "occupancy"
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == EXIT_ERROR  # typed error, no traceback


def test_two_processes_match_one_process_on_the_same_global_batch(synthetic_world, tmp_path):
    # Global batch 2: two processes x 1 sample, against one process x 1 sample x 2 accumulated micro-batches, key
    # frames in order (6 of them: rank 0 takes 0, 2, 4 and rank 1 takes 1, 3, 5, the single process's micro-batches
    # pairwise). Per-process batches of one sample keep the backbone's BatchNorm statistics equal.
    script = tmp_path / "run_pretrain.py"
    script.write_text("import sys, json\nfrom occfeat.pretrain import pretrain\n"
                      "pretrain('simplebev-tiny', progress=False, **json.loads(sys.argv[1]))\n")

    def arguments(out: str, **overrides) -> str:
        return json.dumps(dict(dataroot=str(synthetic_world.dataroot), version=synthetic_world.version, out_dir=out, split="all",
                               device="cpu", recipe="cpu-tiny", max_steps=3, teacher_weights="random", val_split=None,
                               pictures=False, cache_dir=str(tmp_path / "cache"), load_kwargs=SMALL,
                               recipe_overrides=dict(shuffle=False, **overrides)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    ddp = subprocess.run([*torchrun, str(script), arguments(str(tmp_path / "ddp"), batch_size=2)],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-4000:]
    assert ddp.stdout.count("pretrain (occfeat): ") == 1, ddp.stdout[-2000:]  # one summary line, not one per rank
    single = subprocess.run([sys.executable, str(script), arguments(str(tmp_path / "single"), batch_size=1, grad_accum_steps=2)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-4000:]

    from occfeat.engine import latest_checkpoint, load_checkpoint

    ddp_model, ddp_state = load_checkpoint(latest_checkpoint(tmp_path / "ddp"))
    single_model, _ = load_checkpoint(latest_checkpoint(tmp_path / "single"))
    assert ddp_state["trainer"]["world_size"] == 2
    ddp_log, single_log = read_log(tmp_path / "ddp"), read_log(tmp_path / "single")
    for a, b in zip(ddp_log, single_log, strict=True):
        for key in ("loss", "loss_occ", "loss_feat", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), (key, a, b)
    parameters = {n for n in single_model if "running_" not in n and "num_batches_tracked" not in n}
    for name in parameters:
        torch.testing.assert_close(ddp_model[name], single_model[name], rtol=1e-4, atol=1e-5, msg=name)


def test_a_seed_determines_a_pretraining_run(synthetic_world, tmp_path):
    """Two identical CPU runs end with bit-identical weights (network, head and all), whatever the process drew
    before them."""
    from safetensors.torch import load_file

    from occfeat.engine.checkpoint import MODEL_FILE, latest_checkpoint

    def run(name: str, seed: int) -> dict:
        run_pretraining(synthetic_world, tmp_path / name, tmp_path / f"cache-{name}", max_steps=2, seed=seed,
                        val_split=None, recipe_overrides=dict(eval_every=10**6))
        return load_file(str(latest_checkpoint(tmp_path / name) / MODEL_FILE))

    torch.manual_seed(1)
    first = run("a", seed=5)
    torch.manual_seed(2)
    again = run("b", seed=5)
    assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first)
    other = run("c", seed=6)
    assert any(not torch.equal(first[k], other[k]) for k in first)
