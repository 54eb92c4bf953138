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
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:
    from .models import BEVGrid, BEVModel, BEVModelConfig, create_model, get_model_config, list_models


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'occfeat' has no attribute {name!r}")
