"""A procedural world written as a nuScenes-format dataroot that the real nuscenes-devkit reads.

``generate_world(out_dir)`` builds towns (roads, lanes, lights, buildings, parked and moving vehicles, pedestrians),
drives an ego car through them and writes the 13 tables, camera JPEGs, Lidar ``.pcd.bin`` files (key frames and
sweeps), a drivable-area map per town and the world's own train/val split (``<version>/SPLITS_FILENAME``).
``render_sample_png`` draws one sample for a person. ``add_synth_arguments`` / ``run_synth`` are the
``occfeat synth`` command.

Modules: ``catalog`` (taxonomy, object shapes), ``town`` (layout and static objects), ``traffic`` (what moves),
``rig`` (sensors), ``render`` (ray casting), ``annotate`` (Lidar counts, visibility), ``tables`` (records, tokens),
``world`` (the generator), ``semantic`` (side-car class maps of the images), ``preview`` (the picture).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ...errors import ConfigError
from .preview import render_sample_png
from .semantic import SEMANTIC_CLASSES, SEMANTIC_DIR, semantic_map_path
from .world import INSTANCE_MASK_DIR, SPLITS_FILENAME, WORLD_FILENAME, WorldSummary, generate_world, instance_mask_path

__all__ = [
    "dataroot_or_world",
    "INSTANCE_MASK_DIR",
    "SPLITS_FILENAME",
    "WORLD_FILENAME",
    "WorldSummary",
    "add_synth_arguments",
    "generate_world",
    "instance_mask_path",
    "parse_image_size",
    "render_sample_png",
    "run_synth",
    "SEMANTIC_CLASSES",
    "SEMANTIC_DIR",
    "semantic_map_path",
]


def dataroot_or_world(
    dataroot: str | None, version: str, world_dir: str | Path, *, scenes: int = 2, samples_per_scene: int = 2,
    image_hw: tuple[int, int] = (90, 160),
) -> tuple[str, str]:
    """``(dataroot, version)`` as given, or, without a dataroot, those of a small world written to ``world_dir`` (what
    the examples and quick experiments run on when no nuScenes is at hand)."""
    if dataroot is not None:
        return dataroot, version
    world = generate_world(world_dir, scenes=scenes, samples_per_scene=samples_per_scene, image_hw=image_hw,
                           overwrite=True, progress=False)
    return str(world.dataroot), world.version


def parse_image_size(text: str) -> tuple[int, int]:
    """'288x512' -> (288, 512) (height x width)."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ConfigError(f"--image-size must be HEIGHTxWIDTH in pixels, e.g. 288x512, got {text!r}.")
    return int(parts[0]), int(parts[1])


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``occfeat synth``."""
    parser.add_argument("out_dir", metavar="DIR", help="dataroot to write")
    parser.add_argument("--scenes", type=int, default=4, help="number of scenes (default: %(default)s)")
    parser.add_argument("--samples-per-scene", type=int, default=10,
                        help="key frames per scene, 0.5 s apart (default: %(default)s)")
    parser.add_argument("--image-size", default="288x512", help="HEIGHTxWIDTH of the camera images "
                        "(default: %(default)s; nuScenes is 900x1600)")
    parser.add_argument("--seed", type=int, default=0, help="the world is a function of the seed (default: 0)")
    parser.add_argument("--sweeps-per-sample", type=int, default=4,
                        help="Lidar sweeps between key frames (nuScenes: 9; default: %(default)s)")
    parser.add_argument("--version", default="v1.0-synthetic", help="table folder name (default: %(default)s)")
    parser.add_argument("--instance-masks", action="store_true", help="also write per-pixel instance masks")
    parser.add_argument("--semantic-maps", action="store_true",
                        help="also write per-pixel class maps (and the instance masks) beside the key-frame images")
    parser.add_argument("--overwrite", action="store_true", help="replace a synthetic world already in DIR")
    parser.add_argument("--png", action="store_true", help="also draw one sample to DIR/synth_sample.png")


def run_synth(args: argparse.Namespace) -> int:
    """Run ``occfeat synth`` with parsed ``args``; returns the exit status."""
    summary = generate_world(
        args.out_dir, scenes=args.scenes, samples_per_scene=args.samples_per_scene,
        image_hw=parse_image_size(args.image_size), seed=args.seed, version=args.version,
        sweeps_per_sample=args.sweeps_per_sample, instance_masks=args.instance_masks, semantic_maps=args.semantic_maps,
        overwrite=args.overwrite,
    )
    if args.png:
        from nuscenes import NuScenes

        nusc = NuScenes(summary.version, str(summary.dataroot), verbose=False)
        scene = nusc.scene[0]
        sample = nusc.get("sample", scene["first_sample_token"])
        for _ in range(scene["nbr_samples"] // 2):
            sample = nusc.get("sample", sample["next"])
        path = render_sample_png(summary.dataroot, summary.version, sample["token"],
                                 summary.dataroot / "synth_sample.png", nusc=nusc)
        print(f"picture of {scene['name']} at {path}")
    return 0
