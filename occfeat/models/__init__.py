"""The BEV networks: geometry, image backbones + neck, deformable attention, BEVFormer, SimpleBEV, the BEV decoder,
the heads, the assembled model, its config and the architecture registry."""

from . import architectures as _architectures  # noqa: F401  (registers the architectures)
from .config import BEVModelConfig
from ..conventions.geometry import BEVGrid
from .model import PARTS, BEVModel
from .registry import create_model, get_model_config, list_models, register_model

__all__ = [
    "PARTS",
    "BEVGrid",
    "BEVModel",
    "BEVModelConfig",
    "create_model",
    "get_model_config",
    "list_models",
    "register_model",
]
