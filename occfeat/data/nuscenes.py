"""``NuScenesBEV``: key frames of a nuScenes-format dataroot (real or synthetic) as network-ready samples.

Frames: everything is expressed in the *key-frame ego frame* of LIDAR_TOP, made gravity-aligned (the ego pose's yaw
only, as BEV labels need): camera extrinsics, boxes, map lookups and Lidar points. The BEV augmentation ``bev_aug``
maps the raster frame to that ego frame (see ``occfeat.conventions.geometry``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image
from pyquaternion import Quaternion
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import ConfigError, InputError
from ..conventions import IMAGENET_MEAN, IMAGENET_STD
from ..conventions.geometry import (
    NUSCENES_CAMERAS, BEVGrid, random_bev_augmentation, raster_to_ego, update_intrinsics,
)
from .images import IMAGE_PRESETS, image_size_of, image_transform, normalise, read_rgb, warp_image  # noqa: F401
from .corruptions import NUSCENES_C_DOWNLOAD, SEVERITY_NAMES, apply_corruption, check_corruption
from .labels import DEFAULT_LABEL_PROTOCOL, VehicleBox, check_label_protocol, rasterize_vehicles, sample_map_mask
from .splits import load_subset, scene_names, select_subset

# Image sizes (H, W) of the usual recipes, and the small one of the tests and the CPU demo.
MAP_LAYERS_FROM_MASK = ("drivable_area",)
# Layers read from the nuScenes map expansion (maps/expansion/<location>.json, v1.3+) when it is installed.
MAP_EXPANSION_POLYGONS = ("road_segment", "lane", "ped_crossing", "walkway", "stop_line", "carpark_area")
MAP_EXPANSION_LINES = ("road_divider", "lane_divider")
# The nuScenes car around its ego origin (rear axle), metres: Lidar returns inside are the car itself.
EGO_CAR_XY = ((-1.0, 3.2), (-1.0, 1.0))


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation. Images: one affine warp each (zoom, rotation about the centre, crop jitter), the
    intrinsics updated to match. BEV: a random rigid ``bev_aug`` applied to labels and network coordinates alike."""

    zoom: tuple[float, float] = (0.95, 1.05)
    rotation_deg: float = 2.5
    crop_jitter: float = 0.05  # fraction of the width the crop may slide sideways
    bev_translation_xy: tuple[float, float] = (30.0, 20.0)  # metres, for the standard +-50 m raster
    bev_yaw_deg: float = 20.0

    def scaled_to(self, grid: BEVGrid) -> "Augmentation":
        """The same augmentation for another raster: BEV translations scale with the raster's half extent (the
        recipe's +-30 m on a +-50 m raster is +-19 m on a +-32 m one), so the labels stay mostly on the raster."""
        half_x = (grid.x_range[1] - grid.x_range[0]) / 2.0
        half_y = (grid.y_range[1] - grid.y_range[0]) / 2.0
        tx, ty = self.bev_translation_xy
        return dataclasses.replace(self, bev_translation_xy=(tx * half_x / 50.0, ty * half_y / 50.0))


def _pose_matrix(translation: Sequence[float], rotation: Sequence[float], yaw_only: bool = False) -> np.ndarray:
    """4x4 from a nuScenes (translation, quaternion w x y z); ``yaw_only`` keeps only the rotation about z."""
    q = Quaternion(rotation)
    m = np.eye(4)
    if yaw_only:
        yaw = q.yaw_pitch_roll[0]
        m[:3, :3] = Quaternion(axis=[0.0, 0.0, 1.0], angle=yaw).rotation_matrix
    else:
        m[:3, :3] = q.rotation_matrix
    m[:3, 3] = translation
    return m


