"""bench/pretrain_length.py decides the pretraining length from the end points of runs of different lengths: it must
read both files that record curves, compare a length with half of it, and refuse a curve that stops before its run."""

from __future__ import annotations

import json

import pytest

from .scripts import load_script


def _script():
    return load_script("bench/pretrain_length.py")


def _curve(steps, every, end_iou, end_cosine=None):
    points = []
    for step in range(every, steps + 1, every):
        point = {"step": step, "occupancy_iou": end_iou * step / steps, "occupancy_iou_all_occupied": 0.05}
        if end_cosine is not None:
            point.update(feature_cosine=end_cosine * step / steps, feature_cosine_constant=0.59,
                         feature_cosine_class=0.95)
        points.append(point)
    return points


def _record(init, seed, steps, end_iou, end_cosine=None):
    return {"init": init, "seed": seed, "steps": steps, "samples": 240, "seconds": steps * 1.5,
            "curve": _curve(steps, 200, end_iou, end_cosine)}


def test_end_points_per_length_from_both_kinds_of_file(tmp_path, capsys, monkeypatch):
    import sys

    script = _script()
    benchmark = {"pretrainings": {"occupancy-s0": _record("occupancy", 0, 800, 0.46),
                                  "occupancy-s1": _record("occupancy", 1, 800, 0.48),
                                  "occfeat-s0": _record("occfeat", 0, 800, 0.44, 0.87),
                                  # an ablation's tagged run is not a length of the benchmark's pretraining
                                  "occfeat[lambda_feat=0.25]-s0": _record("occfeat[lambda_feat=0.25]", 0, 800, 0.9)}}
    curves = {"curves": {"occfeat": _curve(1600, 200, 0.49, 0.89)},
              "runs": {"occfeat": {"steps": 1600, "samples": 240, "seconds": 2400.0}}}
    (tmp_path / "results.json").write_text(json.dumps(benchmark))
    (tmp_path / "curves.json").write_text(json.dumps(curves))
    monkeypatch.setattr(sys, "argv", ["pretrain_length.py", str(tmp_path / "results.json"),
                                      str(tmp_path / "curves.json"), "--out", str(tmp_path / "out")])
    script.main()
    table = json.loads((tmp_path / "out" / "length.json").read_text())["end_points"]
    assert [(r["mode"], r["steps"], r["seeds"]) for r in table] == [("occupancy", 800, [0, 1]), ("occfeat", 800, [0]),
                                                                  ("occfeat", 1600, [0])]
    assert table[0]["occupancy_iou"] == pytest.approx(0.47)  # the mean of the two seeds' ends
    text = (tmp_path / "out" / "length.md").read_text()
    # its last 200 steps added 0.49 / 8 and 0.89 / 8; the 800-step runs' ends: 0.45 (a mean of one run) and 0.87
    assert "| 1,600 | 13.3 | 0 | 0.490 | +0.061 (200) | +0.050 | 0.890 | +0.111 (200) | +0.020 |" in text
    assert (tmp_path / "out" / "length.png").stat().st_size > 10_000


def test_a_curve_that_stops_before_its_run_ends_is_refused():
    script = _script()
    record = _record("occupancy", 0, 800, 0.46)
    record["curve"] = record["curve"][:-1]  # evaluated every 200 steps but not at the end
    with pytest.raises(SystemExit, match="ends before"):
        script.end_points([{**record, "mode": "occupancy", "source": "x"}])
