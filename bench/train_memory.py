"""Peak RSS of training steps at full size, with and without activation checkpointing, each in its own process.

    python bench/train_memory.py                         # bevformer-enb0, batch 1, 2 steps of fwd + bwd + AdamW
    python bench/train_memory.py --arch simplebev-enb0 --batch-size 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch


def one(arch: str, checkpointing: bool, batch_size: int) -> dict:
    import occfeat
    from occfeat.conventions.geometry import nuscenes_camera_rig

    torch.manual_seed(0)
    model = occfeat.create_model(arch).train().set_activation_checkpointing(checkpointing)
    intrinsics, cam_to_ego = nuscenes_camera_rig(tuple(model.config.image_size))
    batch = dict(images=torch.randn(batch_size, 6, 3, *model.config.image_size),
                 intrinsics=intrinsics.expand(batch_size, -1, -1, -1), cam_to_ego=cam_to_ego.expand(batch_size, -1, -1, -1))
    optimizer = torch.optim.AdamW(model.parameters())
    built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    for _ in range(2):
        sum(v.float().mean() for v in model(**batch).values()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return {"arch": arch, "checkpointing": checkpointing, "built_gib": built,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="bevformer-enb0")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--one", choices=("plain", "checkpointing"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(one(args.arch, args.one == "checkpointing", args.batch_size)))
        return
    print("| architecture | batch | activation checkpointing | peak RSS GiB |\n| --- | ---: | --- | ---: |")
    for mode in ("plain", "checkpointing"):
        child = subprocess.run([sys.executable, __file__, "--one", mode, "--arch", args.arch, "--batch-size",
                                str(args.batch_size), "--threads", str(args.threads)], capture_output=True, text=True,
                               check=True)
        r = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"| {r['arch']} | {args.batch_size} | {'on' if r['checkpointing'] else 'off'} | {r['peak_rss_gib']:.2f} |")


if __name__ == "__main__":
    main()
