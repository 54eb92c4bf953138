"""OccFeat pretraining, then export: the BEV network learns from Lidar occupancy and DINOv2 features, no labels.

    python examples/reproduce_pretraining.py                        # generated world, tiny SimpleBEV, CPU minutes
    python examples/reproduce_pretraining.py --mode occupancy       # the paper's occupancy-only ablation
    torchrun --nproc_per_node 8 examples/reproduce_pretraining.py --arch bevformer-enb0 --dataroot /data/nuscenes \\
        --recipe occfeat-nuscenes --steps 0 --pretrained-backbone --teacher-weights /models/dinov2_vits14.safetensors

The paper starts every network from ImageNet weights: ``--pretrained-backbone`` (timm's weights, from the Hub or its
cache; or a FILE; ``*-lite0*`` architectures read the packaged EfficientNet-Lite0 weights of ``occfeat[imagenet]``).

Without network access to the Hub (or --teacher-weights) the teacher has random weights, with a loud warning: the
pipeline runs, the feature targets mean nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import occfeat
from occfeat.synthetic import dataroot_or_world
from occfeat.pretrain import export_pretrain_run, pretrain


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="simplebev-tiny")
    parser.add_argument("--dataroot", default=None, help="a nuScenes dataroot (default: generate a small world)")
    parser.add_argument("--version", default="v1.0-trainval")
    parser.add_argument("--mode", default="occfeat", choices=("occfeat", "occupancy", "distillation"))
    parser.add_argument("--recipe", default="cpu-tiny")
    parser.add_argument("--steps", type=int, default=100, help="0: the recipe's epochs")
    parser.add_argument("--teacher-weights", default=None, help="hub | auto | random | FILE.safetensors")
    parser.add_argument("--pretrained-backbone", nargs="?", const=True, default=False, metavar="FILE",
                        help="start the backbone from ImageNet weights (timm's, or FILE); default: random")
    parser.add_argument("--scenes", type=int, default=4, help="generated world only")
    parser.add_argument("--out", default="outputs/examples/reproduce_pretraining")
    args = parser.parse_args(argv)
    out = Path(args.out)

    # Without --dataroot: a small generated world (nuScenes format, read by the real nuscenes-devkit).
    dataroot, version = dataroot_or_world(args.dataroot, args.version, out / "world", scenes=args.scenes, samples_per_scene=4)

    # Every setting the paper leaves open is a recipe field; run.json records the values used. It prints one summary
    # line at the end: the head's held-out occupancy IoU next to the trivial predictor's.
    pretrain(args.arch, dataroot=dataroot, version=version, out_dir=out / "run", recipe=args.recipe,
             mode=args.mode, max_steps=args.steps or None, teacher_weights=args.teacher_weights,
             cache_dir=out / "teacher-cache",
             load_kwargs={"pretrained_backbone": args.pretrained_backbone} if args.pretrained_backbone else None)

    # Drop the auxiliary head (and the untrained segmentation heads): what the zoo serves.
    export_pretrain_run(out / "run", out / "weights", weight_id=f"{args.arch}.{args.mode}-example")
    model = occfeat.load(f"local-dir:{out / 'weights'}")
    print(model.load_report)  # the heads are re-initialised, nothing is missing: ready to fine-tune
    print(f"pictures (PCA of the predicted 3D features, occupancy): {out / 'run' / 'pictures'}")


if __name__ == "__main__":
    main()
