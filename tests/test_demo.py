"""``occfeat demo`` end to end at a tiny size: every stage runs, and the report's numbers are the runs' own."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from occfeat.cli import main
from occfeat.demo import ComparisonSettings, run_demo
from occfeat.errors import ConfigError

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore:(?s).*RANDOM weights:UserWarning")]
TINY = ComparisonSettings(scenes=2, samples_per_scene=3, world_image_hw=(90, 160), pretrain_steps=2,
                          fractions=(0.5, 1.0), finetune_steps=(2, 3), val_samples=2,
                          teacher_weights="random")  # "auto" would probe huggingface.co: tests stay on loopback


def test_demo_writes_a_report_whose_numbers_come_from_the_runs(tmp_path, capsys):
    out = run_demo(tmp_path / "demo", settings=TINY, progress=False)
    assert "occfeat demo: 6 fine-tuning runs" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert len(results["rows"]) == 6 and {r["init"] for r in results["rows"]} == {"scratch", "occupancy", "occfeat"}
    report = (out / "report.md").read_text()
    for row in results["rows"]:  # each figure is what that run's own evaluation wrote
        evaluation = json.loads((out / "runs" / row["run"].split("/runs/")[-1] / "eval.json").read_text())
        assert row["vehicle_iou"] == evaluation["metrics"]["vehicle_iou"]
        cell = next(c for c in results["cells"] if c["init"] == row["init"] and c["fraction"] == row["fraction"])
        assert cell["vehicle_iou"] == row["vehicle_iou"]  # one seed: the cell is the run
        assert f"| {100 * row['vehicle_iou']:.1f} |" in report
        run = json.loads((out / "runs" / row["run"].split("/runs/")[-1] / "run.json").read_text())
        assert run["steps"] == row["steps"]
        assert run["label_protocol"] == evaluation["label_protocol"] == row["label_protocol"] == "lss"
    assert results["label_protocol"] == ["lss"] and "Vehicle labels: the `lss` protocol" in report
    # The zoo path: both pretrained networks came back by name from the loopback Hub with clean reports.
    assert len(results["load_reports"]) == 2
    assert all("missing 0, unexpected 0, shape mismatches 0" in r for r in results["load_reports"].values())
    registry = json.loads((out / "registry.json").read_text())
    assert all(entry["hub"]["commit"] and entry["files"] for entry in registry["weights"].values())
    with Image.open(out / "comparison.png") as chart:
        assert chart.width > 600 and len(chart.convert("L").getcolors(maxcolors=1 << 16) or []) > 10
    assert {p.name for p in (out / "pictures").glob("*.png")} >= {"pretrain-pca-bev.png", "prediction-occfeat-0.5.png"}


def test_demo_refuses_a_folder_that_is_not_its_own(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an occfeat demo folder"):
        run_demo(tmp_path, settings=TINY, progress=False)
    assert main(["demo", "--out", str(tmp_path)]) == 2
