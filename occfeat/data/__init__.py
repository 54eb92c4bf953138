"""nuScenes through nuscenes-devkit: samples, cameras, labels, Lidar, augmentation, low-data subsets.
``occfeat.synthetic`` writes procedural nuScenes-format dataroots that the real devkit reads."""

from .corruptions import CORRUPTIONS, SEVERITIES, apply_corruption, corruption_table
from .loader import make_loader, seed_worker
from .nuscenes import IMAGE_PRESETS, Augmentation, NuScenesBEV, collate, data_options, open_nuscenes
from .splits import load_subset, save_subset, scene_names, select_subset

__all__ = [
    "CORRUPTIONS",
    "SEVERITIES",
    "apply_corruption",
    "corruption_table",
    "IMAGE_PRESETS",
    "Augmentation",
    "NuScenesBEV",
    "collate",
    "data_options",
    "load_subset",
    "make_loader",
    "open_nuscenes",
    "save_subset",
    "scene_names",
    "seed_worker",
    "select_subset",
]
