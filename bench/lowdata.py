"""The low-data benchmark behind OccFeat's claim, on a generated world (a stand-in for nuScenes), paired over seeds.

The paper: pretrain on every train frame without labels, fine-tune on 1 % of them; OccFeat > occupancy-only > no
pretraining (+13.6 vehicle IoU for BEVFormer at 1 %). Here ``occfeat.demo.compare_pretrainings`` with
``occfeat.demo.BENCHMARK``: a world of 25 scenes x 12 key frames (20 train scenes = the unlabelled pool of 240
frames; 5 held-out scenes of 3 towns = 60 frames, the same for every run); ``simplebev-lite0-tiny`` with the ImageNet
EfficientNet-Lite0 backbone for every row, scratch included (the paper's regime; ``--random-backbone`` for the earlier
one); each pretrained init (occupancy only; OccFeat with the stand-in teacher ``synthetic-semantic``, a stand-in for
DINOv2 on generated worlds) pretrained 3,200 steps (26.7 passes over the pool: the length at which the held-out
curves level off, ``bench/lowdata/length``) once per pretraining seed, then fine-tuned, with scratch, on 2 % (5 frames,
5 seeds) and 10 % (24 frames, 3 seeds) of the train split. A fine-tuning seed fixes the labelled subset, the heads and
the data order; pretraining seeds are crossed with it, and the intervals hold both variances. Writes ``results.json``
(every run's own numbers, the settings, the pretraining curves), ``table.md`` and ``comparison.png``.

Each part must fit 90 min on 2 CPU cores: one 3,200-step pretraining (about 45 min at two threads) and its
fine-tunings per part, merged as they finish (a part's rows must not repeat another's):

    python bench/lowdata.py --out /tmp/lowdata-a --fractions 0.02 --seeds-per-fraction 5 --pretraining-seeds 1 \\
        --inits scratch occupancy
    python bench/lowdata.py --out /tmp/lowdata-b --fractions 0.02 --seeds-per-fraction 5 --pretraining-seeds 1 \\
        --inits occfeat --merge-with /tmp/lowdata-a/results.json
    python bench/lowdata.py ... --inits occupancy --first-pretraining-seed 1 --merge-with /tmp/lowdata-b/results.json
    python bench/lowdata.py ... --inits occfeat --first-pretraining-seed 1 --merge-with /tmp/lowdata-c/results.json \\
        --save-to bench/lowdata

An ablation pretrains again with a changed recipe and pairs its runs, seed for seed, with a finished run's (same
world, fractions, seeds and schedule; a run is deterministic at a given thread count, so the baselines need not be
run again; a run with other threads per process, ``--workers 2``, differs from it by seed-like noise). The committed
ablations were paired with the 800-step benchmark that came before (``bench/lowdata/800-steps``):

    python bench/lowdata.py --inits occfeat --fractions 0.02 --seeds-per-fraction 5 --pretrain-steps 800 \\
        --pretrain-eval-every 200 --pretrain-override lambda_feat=0.25 --pair-with bench/lowdata/800-steps/results.json \\
        --out /tmp/lowdata-lambda --save-to bench/lowdata/ablation-lambda

The length check pretrained both inits 3,200 steps and paired them with the 800-step benchmark
(``occfeat[pretrain_steps=3200]``: its inits are compared with each other and with every init of that run); a later
pretraining seed merges with that paired part and is paired again (``bench/pretrain_length.py`` then draws the end
points of every length). Redrawn with ``--scratch-from`` the run it was paired with, the length check's own runs and
that run's scratch runs (scratch never pretrains, so its runs do not depend on the length) are the benchmark at 3,200
steps, ``bench/lowdata/results.json``:

    python bench/lowdata.py --inits occupancy occfeat --fractions 0.02 --seeds-per-fraction 5 --pretraining-seeds 1 \\
        --workers 2 --pair-with bench/lowdata/800-steps/results.json --out /tmp/length-a --save-to bench/lowdata/length
    python bench/lowdata.py --inits occupancy occfeat --fractions 0.02 --seeds-per-fraction 5 --pretraining-seeds 1 \\
        --first-pretraining-seed 1 --workers 2 --merge-with bench/lowdata/length/results.json \\
        --pair-with bench/lowdata/800-steps/results.json --out /tmp/length-b --save-to bench/lowdata/length
    python bench/lowdata.py --redraw bench/lowdata/length/results.json --scratch-from bench/lowdata/800-steps/results.json \\
        --out /tmp/lowdata --save-to bench/lowdata
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import torch

from occfeat.demo import (BENCHMARK, COMPARISONS, INIT_LABELS, _inits_of, chart_title, compare_pretrainings, markdown_table,
                          paired_differences, paired_table, plot_comparison, summarise)


def _override(item: str) -> tuple[str, object]:
    key, _, value = item.partition("=")
    if not key or not value:
        raise SystemExit(f"--pretrain-override {item!r}: expected KEY=VALUE, e.g. lambda_feat=0.25")
    if value in ("None", "null"):
        return key, None
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:  # a bare word: a string option, e.g. feature_branch=separate
        return key, value


# The settings an ablation must share with the run it is paired with, so that a seed means the same subset and runs.
PAIRED_FIELDS = ("arch", "pretrained_backbone", "scenes", "samples_per_scene", "world_image_hw", "world_seed",
                 "first_seed", "finetune_epochs", "finetune_min_steps", "val_samples")


def _check_paired_settings(flag: str, theirs: dict, settings) -> None:
    mismatched = [k for k in PAIRED_FIELDS if json.dumps(theirs.get(k)) != json.dumps(getattr(settings, k))]
    if mismatched:
        raise SystemExit(f"{flag}: settings {mismatched} differ from that run's; a seed would not pair the runs.")


def pair_with(results: dict, baseline_path: str, settings) -> dict:
    """This run's rows (inits tagged with the overrides) merged with a finished run's (its results.json at
    `baseline_path`), and every tagged init compared seed for seed with every init of the finished run."""
    baseline = json.loads(Path(baseline_path).read_text())
    theirs = baseline["settings"]
    _check_paired_settings("--pair-with", theirs, settings)
    # The tag names what differs from the baseline's pretraining: the recipe overrides, and the length when a run
    # pretrains longer or shorter than the run it is paired with (the length check: --pretrain-steps 3200).
    changed = list(settings.pretrain_overrides)
    if theirs.get("pretrain_steps") != settings.pretrain_steps:
        changed.insert(0, ("pretrain_steps", settings.pretrain_steps))
    if not changed:
        raise SystemExit("--pair-with: this run pretrains exactly as that run did (no --pretrain-override, the same "
                         "--pretrain-steps); it would repeat its runs. Change one, or use --merge-with for a later "
                         "pretraining seed.")
    tag = "[" + ", ".join(f"{k}={v}" for k, v in changed) + "]"
    ours = [{**r, "init": r["init"] + tag} for r in results["rows"]]
    rows = ours + baseline["rows"]
    mine = sorted({r["init"] for r in ours})
    # This run's inits against each other (the usual comparisons, both tagged: occfeat[...] − occupancy[...]), then
    # each against every init of the finished run.
    within = [(a + tag, b + tag) for a, b in COMPARISONS if a + tag in mine and b + tag in mine]
    comparisons = within + [(m, other) for m in mine for other in _inits_of(baseline["rows"])]
    return {**results, "rows": rows, "cells": summarise(rows), "paired": paired_differences(rows, comparisons),
            "paired_with": {"results": str(baseline_path), "settings": theirs, "tag": tag}}


# The settings parts of one benchmark must share to be merged: the pairing's, and the pretraining recipe's.
MERGED_FIELDS = PAIRED_FIELDS + ("pretrain_steps", "pretrain_overrides", "pretrain_val_samples", "pretrain_eval_every")


def merge_with(results: dict, other: dict, settings) -> dict:
    """This part's rows merged with another part's of the same benchmark (e.g. a later pretraining seed, or another
    fraction), and every summary recomputed over the union: the crossed intervals then hold every pretraining seed."""
    theirs = other["settings"]
    mismatched = [k for k in MERGED_FIELDS if json.dumps(theirs.get(k)) != json.dumps(getattr(settings, k))]
    if mismatched:
        raise SystemExit(f"--merge-with: settings {mismatched} differ from that part's; they are not one benchmark.")

    def key(row: dict) -> tuple:
        return row["fraction"], row["init"], row.get("pretrain_seed"), row["seed"]

    twice = {key(r) for r in results["rows"]} & {key(r) for r in other["rows"]}
    if twice:
        raise SystemExit(f"--merge-with: runs {sorted(twice, key=str)[:3]} are in both parts; run each once.")
    rows = other["rows"] + results["rows"]
    parts = [*other.get("parts", [_part(other)]), _part(results)]
    # The union's settings say what the union holds (every init, every pretraining seed), not the last part's alone.
    seeds = sorted({r["pretrain_seed"] for r in rows if r.get("pretrain_seed") is not None})
    inits = list(dict.fromkeys([*theirs["inits"], *results["settings"]["inits"]]))
    union = {**results["settings"], "inits": inits, "pretraining_seeds": len(seeds),
             "first_pretraining_seed": seeds[0] if seeds else None}
    return {**results, "settings": union, "rows": rows, "cells": summarise(rows), "paired": paired_differences(rows),
            "pretrainings": {**other.get("pretrainings", {}), **results.get("pretrainings", {})},
            "load_reports": {**other.get("load_reports", {}), **results.get("load_reports", {})},
            "parts": parts, "seconds": sum(p["seconds"] for p in parts)}


def scratch_from(results: dict, finished_path: str, settings) -> dict:
    """This run's pretrained inits with the scratch runs of a finished run (its results.json at `finished_path`),
    instead of running them again: scratch never pretrains, so a longer pretraining or another recipe leaves its runs
    as they were (a run is deterministic at a given thread count). The pairing settings must match, and the finished
    run must hold every fine-tuning seed of this one. The borrowed runs are recorded as a part of their own."""
    finished = json.loads(Path(finished_path).read_text())
    _check_paired_settings("--scratch-from", finished["settings"], settings)
    if any(r["init"] == "scratch" for r in results["rows"]):
        raise SystemExit("--scratch-from: this run has scratch runs of its own; leave scratch out of --inits.")
    wanted = {(f, s) for f in settings.fractions for s in settings.seeds(f)}
    scratch = [r for r in finished["rows"] if r["init"] == "scratch" and (r["fraction"], r["seed"]) in wanted]
    missing = wanted - {(r["fraction"], r["seed"]) for r in scratch}
    if missing:
        raise SystemExit(f"--scratch-from: {finished_path} has no scratch runs for (fraction, seed) "
                         f"{sorted(missing)}; run scratch with this benchmark instead.")
    rows = scratch + results["rows"]
    borrowed = {"settings": finished["settings"], "seconds": sum(r["seconds"] for r in scratch), "runs": len(scratch),
                "command": f"{finished.get('command')} (its scratch runs, from {finished_path})"}
    parts = [*results.get("parts", [_part(results)]), borrowed]
    inits = ["scratch", *(i for i in results["settings"]["inits"] if i != "scratch")]
    return {**results, "settings": {**results["settings"], "inits": inits}, "rows": rows, "cells": summarise(rows),
            "paired": paired_differences(rows), "parts": parts, "seconds": sum(p["seconds"] for p in parts),
            "scratch_from": str(finished_path)}


def own_part(paired: dict, baseline_path: str | None) -> dict:
    """A paired part's own runs, as a part to merge with: its rows untagged, without the rows of the run it was paired
    with. A later part of the same paired experiment (a longer pretraining's next pretraining seed) merges with it and
    is paired again, with the same finished run."""
    if baseline_path is None:
        raise SystemExit(f"--merge-with: that part was paired with {paired['paired_with']['results']}; pass "
                         "--pair-with with the same results.json so the merged part is paired again.")
    baseline = json.loads(Path(baseline_path).read_text())
    if json.dumps(baseline["settings"], sort_keys=True) != json.dumps(paired["paired_with"]["settings"], sort_keys=True):
        raise SystemExit(f"--merge-with: that part was paired with {paired['paired_with']['results']}, whose "
                         f"settings differ from {baseline_path}'s; pair both parts with the same finished run.")
    tag = paired["paired_with"]["tag"]
    rows = [{**r, "init": r["init"][: -len(tag)]} for r in paired["rows"] if r["init"].endswith(tag)]
    part = {k: v for k, v in paired.items() if k != "paired_with"}
    return {**part, "rows": rows, "cells": summarise(rows), "paired": paired_differences(rows)}


def _part(results: dict) -> dict:
    return {"settings": results["settings"], "seconds": results["seconds"], "runs": len(results["rows"]),
            "command": results.get("command")}


def draw(results: dict, settings, out: Path, save_to: str | None) -> None:
    """``table.md`` and ``comparison.png`` from a results.json's contents, into ``out`` (and copied to ``save_to``
    with results.json)."""
    # After a merge or a pairing, the title counts every part's inits and seeds (chart_title reads the rows).
    plot_comparison(results["rows"], out / "comparison.png", chart_title(settings, results))
    tables = markdown_table(results["cells"]) + "\n\n" + paired_table(results["paired"]) + "\n"
    (out / "table.md").write_text(tables)
    print(tables)
    if save_to:
        Path(save_to).mkdir(parents=True, exist_ok=True)
        for name in ("results.json", "table.md", "comparison.png"):
            shutil.copy(out / name, Path(save_to) / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/lowdata", help="working folder: the world, runs, weights (GBs)")
    parser.add_argument("--save-to", default=None, help="also copy results.json, table.md and comparison.png here "
                        "(bench/lowdata is the committed copy)")
    parser.add_argument("--arch", default=BENCHMARK.arch)
    parser.add_argument("--scenes", type=int, default=BENCHMARK.scenes)
    parser.add_argument("--samples-per-scene", type=int, default=BENCHMARK.samples_per_scene)
    parser.add_argument("--inits", nargs="+", default=list(BENCHMARK.inits), help=f"from {list(INIT_LABELS)}")
    parser.add_argument("--pretrain-steps", type=int, default=BENCHMARK.pretrain_steps)
    parser.add_argument("--fractions", nargs="+", type=float, default=list(BENCHMARK.fractions))
    parser.add_argument("--seeds-per-fraction", nargs="+", type=int, default=list(BENCHMARK.seeds_per_fraction))
    parser.add_argument("--finetune-epochs", type=float, default=BENCHMARK.finetune_epochs)
    parser.add_argument("--finetune-min-steps", type=int, default=BENCHMARK.finetune_min_steps)
    parser.add_argument("--dinov2-weights", default=None, help="a DINOv2 .safetensors (or 'hub'): adds the "
                        "'occfeat-dinov2' init, OccFeat with its real teacher")
    parser.add_argument("--pretrain-override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="pretraining recipe fields for an ablation (e.g. lambda_feat=0.25 pos_weight=1)")
    parser.add_argument("--pair-with", default=None, metavar="RESULTS_JSON",
                        help="a finished run's results.json: this run's inits are tagged with the overrides (and "
                        "the length, when it differs) and compared seed for seed with each other and with every init "
                        "of that run")
    parser.add_argument("--pretraining-seeds", type=int, default=BENCHMARK.pretraining_seeds,
                        help="pretraining runs per pretrained init, crossed with the fine-tuning seeds")
    parser.add_argument("--first-pretraining-seed", type=int, default=None,
                        help="the first pretraining seed (default: the first fine-tuning seed); with --merge-with, a "
                        "later pretraining seed runs as its own part")
    parser.add_argument("--merge-with", default=None, metavar="RESULTS_JSON",
                        help="another part's results.json of the same benchmark: the rows are merged and every "
                        "summary and interval recomputed over both (a part that was paired: its own runs, paired "
                        "again with --pair-with)")
    parser.add_argument("--scratch-from", default=None, metavar="RESULTS_JSON",
                        help="take the scratch runs from a finished run's results.json instead of running them "
                        "(scratch never pretrains: a longer pretraining leaves its runs as they were). With --redraw "
                        "of a part paired with that run: its own runs and that run's scratch, written to --out")
    parser.add_argument("--pretrain-eval-every", type=int, default=BENCHMARK.pretrain_eval_every,
                        help="held-out occupancy IoU and feature cosine every N pretraining steps (the curves)")
    parser.add_argument("--random-backbone", action="store_true",
                        help="the earlier regime: random backbones instead of ImageNet Lite0 for every init")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1,
                        help="runs at once, each process with threads / workers torch threads (2 on 2 cores: about "
                        "1.24-1.26x the throughput, bench/workers.py; 1, the default, is how the committed results were run)")
    parser.add_argument("--redraw", default=None, metavar="RESULTS_JSON",
                        help="run nothing: draw table.md and comparison.png again from a finished results.json (into "
                        "its folder; and --save-to)")
    args = parser.parse_args()
    if args.redraw:
        path = Path(args.redraw)
        results = json.loads(path.read_text())
        fields = {f.name for f in dataclasses.fields(BENCHMARK)}
        stored = {k: tuple(map(tuple, v)) if k == "pretrain_overrides" else tuple(v) if isinstance(v, list) else v
                  for k, v in results["settings"].items() if k in fields}
        settings = dataclasses.replace(BENCHMARK, **stored)
        if not args.scratch_from:
            draw(results, settings, path.parent, args.save_to)
            return
        # A paired part redrawn as a benchmark of its own: its runs untagged, with the scratch runs of the run it was
        # paired with (the length check's runs become the benchmark at the chosen length).
        if "paired_with" in results:
            results = own_part(results, args.scratch_from)
        results = scratch_from(results, args.scratch_from, settings)
        # The command that made this results.json; the commands of the runs it holds are its parts'.
        results["command"] = "python bench/lowdata.py " + " ".join(sys.argv[1:])
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        draw(results, settings, out, args.save_to)
        return
    torch.set_num_threads(args.threads)
    own_inits = [i for i in args.inits if not (args.scratch_from and i == "scratch")]
    inits = [*own_inits, *(["occfeat-dinov2"] if args.dinov2_weights and "occfeat-dinov2" not in args.inits else [])]
    settings = dataclasses.replace(
        BENCHMARK, arch=args.arch, scenes=args.scenes, samples_per_scene=args.samples_per_scene, inits=tuple(inits),
        pretrain_steps=args.pretrain_steps, fractions=tuple(args.fractions),
        seeds_per_fraction=tuple(args.seeds_per_fraction), finetune_epochs=args.finetune_epochs,
        finetune_min_steps=args.finetune_min_steps, dinov2_weights=args.dinov2_weights,
        pretrain_overrides=tuple(_override(item) for item in args.pretrain_override),
        pretraining_seeds=args.pretraining_seeds, pretrain_eval_every=args.pretrain_eval_every,
        first_pretraining_seed=args.first_pretraining_seed,
        pretrained_backbone=not args.random_backbone,
    )
    started = time.perf_counter()
    other = json.loads(Path(args.merge_with).read_text()) if args.merge_with else None
    if other and "paired_with" in other:
        other = own_part(other, args.pair_with)  # checked before anything runs
    results = compare_pretrainings(args.out, settings, progress=True, workers=args.workers)
    results["command"] = "python bench/lowdata.py " + " ".join(sys.argv[1:])
    out = Path(args.out)
    # Parts merge first (the union of the runs), then the union is paired with the finished run.
    if other:
        results = merge_with(results, other, settings)
    if args.scratch_from:
        results = scratch_from(results, args.scratch_from, settings)
    if args.pair_with:
        results = pair_with(results, args.pair_with, settings)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    draw(results, settings, out, args.save_to)
    split = results["split"]
    print(f"bench/lowdata.py: {len(results['rows'])} fine-tuning runs, pool {split['pool_samples']} frames "
          f"({split['pool_to_largest_labelled']:.1f}x the largest labelled subset), {split['val_samples']} held-out "
          f"frames, {time.perf_counter() - started:.0f} s; {out / 'results.json'}")


if __name__ == "__main__":
    main()
