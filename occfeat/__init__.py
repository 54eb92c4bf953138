"""occfeat: pretrained camera-only BEV segmentation networks (BEVFormer, SimpleBEV) and OccFeat pretraining.

The public face of the package; everything is defined in the subpackages and handed on here. Importing ``occfeat``
is cheap: torch and timm load on first use of a model function.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0.dev0"

_LAZY = {
    "create_model": "occfeat.models",
    "list_models": "occfeat.models",
    "get_model_config": "occfeat.models",
    "BEVModel": "occfeat.models",
    "BEVModelConfig": "occfeat.models",
    "BEVGrid": "occfeat.models",
    "load": "occfeat.zoo.loading",
    "load_distributed": "occfeat.zoo.loading",
    "LoadReport": "occfeat.zoo.loading",
    "list_weights": "occfeat.zoo.registry",
    "get_weights": "occfeat.zoo.registry",
    "register_weights": "occfeat.zoo.registry",
    "download": "occfeat.zoo.hub",
    "fetch_timm_weights": "occfeat.zoo.hub",
    "CameraTransform": "occfeat.zoo.transforms",
    "save_pretrained": "occfeat.zoo.publishing",
    "push_to_hub": "occfeat.zoo.publishing",
    "export_onnx": "occfeat.deploy",
    "export_program": "occfeat.deploy",
    "OnnxModel": "occfeat.deploy",
    # Every error occfeat raises on purpose: ``except occfeat.HubError`` without knowing where it is defined.
    **{name: "occfeat.errors" for name in (
        "OccfeatError", "InputError", "ConfigError", "UnknownNameError", "IntegrityError", "MissingDependencyError",
        "HubError", "WeightsNotCachedError", "WeightsNotPublishedError", "LoadError", "UnsafeWeightsError",
        "TeacherWeightsError", "RunMismatchError", "WorkerError",
    )},
}

# The training runs: subpackages that are also callable, occfeat.finetune(...) / occfeat.pretrain(...), with the
# CLI verbs' arguments (occfeat._callable).
_CALLABLE_SUBPACKAGES = ("finetune", "pretrain")

__all__ = ["__version__", *_LAZY, *_CALLABLE_SUBPACKAGES]

if TYPE_CHECKING:
    from .models import BEVGrid, BEVModel, BEVModelConfig, create_model, get_model_config, list_models
    from .zoo.hub import download
    from .zoo.loading import LoadReport, load, load_distributed
    from .deploy import OnnxModel, export_onnx, export_program
    from .errors import (
        ConfigError, HubError, InputError, IntegrityError, LoadError, MissingDependencyError, OccfeatError,
        RunMismatchError, TeacherWeightsError, UnknownNameError, UnsafeWeightsError, WeightsNotCachedError, WeightsNotPublishedError,
        WorkerError,
    )
    from .zoo.publishing import push_to_hub, save_pretrained
    from .zoo.registry import get_weights, list_weights, register_weights


def __dir__() -> list[str]:
    """The lazily loaded names too: ``dir(occfeat)`` and tab completion show ``load``, ``create_model``, ..."""
    return sorted({*globals(), *_LAZY, *_CALLABLE_SUBPACKAGES})


def __getattr__(name: str) -> Any:
    import importlib

    if name in _CALLABLE_SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'occfeat' has no attribute {name!r}")
