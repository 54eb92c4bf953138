"""How long the miniature's pretraining must run: what runs of each length reach at their end (issue 22).

    python bench/pretrain_length.py bench/lowdata/800-steps/results.json bench/lowdata/curves/curves.json \
        bench/lowdata/length/results.json --out bench/lowdata/length

Every pretraining follows one-cycle over its own length, so a curve keeps rising to its last step while the learning
rate decays: a single curve cannot say whether a longer run would end higher. What decides the length is the end
point of runs of different lengths on the same world, the same held-out frames and the same recipe. This script
collects every pretraining run recorded in the given files (``bench/lowdata.py``'s ``results.json``: each run's
curve; ``bench/pretrain_curves.py``'s ``curves.json``), draws their held-out curves with their end points
(``length.png``: occupancy IoU, and the feature cosine beside the best constant and best per-class features) and
prints the end points per length (``length.md``). Nothing is trained here.

Stand-ins: the world is generated (not nuScenes) and the teacher is ``synthetic-semantic`` (not DINOv2).
"""

from __future__ import annotations

import argparse
import json
import statistics
import textwrap
from pathlib import Path

from occfeat.demo import INIT_COLOURS, INIT_LABELS

LENGTH_INITS = ("occupancy", "occfeat")  # the benchmark's pretrained inits, whose lengths are compared


def runs_in(path: Path) -> list[dict]:
    """(mode, steps, seed, samples, seconds, curve) of every pretraining run of the benchmark's world in one file."""
    document = json.loads(path.read_text())
    found = []
    if "pretrainings" in document:  # bench/lowdata.py
        for record in document["pretrainings"].values():
            init = record["init"]
            if init not in LENGTH_INITS or not record.get("curve"):
                continue  # a tagged ablation (occfeat[feature_branch=...]) is not a length
            found.append({"mode": init, "steps": record["steps"], "seed": record["seed"], "samples": record["samples"],
                          "seconds": record["seconds"], "curve": record["curve"], "source": str(path)})
    elif "curves" in document:  # bench/pretrain_curves.py (its runs use pretraining seed 0, the script's default)
        for mode, curve in document["curves"].items():
            run = document["runs"][mode]
            found.append({"mode": mode, "steps": run["steps"], "seed": 0, "samples": run["samples"],
                          "seconds": run["seconds"], "curve": curve, "source": str(path)})
    else:
        raise SystemExit(f"{path}: neither a bench/lowdata.py results.json nor a bench/pretrain_curves.py curves.json")
    return found


def end_points(runs: list[dict]) -> list[dict]:
    """Per (mode, length): the end of each run (its last curve point, at its last step) and their mean."""
    table = []
    for mode, steps in sorted({(r["mode"], r["steps"]) for r in runs}, key=lambda k: (k[0] != "occupancy", k[1])):
        group = sorted((r for r in runs if (r["mode"], r["steps"]) == (mode, steps)), key=lambda r: r["seed"])
        ends = [r["curve"][-1] for r in group]
        if any(end["step"] != steps for end in ends):
            raise SystemExit(f"{mode} at {steps} steps: a curve ends before its run's last step; evaluate at the end")
        row = {"mode": mode, "steps": steps, "passes": steps * 2 / group[0]["samples"], "seeds": [r["seed"] for r in group],
               "occupancy_iou": statistics.fmean(e["occupancy_iou"] for e in ends),
               "occupancy_iou_per_run": [e["occupancy_iou"] for e in ends],
               "seconds_per_step": statistics.fmean(r["seconds"] / steps for r in group),
               # within each run: what its last evaluation interval added (levelled: close to zero)
               "last_interval": steps - group[0]["curve"][-2]["step"] if len(group[0]["curve"]) > 1 else None}
        row["occupancy_iou_last_change"] = _last_change(group, "occupancy_iou")
        if "feature_cosine" in ends[0]:
            row["feature_cosine_last_change"] = _last_change(group, "feature_cosine")
            row["feature_cosine"] = statistics.fmean(e["feature_cosine"] for e in ends)
            row["feature_cosine_per_run"] = [e["feature_cosine"] for e in ends]
            row["feature_cosine_constant"] = ends[0]["feature_cosine_constant"]
            row["feature_cosine_class"] = ends[0]["feature_cosine_class"]
        table.append(row)
    return table


def _last_change(group: list[dict], key: str) -> float | None:
    """The mean over runs of (last evaluation - the one before it): how much the run was still gaining at its end."""
    if any(len(r["curve"]) < 2 for r in group):
        return None
    return statistics.fmean(r["curve"][-1][key] - r["curve"][-2][key] for r in group)


def _change(value: float | None, interval: int | None) -> str:
    return "—" if value is None else f"{value:+.3f} ({interval})"


