"""The low-data comparison behind OccFeat's claim, on a generated world, with several seeds.

The paper: with 1 % of nuScenes' labels, OccFeat > occupancy-only > no pretraining (+13.6 vehicle IoU for BEVFormer).
Here the same pipeline as ``occfeat demo`` (``occfeat.demo.compare_pretrainings``): per seed, pretrain the tiny
architecture with OccFeat and with occupancy only, publish both to a loopback Hub, load them by name, fine-tune from
scratch / occupancy / OccFeat at a low and a high label fraction, evaluate on the held-out scenes. The seed changes
the pretraining, the labelled subset and the fine-tuning. Prints mean +- std per cell (and writes results.json,
comparison.png beside it).

    python bench/lowdata.py                                   # 3 seeds, about 45 min on 2 CPU cores
    python bench/lowdata.py --seeds 0 1 2 3 4 --pretrain-steps 600 --out outputs/lowdata-long
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from occfeat.demo import ComparisonSettings, compare_pretrainings, markdown_table, plot_comparison


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/lowdata")
    parser.add_argument("--arch", default="simplebev-tiny")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--scenes", type=int, default=8)
    parser.add_argument("--samples-per-scene", type=int, default=10)
    parser.add_argument("--pretrain-steps", type=int, default=200)
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.05, 1.0])
    parser.add_argument("--finetune-steps", nargs="+", type=int, default=[80, 200], help="one per fraction")
    parser.add_argument("--teacher-weights", default="auto", help="auto | random | DINOv2 as FILE.safetensors")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = ComparisonSettings(
        arch=args.arch, scenes=args.scenes, samples_per_scene=args.samples_per_scene,
        pretrain_steps=args.pretrain_steps, finetune_steps=tuple(args.finetune_steps), fractions=tuple(args.fractions),
        teacher_weights=args.teacher_weights,
    )
    started = time.perf_counter()
    results = compare_pretrainings(args.out, settings, seeds=args.seeds, progress=False)
    cells = results["cells"]
    title = (f"{args.arch}, generated world {args.scenes}x{args.samples_per_scene}, {args.pretrain_steps} pretraining + "
             f"{'/'.join(map(str, args.finetune_steps))} fine-tuning steps, mean ± std over seeds {args.seeds}")
    plot_comparison(cells, Path(args.out) / "comparison.png", title)
    print(markdown_table(cells))
    for fraction in settings.fractions:
        row = {c["init"]: c for c in cells if c["fraction"] == fraction}
        gains = ", ".join(f"{init} {100 * (row[init]['vehicle_iou'] - row['scratch']['vehicle_iou']):+.1f}"
                          for init in ("occupancy", "occfeat"))
        print(f"vehicle IoU gain over no pretraining at {fraction:.0%} labels: {gains} (points)")
    print(f"bench/lowdata.py: {len(results['rows'])} fine-tuning runs, {len(args.seeds)} seeds, "
          f"{time.perf_counter() - started:.0f} s; {args.out}/results.json")


if __name__ == "__main__":
    main()
