"""``occfeat demo`` end to end at a tiny size: every stage runs, and the report's numbers are the runs' own."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from PIL import Image

from occfeat.cli import EXIT_ERROR, main
from occfeat.demo import (BENCHMARK, DEFAULT, QUICK, ComparisonSettings, benchmark_difference, compare_pretrainings,
                          crossed_interval, difference_verdicts, paired_differences, run_demo)
from occfeat.errors import ConfigError
from occfeat.models.imagenet import EFFICIENTNET_LITE0

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore:(?s).*RANDOM weights:UserWarning")]
# Every initialisation, the random-weight teacher included (random: tests never probe huggingface.co).
TINY = ComparisonSettings(scenes=3, samples_per_scene=3, world_image_hw=(90, 160), pretrain_steps=2,
                          inits=("scratch", "occupancy", "occfeat", "occfeat-random-teacher"),
                          fractions=(0.5, 1.0), seeds_per_fraction=(2, 1), finetune_epochs=1.0, finetune_min_steps=2,
                          val_samples=2, pretrain_val_samples=2, pretrain_overrides=(("lambda_feat", 0.25),))


@pytest.mark.slow
def test_demo_writes_a_report_whose_numbers_come_from_the_runs(tmp_path, capsys):
    out = run_demo(tmp_path / "demo", settings=TINY, progress=False, reference=tmp_path / "no-benchmark.json")
    assert "occfeat demo: 12 fine-tuning runs" in capsys.readouterr().out  # 4 inits x (2 seeds at 50 % + 1 at 100 %)
    results = json.loads((out / "results.json").read_text())
    assert {(r["init"], r["fraction"], r["seed"], r["pretrain_seed"]) for r in results["rows"]} == {
        (i, f, s, None if i == "scratch" else 0) for i in TINY.inits for f, seeds in ((0.5, (0, 1)), (1.0, (0,)))
        for s in seeds}
    # The paper's regime: every initialisation, scratch included, started from the ImageNet Lite0 backbone.
    assert results["backbone_init"]["sha256"] == EFFICIENTNET_LITE0.sha256
    assert all(json.loads((out / "runs" / r["run"].split("/runs/")[-1] / "run.json").read_text())["backbone_init"]
               == results["backbone_init"] for r in results["rows"])
    report = (out / "report.md").read_text()
    for row in results["rows"]:  # each figure is what that run's own evaluation wrote
        folder = out / "runs" / row["run"].split("/runs/")[-1]
        evaluation = json.loads((folder / "eval.json").read_text())
        assert row["vehicle_iou"] == evaluation["metrics"]["vehicle_iou"]
        run = json.loads((folder / "run.json").read_text())
        assert run["steps"] == row["steps"] and run["seed"] == row["seed"]
        assert run["label_protocol"] == evaluation["label_protocol"] == row["label_protocol"] == "lss"
        subset = json.loads((folder / "subset.json").read_text())
        assert len(subset) == row["train_samples"]
        if row["fraction"] == 1.0:
            cell = next(c for c in results["cells"] if c["init"] == row["init"] and c["fraction"] == 1.0)
            assert cell["vehicle_iou"] == row["vehicle_iou"]  # one seed: the cell is the run
            assert f"| {100 * row['vehicle_iou']:.1f} |" in report
    # Paired: one seed's initialisations share its labelled subset; the seeds draw different subsets.
    subsets = {(r["init"], r["seed"]): json.loads((out / "runs" / r["run"].split("/runs/")[-1] / "subset.json").read_text())
               for r in results["rows"] if r["fraction"] == 0.5}
    assert all(subsets[(i, s)] == subsets[("scratch", s)] for i, s in subsets)
    assert subsets[("scratch", 0)] != subsets[("scratch", 1)]
    split = results["split"]
    assert split["pool_samples"] == 6 and split["val_samples"] == 2 and split["labelled_samples"] == {"0.5": 3, "1": 6}
    assert results["label_protocol"] == ["lss"] and "Vehicle labels: the `lss` protocol" in report
    # The stand-in teacher is named as one in the run records, the report and the exported weights' cards.
    assert "stand-in for DINOv2" in results["pretrainings"]["occfeat-s0"]["teacher_role"]
    assert results["pretrainings"]["occfeat-random-teacher-s0"]["teacher"]["weights"].startswith("random")
    assert "stand-in for DINOv2 on generated worlds" in report and "no benchmark spread" in report
    assert "scratch included, starts from ImageNet weights (EfficientNet-Lite0, ImageNet-1k" in report
    curve = results["pretrainings"]["occfeat-s0"]["curve"]  # evaluated at the end only (pretrain_eval_every=0)
    assert [c["step"] for c in curve] == [TINY.pretrain_steps]
    assert curve[0]["feature_cosine_constant"] < curve[0]["feature_cosine_class"] <= 1.0
    # A pretraining override (the demo's λ) reaches every pretraining run, and the report says it differs.
    assert json.loads((out / "runs" / "pretrain-occfeat-s0" / "run.json").read_text())["recipe"]["lambda_feat"] == 0.25
    assert "with `lambda_feat=0.25` (the benchmark's pretraining uses the recipe's values)" in report
    card = (out / "weights" / "simplebev-lite0-tiny.occfeat-synthetic-s0" / "README.md").read_text()
    assert "stand-in for DINOv2 on generated worlds" in card
    # The zoo path: the pretrained networks came back by name from the loopback Hub with clean reports.
    assert len(results["load_reports"]) == 3
    assert all("missing 0, unexpected 0, shape mismatches 0" in r for r in results["load_reports"].values())
    registry = json.loads((out / "registry.json").read_text())
    assert all(entry["hub"]["commit"] and entry["files"] for entry in registry["weights"].values())
    with Image.open(out / "comparison.png") as chart:
        assert chart.width > 600 and len(chart.convert("L").getcolors(maxcolors=1 << 16) or []) > 10
    assert {p.name for p in (out / "pictures").glob("*.png")} >= {"pretrain-pca-bev.png", "prediction-occfeat-0.5.png"}


def test_paired_differences_match_scipys_paired_t_test():
    from scipy import stats

    scratch, occupancy = [0.10, 0.14, 0.08, 0.12, 0.11], [0.15, 0.16, 0.13, 0.12, 0.18]
    rows = [{"fraction": 0.02, "init": init, "seed": seed, "vehicle_iou": value, "map_iou/drivable_area": 0.5}
            for init, values in (("scratch", scratch), ("occupancy", occupancy)) for seed, value in enumerate(values)]
    rows.append({"fraction": 0.02, "init": "occfeat", "seed": 9, "vehicle_iou": 0.3, "map_iou/drivable_area": 0.5})
    (paired,) = paired_differences(rows)  # occfeat has no seed in common with a baseline: no comparison
    assert (paired["init"], paired["baseline"], paired["seeds"]) == ("occupancy", "scratch", [0, 1, 2, 3, 4])
    vehicle = paired["vehicle_iou"]
    reference = stats.ttest_rel(occupancy, scratch)
    low, high = reference.confidence_interval(0.95)
    assert vehicle["ci95"] == pytest.approx([low, high]) and vehicle["mean"] == pytest.approx(0.038)
    assert vehicle["better_on"] == 4 and reference.pvalue < 0.05 and vehicle["resolved"] is True
    assert paired["map_iou/drivable_area"]["resolved"] is False and paired["map_iou/drivable_area"]["std"] == 0.0


def test_crossed_pretraining_and_fine_tuning_seeds_pair_and_hold_both_variances():
    """Two pretraining seeds x three fine-tuning seeds: a scratch run pairs with each pretraining seed's run of its
    fine-tuning seed, two pretrained inits pair seed pair by seed pair; the interval is the two-way random-effects
    one (checked against its mean squares computed here with numpy)."""
    import numpy as np

    rng = np.random.default_rng(0)
    values = {("scratch", None, s): 0.1 + 0.01 * s for s in range(3)}
    values |= {("occupancy", p, s): 0.2 + 0.03 * p + 0.01 * s + 0.005 * rng.standard_normal() for p in range(2)
               for s in range(3)}
    values |= {("occfeat", p, s): 0.21 + 0.02 * p + 0.01 * s + 0.005 * rng.standard_normal() for p in range(2)
               for s in range(3)}
    rows = [{"fraction": 0.02, "init": i, "pretrain_seed": p, "seed": s, "vehicle_iou": v, "map_iou/drivable_area": v}
            for (i, p, s), v in values.items()]
    found = {(e["init"], e["baseline"]): e for e in paired_differences(rows)}
    versus_scratch = found[("occupancy", "scratch")]
    assert versus_scratch["pairs"] == [(p, s) for p in range(2) for s in range(3)]
    assert versus_scratch["vehicle_iou"]["per_seed"] == pytest.approx(
        [values[("occupancy", p, s)] - values[("scratch", None, s)] for p in range(2) for s in range(3)])
    d = np.array([[values[("occfeat", p, s)] - values[("occupancy", p, s)] for s in range(3)] for p in range(2)])
    ms_a = 3 * d.mean(1).var(ddof=1)
    ms_b = 2 * d.mean(0).var(ddof=1)
    ms_e = ((d - d.mean(1, keepdims=True) - d.mean(0, keepdims=True) + d.mean()) ** 2).sum() / 2
    variance = max(ms_a + ms_b - ms_e, ms_a, ms_b) / 6
    entry = found[("occfeat", "occupancy")]["vehicle_iou"]
    half = (entry["ci95"][1] - entry["ci95"][0]) / 2
    assert entry["mean"] == pytest.approx(d.mean())
    from scipy import stats

    assert half == pytest.approx(stats.t.ppf(0.975, entry["dof"]) * variance**0.5)
    assert entry["dof"] > 0 and found[("occfeat", "occupancy")]["pretrain_seeds"] == [0, 1]


def test_the_crossed_interval_covers_the_mean_where_the_fine_tuning_one_does_not():
    """Simulated crossed experiments (2 pretraining x 5 fine-tuning seeds) where the pretraining seed matters as much
    as the fine-tuning seed: the crossed interval covers the true mean nearly 95 % of the time (measured 0.92 with 2
    pretraining seeds, Satterthwaite's approximation being slightly optimistic at so few degrees of freedom; 0.95
    with 3 or 5); a paired t interval over all ten differences, as if they were independent, covers it 0.60."""
    import numpy as np
    from scipy import stats

    rng = np.random.default_rng(1)
    covered_crossed = covered_naive = 0
    trials = 2000
    for _ in range(trials):
        d = 0.05 + rng.normal(0, 0.03, (2, 1)) + rng.normal(0, 0.02, (1, 5)) + rng.normal(0, 0.01, (2, 5))
        mean, half, _ = crossed_interval({(p, s): d[p, s] for p in range(2) for s in range(5)})
        covered_crossed += abs(mean - 0.05) <= half
        naive = stats.t.ppf(0.975, 9) * d.std(ddof=1) / np.sqrt(10)
        covered_naive += abs(d.mean() - 0.05) <= naive
    assert covered_crossed / trials > 0.9 and covered_naive / trials < 0.7


def test_the_benchmark_difference_is_the_one_of_the_same_rank():
    def entry(fraction, std):
        return {"fraction": fraction, "init": "occfeat", "baseline": "scratch", "vehicle_iou": {"std": std}}

    benchmark = {"paired": [entry(0.02, 0.04), entry(0.1, 0.02)]}
    assert benchmark_difference(benchmark, entry(0.05, None), (0.05, 0.1))["vehicle_iou"]["std"] == 0.04
    assert benchmark_difference(benchmark, entry(0.1, None), (0.05, 0.1))["vehicle_iou"]["std"] == 0.02
    assert benchmark_difference(None, entry(0.1, None), (0.05, 0.1)) is None


def test_a_one_seed_difference_against_the_benchmark_is_labelled_noise_not_a_finding():
    """The demo's report: within the spread -> noise; beyond it and the benchmark's way -> agrees; beyond it against
    a direction the benchmark resolved -> listed as noise of the short run, naming the benchmark's interval."""
    def difference(init, baseline, fraction, mean, ci95=None, std=None):
        return {"init": init, "baseline": baseline, "fraction": fraction,
                "vehicle_iou": {"mean": mean, "std": std, "ci95": ci95, "per_seed": [mean] * 10}}

    benchmark = {"settings": {"pretrain_steps": 800}, "paired": [
        difference("occupancy", "scratch", 0.02, 0.10, (0.08, 0.12), 0.016),
        difference("occfeat", "occupancy", 0.02, 0.004, (0.0003, 0.008), 0.006),
        difference("occfeat", "scratch", 0.02, 0.0, (-0.02, 0.02), 0.01)]}
    demo = {"paired": [difference("occupancy", "scratch", 0.05, 0.033),  # beyond 2 x 1.6, the benchmark's way
                       difference("occfeat", "occupancy", 0.05, -0.024),  # beyond 2 x 0.6, against it
                       difference("occfeat", "occupancy", 0.1, -0.005),  # within 2 x 0.6
                       difference("occfeat", "scratch", 0.05, 0.05)]}  # beyond, but the benchmark has no direction
    settings = dataclasses.replace(DEFAULT, pretrain_steps=180, fractions=(0.05, 0.1), seeds_per_fraction=(1, 1))
    lines, contradictions = difference_verdicts(demo, settings, benchmark)
    assert "**exceeds**" in lines[0] and "agrees with the benchmark: +10.0 [+8.0, +12.0] at 2% over 10" in lines[0]
    assert "**against** the benchmark: +0.40 [+0.03, +0.80]" in lines[1] and "not as a finding" in lines[1]
    assert "180 pretraining steps, not the benchmark's 800" in lines[1]
    assert "cannot tell it from noise" in lines[2] and "exceeds" not in lines[2]
    assert "(2 x 1.60 = 3.20 points)" in lines[0] and "(2 x 0.60 = 1.20 points)" in lines[2]  # the threshold compared
    assert "not resolved by" in lines[3]
    assert contradictions == [lines[1]]
    assert "no benchmark spread" in difference_verdicts(demo, settings, None)[0][0]


