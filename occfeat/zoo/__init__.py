"""The model zoo: weights registry (data), Hub access (pinned, verified, offline-aware), loading with a report, and
publishing. ``registry`` imports no torch; the rest loads on first use."""

from typing import Any

from .registry import get_weights, list_weights, register_weights

# Loaded on first use (they import torch): weights from elsewhere (Simple-BEV's release, see ``zoo.simple_bev``).
_LAZY = {"simple_bev_inputs": "occfeat.zoo.simple_bev", "convert_simple_bev_checkpoint": "occfeat.zoo.simple_bev"}

__all__ = ["get_weights", "list_weights", "register_weights", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'occfeat.zoo' has no attribute {name!r}")
