"""Load a BEV network through the zoo and predict the BEV segmentation of one key frame.

    python examples/load_and_predict.py                                   # a generated world, untrained tiny model
    python examples/load_and_predict.py --model local-dir:weights/pt-tiny  # weights exported by occfeat
    python examples/load_and_predict.py --model bevformer-enb0-occfeat --dataroot /data/nuscenes --version v1.0-mini

Without --dataroot the script writes a small generated world (nuScenes format, read by the real nuscenes-devkit).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import occfeat
from occfeat.data import NuScenesBEV, collate, data_options
from occfeat.synthetic import dataroot_or_world
from occfeat.viz import save_prediction_png


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="simplebev-tiny", help="weight id/alias, hf-hub:, local-dir:, or an architecture")
    parser.add_argument("--dataroot", default=None, help="a nuScenes dataroot (default: generate a small world)")
    parser.add_argument("--version", default="v1.0-trainval")
    parser.add_argument("--out", default="outputs/examples/load_and_predict")
    args = parser.parse_args(argv)
    out = Path(args.out)

    # Without --dataroot: a small generated world (nuScenes format, read by the real nuscenes-devkit).
    dataroot, version = dataroot_or_world(args.dataroot, args.version, out / "world", scenes=2, samples_per_scene=2)

    # An architecture name builds it untrained; anything else (id, alias, hf-hub:, local-dir:) loads weights.
    model = occfeat.load(args.model, pretrained=args.model not in occfeat.list_models()).eval()
    print(model.load_report)  # what was loaded, re-initialised, missing or unexpected: read it once

    # The dataset hands the network what it expects: its image size, its raster, normalised images.
    config = model.config
    data = NuScenesBEV(dataroot, version, "val", **data_options(config))
    batch = collate([data[0]])
    with torch.no_grad():
        outputs = model(batch["images"], batch["intrinsics"], batch["cam_to_ego"])
    vehicle = outputs["vehicle"].sigmoid()
    print(f"vehicle probability map {tuple(vehicle.shape)}: {int((vehicle > 0.5).sum())} cells above 0.5")
    path = save_prediction_png(outputs, batch, 0, out / "prediction.png")
    print(f"picture: {path}")


if __name__ == "__main__":
    main()