def test_the_designs_promises_hold_for_the_shipped_settings():
    from occfeat.finetune.recipes import get_recipe, schedule_steps

    for settings in (BENCHMARK, DEFAULT):
        n_val = max(1, round(0.2 * settings.scenes))
        pool = (settings.scenes - n_val) * settings.samples_per_scene
        labelled = [math.ceil(f * pool) for f in settings.fractions]
        assert pool >= 9.5 * max(labelled)  # the unlabelled pool is ~10x the largest labelled subset
        recipe = get_recipe("cpu-tiny", epochs=settings.finetune_epochs, min_steps=settings.finetune_min_steps)
        steps = [schedule_steps(recipe, n) for n in labelled]
        assert steps == sorted(steps)  # more labels never get fewer updates
    assert BENCHMARK.seeds_per_fraction[0] >= 5 and n_val_of(BENCHMARK) * BENCHMARK.samples_per_scene >= 60
    assert {"scratch", "occupancy", "occfeat"} <= set(BENCHMARK.inits)  # the random-teacher control: its own part
    assert BENCHMARK.pretrained_backbone and BENCHMARK.pretraining_seeds >= 2  # the paper's regime, both variances
    assert QUICK.inits == DEFAULT.inits
    with pytest.raises(ConfigError, match="dinov2_weights"):
        ComparisonSettings(inits=("scratch", "occfeat-dinov2"))
    with pytest.raises(ConfigError, match="seeds_per_fraction"):
        ComparisonSettings(fractions=(0.1,), seeds_per_fraction=(1, 2))