def _check_normalisation(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ConfigError(f"image_mean={mean}, image_std={std}: expected 3 values each (RGB, 0-1 scale), std > 0.")
    return mean, std


def data_options(config: Any) -> dict[str, Any]:
    """What a dataset must match of a model (a ``BEVModelConfig``): its image size, normalisation and raster. The one
    place that turns a model's input spec into ``NuScenesBEV`` arguments (training, evaluation, examples)."""
    return {"image_size": tuple(config.image_size), "grid": config.grid, "image_mean": tuple(config.image_mean),
            "image_std": tuple(config.image_std), "raster_frame": config.raster_frame,
            "raster_camera": config.raster_camera}


class NuScenesBEV(Dataset):
    """Key frames of one split of a nuScenes-format dataroot, with images, calibration, BEV labels and Lidar.

    Args:
        dataroot: folder holding ``<version>/`` (the tables), ``samples/``, ``sweeps/``, ``maps/``.
        version: ``v1.0-trainval``, ``v1.0-mini``, or a synthetic world's version.
        split: ``train`` / ``val`` (``mini_train`` / ``mini_val`` on v1.0-mini; ``train`` / ``val`` work there too),
            or ``all``.
        image_size: network image (H, W) or a preset name from ``IMAGE_PRESETS``.
        image_mean / image_std: the normalisation of the network's images: the model config's (``data_options(
            config)`` passes them with the image size and the raster), ImageNet's by default.
        grid: the BEV raster of the labels (must match the model's).
        raster_frame / raster_camera: the frame the labels are rasterised in, the model's
            (``conventions.geometry.raster_to_ego``): "ego", or "camera" with the index of the camera (in ``cameras``)
            whose frame Simple-BEV's converted weights use.
        augment: ``None`` at evaluation; an ``Augmentation`` for training.
        fraction / count / subset / seed: a low-data subset (see ``occfeat.data.splits``); ``subset`` is a list of
            sample tokens or the path of a JSON list.
        lidar_sweeps: 0 for no Lidar; else the key frame plus ``lidar_sweeps - 1`` previous sweeps.
        map_classes: map layers of the ``map`` label; ``drivable_area`` comes from the map mask every dataroot carries,
            the others from the nuScenes map expansion.
        corruption: ``(name, severity)`` of a nuScenes-C corruption (``occfeat.data.corruptions``), for evaluation.
            Without ``corruption_root`` it is regenerated on the fly on each source image before the resize, with
            RoboBEV's definitions, deterministic per (seed, sample).
        corruption_root: the released nuScenes-C folder (``<root>/<Corruption>/<easy|mid|hard>/<CAM_X>/<file>``):
            the corrupted images are read from there instead of ``samples/``.
        label_protocol: the vehicle raster, ``"lss"`` (the literature's ``cv2.fillPoly`` raster, the default) or
            ``"cell-center"`` (see ``occfeat.data.labels``).
        labels: False reads no annotation and no map (self-supervised pretraining): items carry no label keys.
        semantic_maps: items also carry a generated world's side-car maps of each camera (``generate_world(
            semantic_maps=True)``): ``semantic`` (N, H, W) class ids and ``instance`` (N, H, W) instance ids, warped
            like the images (nearest pixel). The input of the stand-in teacher, never a label.
        nusc: an already loaded ``NuScenes`` to share between datasets.

    Items are dicts: ``images`` (N, 3, H, W) normalised, ``intrinsics`` (N, 3, 3), ``cam_to_ego`` (N, 4, 4),
    ``bev_aug`` (4, 4), ``vehicle`` / ``vehicle_ignore`` / ``center`` (1, Hb, Wb), ``offset`` (2, Hb, Wb),
    ``map`` (K, Hb, Wb), optional ``lidar`` (P, 5) = ego (x, y, z), intensity, sweep index, and ``sample_token``.
    """

    def __init__(
        self,
        dataroot: str | Path,
        version: str = "v1.0-trainval",
        split: str = "train",
        *,
        image_size: tuple[int, int] | str = "224x480",
        grid: BEVGrid | None = None,
        augment: Augmentation | None = None,
        fraction: float | None = None,
        count: int | None = None,
        subset: Sequence[str] | str | Path | None = None,
        seed: int = 0,
        lidar_sweeps: int = 0,
        map_classes: Sequence[str] = ("drivable_area",),
        cameras: Sequence[str] = NUSCENES_CAMERAS,
        corruption: tuple[str, int] | None = None,
        corruption_root: str | Path | None = None,
        label_protocol: str = DEFAULT_LABEL_PROTOCOL,
        labels: bool = True,
        semantic_maps: bool = False,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        raster_frame: str = "ego",
        raster_camera: int = 0,
        nusc: Any = None,
    ):
        self.dataroot = Path(dataroot).expanduser()
        self.version = version
        self.image_size = image_size_of(image_size)
        self.grid = grid or BEVGrid()
        self.image_mean, self.image_std = _check_normalisation(image_mean, image_std)
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.lidar_sweeps = int(lidar_sweeps)
        self.cameras = tuple(cameras)
        if raster_frame not in ("ego", "camera") or not 0 <= raster_camera < len(self.cameras):
            raise ConfigError(f"raster_frame={raster_frame!r}, raster_camera={raster_camera}: expected 'ego' or "
                              f"'camera' with a camera index in 0 .. {len(self.cameras) - 1} (cameras {self.cameras}).")
        self.raster_frame, self.raster_camera = raster_frame, int(raster_camera)
        if corruption is not None:
            if not isinstance(corruption, (tuple, list)) or len(corruption) != 2:
                raise ConfigError(f"corruption={corruption!r}: give (name, severity), e.g. ('Fog', 2).")
            check_corruption(*corruption)
            corruption = (str(corruption[0]), int(corruption[1]))
        elif corruption_root is not None:
            raise ConfigError("corruption_root is set but corruption is not: give corruption=(name, severity) too.")
        self.corruption = corruption
        self.corruption_root = Path(corruption_root).expanduser() if corruption_root is not None else None
        if self.corruption_root is not None:
            self._check_released_folders()
        self.label_protocol = check_label_protocol(label_protocol)
        self.semantic_maps = bool(semantic_maps)
        self.labels = labels
        known = (*MAP_LAYERS_FROM_MASK, *MAP_EXPANSION_POLYGONS, *MAP_EXPANSION_LINES)
        unknown = [m for m in map_classes if m not in known]
        if unknown:
            raise ConfigError(f"map_classes: unknown layer(s) {unknown}; choose from {list(known)}.")
        self.map_classes = tuple(map_classes)
        self.nusc = nusc if nusc is not None else open_nuscenes(self.dataroot, version)
        self._expansions: dict[str, Any] = {}
        if any(m not in MAP_LAYERS_FROM_MASK for m in self.map_classes):
            for log in self.nusc.log:
                self._map_expansion(log["location"])  # fail now, with the fix, rather than in a worker later

        scenes = set(scene_names(self.dataroot / version, version, split))
        tokens = []
        for scene in sorted(self.nusc.scene, key=lambda s: s["name"]):
            if scene["name"] not in scenes:
                continue
            token = scene["first_sample_token"]
            while token:
                tokens.append(token)
                token = self.nusc.get("sample", token)["next"]
        if not tokens:
            raise InputError(
                f"split {split!r} of {self.dataroot / version} has no samples: none of its scenes is in this dataroot."
            )
        if subset is not None:
            wanted = load_subset(subset) if isinstance(subset, (str, Path)) else list(subset)
            missing = sorted(set(wanted) - set(tokens))
            if missing:
                raise InputError(f"subset: {len(missing)} sample token(s) are not in split {split!r}, e.g. {missing[0]}.")
            tokens = [t for t in tokens if t in set(wanted)]
        elif fraction is not None or count is not None:
            tokens = select_subset(tokens, fraction=fraction, count=count, seed=seed)
        self.sample_tokens: list[str] = tokens

    def __len__(self) -> int:
        return len(self.sample_tokens)

    def set_epoch(self, epoch: int) -> None:
        """Augmentations are drawn from (seed, epoch, index): deterministic whatever the number of workers."""
        self.epoch = epoch

    # ---- geometry ----------------------------------------------------------------------------------------------
    def _global_to_ego(self, sample: dict) -> np.ndarray:
        lidar = self.nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        pose = self.nusc.get("ego_pose", lidar["ego_pose_token"])
        return np.linalg.inv(_pose_matrix(pose["translation"], pose["rotation"], yaw_only=True))

    def _sensor_to_global(self, sample_data: dict) -> np.ndarray:
        calib = self.nusc.get("calibrated_sensor", sample_data["calibrated_sensor_token"])
        pose = self.nusc.get("ego_pose", sample_data["ego_pose_token"])
        return _pose_matrix(pose["translation"], pose["rotation"]) @ _pose_matrix(calib["translation"], calib["rotation"])

    def _released_folder(self) -> Path:
        name, severity = self.corruption  # type: ignore[misc]
        return self.corruption_root / name / SEVERITY_NAMES[check_corruption(name, severity)]  # type: ignore[operator]

    def _check_released_folders(self) -> None:
        """Fail at construction, with the layout and the fix, when ``corruption_root`` is not a nuScenes-C copy."""
        root, folder = self.corruption_root, self._released_folder()
        layout = (f"nuScenes-C's layout is <root>/<Corruption>/<{'|'.join(SEVERITY_NAMES)}>/<CAM_X>/<file name of "
                  f"samples/CAM_X/> (download: {NUSCENES_C_DOWNLOAD}); or drop corruption_root to regenerate the "
                  "corruption on the fly")
        if not root.is_dir():  # type: ignore[union-attr]
            raise InputError(f"corruption_root {root} does not exist. {layout}.")
        missing = [camera for camera in self.cameras if not (folder / camera).is_dir()]
        if missing:
            present = sorted(p.name for p in root.iterdir() if p.is_dir())  # type: ignore[union-attr]
            raise InputError(
                f"corruption_root {root}: {folder} lacks the camera folder(s) {missing} (folders in the root: "
                f"{present or 'none'}). {layout}."
            )

    def _camera_file(self, sample_data: dict) -> Path:
        """The image of a camera ``sample_data``: the released corrupted copy under ``corruption_root``, else the
        dataroot's file."""
        if self.corruption_root is None:
            return self._file(sample_data)
        relative = Path(sample_data["filename"])
        path = self._released_folder() / relative.parent.name / relative.name
        if not path.is_file():
            raise InputError(
                f"missing nuScenes-C file {path} (the corrupted copy of {relative}). nuScenes-C holds the val key "
                f"frames only: evaluate split 'val', and re-extract the download ({NUSCENES_C_DOWNLOAD}) if it is "
                "incomplete."
            )
        return path

    def _side_cars(self, sample_data: dict) -> tuple[np.ndarray, np.ndarray]:
        """The generated world's (class ids, instance ids) maps of a camera image, at the source resolution."""
        from ..synthetic import instance_mask_path, semantic_map_path

        paths = (semantic_map_path(self.dataroot, sample_data["filename"]),
                 instance_mask_path(self.dataroot, sample_data["filename"]))
        for path in paths:
            if not path.is_file():
                raise InputError(
                    f"missing side-car map {path}: semantic maps exist for generated worlds only, written with "
                    "`occfeat synth DIR --semantic-maps` (generate_world(semantic_maps=True)). On real nuScenes use "
                    "the DINOv2 teacher."
                )
        return tuple(np.asarray(Image.open(path)) for path in paths)  # type: ignore[return-value]

    def _file(self, sample_data: dict) -> Path:
        path = self.dataroot / sample_data["filename"]
        if not path.is_file():
            raise InputError(
                f"missing file {path} (sample_data {sample_data['token']}). The dataroot is incomplete: re-extract "
                "the nuScenes archives (or regenerate the synthetic world) so that samples/ and sweeps/ match the tables."
            )
        return path

    def truncate(self, samples: int | None) -> "NuScenesBEV":
        """Keep the first ``samples`` key frames (quick runs and evaluations; None keeps all); returns self."""
        if samples is not None:
            if samples < 1:
                raise ConfigError(f"samples={samples}: expected a positive number of key frames (or None for all).")
            self.sample_tokens = self.sample_tokens[:samples]
        return self

    # ---- one item -----------------------------------------------------------------------------------------------
    def __getitem__(self, index: int) -> dict[str, Any]:
        token = self.sample_tokens[index]
        sample = self.nusc.get("sample", token)
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.augment is not None else None
        global_to_ego = self._global_to_ego(sample)

        records = [self.nusc.get("sample_data", sample["data"][camera]) for camera in self.cameras]
        sources = [read_rgb(self._camera_file(record)) for record in records]
        if self.corruption is not None and self.corruption_root is None:
            # nuScenes-C regenerated: on the source images at their own resolution, before the resize, as released.
            sources = apply_corruption(sources, *self.corruption, seed=self.seed, sample_key=token)
        images, intrinsics, cam_to_ego, side_cars = [], [], [], []
        for record, source in zip(records, sources):
            affine = image_transform(source.shape[:2], self.image_size, rng, self.augment)
            calib = self.nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
            intrinsics.append(update_intrinsics(torch.tensor(calib["camera_intrinsic"], dtype=torch.float64), torch.from_numpy(affine)))
            cam_to_ego.append(global_to_ego @ self._sensor_to_global(record))
            images.append(warp_image(source, affine, self.image_size))
            if self.semantic_maps:
                side_cars.append([warp_image(m, affine, self.image_size, nearest=True) for m in self._side_cars(record)])
        pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)

        if self.augment is not None:
            generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
            bev_aug = random_bev_augmentation(generator, self.augment.bev_translation_xy, self.augment.bev_yaw_deg)
        else:
            bev_aug = torch.eye(4)
        item: dict[str, Any] = {
            "images": normalise(pixels, self.image_mean, self.image_std),
            "intrinsics": torch.stack(intrinsics).float(),
            "cam_to_ego": torch.from_numpy(np.stack(cam_to_ego)).float(),
            "bev_aug": bev_aug,
            "sample_token": token,
        }
        if self.semantic_maps:
            item["semantic"] = torch.from_numpy(np.stack([c for c, _ in side_cars]).astype(np.int64))
            item["instance"] = torch.from_numpy(np.stack([i for _, i in side_cars]).astype(np.int64))
        if self.labels:
            raster = raster_to_ego(bev_aug.double()[None], item["cam_to_ego"].double()[None], self.raster_frame,
                                   self.raster_camera)[0]
            item.update(self._labels(sample, global_to_ego, raster.numpy()))
        if self.lidar_sweeps:
            item["lidar"] = torch.from_numpy(self._lidar(sample, global_to_ego))
        return item

    def vehicle_boxes(self, index: int, bev_aug: np.ndarray | None = None) -> list[VehicleBox]:
        """The ``vehicle.*`` annotations of sample ``index``, in annotation order, as footprints in the raster frame
        (the yaw-only ego frame of LIDAR_TOP, or the raster camera's frame, then ``inverse(bev_aug)``; identity by
        default)."""
        sample = self.nusc.get("sample", self.sample_tokens[index])
        global_to_ego = self._global_to_ego(sample)
        bev_aug = torch.eye(4, dtype=torch.float64) if bev_aug is None else torch.as_tensor(bev_aug, dtype=torch.float64)
        cam_to_ego = torch.eye(4, dtype=torch.float64).expand(1, len(self.cameras), 4, 4)
        if self.raster_frame == "camera":
            record = self.nusc.get("sample_data", sample["data"][self.cameras[self.raster_camera]])
            cam_to_ego = cam_to_ego.clone()
            cam_to_ego[0, self.raster_camera] = torch.from_numpy(global_to_ego @ self._sensor_to_global(record))
        raster = raster_to_ego(bev_aug[None], cam_to_ego, self.raster_frame, self.raster_camera)[0].numpy()
        return self._vehicle_boxes(sample, np.linalg.inv(raster) @ global_to_ego)

    def _vehicle_boxes(self, sample: dict, global_to_raster: np.ndarray) -> list[VehicleBox]:
        boxes = []
        for ann_token in sample["anns"]:
            ann = self.nusc.get("sample_annotation", ann_token)
            if not ann["category_name"].startswith("vehicle."):
                continue
            corners = self.nusc.get_box(ann_token).bottom_corners()  # (3, 4) global
            corners = global_to_raster[:3, :3] @ corners + global_to_raster[:3, 3:4]
            boxes.append(VehicleBox(corners[:2].T, int(ann["visibility_token"] or 1)))
        return boxes

    def _labels(self, sample: dict, global_to_ego: np.ndarray, raster_frame_to_ego: np.ndarray) -> dict[str, Tensor]:
        global_to_raster = np.linalg.inv(raster_frame_to_ego) @ global_to_ego
        boxes = self._vehicle_boxes(sample, global_to_raster)
        rasters = rasterize_vehicles(self.grid, boxes, protocol=self.label_protocol)
        labels = {k: torch.from_numpy(v) for k, v in rasters.items()}

        # Map: raster cell centres -> ego (bev_aug) -> global, looked up in the log's map mask.
        log = self.nusc.get("log", self.nusc.get("scene", sample["scene_token"])["log_token"])
        map_record = self.nusc.get("map", log["map_token"])
        cells = self.grid.cell_centers(dtype=torch.float64).numpy()  # (H, W, 2)
        raster_to_global = np.linalg.inv(global_to_raster)
        xy = cells @ raster_to_global[:2, :2].T + raster_to_global[:2, 3]  # z = 0 plane, flat maps
        layers = []
        for name in self.map_classes:
            if name in MAP_LAYERS_FROM_MASK:
                layers.append(sample_map_mask(map_record["mask"].mask(), xy, map_record["mask"].resolution))
            else:
                layers.append(self._expansion_layer(log["location"], name, xy))
        labels["map"] = torch.from_numpy(np.stack(layers) if layers else np.zeros((0, *self.grid.shape), np.float32))
        return labels

    def _map_expansion(self, location: str) -> Any:
        """The devkit's ``NuScenesMap`` of a location, loaded once."""
        if location not in self._expansions:
            path = self.dataroot / "maps" / "expansion" / f"{location}.json"
            if not path.is_file():
                raise InputError(
                    f"map_classes {list(self.map_classes)} need the nuScenes map expansion, but {path} does not exist. "
                    "Download 'Map expansion' (v1.3) from nuscenes.org and extract it into the dataroot's maps/, or "
                    f"use map_classes={list(MAP_LAYERS_FROM_MASK)}."
                )
            from nuscenes.map_expansion.map_api import NuScenesMap

            self._expansions[location] = NuScenesMap(dataroot=str(self.dataroot), map_name=location)
        return self._expansions[location]

    def _expansion_layer(self, location: str, layer: str, xy: np.ndarray) -> np.ndarray:
        """1.0 at the raster cells (global centres ``xy`` (H, W, 2)) whose centre lies in a polygon of ``layer``, or
        within half a cell of one of its lines."""
        import shapely

        nusc_map = self._map_expansion(location)
        lo, hi = xy.reshape(-1, 2).min(axis=0), xy.reshape(-1, 2).max(axis=0)
        tokens = nusc_map.get_records_in_patch((lo[0], lo[1], hi[0], hi[1]), [layer], mode="intersect")[layer]
        records = [nusc_map.get(layer, token) for token in tokens]
        if layer in MAP_EXPANSION_LINES:
            shapes = [nusc_map.extract_line(r["line_token"]) for r in records]
        else:
            shapes = [nusc_map.extract_polygon(r["polygon_token"]) for r in records]
        mask = np.zeros(xy.shape[:2], bool)
        for shape in shapes:
            if layer in MAP_EXPANSION_LINES:
                mask |= shapely.dwithin(shape, shapely.points(xy[..., 0], xy[..., 1]), self.grid.resolution / 2)
            else:
                mask |= shapely.contains_xy(shape, xy[..., 0], xy[..., 1])
        return mask.astype(np.float32)

    def _lidar(self, sample: dict, global_to_ego: np.ndarray) -> np.ndarray:
        """Key frame + previous sweeps of LIDAR_TOP in the key-frame ego frame, ego-car returns removed: (P, 5)."""
        record = self.nusc.get("sample_data", sample["data"]["LIDAR_TOP"])
        clouds = []
        for sweep_index in range(self.lidar_sweeps):
            points = np.fromfile(self._file(record), dtype=np.float32).reshape(-1, 5)
            # Drop the car's own returns in this sweep's ego frame, where the car is.
            calib = self.nusc.get("calibrated_sensor", record["calibrated_sensor_token"])
            in_sweep_ego = points[:, :3] @ _pose_matrix(calib["translation"], calib["rotation"])[:3, :3].T
            in_sweep_ego += np.asarray(calib["translation"])
            (x0, x1), (y0, y1) = EGO_CAR_XY
            on_car = (in_sweep_ego[:, 0] > x0) & (in_sweep_ego[:, 0] < x1) & (in_sweep_ego[:, 1] > y0) & (in_sweep_ego[:, 1] < y1)
            to_ego = global_to_ego @ self._sensor_to_global(record)
            xyz = points[~on_car, :3].astype(np.float64) @ to_ego[:3, :3].T + to_ego[:3, 3]
            cloud = np.concatenate(
                [xyz, points[~on_car, 3:4], np.full((len(xyz), 1), sweep_index)], axis=1
            ).astype(np.float32)
            clouds.append(cloud)
            if not record["prev"]:
                break  # the first frame of a scene has no earlier sweeps
            record = self.nusc.get("sample_data", record["prev"])
        return np.concatenate(clouds)


