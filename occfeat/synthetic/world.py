"""``generate_world``: towns, drives through them, and the nuScenes-format dataroot that records the drives.

Layout written under ``out_dir`` (the dataroot)::

    <version>/*.json                 the 13 tables, plus SPLITS_FILENAME and WORLD_FILENAME
    maps/<town>.png                  drivable area, 0.1 m per pixel (nuscenes-devkit MapMask)
    samples/CAM_*/*.jpg              key-frame images
    samples/LIDAR_TOP/*.pcd.bin      key-frame Lidar: float32 (x, y, z, intensity, ring) in the sensor frame
    sweeps/LIDAR_TOP/*.pcd.bin       the Lidar turns between key frames
    instance_masks/CAM_*/*.png       only with ``instance_masks=True``: uint16, 1 + row of instance.json per pixel
    semantic/CAM_*/*.png             only with ``semantic_maps=True`` (which also writes the instance masks):
                                     uint8 class ids of ``occfeat.synthetic.semantic.SEMANTIC_CLASSES``
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor

from ..errors import ConfigError
from ..io import check_output_path
from ..progress import progress_bar
from ..conventions.geometry import NUSCENES_CAMERAS
from .annotate import points_in_boxes, visible_fractions
from .catalog import visibility_token
from .render import ground_texture, render_camera, scan_lidar, world_frame
from .semantic import semantic_classes, semantic_map_path
from .rig import (
    KEY_FRAME_PERIOD_S,
    LIDAR_CHANNEL,
    LIDAR_PERIOD_S,
    Calibration,
    camera_calibrations,
    camera_delay_s,
    lidar_calibration,
    pose_matrix,
    yaw_quaternion,
)
from .tables import Record, Tables, attribute_token, category_token, link, sensor_token, token
from .town import Town, build_town
from .traffic import Motion, ObjectStates

SPLITS_FILENAME = "occfeat_splits.json"  # in <dataroot>/<version>/: {"train": [scene names], "val": [...]}
WORLD_FILENAME = "occfeat_world.json"  # in <dataroot>/<version>/: the arguments the world was generated with
INSTANCE_MASK_DIR = "instance_masks"
ANNOTATION_RADIUS = 55.0
START_US = 1533110400_000000  # 2018-08-01 08:00 UTC
SCENE_SPACING_US = 600_000000  # scenes of a log start 10 minutes apart


@dataclass(frozen=True)
class WorldSummary:
    """What ``generate_world`` wrote."""

    dataroot: Path
    version: str
    scenes: int
    samples: int
    sweeps: int
    annotations: int
    instances: int
    towns: int
    seconds: float
    train_scenes: tuple[str, ...]
    val_scenes: tuple[str, ...]

    @property
    def samples_per_second(self) -> float:
        return self.samples / max(self.seconds, 1e-9)

    def __str__(self) -> str:
        return (f"synthetic world {self.version} at {self.dataroot}: {self.scenes} scenes in {self.towns} towns, "
                f"{self.samples} samples, {self.sweeps} Lidar sweeps, {self.annotations} annotations of "
                f"{self.instances} instances in {self.seconds:.1f} s ({self.samples_per_second:.2f} samples/s)")


def _check_arguments(scenes: int, samples_per_scene: int, image_hw: tuple[int, int], sweeps_per_sample: int,
                     scenes_per_town: int, seed: int, version: str) -> None:
    def whole(name: str, value: object, least: int, flag: str) -> None:
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < least:
            raise ConfigError(f"{name} must be an integer >= {least}, got {value!r}; pass {flag} {least} or more.")

    whole("scenes", scenes, 1, "--scenes")
    whole("samples_per_scene", samples_per_scene, 1, "--samples-per-scene")
    whole("sweeps_per_sample", sweeps_per_sample, 0, "--sweeps-per-sample")
    whole("scenes_per_town", scenes_per_town, 1, "scenes_per_town=")
    whole("seed", seed, 0, "--seed")
    if not isinstance(image_hw, (tuple, list)) or len(image_hw) != 2 or \
            not all(isinstance(v, (int, np.integer)) and v >= 16 for v in image_hw):
        raise ConfigError(f"image_hw must be two integers (height, width) of at least 16 pixels, got {image_hw!r}; "
                          "pass e.g. --image-size 288x512.")
    if not version or "/" in version or "\\" in version or version.startswith("."):
        raise ConfigError(f"version must be a plain folder name such as 'v1.0-synthetic', got {version!r}.")


def generate_world(
    out_dir: str | Path,
    *,
    scenes: int = 4,
    samples_per_scene: int = 10,
    image_hw: tuple[int, int] = (288, 512),
    seed: int = 0,
    version: str = "v1.0-synthetic",
    sweeps_per_sample: int = 4,
    scenes_per_town: int = 2,
    instance_masks: bool = False,
    semantic_maps: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> WorldSummary:
    """Write a complete nuScenes-format dataroot of a procedural world to ``out_dir``.

    Each town (one per ``scenes_per_town`` scenes, one log and one map each) is a grid of roads with traffic lights,
    parked and moving vehicles, pedestrians and street furniture. Each scene is a drive of ``samples_per_scene`` key
    frames at 2 Hz with ``sweeps_per_sample`` Lidar sweeps between key frames (nuScenes itself has 9), six cameras
    rendered at ``image_hw`` and a 32-beam Lidar. Deterministic for a seed: the same arguments write the same tables.
    ``instance_masks`` / ``semantic_maps`` add per-pixel side-car maps of the key-frame images (module docstring of
    ``occfeat.synthetic.semantic``), outside the nuScenes tables.

    >>> summary = generate_world("data/synthetic", scenes=2, samples_per_scene=3, image_hw=(90, 160))  # doctest: +SKIP
    >>> NuScenes(summary.version, str(summary.dataroot))  # doctest: +SKIP
    """
    _check_arguments(scenes, samples_per_scene, image_hw, sweeps_per_sample, scenes_per_town, seed, version)
    image_hw = (int(image_hw[0]), int(image_hw[1]))
    instance_masks = instance_masks or semantic_maps
    started = time.perf_counter()
    root = check_output_path(out_dir, kind="folder", what="the world's dataroot")
    _clear(root, version, overwrite)
    for folder in [*(f"samples/{c}" for c in (*NUSCENES_CAMERAS, LIDAR_CHANNEL)), f"sweeps/{LIDAR_CHANNEL}", "maps"]:
        (root / folder).mkdir(parents=True, exist_ok=True)

    channels = [(c, "camera") for c in NUSCENES_CAMERAS] + [(LIDAR_CHANNEL, "lidar")]
    tables = Tables.with_taxonomy(channels)
    towns = []
    for t in range(math.ceil(scenes / scenes_per_town)):
        town = build_town(f"synth-town-{t:02d}", np.random.default_rng([seed, 0, t]))
        log = {"token": token(seed, "log", t), "logfile": f"synth-s{seed}-{town.name}", "vehicle": "synth-ego",
               "date_captured": "2018-08-01", "location": town.name}
        filename = f"maps/{town.name}.png"
        Image.fromarray(town.drivable_mask()).save(root / filename, compress_level=1)
        tables.add("log", log)
        tables.add("map", {"token": token(seed, "map", t), "log_tokens": [log["token"]], "category": "semantic_prior",
                           "filename": filename})
        towns.append((town, log, ground_texture(town.texture_seed)))

    names = [f"synth-{i:04d}" for i in range(scenes)]
    n_val = max(1, round(0.2 * scenes)) if scenes > 1 else 0
    splits = {"train": names[: scenes - n_val], "val": names[scenes - n_val:]}
    bar = progress_bar(total=scenes * samples_per_scene, unit="sample", desc="synth", disable=not progress)
    for i, name in enumerate(names):
        town, log, texture = towns[i // scenes_per_town]
        scene = _SceneWriter(root, tables, seed, i, name, town, log, texture, image_hw, instance_masks,
                             samples_per_scene, sweeps_per_sample, semantic_maps=semantic_maps)
        scene.write(bar)
    bar.close()

    tables.write(root / version)
    with open(root / version / SPLITS_FILENAME, "w") as f:
        json.dump(splits, f, indent=1)
    with open(root / version / WORLD_FILENAME, "w") as f:
        json.dump({"generator": "occfeat.synthetic", "seed": seed, "scenes": scenes,
                   "samples_per_scene": samples_per_scene, "image_hw": list(image_hw),
                   "sweeps_per_sample": sweeps_per_sample, "scenes_per_town": scenes_per_town,
                   "instance_masks": instance_masks, "semantic_maps": semantic_maps}, f, indent=1)
    summary = WorldSummary(
        dataroot=root, version=version, scenes=scenes, samples=tables.count("sample"),
        sweeps=sum(1 for r in tables.rows["sample_data"] if not r["is_key_frame"]),
        annotations=tables.count("sample_annotation"), instances=tables.count("instance"), towns=len(towns),
        seconds=time.perf_counter() - started, train_scenes=tuple(splits["train"]), val_scenes=tuple(splits["val"]),
    )
    if progress:
        print(summary)
    return summary


def _clear(root: Path, version: str, overwrite: bool) -> None:
    """Refuse to write over an existing dataroot of this version, or, with ``overwrite``, delete the files of a
    synthetic world written there before (never anything else)."""
    tables = root / version
    if not tables.exists():
        return
    if not overwrite:
        raise ConfigError(f"{tables} already exists; pass overwrite=True (--overwrite) to replace the synthetic world "
                          "there, or choose another directory or version.")
    if not (tables / WORLD_FILENAME).exists():
        raise ConfigError(f"{tables} holds a dataroot that is not a synthetic world (no {WORLD_FILENAME}); "
                          "refusing to delete it. Choose another directory or version.")
    written: list[Path] = []
    for table in ("sample_data", "map"):
        path = tables / f"{table}.json"
        if path.exists():
            filenames = [r["filename"] for r in json.loads(path.read_text())]
            written += [root / f for f in filenames] + [instance_mask_path(root, f) for f in filenames]
            written += [semantic_map_path(root, f) for f in filenames]
    inside = root.resolve()
    for path in written:
        if inside in path.resolve().parents:
            path.unlink(missing_ok=True)
    for path in tables.iterdir():
        path.unlink()
    tables.rmdir()


def instance_mask_path(dataroot: str | Path, filename: str) -> Path:
    """Where ``generate_world(instance_masks=True)`` put the instance mask of the camera image ``filename`` (a
    sample_data filename)."""
    name = Path(filename)
    return Path(dataroot) / INSTANCE_MASK_DIR / name.parent.name / (name.name.split(".")[0] + ".png")


class _SceneWriter:
    """Simulates one scene and writes its files and records."""

    def __init__(self, root: Path, tables: Tables, seed: int, index: int, name: str, town: Town, log: Record,
                 texture: Tensor, image_hw: tuple[int, int], instance_masks: bool, samples: int, sweeps: int,
                 semantic_maps: bool = False) -> None:
        self.root, self.tables, self.seed, self.index, self.name = root, tables, seed, index, name
        self.town, self.log, self.texture, self.image_hw = town, log, texture, image_hw
        self.instance_masks = instance_masks
        self.semantic_maps = semantic_maps
        self.rng = np.random.default_rng([seed, 1, index])
        self.key_times = np.arange(samples) * KEY_FRAME_PERIOD_S
        self.sweeps = sweeps
        self.sweep_step = KEY_FRAME_PERIOD_S / (sweeps + 1)
        self.t0_us = START_US + index * SCENE_SPACING_US
        self.cameras = camera_calibrations(image_hw, self.rng)
        self.lidar = lidar_calibration()
        self.calibration_tokens = {}
        for calibration in [*self.cameras, self.lidar]:
            record = {
                "token": token(seed, "calibrated_sensor", index, calibration.channel),
                "sensor_token": sensor_token(calibration.channel),
                "translation": list(calibration.translation),
                "rotation": list(calibration.rotation),
                "camera_intrinsic": [] if calibration.intrinsic is None else calibration.intrinsic.tolist(),
            }
            tables.add("calibrated_sensor", record)
            self.calibration_tokens[calibration.channel] = record["token"]
        self.sample_data: dict[str, list[Record]] = {c.channel: [] for c in [*self.cameras, self.lidar]}
        self.annotations: dict[str, list[Record]] = {}  # instance token -> its annotations in time order
        self.categories: dict[str, str] = {}  # instance token -> category token
        # The first sweeps come before the first key frame, and a camera fires up to half a Lidar turn away from it.
        self.motion = Motion(town, self.rng, -sweeps * self.sweep_step - LIDAR_PERIOD_S,
                             float(self.key_times[-1]) + LIDAR_PERIOD_S)

    # ---------------------------------------------------------------------------------------------------------- scene

    def write(self, bar: Any) -> None:  # a progress bar
        """Render and record every frame of the scene, then add its records to the tables."""
        sample_records = [{"token": token(self.seed, "sample", self.index, k), "timestamp": self._us(t),
                           "scene_token": token(self.seed, "scene", self.index)}
                          for k, t in enumerate(self.key_times)]
        link(sample_records)
        for k, t_key in enumerate(self.key_times):
            for j in range(self.sweeps, 0, -1):
                # Sweeps in the second half of the gap belong to this key frame, earlier ones to the previous.
                nearest = k if k == 0 or j * self.sweep_step <= KEY_FRAME_PERIOD_S / 2 else k - 1
                self._lidar_sweep(float(t_key - j * self.sweep_step), sample_records[nearest]["token"])
            self._key_frame(float(t_key), sample_records[k]["token"])
            bar.update(1)
        self.tables.add("sample", *sample_records)
        for records in self.sample_data.values():
            link(records)
            self.tables.add("sample_data", *records)
        for instance, records in self.annotations.items():
            link(records)
            self.tables.add("sample_annotation", *records)
            self.tables.add("instance", {"token": instance, "category_token": self.categories[instance],
                                         "nbr_annotations": len(records),
                                         "first_annotation_token": records[0]["token"],
                                         "last_annotation_token": records[-1]["token"]})
        self.tables.add("scene", {
            "token": token(self.seed, "scene", self.index), "log_token": self.log["token"],
            "nbr_samples": len(sample_records),
            "first_sample_token": sample_records[0]["token"], "last_sample_token": sample_records[-1]["token"],
            "name": self.name, "description": f"Synthetic drive through {self.town.name} (seed {self.seed}).",
        })

    def _us(self, t: float) -> int:
        return self.t0_us + int(round(t * 1e6))

    # --------------------------------------------------------------------------------------------------- sensor data

    def _ego(self, t: float, channel: str) -> tuple[Record, np.ndarray, np.ndarray]:
        """The ego_pose record of a ``channel``'s frame at t, its (4, 4) ego -> global, and global -> local (the
        frame centred on the ego)."""
        xy, yaw = self.motion.ego_at(t)
        record = {"token": token(self.seed, "ego_pose", self.index, channel, self._us(t)), "timestamp": self._us(t),
                  "rotation": list(yaw_quaternion(yaw)), "translation": [float(xy[0]), float(xy[1]), 0.0]}
        self.tables.add("ego_pose", record)
        to_local = np.eye(4)
        to_local[:2, 3] = -xy
        return record, pose_matrix(record["translation"], record["rotation"]), to_local

    def _sample_data(self, calibration: Calibration, t: float, sample_token: str, ego: Record, key: bool,
                     extension: str, height: int = 0, width: int = 0) -> Record:
        channel = calibration.channel
        stamp = self._us(t)
        folder = "samples" if key else "sweeps"
        record = {
            "token": token(self.seed, "sample_data", self.index, channel, stamp),
            "sample_token": sample_token, "ego_pose_token": ego["token"],
            "calibrated_sensor_token": self.calibration_tokens[channel],
            "timestamp": stamp, "fileformat": "pcd" if extension == "pcd.bin" else extension, "is_key_frame": key,
            "height": height, "width": width,
            "filename": f"{folder}/{channel}/{self.log['logfile']}__{channel}__{stamp}.{extension}",
        }
        self.sample_data[channel].append(record)
        return record

    def _scan(self, t: float, sample_token: str, key: bool,
              states: ObjectStates | None = None) -> tuple[Record, np.ndarray, np.ndarray]:
        """Cast one Lidar turn at t. Returns its sample_data record, the points (N, 5) and lidar -> global (4, 4)."""
        ego, ego_to_global, to_local = self._ego(t, LIDAR_CHANNEL)
        states = self.motion.objects_at(t) if states is None else states
        frame = world_frame(self.town, states, -to_local[:2, 3], self.texture)
        lidar_to_global = ego_to_global @ self.lidar.matrix()
        scan = scan_lidar(frame, to_local @ lidar_to_global, self.rng)
        record = self._sample_data(self.lidar, t, sample_token, ego, key, "pcd.bin")
        cloud = np.concatenate([scan.points, scan.intensity[:, None], scan.ring[:, None]], axis=1).astype(np.float32)
        return record, cloud, lidar_to_global

    def _lidar_sweep(self, t: float, sample_token: str) -> None:
        record, cloud, _ = self._scan(t, sample_token, key=False)
        cloud.tofile(self.root / record["filename"])

    # ----------------------------------------------------------------------------------------------------- key frame

    def _key_frame(self, t: float, sample_token: str) -> None:
        """Lidar, cameras and the annotations of the objects near the ego that the sensors observe (at least one
        Lidar point or some visible surface: annotators label what they can see)."""
        states = self.motion.objects_at(t)
        ego_xy, _ = self.motion.ego_at(t)
        centres, yaws = _box_centres(states)
        near = np.flatnonzero(np.linalg.norm(centres[:, :2] - ego_xy, axis=1) < ANNOTATION_RADIUS)
        records = [self._annotation(states, i, centres[i], yaws[i], sample_token) for i in near]
        box_centres = np.array([r["translation"] for r in records]).reshape(-1, 3)
        box_sizes = np.array([r["size"] for r in records]).reshape(-1, 3)
        box_yaws = np.array([2 * math.atan2(r["rotation"][3], r["rotation"][0]) for r in records])

        lidar_record, cloud, lidar_to_global = self._scan(t, sample_token, key=True, states=states)
        points = cloud[:, :3].astype(np.float64) @ lidar_to_global[:3, :3].T + lidar_to_global[:3, 3]
        inside, ambiguous = points_in_boxes(points, box_centres, box_sizes, box_yaws)
        cloud[~ambiguous].tofile(self.root / lidar_record["filename"])
        for record, count in zip(records, inside[:, ~ambiguous].sum(1)):
            record["num_lidar_pts"] = int(count)

        images, poses, per_camera_boxes, filenames = [], [], [], []
        for calibration in self.cameras:
            t_cam = t + camera_delay_s(calibration.channel)
            ego, ego_to_global, to_local = self._ego(t_cam, calibration.channel)
            cam_states = self.motion.objects_at(t_cam)
            frame = world_frame(self.town, cam_states, -to_local[:2, 3], self.texture)
            cam_to_local = to_local @ ego_to_global @ calibration.matrix()
            image = render_camera(frame, cam_to_local, calibration.intrinsic, self.image_hw)
            record = self._sample_data(calibration, t_cam, sample_token, ego, True, "jpg", *self.image_hw)
            Image.fromarray(image.rgb).save(self.root / record["filename"], quality=90)
            cam_centres, cam_yaws = _box_centres(cam_states)
            per_camera_boxes.append((cam_centres[near] + to_local[:3, 3], box_sizes, cam_yaws[near]))
            images.append(image)
            poses.append(cam_to_local)
            filenames.append(record["filename"])
        fractions = visible_fractions(near, per_camera_boxes, images, poses, [c.intrinsic for c in self.cameras])
        observed = []
        for i, record, fraction in zip(near, records, fractions):
            if record["num_lidar_pts"] > 0 or fraction > 0:
                record["visibility_token"] = visibility_token(float(fraction))
                self.annotations.setdefault(record["instance_token"], []).append(record)
                observed.append(i)
        if self.instance_masks:
            for image, filename in zip(images, filenames):
                self._write_mask(image.owner, states, np.array(observed, dtype=int), filename)
        if self.semantic_maps:
            categories = [model.kind.category for model in states.models]
            for image, filename in zip(images, filenames):
                path = semantic_map_path(self.root, filename)
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(semantic_classes(image.surface, image.owner, categories)).save(path)

    def _annotation(self, states: ObjectStates, i: int, centre: np.ndarray, yaw: float, sample_token: str) -> Record:
        model = states.models[i]
        instance = token(self.seed, "instance", self.index, states.keys[i])
        self.categories[instance] = category_token(model.kind.category)
        attribute = states.attributes[i]
        return {
            "token": token(self.seed, "sample_annotation", self.index, states.keys[i], sample_token),
            "sample_token": sample_token, "instance_token": instance, "visibility_token": "",
            "attribute_tokens": [attribute_token(attribute)] if attribute else [],
            "translation": [round(float(v), 4) for v in centre], "size": [round(v, 4) for v in model.size],
            "rotation": list(yaw_quaternion(float(yaw))), "prev": "", "next": "", "num_lidar_pts": 0,
            "num_radar_pts": 0,
        }

    def _write_mask(self, owner: np.ndarray, states: ObjectStates, observed: np.ndarray, filename: str) -> None:
        """uint16 PNG: 1 + the row in instance.json of the annotated instance seen at each pixel, 0 elsewhere."""
        rows = {instance: self.tables.count("instance") + row for row, instance in enumerate(self.annotations)}
        lookup = np.zeros(len(states.keys) + 1, dtype=np.uint16)
        for i in observed:
            lookup[i + 1] = rows[token(self.seed, "instance", self.index, states.keys[i])] + 1
        path = instance_mask_path(self.root, filename)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(lookup[owner + 1]).save(path)


def _box_centres(states: ObjectStates) -> tuple[np.ndarray, np.ndarray]:
    """Global centres (N, 3) of the objects' annotated boxes, and their yaws (N,)."""
    offsets = np.array([m.box_centre for m in states.models]).reshape(-1, 3)
    c, s = np.cos(states.yaw), np.sin(states.yaw)
    x = states.xy[:, 0] + c * offsets[:, 0] - s * offsets[:, 1]
    y = states.xy[:, 1] + s * offsets[:, 0] + c * offsets[:, 1]
    return np.stack([x, y, offsets[:, 2]], axis=1), states.yaw