def n_val_of(settings: ComparisonSettings) -> int:
    return max(1, round(0.2 * settings.scenes))


def test_demo_refuses_a_folder_that_is_not_its_own(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not an occfeat demo folder"):
        run_demo(tmp_path, settings=TINY, progress=False)
    assert main(["demo", "--out", str(tmp_path)]) == EXIT_ERROR


# One pretraining and two fine-tuning runs: the smallest grid with a run that waits for another.
TWO_RUNS = ComparisonSettings(scenes=3, samples_per_scene=3, world_image_hw=(90, 160), pretrain_steps=2,
                              inits=("scratch", "occupancy"), fractions=(1.0,), seeds_per_fraction=(1,),
                              finetune_epochs=1.0, finetune_min_steps=2, val_samples=2, pretrain_val_samples=2)


@pytest.mark.slow
def test_runs_in_worker_processes_give_the_numbers_of_runs_in_this_process(tmp_path):
    """``workers=2`` runs the pretraining and the scratch run at once, and the pretrained run after its pretraining
    is published; with the same threads per run (one here) every number is the one-process run's, bit for bit."""
    inline = compare_pretrainings(tmp_path / "one", TWO_RUNS, progress=False, workers=1)
    parallel = compare_pretrainings(tmp_path / "two", TWO_RUNS, progress=False, workers=2)

    def numbers(rows):
        return [{k: v for k, v in r.items() if k not in ("seconds", "run")} for r in rows]

    assert [(r["init"], r["pretrain_seed"]) for r in parallel["rows"]] == [("scratch", None), ("occupancy", 0)]
    assert numbers(parallel["rows"]) == numbers(inline["rows"])
    assert parallel["pretrainings"]["occupancy-s0"]["metrics"] == inline["pretrainings"]["occupancy-s0"]["metrics"]
    assert all("missing 0, unexpected 0" in r for r in parallel["load_reports"].values())
    registry = json.loads((tmp_path / "two" / "registry.json").read_text())
    assert list(registry["weights"]) == ["simplebev-lite0-tiny.occupancy-synthetic-s0"]


@pytest.mark.slow
def test_a_run_that_fails_in_a_worker_process_raises_its_own_error(tmp_path):
    settings = dataclasses.replace(TWO_RUNS, inits=("scratch", "occfeat-dinov2"),
                                   dinov2_weights=str(tmp_path / "no-such-dinov2.safetensors"))
    with pytest.raises(Exception, match="no-such-dinov2") as raised:
        compare_pretrainings(tmp_path / "demo", settings, progress=False, workers=2)
    assert raised.type.__module__.startswith("occfeat")  # the typed error, not the pool's


def test_a_misspelt_pretraining_override_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="workers=0"):
        compare_pretrainings(tmp_path / "demo", TWO_RUNS, progress=False, workers=0)
    assert not (tmp_path / "demo").exists()  # refused before anything is written
    with pytest.raises(ConfigError, match="'lambda_fet': did you mean 'lambda_feat'"):
        dataclasses.replace(TWO_RUNS, pretrain_overrides=(("lambda_fet", 0.25),))
    from occfeat.finetune.recipes import get_recipe

    with pytest.raises(ConfigError, match="FinetuneRecipe has no field 'epoch'"):
        get_recipe("cpu-tiny", epoch=3)


@pytest.mark.slow
def test_a_script_without_a_main_guard_gets_the_fix_not_a_broken_pool(tmp_path):
    """Worker processes are spawned and import the main script: one that starts the comparison at import would start
    it again in each worker (rewriting the world the parent reads). The worker refuses; the parent names the fix."""
    import subprocess
    import sys

    script = tmp_path / "unguarded.py"
    script.write_text("from occfeat.demo import ComparisonSettings, compare_pretrainings\n"
                      f"settings = ComparisonSettings(**{dataclasses.asdict(TWO_RUNS)!r})\n"
                      f"compare_pretrainings({str(tmp_path / 'out')!r}, settings, progress=False, workers=2)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert done.returncode != 0
    assert "WorkerError" in done.stderr and 'if __name__ == "__main__":' in done.stderr
    assert "ConfigError: the comparison was started while a worker process was importing the main script" in done.stderr
    assert (tmp_path / "out" / "world" / "v1.0-synthetic" / "sample.json").is_file()  # the world the parent wrote
