"""Per-pixel semantic maps of the procedural world's camera images: side-car files outside the nuScenes tables.

What DINOv2 knows of a real image (what things are, which pixels belong together), the renderer knows exactly of a
generated one. ``generate_world(semantic_maps=True)`` writes, beside each key-frame camera image, a uint8 PNG of
class ids (``SEMANTIC_CLASSES``) at ``semantic/<CAM_X>/<stem>.png``, and the uint16 instance mask of
``instance_masks`` (1 + the row in instance.json of the annotated instance seen, 0 elsewhere). The devkit ignores
both folders; nothing in the tables refers to them. They are a stand-in's input (a semantic teacher for generated
worlds), never labels: fine-tuning does not read them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .catalog import KINDS, Material
from .render import SURFACE_PART, SURFACE_SKY
from .town import Ground

SEMANTIC_DIR = "semantic"
STUFF_CLASSES: tuple[str, ...] = (
    "sky", "grass", "sidewalk", "road", "lane_marking", "kerb", "building", "vegetation", "structure",
)
# Things: one class per nuScenes category the world's object kinds use, in a fixed (sorted) order.
THING_CLASSES: tuple[str, ...] = tuple(sorted({kind.category for kind in KINDS.values()}))
SEMANTIC_CLASSES: tuple[str, ...] = STUFF_CLASSES + THING_CLASSES
# Families of classes that an image model relates more closely than unrelated kinds (the stand-in teacher gives
# their members a shared component): cars, trucks, buses, ... are all vehicles; bicycles and motorcycles two-wheelers;
# road, markings and kerbs road surfaces; grass and trees plants; buildings and other structures built things.
_THING_FAMILIES = {"vehicle.bicycle": "two-wheeler", "vehicle.motorcycle": "two-wheeler"}
SEMANTIC_FAMILIES: dict[str, str] = {
    "sky": "sky", "grass": "plant", "vegetation": "plant", "sidewalk": "pavement", "road": "road surface",
    "lane_marking": "road surface", "kerb": "road surface", "building": "built", "structure": "built",
    **{c: _THING_FAMILIES.get(c, c.split(".")[0] if c.startswith("vehicle.") else c.rsplit(".", 1)[0])
       for c in THING_CLASSES},
}

_GROUND_CLASS = {
    Ground.GRASS: "grass", Ground.SIDEWALK: "sidewalk", Ground.JOINT: "sidewalk", Ground.ASPHALT: "road",
    Ground.WHITE: "lane_marking", Ground.YELLOW: "lane_marking", Ground.KERB: "kerb",
}
_SCENERY_CLASS = {Material.BUILDING: "building", Material.FOLIAGE: "vegetation"}  # other scenery: "structure"


def semantic_map_path(dataroot: str | Path, filename: str) -> Path:
    """Where ``generate_world(semantic_maps=True)`` put the class map of the camera image ``filename`` (a
    sample_data filename)."""
    name = Path(filename)
    return Path(dataroot) / SEMANTIC_DIR / name.parent.name / (name.name.split(".")[0] + ".png")


def semantic_classes(surface: np.ndarray, owner: np.ndarray, categories: list[str]) -> np.ndarray:
    """(H, W) uint8 class ids from a rendered camera's ``surface`` and ``owner`` maps; ``categories[i]`` is the
    nuScenes category of object ``i`` of the frame's ``ObjectStates``."""
    index = {name: i for i, name in enumerate(SEMANTIC_CLASSES)}
    lookup_surface = np.full(SURFACE_PART + len(Material) + 1, index["structure"], np.uint8)  # by surface + 1
    lookup_surface[SURFACE_SKY + 1] = index["sky"]
    for ground, name in _GROUND_CLASS.items():
        lookup_surface[int(ground) + 1] = index[name]
    for material, name in _SCENERY_CLASS.items():
        lookup_surface[SURFACE_PART + int(material) + 1] = index[name]
    classes = lookup_surface[surface + 1]
    things = np.array([index[c] for c in categories] or [0], np.uint8)
    objects = owner >= 0
    classes[objects] = things[owner[objects]]
    return classes
