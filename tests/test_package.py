"""The package face: version, the command line, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import occfeat
from occfeat.cli import EXIT_ERROR, main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False)


def test_version_from_python_dash_m():
    result = run("-m", "occfeat", "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"occfeat {occfeat.__version__}"


def test_importing_occfeat_does_not_import_torch():
    result = run("-c", "import sys, occfeat; print('torch' in sys.modules)")
    assert result.stdout.strip() == "False"


def test_models_verb_lists_architectures(capsys):
    assert main(["models", "simplebev-*", "--json"]) == 0
    configs = json.loads(capsys.readouterr().out)
    assert sorted(configs) == ["simplebev-enb0", "simplebev-lite0", "simplebev-lite0-tiny", "simplebev-r101",
                               "simplebev-r50", "simplebev-tiny"]
    assert configs["simplebev-r101"]["image_size"] == [448, 800]
    assert configs["simplebev-lite0"]["backbone"] == "tf_efficientnet_lite0" and configs["simplebev-lite0"]["image_std"] == [0.5] * 3


def test_typed_errors_become_a_one_line_message(capsys):
    assert main(["finetune", "simplebev-tinny", "--dataroot", "unused", "--out", "unused"]) == EXIT_ERROR
    assert "unknown weights 'simplebev-tinny'. Did you mean" in capsys.readouterr().err


def test_readme_zoo_table_is_generated_from_the_registry():
    from pathlib import Path

    from occfeat.zoo.registry import weights_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- zoo-table:begin -->")[1].split("<!-- zoo-table:end -->")[0]
    assert block.strip() == weights_table(), "regenerate it: occfeat list --markdown"


def test_the_network_guard_refuses_a_connection_beyond_loopback():
    import socket

    with pytest.raises(RuntimeError, match="tests never leave 127.0.0.1"):
        socket.create_connection(("192.0.2.1", 80), timeout=0.1)  # TEST-NET-1: never routed
