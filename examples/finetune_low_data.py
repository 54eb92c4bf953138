"""Fine-tune a BEV network on a small fraction of the labels and evaluate it: the setting OccFeat is made for.

    python examples/finetune_low_data.py                                        # generated world, from scratch
    python examples/finetune_low_data.py --model local-dir:weights/pt-tiny --fraction 0.1 \\
        --out outputs/examples/finetune_from_pretrained       # another run: another folder (a folder holds one run)
    torchrun --nproc_per_node 8 examples/finetune_low_data.py --model bevformer-enb0-occfeat \\
        --dataroot /data/nuscenes --fraction 0.01 --recipe nuscenes-224x480 --steps 0

The labelled subset is drawn by a fixed seed at sample level and written to OUT/subset.json; --steps 0 keeps the
recipe's schedule (5 000 steps at 1 % of nuScenes).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from occfeat.synthetic import dataroot_or_world
from occfeat.finetune.training import finetune


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="simplebev-tiny", help="an architecture (from scratch) or weights")
    parser.add_argument("--dataroot", default=None, help="a nuScenes dataroot (default: generate a small world)")
    parser.add_argument("--version", default="v1.0-trainval")
    parser.add_argument("--fraction", type=float, default=0.25, help="labelled fraction of the train split")
    parser.add_argument("--recipe", default="cpu-tiny")
    parser.add_argument("--steps", type=int, default=60, help="0: the recipe's schedule")
    parser.add_argument("--scenes", type=int, default=4, help="generated world only")
    parser.add_argument("--out", default="outputs/examples/finetune_low_data")
    args = parser.parse_args(argv)
    out = Path(args.out)

    # Without --dataroot: a small generated world (nuScenes format, read by the real nuscenes-devkit).
    dataroot, version = dataroot_or_world(args.dataroot, args.version, out / "world", scenes=args.scenes, samples_per_scene=4)

    # It prints one summary line at the end: IoU on the validation split; OUT/run holds checkpoints, eval.json, pictures.
    finetune(args.model, dataroot=dataroot, version=version, out_dir=out / "run", fraction=args.fraction,
                      recipe=args.recipe, max_steps=args.steps or None, device="auto")


if __name__ == "__main__":
    main()
