"""bench/lowdata.py runs a benchmark in parts (one pretraining seed each) and merges them: the merged intervals must be
the ones a single run over every seed would report."""

from __future__ import annotations

import dataclasses
import json
import pytest

from occfeat.demo import BENCHMARK, paired_differences, summarise

from .scripts import load_script


def _lowdata():
    return load_script("bench/lowdata.py")


def _rows(inits, pretrain_seeds, seeds=range(3)):
    rows = []
    for init in inits:
        for p in ([None] if init == "scratch" else pretrain_seeds):
            for s in seeds:
                value = 0.1 + 0.05 * (init != "scratch") + 0.02 * (p or 0) + 0.01 * s + 0.003 * len(init)
                rows.append({"fraction": 0.02, "init": init, "pretrain_seed": p, "seed": s, "vehicle_iou": value,
                             "map_iou/drivable_area": value / 2, "train_samples": 5, "steps": 100, "seconds": 10.0})
    return rows


def _results(settings, rows, seconds):
    return {"settings": settings.to_dict(), "rows": rows, "cells": summarise(rows), "paired": paired_differences(rows),
            "pretrainings": {}, "load_reports": {}, "seconds": seconds, "command": "python bench/lowdata.py ..."}


def test_merging_a_later_pretraining_seed_equals_running_both_at_once():
    lowdata = _lowdata()
    first = dataclasses.replace(BENCHMARK, pretraining_seeds=1)
    later = dataclasses.replace(first, inits=("occupancy", "occfeat"), first_pretraining_seed=1)
    assert later.pretrain_seeds() == [1] and first.pretrain_seeds() == [0]
    part_a = _results(first, _rows(("scratch", "occupancy", "occfeat"), [0]), 100.0)
    part_b = _results(later, _rows(("occupancy", "occfeat"), [1]), 60.0)
    merged = lowdata.merge_with(part_b, part_a, later)
    every = _rows(("scratch", "occupancy", "occfeat"), [0, 1])
    assert merged["paired"] == paired_differences(every)  # the crossed intervals over both pretraining seeds
    assert {tuple(e["pretrain_seeds"]) for e in merged["paired"]} == {(0, 1)}
    assert merged["seconds"] == 160.0 and [p["runs"] for p in merged["parts"]] == [9, 6]


def test_parts_that_are_not_one_benchmark_are_refused():
    lowdata = _lowdata()
    first = dataclasses.replace(BENCHMARK, pretraining_seeds=1)
    part_a = _results(first, _rows(("scratch", "occupancy"), [0]), 1.0)
    longer = dataclasses.replace(first, pretrain_steps=first.pretrain_steps * 2, first_pretraining_seed=1)
    with pytest.raises(SystemExit, match="pretrain_steps"):
        lowdata.merge_with(_results(longer, _rows(("occupancy",), [1]), 1.0), part_a, longer)
    with pytest.raises(SystemExit, match="in both parts"):  # the same runs twice would count a seed twice
        lowdata.merge_with(_results(first, _rows(("occupancy",), [0]), 1.0), part_a, first)


def test_an_ablation_paired_with_merged_parts_is_drawn_and_can_be_redrawn(tmp_path, monkeypatch):
    """The separate-branch ablation's run ended in a ConfigError while drawing: its tagged init
    (``occfeat[feature_branch=separate]``) went into a ComparisonSettings. The title now reads the rows, and
    ``--redraw`` draws a finished results.json again without running anything."""
    import sys

    from occfeat.demo import chart_title

    lowdata = _lowdata()
    baseline_settings = dataclasses.replace(BENCHMARK, pretraining_seeds=2)
    baseline = {**_results(baseline_settings, _rows(("scratch", "occupancy", "occfeat"), [0, 1]), 10.0),
                "split": {"pool_samples": 240, "val_samples": 60}}
    ablation = dataclasses.replace(BENCHMARK, inits=("occfeat",), pretraining_seeds=1,
                                   pretrain_overrides=(("feature_branch", "separate"),))
    (tmp_path / "baseline.json").write_text(json.dumps(baseline))
    paired = lowdata.pair_with({**_results(ablation, _rows(("occfeat",), [0]), 5.0), "split": baseline["split"]},
                               str(tmp_path / "baseline.json"), ablation)
    assert paired["paired_with"]["results"] == str(tmp_path / "baseline.json")  # the file paired with (it used to record that run's world folder)
    title = chart_title(ablation, paired)
    assert "fine-tuning x pretraining seeds" in title and "stand-in teacher" in title
    (tmp_path / "results.json").write_text(json.dumps(paired))
    monkeypatch.setattr(sys, "argv", ["lowdata.py", "--redraw", str(tmp_path / "results.json")])
    lowdata.main()
    table = (tmp_path / "table.md").read_text()
    assert "occfeat[feature_branch=separate] − occupancy only" in table and (tmp_path / "comparison.png").stat().st_size