def open_nuscenes(dataroot: str | Path, version: str) -> Any:
    """``nuscenes.NuScenes(version, dataroot)`` with typed errors for the usual mistakes."""
    dataroot = Path(dataroot).expanduser()
    if not dataroot.is_dir():
        raise InputError(
            f"dataroot {dataroot} does not exist. Point it at the folder holding {version}/, samples/, sweeps/ and "
            "maps/ (nuScenes extracted in place), or write a synthetic one with `occfeat synth DIR`."
        )
    if not (dataroot / version).is_dir():
        present = sorted(p.name for p in dataroot.iterdir() if p.is_dir() and p.name.startswith("v1.0"))
        raise InputError(
            f"version folder {dataroot / version} does not exist; version folders present: {present or 'none'}. "
            "Pass version= one of them (v1.0-mini, v1.0-trainval, or the synthetic world's version)."
        )
    from nuscenes.nuscenes import NuScenes

    return NuScenes(version=version, dataroot=str(dataroot), verbose=False)


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack items into the batch dict of ``docs/architecture.md``. Lidar clouds are padded to the largest:
    ``lidar`` (B, P_max, 5) with ``lidar_valid`` (B, P_max)."""
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        if key == "lidar":
            longest = max(v.shape[0] for v in values)
            padded = values[0].new_zeros(len(values), longest, values[0].shape[1])
            valid = torch.zeros(len(values), longest, dtype=torch.bool)
            for i, v in enumerate(values):
                padded[i, : v.shape[0]] = v
                valid[i, : v.shape[0]] = True
            batch["lidar"], batch["lidar_valid"] = padded, valid
        elif isinstance(values[0], Tensor):
            batch[key] = torch.stack(values)
        else:
            batch[key] = values
    return batch
