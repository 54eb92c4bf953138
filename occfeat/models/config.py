"""The model configuration: a plain dataclass that round-trips through JSON (``config.json`` beside the weights)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..errors import ConfigError
from ..conventions import IMAGENET_MEAN, IMAGENET_STD
from .backbones import FEATURE_STRIDES
from ..conventions.geometry import BEVGrid
from .heads import HEAD_NAMES

VIEW_TRANSFORMS = ("bevformer", "simplebev")
DECODERS = ("none", "resnet18")
RASTER_FRAMES = ("ego", "camera")
LIFTINGS = ("occfeat", "simple-bev")

# A config.json can come from a remote repository (``hf-hub:`` names fetch it): the sizes it asks for are bounded before
# anything is allocated. A 1.7 KB config with bev_channels=1048576 would otherwise ask for 300 TB. Each bound is several
# times the largest network of the BEV literature (BEVFormer-base: 256 channels, 6 layers, 200x200 queries;
# Simple-BEV: 448x800 images, 200x8x200 voxels); a genuinely larger model opts out (``allow_large``).
ALLOW_LARGE_MODELS_ENV = "OCCFEAT_ALLOW_LARGE_MODELS"
SIZE_LIMITS: dict[str, int] = {
    "neck_channels": 4096,
    "bev_channels": 1024,
    "image_size": 4096,  # pixels, each side
    "grid.cells": 2048,  # raster cells along x and along y
    "grid.num_heights": 256,
    "bevformer_layers": 64,
    "bevformer_heads": 64,
    "bevformer_self_points": 256,
    "bevformer_cross_points": 1024,
    "bevformer_ffn_channels": 16384,
    "map_classes": 256,  # how many
    "raster_camera": 63,  # a camera index
}
# Of everything but the backbone (a named timm model, whose size its name fixes): 1e9 parameters are 4 GB in float32,
# over 50x the largest registered network's 17 M.
MAX_ESTIMATED_PARAMETERS = 1_000_000_000
# Values of the largest activation of one sample: the lifted (Z, H, W, C) volume, a layer's (H*W, FFN) hidden
# activations, or one camera's stride-8 feature map. 2**31 values are 8 GiB in float32; Simple-BEV's volume is 41 M.
MAX_ESTIMATED_ACTIVATION = 2**31


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
        for name in ("neck_channels", "bev_channels", "bevformer_layers", "bevformer_heads", "bevformer_self_points",
                     "bevformer_cross_points", "bevformer_ffn_channels"):
            if getattr(self, name) < 1:
                fail(name, "expected a positive integer.")
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

    # ---- sizes ---------------------------------------------------------------------------------------------------
    def estimated_size(self) -> "ModelSize":
        """What building and running the network would take, estimated from the config alone (nothing is built)."""
        return _estimate_size(self)

    def check_size(self, *, allow_large: bool | None = None) -> None:
        """Raise ``ConfigError`` when a size exceeds ``SIZE_LIMITS`` or the estimated parameters / activations exceed
        ``MAX_ESTIMATED_PARAMETERS`` / ``MAX_ESTIMATED_ACTIVATION``, naming the field, its value, the limit and the
        override. ``allow_large=True`` (or, when ``allow_large`` is None, the environment variable
        ``OCCFEAT_ALLOW_LARGE_MODELS=1``) skips the check, for genuinely large models from a source you trust."""
        if allow_large is None:
            allow_large = os.environ.get(ALLOW_LARGE_MODELS_ENV, "").strip().lower() in ("1", "true", "yes")
        if allow_large:
            return
        override = (f"If this model is genuinely that large and its config comes from a source you trust, pass "
                    f"allow_large=True (BEVModelConfig.from_dict / from_json) or set {ALLOW_LARGE_MODELS_ENV}=1.")
        for name, value, origin in _size_fields(self):
            limit = SIZE_LIMITS[name]
            if value > limit:
                raise ConfigError(f"BEVModelConfig.{name}={value}{origin} exceeds the limit {limit} of any real BEV "
                                  f"model. {override}")
        size = self.estimated_size()
        for what, value, limit in (("parameters (backbone excluded)", size.parameters, MAX_ESTIMATED_PARAMETERS),
                                   ("values in the largest activation of one sample", size.activation,
                                    MAX_ESTIMATED_ACTIVATION)):
            if value > limit:
                raise ConfigError(
                    f"BEVModelConfig: about {value:.3g} {what}, over the limit {limit:.3g} (bev_channels="
                    f"{self.bev_channels}, neck_channels={self.neck_channels}, grid {self.grid.shape} x "
                    f"{self.grid.num_heights} heights, image_size={self.image_size}, view_transform="
                    f"{self.view_transform!r}). {override}"
                )

    # ---- (de)serialisation ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, allow_large: bool | None = None) -> "BEVModelConfig":
        """The config a ``to_dict`` (a ``config.json``) describes, checked as untrusted input before anything is
        built: every field's type (``ConfigError`` naming the field, never a ``TypeError``), then the sizes
        (``check_size``; ``allow_large=True`` or ``OCCFEAT_ALLOW_LARGE_MODELS=1`` for genuinely large models)."""
        if not isinstance(data, dict):
            raise ConfigError(f"BEVModelConfig: expected a JSON object (a dict of fields), got a "
                              f"{type(data).__name__}.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"BEVModelConfig: unknown field(s) {unknown}. Known fields: {sorted(known)}. "
                "Was this config written by a newer occfeat? Upgrade occfeat or remove the fields."
            )
        hints = typing.get_type_hints(cls)
        for name, value in data.items():
            _check_type(f"BEVModelConfig.{name}", value, hints[name])
        config = cls(**data)
        config.check_size(allow_large=allow_large)
        return config

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text + "\n")
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path, *, allow_large: bool | None = None) -> "BEVModelConfig":
        """Accepts a JSON string or the path of a JSON file; checked as ``from_dict`` checks."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            try:
                text = Path(text_or_path).read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"BEVModelConfig.from_json: {text_or_path} is neither a JSON object nor a readable "
                                  f"JSON file ({type(exc).__name__}: {exc}).") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"BEVModelConfig.from_json: not valid JSON ({exc}).") from exc
        return cls.from_dict(data, allow_large=allow_large)

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


