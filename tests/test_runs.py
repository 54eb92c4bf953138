"""Run folders (``occfeat.runs``): both trainers hold the network under one name, so a fine-tuning and a pretraining
run load and export the same way, without ``key_map`` or ``strict=False``."""

from __future__ import annotations

import json

import pytest
import torch

import occfeat
from occfeat.engine.checkpoint import run_network_state
from occfeat.errors import ConfigError
from occfeat.finetune.training import finetune
from occfeat.pretrain import pretrain
from occfeat.runs import PRETRAINED_PARTS, export, read_run, train_config

pytestmark = pytest.mark.usefixtures("one_thread")
SMALL = dict(image_size=(64, 128), grid={"x_range": (-16.0, 16.0), "y_range": (-16.0, 16.0), "resolution": 1.0},
             dropout=0.0)


@pytest.fixture(scope="module")
def runs(synthetic_world, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    data = dict(dataroot=synthetic_world.dataroot, version=synthetic_world.version, device="cpu", progress=False)
    finetune("simplebev-tiny", out_dir=root / "finetune", train_split="all", val_split="all", count=2,
             recipe="cpu-tiny", max_steps=2, val_samples=1, load_kwargs=SMALL, **data)
    pretrain("simplebev-tiny", out_dir=root / "pretrain", split="all", val_split=None, recipe="cpu-tiny",
             mode="occupancy", max_steps=2, pictures=False, load_kwargs=SMALL, **data)
    return root


@pytest.mark.parametrize("kind", ["finetune", "pretrain"])
def test_load_reads_either_kind_of_run_folder_cleanly(runs, kind):
    model = occfeat.load("simplebev-tiny", pretrained=False, checkpoint=runs / kind, **SMALL)
    assert model.load_report.clean, model.load_report
    state, _ = run_network_state(runs / kind, "latest" if kind == "pretrain" else "best")
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert read_run(runs / kind)["kind"] == f"occfeat {kind}"


def test_export_of_either_run_loads_back_with_the_runs_weights(runs, tmp_path):
    for kind in ("finetune", "pretrain"):
        export(runs / kind, tmp_path / kind)
        model = occfeat.load(f"local-dir:{tmp_path / kind}")
        state, _ = run_network_state(runs / kind, "latest" if kind == "pretrain" else "best")
        kept = {k: v for k, v in state.items() if kind == "finetune" or k.split(".", 1)[0] in PRETRAINED_PARTS}
        assert all(torch.equal(model.state_dict()[k], v) for k, v in kept.items())
        document = json.loads((tmp_path / kind / "config.json").read_text())
        assert document["provenance"]["source"] == f"occfeat {kind}"
    assert model.load_report.reinitialized  # the pretrained export has no heads: they are fresh


def test_a_folder_that_is_not_a_run_is_a_typed_error(tmp_path):
    with pytest.raises(ConfigError, match="not a run folder"):
        export(tmp_path, tmp_path / "out")
    with pytest.raises(ConfigError, match="holds no checkpoint"):
        run_network_state(tmp_path)


def test_both_trainers_take_the_engine_settings_from_one_place():
    from occfeat.finetune.recipes import get_recipe as finetune_recipe
    from occfeat.pretrain.recipes import get_recipe as pretrain_recipe

    for recipe in (finetune_recipe("cpu-tiny"), pretrain_recipe("cpu-tiny")):
        config = train_config(recipe, out_dir="x", steps=30, device="cpu", progress=False, seed=0)
        assert (config.lr, config.checkpoint_every, config.eval_every, config.precision) == (1e-3, 30, 30, "fp32")
