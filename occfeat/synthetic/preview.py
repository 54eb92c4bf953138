"""One sample of a dataroot drawn for a person: the six cameras in a 2 x 3 grid beside a BEV top view of the
annotated boxes, the drivable area and the key-frame Lidar around the ego, read back through nuscenes-devkit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from nuscenes import NuScenes
from nuscenes.utils.data_classes import LidarPointCloud
from PIL import Image, ImageDraw
from pyquaternion import Quaternion

from ..conventions.geometry import NUSCENES_CAMERAS, BEVGrid

# BEV colours by category prefix (first match wins); vehicles are filled, everything else outlined.
_CATEGORY_COLOURS = (
    ("vehicle.car", (40, 110, 230)),
    ("vehicle.truck", (240, 140, 20)),
    ("vehicle.bus", (220, 40, 40)),
    ("vehicle.trailer", (140, 90, 40)),
    ("vehicle.construction", (230, 200, 0)),
    ("vehicle.emergency", (170, 40, 200)),
    ("vehicle.motorcycle", (0, 170, 170)),
    ("vehicle.bicycle", (0, 200, 90)),
    ("human", (250, 60, 160)),
    ("movable_object", (110, 110, 110)),
)


EGO_COLOUR = (20, 20, 20)


def _colour(category: str) -> tuple[int, int, int]:
    return next((c for prefix, c in _CATEGORY_COLOURS if category.startswith(prefix)), (0, 0, 0))


def render_sample_png(dataroot: str | Path, version: str, sample_token: str, path: str | Path, *,
                      nusc: NuScenes | None = None, grid: BEVGrid | None = None) -> Path:
    """Draw one sample to a PNG at ``path`` and return the path.

    Left: the six camera images (``NUSCENES_CAMERAS`` order: front row FRONT_LEFT, FRONT, FRONT_RIGHT, back row
    BACK_LEFT, BACK, BACK_RIGHT). Right: the BEV in occfeat's raster convention (the car drives up, +y to the left),
    over ``grid`` (default 100 m x 100 m at 0.25 m): drivable area in light grey, Lidar points in dark grey, boxes
    coloured by category, the ego in red.

    >>> render_sample_png("data/synthetic", "v1.0-synthetic", nusc.sample[0]["token"], "sample.png")  # doctest: +SKIP
    """
    nusc = nusc if nusc is not None else NuScenes(version, str(dataroot), verbose=False)
    grid = grid if grid is not None else BEVGrid(resolution=0.25)
    sample = nusc.get("sample", sample_token)
    images = [Image.open(nusc.get_sample_data_path(sample["data"][c])).convert("RGB") for c in NUSCENES_CAMERAS]
    width, height = images[0].size
    bev = _bev(nusc, sample, grid).resize((2 * height, 2 * height), Image.NEAREST)

    canvas = Image.new("RGB", (3 * width + bev.width + 8, 2 * height + 20), "white")
    draw = ImageDraw.Draw(canvas)
    scene = nusc.get("scene", sample["scene_token"])
    draw.text((4, 4), f"{scene['name']}  sample {sample['token'][:8]}  t={sample['timestamp']}  "
                      f"{len(sample['anns'])} annotations", fill="black")
    for i, (channel, image) in enumerate(zip(NUSCENES_CAMERAS, images)):
        x, y = (i % 3) * width, 20 + (i // 3) * height
        canvas.paste(image, (x, y))
        draw.text((x + 3, y + 2), channel, fill="yellow")
    canvas.paste(bev, (3 * width + 8, 20))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path


def _bev(nusc: NuScenes, sample: dict, grid: BEVGrid) -> Image.Image:
    """The BEV picture (H, W) of ``grid`` in the ego frame of the sample's Lidar key frame."""
    lidar = nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
    pose = nusc.get("ego_pose", lidar["ego_pose_token"])
    ego_rotation = Quaternion(pose["rotation"])
    ego_translation = np.array(pose["translation"])
    rows, cols = grid.shape
    to_cell = grid.ego_to_cell_matrix().numpy()

    # Drivable area: look up every cell centre (ego -> global) in the map mask.
    centres = grid.cell_centers(dtype=torch.float64).numpy().reshape(-1, 2)
    global_xy = centres @ ego_rotation.rotation_matrix[:2, :2].T + ego_translation[:2]
    log = nusc.get("log", nusc.get("scene", sample["scene_token"])["log_token"])
    mask = nusc.get("map", log["map_token"])["mask"].is_on_mask(global_xy[:, 0], global_xy[:, 1])
    picture = np.full((rows * cols, 3), 255, dtype=np.uint8)
    picture[mask] = (205, 205, 205)
    picture = picture.reshape(rows, cols, 3)

    # Lidar points of the key frame, in the ego frame.
    cloud = LidarPointCloud.from_file(nusc.get_sample_data_path(lidar["token"]))
    calibration = nusc.get("calibrated_sensor", lidar["calibrated_sensor_token"])
    cloud.rotate(Quaternion(calibration["rotation"]).rotation_matrix)
    cloud.translate(np.array(calibration["translation"]))
    above = cloud.points[2] > 0.3  # the ground would paint everything
    col_row = cloud.points[:2, above].T @ to_cell[:2, :2].T + to_cell[:2, 2]
    c, r = np.rint(col_row).astype(int).T
    inside = (r >= 0) & (r < rows) & (c >= 0) & (c < cols)
    picture[r[inside], c[inside]] = (90, 90, 90)

    image = Image.fromarray(picture)
    draw = ImageDraw.Draw(image)
    for ann_token in sample["anns"]:
        box = nusc.get_box(ann_token)
        box.translate(-ego_translation)
        box.rotate(ego_rotation.inverse)
        bottom = box.bottom_corners()[:2].T  # (4, 2) ego x, y
        polygon = [tuple(p) for p in bottom @ to_cell[:2, :2].T + to_cell[:2, 2]]
        colour = _colour(box.name)
        if box.name.startswith("vehicle."):
            draw.polygon(polygon, fill=colour, outline=(0, 0, 0))
        else:
            draw.polygon(polygon, outline=colour)
        front = (np.array(polygon[0]) + np.array(polygon[1])) / 2
        centre = np.mean(np.array(polygon), axis=0)
        draw.line([tuple(centre), tuple(front)], fill=(0, 0, 0))
    # The ego: a 4.6 m x 1.9 m car at the origin, nose up.
    ego = np.array([[2.3, 0.95], [2.3, -0.95], [-2.3, -0.95], [-2.3, 0.95]])
    draw.polygon([tuple(p) for p in ego @ to_cell[:2, :2].T + to_cell[:2, 2]], fill=EGO_COLOUR, outline=(255, 0, 0))
    return image