def markdown(table: list[dict]) -> str:
    lines = ["| pretraining | steps | passes | pretraining seeds | held-out occupancy IoU at the end | over its last "
             "interval (steps) | gain over half the length | feature cosine at the end | over its last interval "
             "(steps) | gain over half the length |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    by_key = {(r["mode"], r["steps"]): r for r in table}
    for r in table:
        half = by_key.get((r["mode"], r["steps"] // 2)) if r["steps"] % 2 == 0 else None
        iou_gain = f"{r['occupancy_iou'] - half['occupancy_iou']:+.3f}" if half else "—"
        cosine = f"{r['feature_cosine']:.3f}" if "feature_cosine" in r else "—"
        cosine_gain = (f"{r['feature_cosine'] - half['feature_cosine']:+.3f}"
                       if half and "feature_cosine" in r and "feature_cosine" in half else "—")
        lines.append(f"| {INIT_LABELS[r['mode']]} | {r['steps']:,} | {r['passes']:.1f} | "
                     f"{', '.join(map(str, r['seeds']))} | {r['occupancy_iou']:.3f} | "
                     f"{_change(r['occupancy_iou_last_change'], r['last_interval'])} | {iou_gain} | {cosine} | "
                     f"{_change(r.get('feature_cosine_last_change'), r['last_interval'])} | {cosine_gain} |")
    references = next((r for r in table if "feature_cosine" in r), None)
    if references:
        lines.append("")
        lines.append(f"Cosine references on the same voxels: the best constant feature "
                     f"{references['feature_cosine_constant']:.3f}, the best feature per class "
                     f"{references['feature_cosine_class']:.3f}.")
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (occupancy, cosine) = plt.subplots(1, 2, figsize=(12, 4.5))
    lengths = sorted({r["steps"] for r in runs})
    styles = dict(zip(lengths, [":", "--", "-", "-."] * 4))
    for r in sorted(runs, key=lambda r: (r["mode"], r["steps"], r["seed"])):
        steps = [c["step"] for c in r["curve"]]
        label = f"{INIT_LABELS[r['mode']]}, {r['steps']:,} steps, seed {r['seed']}"
        style = {"color": INIT_COLOURS[r["mode"]], "ls": styles[r["steps"]], "alpha": 0.8}
        occupancy.plot(steps, [c["occupancy_iou"] for c in r["curve"]], label=label, **style)
        occupancy.plot(steps[-1], r["curve"][-1]["occupancy_iou"], "o", color=INIT_COLOURS[r["mode"]])
        if "feature_cosine" in r["curve"][0]:
            cosine.plot(steps, [c["feature_cosine"] for c in r["curve"]], label=label, **style)
            cosine.plot(steps[-1], r["curve"][-1]["feature_cosine"], "o", color=INIT_COLOURS[r["mode"]])
    reference = next(r["curve"][-1] for r in runs if "feature_cosine" in r["curve"][-1])
    for value, style, label in ((reference["feature_cosine_class"], ":", "best feature per class"),
                                (reference["feature_cosine_constant"], "--", "best constant feature")):
        cosine.axhline(value, color="grey", ls=style, label=label)
    occupancy.set(xlabel="pretraining step", ylabel="held-out occupancy IoU",
                  title="occupancy (dots: each run's end, what its length reaches)")
    cosine.set(xlabel="pretraining step", ylabel="held-out feature cosine", title="distilled features (OccFeat)")
    for axis in (occupancy, cosine):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle("\n".join(textwrap.wrap(title, 150)), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", type=Path, help="bench/lowdata.py results.json or "
                        "bench/pretrain_curves.py curves.json files of the same world")
    parser.add_argument("--out", type=Path, required=True, help="folder for length.md, length.json and length.png")
    args = parser.parse_args()
    runs = [run for path in args.inputs for run in runs_in(path)]
    if not runs:
        raise SystemExit("no pretraining curves in the inputs (run bench/lowdata.py with --pretrain-eval-every)")
    table = end_points(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    text = markdown(table)
    (args.out / "length.md").write_text(text)
    (args.out / "length.json").write_text(json.dumps({"inputs": [str(p) for p in args.inputs], "end_points": table},
                                                     indent=2) + "\n")
    samples = runs[0]["samples"]
    plot(runs, args.out / "length.png",
         f"Pretraining length: held-out curves of runs of {', '.join(f'{s:,}' for s in sorted({r['steps'] for r in runs}))} "
         f"steps at batch 2 on {samples} unlabelled frames (simplebev-lite0-tiny, ImageNet Lite0, one-cycle over each "
         "run's own length). Stand-ins: a generated world, and the synthetic-semantic teacher instead of DINOv2.")
    print(text)
    print(f"bench/pretrain_length.py: {len(runs)} runs at {len(table)} (mode, length) points; {args.out / 'length.png'}")


if __name__ == "__main__":
    main()
