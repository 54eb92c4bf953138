"""The model configuration: a plain dataclass that round-trips through JSON (``config.json`` beside the weights)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..conventions import IMAGENET_MEAN, IMAGENET_STD
from .backbones import FEATURE_STRIDES
from ..conventions.geometry import BEVGrid
from .heads import HEAD_NAMES

VIEW_TRANSFORMS = ("bevformer", "simplebev")
DECODERS = ("none", "resnet18")
RASTER_FRAMES = ("ego", "camera")
LIFTINGS = ("occfeat", "simple-bev")


@dataclass(frozen=True)
class BEVModelConfig:
    """Everything needed to build a ``BEVModel`` (not its weights).

    >>> cfg = BEVModelConfig(view_transform="simplebev")
    >>> BEVModelConfig.from_json(cfg.to_json()) == cfg
    True
    """

    arch: str = "custom"
    view_transform: str = "simplebev"  # "bevformer" | "simplebev"
    backbone: str = "efficientnet_b0"  # any timm CNN with stride-8 and stride-16 taps
    neck_channels: int = 128  # intermediate width of the neck (128 for EN-B0, 512 for ResNets)
    bev_channels: int = 128  # channels of the image features and of the BEV map
    image_size: tuple[int, int] = (224, 480)  # (H, W) the network is trained at; any multiple of 16 runs
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    grid: BEVGrid = field(default_factory=BEVGrid)
    decoder: str = "resnet18"  # "none" | "resnet18"
    # The frame of the raster (``conventions.geometry.raster_to_ego``): "ego" (occfeat's: rows along ego x, the car
    # driving up) or "camera" (Simple-BEV's: the frame of camera ``raster_camera`` of the batch, rows along the
    # camera's z from behind to ahead, columns along its x, heights along its y).
    raster_frame: str = "ego"
    raster_camera: int = 0
    # SimpleBEV only: how camera features are sampled and averaged (``models.simplebev.BilinearLifting``): "occfeat"
    # (pixel-centre sampling, mean over the cameras that see a voxel) or "simple-bev" (Simple-BEV's own convention,
    # what its released weights were trained with).
    lifting: str = "occfeat"
    # BEVFormer only
    bevformer_layers: int = 6
    bevformer_heads: int = 4
    bevformer_self_points: int = 8
    bevformer_cross_points: int = 8  # a multiple of grid.num_heights: points per height anchor per head
    bevformer_ffn_channels: int = 1024
    dropout: float = 0.1
    # outputs
    heads: tuple[str, ...] = HEAD_NAMES
    map_classes: tuple[str, ...] = ("drivable_area",)

    def __post_init__(self) -> None:
        for name in ("image_size", "image_mean", "image_std", "heads", "map_classes"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if isinstance(self.grid, dict):
            object.__setattr__(self, "grid", BEVGrid(**self.grid))
        self.validate()

    def validate(self) -> None:
        def fail(name: str, message: str) -> None:
            raise ConfigError(f"BEVModelConfig.{name}={getattr(self, name)!r}: {message}")

        if self.view_transform not in VIEW_TRANSFORMS:
            fail("view_transform", f"choose from {list(VIEW_TRANSFORMS)}.")
        if self.decoder not in DECODERS:
            fail("decoder", f"choose from {list(DECODERS)}.")
        if self.raster_frame not in RASTER_FRAMES:
            fail("raster_frame", f"choose from {list(RASTER_FRAMES)}.")
        if self.raster_camera < 0:
            fail("raster_camera", "expected the index (>= 0) of a camera in the batch's camera order.")
        if self.lifting not in LIFTINGS:
            fail("lifting", f"choose from {list(LIFTINGS)}.")
        if self.lifting != "occfeat" and self.view_transform != "simplebev":
            fail("lifting", "only the simplebev view transform lifts features; BEVFormer samples them by attention.")
        stride = max(FEATURE_STRIDES)
        if len(self.image_size) != 2 or any(s <= 0 or s % stride for s in self.image_size):
            fail("image_size", f"expected (H, W), both positive multiples of {stride} (e.g. (224, 480)).")
        if self.bev_channels % 2 or self.bev_channels % self.bevformer_heads:
            fail("bev_channels", f"must be even and divisible by bevformer_heads={self.bevformer_heads}.")
        if self.bevformer_cross_points % self.grid.num_heights:
            fail(
                "bevformer_cross_points",
                f"must be a multiple of the number of height anchors (grid.num_heights={self.grid.num_heights}).",
            )
        unknown = [h for h in self.heads if h not in HEAD_NAMES]
        if unknown or len(set(self.heads)) != len(self.heads):
            fail("heads", f"expected distinct names from {list(HEAD_NAMES)}.")
        if "map" in self.heads and not self.map_classes:
            fail("map_classes", "the 'map' head needs at least one map class.")
        if not 0.0 <= self.dropout < 1.0:
            fail("dropout", "expected 0 <= dropout < 1.")

    # ---- (de)serialisation ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BEVModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"BEVModelConfig: unknown field(s) {unknown}. Known fields: {sorted(known)}. "
                "Was this config written by a newer occfeat? Upgrade occfeat or remove the fields."
            )
        return cls(**data)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "BEVModelConfig":
        """Accepts a JSON string or the path of a JSON file."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"BEVModelConfig.from_json: not valid JSON ({exc}).") from exc
        return cls.from_dict(data)

    def replace(self, **overrides: Any) -> "BEVModelConfig":
        """A copy with ``overrides`` applied; ``grid`` may be a ``BEVGrid`` or a dict of its fields to change."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(f"unknown model option(s) {unknown}; known options: {sorted(known)}.")
        if isinstance(overrides.get("grid"), dict):
            grid_fields = {f.name for f in dataclasses.fields(BEVGrid)}
            bad = sorted(set(overrides["grid"]) - grid_fields)
            if bad:
                raise ConfigError(f"unknown grid option(s) {bad}; known: {sorted(grid_fields)}.")
            overrides["grid"] = dataclasses.replace(self.grid, **overrides["grid"])
        return dataclasses.replace(self, **overrides)
