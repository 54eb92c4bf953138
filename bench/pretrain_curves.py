"""How long the miniature's pretraining must run: held-out curves on the low-data benchmark's world (issue 22).

    python bench/pretrain_curves.py --steps 1600 --eval-every 200 --out /tmp/curves --save-to bench/lowdata/curves

Pretrains ``occfeat.demo.BENCHMARK.arch`` (ImageNet Lite0 backbone) on the benchmark's unlabelled pool once per mode,
evaluating the auxiliary head on held-out frames every ``--eval-every`` steps: the occupancy IoU (beside the trivial
all-occupied predictor) and, with distillation, the feature cosine beside two references fitted to the same voxels,
the best constant feature and the best feature per class (``evaluate_pretraining``). The recipe's schedule is the
run's own: the learning rate follows one-cycle over ``--steps``, so a curve shows what a run of that length reaches at
each point of its schedule, not what shorter runs would. Writes ``curves.json`` and ``curves.png``. The teacher is
the stand-in ``synthetic-semantic`` (not DINOv2) and the world is generated (not nuScenes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import textwrap
import time
from pathlib import Path

import torch

from occfeat.demo import BENCHMARK, PRETRAININGS, _world, pretraining_curve


def plot(curves: dict[str, list[dict]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (occupancy, cosine) = plt.subplots(1, 2, figsize=(11, 4))
    for mode, curve in curves.items():
        steps = [c["step"] for c in curve]
        occupancy.plot(steps, [c["occupancy_iou"] for c in curve], marker="o", label=mode)
        if "feature_cosine" in curve[0]:
            cosine.plot(steps, [c["feature_cosine"] for c in curve], marker="o", label=f"{mode}: student")
            cosine.plot(steps, [c["feature_cosine_constant"] for c in curve], ls="--", color="grey",
                        label="best constant feature")
            cosine.plot(steps, [c["feature_cosine_class"] for c in curve], ls=":", color="black",
                        label="best feature per class")
    any_curve = next(iter(curves.values()))
    occupancy.plot([c["step"] for c in any_curve], [c["occupancy_iou_all_occupied"] for c in any_curve], ls="--",
                   color="grey", label="all occupied")
    occupancy.set(xlabel="pretraining step", ylabel="held-out occupancy IoU", title="occupancy")
    cosine.set(xlabel="pretraining step", ylabel="held-out feature cosine", title="distilled features")
    for axis in (occupancy, cosine):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle("\n".join(textwrap.wrap(title, 140)), fontsize=9)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/pretrain-curves")
    parser.add_argument("--save-to", default=None, help="also copy curves.json and curves.png here")
    parser.add_argument("--modes", nargs="+", default=["occupancy", "occfeat"], choices=["occupancy", "occfeat"])
    parser.add_argument("--steps", type=int, default=1600)
    parser.add_argument("--eval-every", type=int, default=200)
    parser.add_argument("--val-samples", type=int, default=BENCHMARK.pretrain_val_samples)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from occfeat.pretrain import pretrain

    settings = dataclasses.replace(BENCHMARK, pretrain_steps=args.steps, pretrain_eval_every=args.eval_every)
    out = Path(args.out)
    started = time.perf_counter()
    world = _world(settings, out / "world", progress=True)
    curves, records = {}, {}
    for mode in args.modes:
        spec = PRETRAININGS[mode]
        run = out / f"pretrain-{mode}"
        shutil.rmtree(run, ignore_errors=True)
        tic = time.perf_counter()
        pretrain(settings.arch, dataroot=world.dataroot, version=world.version, out_dir=run, recipe="cpu-tiny",
                 mode=spec["mode"], max_steps=args.steps, val_samples=args.val_samples, seed=args.seed, device="cpu",
                 cache_dir=out / "teacher-cache", pictures=False, load_kwargs=settings.backbone_options(),
                 recipe_overrides={"eval_every": args.eval_every, **({"teacher": spec["teacher"]} if "teacher" in spec
                                                                      else {})})
        curves[mode] = pretraining_curve(run)
        info = json.loads((run / "run.json").read_text())
        records[mode] = {"seconds": time.perf_counter() - tic, "steps": info["steps"], "samples": info["samples"],
                         "teacher": info["teacher"], "backbone_init": info["backbone_init"], "recipe": info["recipe"]}
    title = (f"{settings.arch} (ImageNet Lite0 backbone) pretrained {args.steps} steps at batch 2 on "
             f"{records[args.modes[0]]['samples']} unlabelled frames of a generated world; held-out curves "
             f"({args.val_samples} frames); teacher: the stand-in synthetic-semantic, not DINOv2")
    plot(curves, out / "curves.png", title)
    document = {"settings": settings.to_dict(), "world": str(world.dataroot), "curves": curves, "runs": records,
                "seconds": time.perf_counter() - started}
    (out / "curves.json").write_text(json.dumps(document, indent=2) + "\n")
    if args.save_to:
        Path(args.save_to).mkdir(parents=True, exist_ok=True)
        for name in ("curves.json", "curves.png"):
            shutil.copy(out / name, Path(args.save_to) / name)
    for mode, curve in curves.items():
        print(f"{mode}: " + "; ".join(f"step {c['step']}: IoU {c['occupancy_iou']:.3f}"
                                      + (f", cosine {c['feature_cosine']:.3f}" if "feature_cosine" in c else "")
                                      for c in curve))
    print(f"bench/pretrain_curves.py: {len(curves)} runs of {args.steps} steps in {time.perf_counter() - started:.0f} s; "
          f"{out / 'curves.json'}")


if __name__ == "__main__":
    main()
