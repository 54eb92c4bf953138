"""A procedural world written as a nuScenes-format dataroot that the real nuscenes-devkit reads.

``generate_world(out_dir)`` builds towns (roads, lanes, lights, buildings, parked and moving vehicles, pedestrians),
drives an ego car through them and writes the 13 tables, camera JPEGs, Lidar ``.pcd.bin`` files (key frames and
sweeps), a drivable-area map per town and the world's own train/val split (``<version>/SPLITS_FILENAME``).
``render_sample_png`` draws one sample for a person; ``occfeat synth`` (``occfeat.cli``) is the command. A stand-in for
nuScenes: its numbers are a miniature's, never nuScenes'.

Modules: ``catalog`` (taxonomy, object shapes), ``town`` (layout and static objects), ``traffic`` (what moves),
``rig`` (sensors), ``render`` (ray casting), ``annotate`` (Lidar counts, visibility), ``tables`` (records, tokens),
``world`` (the generator), ``semantic`` (side-car class maps of the images), ``preview`` (the picture).
"""

from __future__ import annotations

from pathlib import Path

from .preview import render_sample_png
from .semantic import SEMANTIC_CLASSES, SEMANTIC_DIR, semantic_map_path
from .world import INSTANCE_MASK_DIR, SPLITS_FILENAME, WORLD_FILENAME, WorldSummary, generate_world, instance_mask_path

__all__ = [
    "dataroot_or_world",
    "INSTANCE_MASK_DIR",
    "SPLITS_FILENAME",
    "WORLD_FILENAME",
    "WorldSummary",
    "generate_world",
    "instance_mask_path",
    "render_sample_png",
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
