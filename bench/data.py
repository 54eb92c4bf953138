"""Data throughput: world generation speed, and the loader against the training step it feeds.

    python bench/data.py                          # 4 scenes x 10 samples at the default image size
    python bench/data.py --scenes 2 --samples-per-scene 5 --skip-step

Prints samples/s of ``generate_world`` at its default image size, samples/s of ``NuScenesBEV`` + ``make_loader`` at
224x480 (training augmentation on, vehicle/map labels, 5 Lidar sweeps) with 0 and 2 workers, and the ratio of each
to the training-step rate of ``bevformer-enb0`` at batch 1 (forward + backward + AdamW step, measured in the same
run), and the cost of the camera-image pipeline on a nuScenes-size image (its ratio: six cameras a sample). The goal
is a ratio >= 2: the loader must never be what a training run waits on.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from timing import median_seconds


def loader_rate(world, workers: int, epochs: int) -> float:
    from occfeat.data import Augmentation, NuScenesBEV, make_loader

    dataset = NuScenesBEV(
        world.dataroot, world.version, "all", image_size="224x480", augment=Augmentation(), lidar_sweeps=5
    )
    loader = make_loader(dataset, batch_size=1, shuffle=True, num_workers=workers, seed=0)
    next(iter(loader))  # start the workers and warm the devkit's caches
    tic = time.perf_counter()
    count = 0
    for epoch in range(epochs):
        dataset.set_epoch(epoch)
        for batch in loader:
            count += batch["images"].shape[0]
    return count / (time.perf_counter() - tic)


def camera_pipeline_rates(repeats: int = 5) -> tuple[float, float]:
    """Cameras/s of the input pipeline on a nuScenes-size 1600x900 image to 224x480: occfeat's (antialiased resize,
    then the residual affine) and a bare bilinear ``cv2.warpAffine`` (what the dataset did before issue 13, aliasing)."""
    import cv2
    import numpy as np

    from occfeat.data.images import image_transform, warp_image

    image = np.random.default_rng(0).integers(0, 256, (900, 1600, 3), dtype=np.uint8)
    affine = image_transform((900, 1600), (224, 480), None)
    ours = median_seconds(lambda: warp_image(image, affine, (224, 480)), repeats)
    bare = median_seconds(lambda: cv2.warpAffine(image, affine[:2], (480, 224), flags=cv2.INTER_LINEAR), repeats)
    return 1.0 / ours, 1.0 / bare


def training_step_rate(repeats: int = 3) -> float:
    import occfeat
    from occfeat.models.geometry import nuscenes_camera_rig

    model = occfeat.create_model("bevformer-enb0")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    intrinsics, cam_to_ego = nuscenes_camera_rig((224, 480))
    batch = dict(images=torch.randn(1, 6, 3, 224, 480), intrinsics=intrinsics[None], cam_to_ego=cam_to_ego[None])

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        sum(v.mean() for v in model(**batch).values()).backward()
        optimizer.step()

    return 1.0 / median_seconds(step, repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--samples-per-scene", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2, help="passes over the world per loader measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-step", action="store_true", help="do not measure the bevformer-enb0 training step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from occfeat.synthetic import generate_world

    with tempfile.TemporaryDirectory() as folder:
        tic = time.perf_counter()
        world = generate_world(folder, scenes=args.scenes, samples_per_scene=args.samples_per_scene, seed=0, progress=False)
        seconds = time.perf_counter() - tic
        samples = args.scenes * args.samples_per_scene
        print(f"# torch {torch.__version__}, {args.threads} threads")
        print("| measurement | samples/s | vs bevformer-enb0 train step |")
        print("| --- | ---: | ---: |")
        print(f"| generate_world ({samples} samples, default image size, all sweeps) | {samples / seconds:.2f} | |")
        step = None if args.skip_step else training_step_rate()
        for workers in (0, 2):
            rate = loader_rate(world, workers, args.epochs)
            ratio = f"{rate / step:.1f}x" if step else "n/a"
            print(f"| loader 224x480, augmented, 5 Lidar sweeps, {workers} workers | {rate:.2f} | {ratio} |", flush=True)
        ours, bare = camera_pipeline_rates()
        for name, rate in (("antialiased (occfeat)", ours), ("bilinear warp only (aliases)", bare)):
            ratio = f"{rate / 6 / step:.1f}x" if step else "n/a"  # six cameras a sample
            print(f"| one 1600x900 camera to 224x480, {name}, cameras/s | {rate:.1f} | {ratio} |")
        if step:
            print(f"| bevformer-enb0 training step, batch 1 (fwd + bwd + AdamW) | {step:.3f} | 1.0x |")


if __name__ == "__main__":
    main()
