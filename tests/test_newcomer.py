"""A newcomer's first hour (issue 24): what a user of timm and huggingface_hub expects from the package and its CLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import occfeat
from occfeat.cli import EXIT_USAGE, build_parser, main

REPO = Path(__file__).resolve().parents[1]


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