class ModelSize(NamedTuple):
    """``BEVModelConfig.estimated_size``: rough counts (within ~2x), enough to refuse configs that cannot be real."""

    parameters: int  # of the neck, view transform, decoder and heads (the backbone is a named timm model)
    activation: int  # values in the largest activation of one sample (or of one camera's feature map)


def _size_fields(config: BEVModelConfig) -> list[tuple[str, int, str]]:
    """(name in SIZE_LIMITS, value, where a derived value comes from) for every size the config asks for."""
    grid = config.grid
    return [
        *((name, getattr(config, name), "") for name in ("neck_channels", "bev_channels", "bevformer_layers",
                                                           "bevformer_heads", "bevformer_self_points",
                                                           "bevformer_cross_points", "bevformer_ffn_channels",
                                                           "raster_camera")),
        ("image_size", max(config.image_size), f" (the longer side of {config.image_size})"),
        ("grid.cells", max(grid.shape), f" (cells per side from x_range={grid.x_range}, y_range={grid.y_range}, "
                                        f"resolution={grid.resolution})"),
        ("grid.num_heights", grid.num_heights, f" (from z_range={grid.z_range}, z_resolution={grid.z_resolution})"),
        ("map_classes", len(config.map_classes), " (the number of map classes)"),
    ]


def _estimate_size(config: BEVModelConfig) -> ModelSize:
    c, mid, z = config.bev_channels, config.neck_channels, config.grid.num_heights
    height, width = config.grid.shape
    cells = height * width
    # Neck: two 3x3 convolutions and a 1x1; its input (the backbone's two taps) counted as 3x its width, which is
    # exact for ResNets (512 + 1024 for 512) and over for EfficientNets (40 + 112 for 128).
    parameters = 9 * 3 * mid * mid + 9 * mid * mid + mid * c
    if config.view_transform == "bevformer":
        heads, points = config.bevformer_heads, config.bevformer_self_points + config.bevformer_cross_points
        per_layer = 4 * c * c + 3 * c * heads * points + 2 * c * config.bevformer_ffn_channels
        parameters += cells * c + (height + width) * c // 2 + config.bevformer_layers * per_layer
        # The values the cross-attention samples (points per head x channels, per query) or the FFN's hidden layer.
        activation = cells * max(c * config.bevformer_cross_points, config.bevformer_ffn_channels)
    else:
        parameters += 9 * c * z * c  # the height compression
        activation = cells * z * c  # the lifted volume
    if config.decoder == "resnet18":
        parameters += 49 * 64 * c + 64 * c + 2_800_000  # stem and last projection; the fixed 64-128-256 stages
    parameters += len(config.heads) * 9 * c * c + c * (len(config.map_classes) + 4)
    finest = min(FEATURE_STRIDES)  # one camera's neck output and its hidden layers
    image_features = (config.image_size[0] // finest) * (config.image_size[1] // finest) * max(mid, c)
    return ModelSize(parameters=int(parameters), activation=int(max(activation, image_features)))


def _describe(hint: Any) -> str:
    """The JSON a type hint takes, in words."""
    if hint is int:
        return "an integer"
    if hint is float:
        return "a finite number"
    if hint is str:
        return "a string"
    if hint is BEVGrid:
        return f"an object with the BEVGrid fields {[f.name for f in dataclasses.fields(BEVGrid)]}"
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple and args and args[-1] is Ellipsis:
        return f"a list of {_describe(args[0]).removeprefix('an ').removeprefix('a ')}s"
    if typing.get_origin(hint) is tuple:
        return f"a list of {len(args)} {_describe(args[0]).removeprefix('an ').removeprefix('a ')}s"
    return str(hint)


def _check_type(name: str, value: Any, hint: Any) -> None:
    """``ConfigError`` naming ``name`` when ``value`` (parsed JSON, or what a caller passed) is not of type ``hint``."""
    def fail(detail: str = "") -> None:
        raise ConfigError(f"{name}={value!r} (a {type(value).__name__}): expected {_describe(hint)}{detail}. Fix the "
                          "field in the config (config.json).")

    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail()
    elif hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            fail()
    elif hint is str:
        if not isinstance(value, str):
            fail()
    elif hint is BEVGrid:
        if isinstance(value, BEVGrid):
            return
        if not isinstance(value, dict):
            fail()
        grid_hints = typing.get_type_hints(BEVGrid)
        unknown = sorted(set(value) - set(grid_hints))
        if unknown:
            fail(f" (unknown field(s) {unknown})")
        for key, item in value.items():
            _check_type(f"{name}.{key}", item, grid_hints[key])
    elif typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            fail()
        args = typing.get_args(hint)
        if args and args[-1] is Ellipsis:
            for index, item in enumerate(value):
                _check_type(f"{name}[{index}]", item, args[0])
        else:
            if len(value) != len(args):
                fail(f" (got {len(value)} items)")
            for index, (item, item_hint) in enumerate(zip(value, args)):
                _check_type(f"{name}[{index}]", item, item_hint)
