"""A run folder holds one run (issue 23): reusing it for another run is refused before anything is written, resuming
needs the same run, ``--overwrite`` starts anew, a damaged checkpoint is fallen back past loudly, and every run prints
and records what it starts from."""

from __future__ import annotations

import json

import pytest

from occfeat.engine.checkpoint import (INTEGRITY_FILE, MODEL_FILE, checkpoint_damage, list_checkpoints,
                                       newest_intact_checkpoint)
from occfeat.errors import ConfigError
from occfeat.finetune.training import finetune
from occfeat.io import sha256_file
from occfeat.pretrain import pretrain
from occfeat.runs import RunMismatchError, claim_run_folder, run_changes
from tests.engine_scripts.train_tiny import build

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = dict(image_size=(64, 128), grid={"x_range": (-16.0, 16.0), "y_range": (-16.0, 16.0), "resolution": 1.0},
             dropout=0.0)


def _finetune(world, out, **changes):
    options = dict(dataroot=world.dataroot, version=world.version, device="cpu", progress=False, train_split="all",
                   val_split="all", count=2, recipe="cpu-tiny", max_steps=2, val_samples=1, load_kwargs=SMALL)
    return finetune("simplebev-tiny", out_dir=out, **{**options, **changes})


def _snapshot(folder):
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished_run(synthetic_world, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "finetune"
    _finetune(synthetic_world, out)
    return out


def test_another_run_into_a_used_folder_is_refused_before_anything_is_written(synthetic_world, finished_run):
    before = _snapshot(finished_run)
    with pytest.raises(RunMismatchError) as caught:
        _finetune(synthetic_world, finished_run, count=3)  # another labelled subset: another run
    message = str(caught.value)
    assert "count: 2 -> 3" in message and "train_samples: 2 -> 3" in message
    assert "--out" in message and "--overwrite" in message
    assert _snapshot(finished_run) == before  # run.json, subset.json, best.safetensors: every byte as it was


@pytest.mark.parametrize("change, field", [(dict(recipe_overrides={"lr": 5e-3}), "recipe.lr"),
                                           (dict(recipe_overrides={"batch_size": 1}), "recipe.batch_size"),
                                           (dict(seed=1), "seed")])
def test_resuming_with_a_changed_config_names_each_changed_field(synthetic_world, finished_run, change, field):
    with pytest.raises(RunMismatchError, match=rf"{field}: "):
        _finetune(synthetic_world, finished_run, **change)


def test_the_same_run_resumes_and_overwrite_starts_another(synthetic_world, finished_run, tmp_path, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(finished_run, out)
    again = _finetune(synthetic_world, out)  # the same run, spelled the same: it resumes (nothing left to train)
    assert again.train.steps_run == 0 and again.train.status == "completed"
    other = _finetune(synthetic_world, out, count=3, overwrite=True)
    assert other.train.steps_run == 2 and other.train_samples == 3
    record = json.loads((out / "run.json").read_text())
    assert record["count"] == 3 and "deleted the run" in capsys.readouterr().out


def test_a_changed_pretraining_mode_or_architecture_is_a_mismatch_not_a_raw_error(synthetic_world, tmp_path):
    data = dict(dataroot=synthetic_world.dataroot, version=synthetic_world.version, device="cpu", progress=False,
                split="all", val_split=None, recipe="cpu-tiny", max_steps=2, pictures=False, load_kwargs=SMALL)
    out = tmp_path / "pretrain"
    pretrain("simplebev-tiny", out_dir=out, mode="occupancy", **data)
    with pytest.raises(RunMismatchError, match=r"recipe\.pos_weight"):
        pretrain("simplebev-tiny", out_dir=out, mode="occupancy", recipe_overrides={"pos_weight": 1.0}, **data)
    with pytest.raises(RunMismatchError, match=r"architecture: \"simplebev-tiny\" -> \"bevformer-tiny\""):
        pretrain("bevformer-tiny", out_dir=out, mode="occupancy", **data)
    # The mode: compared like every other recipe field (a distillation run needs a teacher, so compare the records).
    recorded = json.loads((out / "run.json").read_text())
    requested = {**recorded, "recipe": {**recorded["recipe"], "mode": "occfeat"}}
    assert run_changes(recorded, requested) == ['recipe.mode: "occupancy" -> "occfeat"']


def test_how_a_run_executes_may_change_on_resume_and_paths_compare_resolved(tmp_path, monkeypatch):
    recorded = {"kind": "occfeat finetune", "dataroot": "data/world", "processes": 1, "compile": False,
                "load_report": "loaded 3 tensors"}
    monkeypatch.chdir(tmp_path)
    requested = {**recorded, "dataroot": str(tmp_path / "data" / "world"), "processes": 8, "compile": "inductor",
                 "load_report": "loaded 3 tensors from elsewhere"}
    assert run_changes(recorded, requested) == []


def test_out_paths_that_cannot_be_run_folders_are_typed_errors(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("not a folder")
    for out in (a_file, a_file / "run"):
        with pytest.raises(ConfigError, match="is a file"):
            claim_run_folder(out, {"kind": "occfeat finetune"})
    (tmp_path / "orphan" / "checkpoints" / "step-00000001").mkdir(parents=True)
    with pytest.raises(RunMismatchError, match="no run.json"):
        claim_run_folder(tmp_path / "orphan", {"kind": "occfeat finetune"})


def test_fine_tuning_prints_and_records_its_load_report(synthetic_world, finished_run, tmp_path, capsys):
    from occfeat.runs import export

    export(finished_run, tmp_path / "export")
    capsys.readouterr()
    finetune(f"local-dir:{tmp_path / 'export'}", out_dir=tmp_path / "from-weights", dataroot=synthetic_world.dataroot,
             version=synthetic_world.version, device="cpu", progress=False, train_split="all", val_split="all",
             count=2, recipe="cpu-tiny", max_steps=1, val_samples=1)
    printed = capsys.readouterr().out
    assert "initial weights: loaded" in printed and str(tmp_path / "export") in printed
    record = json.loads((tmp_path / "from-weights" / "run.json").read_text())
    assert record["load_report"].startswith("loaded") and "missing 0, unexpected 0" in record["load_report"]


# ---- checkpoints: their own integrity record, and a resume that falls back past a damaged one ----------------------

def _damage(folder, name=MODEL_FILE):
    path = folder / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle: the header still parses, the tensors lie
    path.write_bytes(bytes(data))


def test_a_damaged_newest_checkpoint_is_set_aside_loudly_and_the_run_resumes_from_the_one_before(tmp_path):
    out = tmp_path / "run"
    build(out, max_steps=6, checkpoint_every=2, keep_checkpoints=3, stop_at=4).fit()
    newest = list_checkpoints(out)[-1]
    assert newest.name == "step-00000004" and (newest / INTEGRITY_FILE).is_file()
    assert checkpoint_damage(newest) is None
    _damage(newest)
    assert "sha256" in checkpoint_damage(newest)
    resumed = build(out, max_steps=6, checkpoint_every=2, keep_checkpoints=3)
    with pytest.warns(UserWarning, match="step-00000004 is damaged"):
        result = resumed.fit()
    assert result.status == "completed" and result.steps_run == 4  # from step 2, not from 0 and not a crash
    assert (out / "checkpoints" / "damaged-step-00000004").is_dir()  # kept as evidence, out of the step's way
    straight = build(tmp_path / "straight", max_steps=6, checkpoint_every=2).fit()
    assert result.final_loss == pytest.approx(straight.final_loss)


def test_a_truncated_checkpoint_is_damaged_and_when_all_are_the_run_refuses_to_restart_silently(tmp_path):
    out = tmp_path / "run"
    build(out, max_steps=2, checkpoint_every=1, keep_checkpoints=2).fit()
    for folder in list_checkpoints(out):
        (folder / MODEL_FILE).write_bytes((folder / MODEL_FILE).read_bytes()[:100])
    with pytest.warns(UserWarning, match="is damaged"), pytest.raises(ConfigError, match="every checkpoint"):
        newest_intact_checkpoint(out)


def test_the_cli_tells_usage_errors_from_runtime_errors_and_prints_one_line(synthetic_world, finished_run, capsys):
    from occfeat.cli import EXIT_ERROR, EXIT_USAGE, main

    with pytest.raises(SystemExit) as usage:
        main(["finetune", "simplebev-tiny", "--dataroot", "x", "--out", "y", "--fraction", "lots"])
    assert usage.value.code == EXIT_USAGE == 2
    capsys.readouterr()
    data = ["--dataroot", str(synthetic_world.dataroot), "--version", synthetic_world.version, "--device", "cpu",
            "--recipe", "cpu-tiny", "--steps", "2", "--count", "3", "--val-samples", "1"]
    assert main(["finetune", "simplebev-tiny", *data, "--out", str(finished_run)]) == EXIT_ERROR == 1
    err = capsys.readouterr().err
    assert err.startswith("occfeat: error: ") and err.count("\n") == 1 and "holds another run" in err


@pytest.mark.parametrize("verb", [["synth", "{bad}/world", "--scenes", "1"], ["export", "{run}", "--out", "{bad}/x"],
                                  ["evaluate", "simplebev-tiny", "--dataroot", "unused", "--out", "{bad}/eval"]])
def test_output_paths_under_a_file_are_one_line_errors_before_any_work(verb, finished_run, tmp_path, capsys):
    from occfeat.cli import EXIT_ERROR, main

    bad = tmp_path / "a-file"
    bad.write_text("not a folder")
    argv = [a.format(bad=bad, run=finished_run) for a in verb]
    assert main(argv) == EXIT_ERROR
    err = capsys.readouterr().err
    assert err.startswith("occfeat: error: ") and "is a file" in err and err.count("\n") == 1
