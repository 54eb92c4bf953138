"""``bench/gpu.py --dry-run``: the GPU benchmark's whole code path on CPU (tiny architectures, batch 1), so the script
a GPU machine runs is known to work before a GPU is lent."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"
ARCHS = ["bevformer-tiny", "simplebev-tiny"]


def dry_run(out: Path, *extra: str) -> dict:
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "bench/gpu.py --dry-run:" in done.stdout.strip().splitlines()[-1]  # the summary line
    assert (out / "gpu.md").read_text().startswith("# bench/gpu.py")
    return json.loads((out / "gpu.json").read_text())


def positive(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def check_measured(row: dict, phases: tuple[str, ...]) -> None:
    for phase in phases:
        for key in (f"{phase}_s", f"{phase}_flops_per_s", f"{phase}_peak_memory_gib", f"{phase}_gflops"):
            assert positive(row[key]), (key, row)


def check_report(report: dict, archs: list[str]) -> None:
    assert report["meta"]["dry_run"] and positive(report["peak"]["flops_per_s"])
    assert set(report["models"]) == set(archs)
    for arch in archs:
        assert set(report["models"][arch]) == {"eager", "compiled"}
        check_measured(report["models"][arch]["eager"], ("forward", "train"))
        check_measured(report["pretraining"][arch], ("train",))
    projections = report["projections"]
    recipe = projections["pretraining_recipe"]
    assert recipe["name"] == "occfeat-nuscenes" and recipe["steps"] == math.ceil(24 * 28_130 / 16)
    for arch in archs:
        assert positive(projections["pretraining"][arch]["eager_gpu_hours"])
    assert set(projections["finetuning"]) == {"1%", "100%"}
    for row in projections["finetuning"].values():
        assert positive(row["steps"]) and all(positive(row[arch]["eager_gpu_hours"]) for arch in archs)
    one, full = projections["finetuning"]["1%"], projections["finetuning"]["100%"]
    assert one["labelled_samples"] == 282 and full["labelled_samples"] == 28_130 and full["steps"] > one["steps"]


def test_dry_run_writes_every_section(tmp_path):
    report = dry_run(tmp_path)
    check_report(report, ARCHS)
    for arch in ARCHS:
        assert "not requested" in report["models"][arch]["compiled"]["skipped"]


@pytest.mark.slow
def test_dry_run_with_compile_measures_the_compiled_network(tmp_path):
    report = dry_run(tmp_path, "--arch", "simplebev-tiny", "--compile", "--backend", "eager")
    check_report(report, ["simplebev-tiny"])
    compiled = report["models"]["simplebev-tiny"]["compiled"]
    check_measured(compiled, ("forward", "train"))
    assert compiled["compiled_still"] and compiled["graphs"] >= 1 and compiled["train_compile_s"] >= 0
    assert positive(report["projections"]["finetuning"]["1%"]["simplebev-tiny"]["compiled_gpu_hours"])
