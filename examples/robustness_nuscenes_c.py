"""Vehicle and map IoU under the nuScenes-C camera corruptions (RoboBEV's eight, 3 severities), with RR and mRR.

    python examples/robustness_nuscenes_c.py                                    # generated world, untrained model
    python examples/robustness_nuscenes_c.py --model local-dir:runs/ft/export --dataroot /data/nuscenes \\
        --corruption-root /data/nuscenes-c                                      # the released nuScenes-C images

With --corruption-root the released corrupted images are read; without it the corruptions are regenerated on the
fly with RoboBEV's definitions, on each source image before the resize, deterministically per sample.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import occfeat
from occfeat.data import CORRUPTIONS, SEVERITIES, NuScenesBEV, data_options
from occfeat.synthetic import dataroot_or_world
from occfeat.finetune.evaluation import evaluate_corruptions


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="simplebev-tiny")
    parser.add_argument("--dataroot", default=None, help="a nuScenes dataroot (default: generate a small world)")
    parser.add_argument("--version", default="v1.0-trainval")
    parser.add_argument("--corruptions", nargs="+", default=list(CORRUPTIONS))
    parser.add_argument("--severities", nargs="+", type=int, default=list(SEVERITIES))
    parser.add_argument("--corruption-root", default=None, help="the released nuScenes-C folder (default: regenerate)")
    parser.add_argument("--samples", type=int, default=None, help="first N validation samples only")
    parser.add_argument("--out", default="outputs/examples/robustness")
    args = parser.parse_args(argv)
    out = Path(args.out)

    # Without --dataroot: a small generated world (nuScenes format, read by the real nuscenes-devkit).
    dataroot, version = dataroot_or_world(args.dataroot, args.version, out / "world", scenes=2, samples_per_scene=2)

    model = occfeat.load(args.model, pretrained=args.model not in occfeat.list_models()).eval()
    config = model.config
    clean = NuScenesBEV(dataroot, version, "val", **data_options(config))
    tokens = clean.sample_tokens[: args.samples]

    def dataset(corruption):  # None: the clean images
        data = NuScenesBEV(dataroot, version, "val", **data_options(config),
                           corruption=corruption, corruption_root=args.corruption_root if corruption else None,
                           nusc=clean.nusc)
        data.sample_tokens = tokens
        return data

    results, tables = evaluate_corruptions(model, dataset, corruptions=args.corruptions, severities=args.severities)
    print(tables)
    mrr = results["robustness"]["vehicle_iou"]
    print(f"clean vehicle IoU {100 * results['clean']['vehicle_iou']:.1f}, mRR {100 * mrr['mRR']:.1f} % "
          f"over {mrr['corruptions']} corruption(s)")


if __name__ == "__main__":
    main()