def _write_800_step_benchmark(tmp_path) -> dict:
    """The benchmark a length-check part pairs with (800 steps, two pretraining seeds), written to baseline.json."""
    settings = dataclasses.replace(BENCHMARK, pretraining_seeds=2, pretrain_steps=800)
    baseline = {**_results(settings, _rows(("scratch", "occupancy", "occfeat"), [0, 1]), 10.0),
                "split": {"pool_samples": 240, "val_samples": 60}}
    (tmp_path / "baseline.json").write_text(json.dumps(baseline))
    return baseline


def test_a_longer_pretraining_paired_with_the_benchmark_is_tagged_with_its_length(tmp_path):
    """The length check pairs a longer OccFeat pretraining with the benchmark's runs: its init must say how long it
    pretrained, and a pairing that changes nothing (it would repeat the baseline's runs) is refused."""
    lowdata = _lowdata()
    _write_800_step_benchmark(tmp_path)
    longer = dataclasses.replace(BENCHMARK, inits=("occupancy", "occfeat"), pretraining_seeds=1, pretrain_steps=3200)
    paired = lowdata.pair_with(_results(longer, _rows(("occupancy", "occfeat"), [0]), 5.0),
                               str(tmp_path / "baseline.json"), longer)
    assert paired["paired_with"]["tag"] == "[pretrain_steps=3200]"
    pairs = [(e["init"], e["baseline"]) for e in paired["paired"]]
    # the run's own inits against each other first, then each against every init of the benchmark
    assert pairs[0] == ("occfeat[pretrain_steps=3200]", "occupancy[pretrain_steps=3200]")
    assert ("occfeat[pretrain_steps=3200]", "occfeat") in pairs and ("occupancy[pretrain_steps=3200]", "scratch") in pairs
    assert len(pairs) == 1 + 2 * 3
    same = dataclasses.replace(longer, inits=("occfeat",), pretrain_steps=800)
    with pytest.raises(SystemExit, match="exactly as that run did"):
        lowdata.pair_with(_results(same, _rows(("occfeat",), [0]), 5.0), str(tmp_path / "baseline.json"), same)


def test_a_paired_part_merges_with_its_next_pretraining_seed_and_is_paired_again(tmp_path):
    """The length check runs one pretraining seed per part, each paired with the benchmark: merging the paired part A
    with part B and pairing again must equal pairing both seeds' runs at once; another baseline is refused."""
    lowdata = _lowdata()
    baseline = _write_800_step_benchmark(tmp_path)
    first = dataclasses.replace(BENCHMARK, inits=("occupancy", "occfeat"), pretraining_seeds=1, pretrain_steps=3200)
    later = dataclasses.replace(first, first_pretraining_seed=1)
    part_a = lowdata.pair_with(_results(first, _rows(("occupancy", "occfeat"), [0]), 50.0),
                               str(tmp_path / "baseline.json"), first)
    part_b = _results(later, _rows(("occupancy", "occfeat"), [1]), 40.0)
    merged = lowdata.merge_with(part_b, lowdata.own_part(part_a, str(tmp_path / "baseline.json")), later)
    both = lowdata.pair_with(merged, str(tmp_path / "baseline.json"), later)
    at_once = lowdata.pair_with(_results(first, _rows(("occupancy", "occfeat"), [0, 1]), 90.0),
                                str(tmp_path / "baseline.json"), first)
    assert both["paired"] == at_once["paired"]
    assert both["paired"][0]["pretrain_seeds"] == [0, 1] and both["seconds"] == 90.0
    other = {**baseline, "settings": {**baseline["settings"], "finetune_min_steps": 50}}
    (tmp_path / "other.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="pair both parts with the same"):
        lowdata.own_part(part_a, str(tmp_path / "other.json"))
    with pytest.raises(SystemExit, match="pass --pair-with"):
        lowdata.own_part(part_a, None)


def test_the_longer_pretraining_becomes_a_benchmark_with_the_scratch_runs_it_was_paired_with(tmp_path, monkeypatch):
    """The benchmark at the chosen length reuses the 800-step run's scratch runs (scratch never pretrains): the
    result must equal running scratch with both pretraining seeds at once; scratch of its own, missing seeds or other
    pairing settings are refused."""
    import sys

    lowdata = _lowdata()
    _write_800_step_benchmark(tmp_path)
    first = dataclasses.replace(BENCHMARK, inits=("occupancy", "occfeat"), pretraining_seeds=1, pretrain_steps=3200,
                                fractions=(0.02,), seeds_per_fraction=(3,))
    later = dataclasses.replace(first, first_pretraining_seed=1)
    part_a = lowdata.pair_with(_results(first, _rows(("occupancy", "occfeat"), [0]), 50.0),
                               str(tmp_path / "baseline.json"), first)
    merged = lowdata.merge_with(_results(later, _rows(("occupancy", "occfeat"), [1]), 40.0),
                                lowdata.own_part(part_a, str(tmp_path / "baseline.json")), later)
    assert merged["settings"]["pretraining_seeds"] == 2 and merged["settings"]["first_pretraining_seed"] == 0
    paired = lowdata.pair_with(merged, str(tmp_path / "baseline.json"), later)
    (tmp_path / "length.json").write_text(json.dumps({**paired, "split": {"pool_samples": 240, "val_samples": 60}}))
    monkeypatch.setattr(sys, "argv", ["lowdata.py", "--redraw", str(tmp_path / "length.json"), "--scratch-from",
                                      str(tmp_path / "baseline.json"), "--out", str(tmp_path / "headline")])
    lowdata.main()
    headline = json.loads((tmp_path / "headline" / "results.json").read_text())
    pretrained = ("occupancy", "occfeat")
    every = _rows(("scratch",), []) + _rows(pretrained, [0]) + _rows(pretrained, [1])
    # untagged, as if scratch had run with this benchmark (through JSON, as the file holds it)
    assert headline["paired"] == json.loads(json.dumps(paired_differences(every)))
    assert headline["settings"]["inits"] == ["scratch", "occupancy", "occfeat"]
    assert headline["settings"]["pretrain_steps"] == 3200 and "paired_with" not in headline
    assert [p["runs"] for p in headline["parts"]] == [6, 6, 3] and "scratch runs" in headline["parts"][-1]["command"]
    assert headline["seconds"] == 50.0 + 40.0 + 3 * 10.0  # the borrowed scratch runs' own time counts
    assert headline["command"].startswith("python bench/lowdata.py --redraw ")  # what made it, not its last part
    assert "OccFeat, stand-in teacher − occupancy only | vehicle IoU" in (tmp_path / "headline" / "table.md").read_text()
    with pytest.raises(SystemExit, match="scratch runs of its own"):
        lowdata.scratch_from(_results(first, _rows(("scratch",), [0]), 1.0), str(tmp_path / "baseline.json"), first)
    more_seeds = dataclasses.replace(first, seeds_per_fraction=(5,))
    with pytest.raises(SystemExit, match=r"no scratch runs for .*\(0.02, 3\)"):
        lowdata.scratch_from(_results(more_seeds, _rows(("occfeat",), [0]), 1.0), str(tmp_path / "baseline.json"),
                             more_seeds)
    other_schedule = dataclasses.replace(first, finetune_min_steps=50)
    with pytest.raises(SystemExit, match="finetune_min_steps"):
        lowdata.scratch_from(_results(other_schedule, _rows(("occfeat",), [0]), 1.0), str(tmp_path / "baseline.json"),
                             other_schedule)
