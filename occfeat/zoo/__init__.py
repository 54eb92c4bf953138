"""The model zoo: weights registry (data), Hub access (pinned, verified, offline-aware), loading with a report, and
publishing. ``registry`` imports no torch; the rest loads on first use."""

from .registry import get_weights, list_weights, register_weights

__all__ = ["get_weights", "list_weights", "register_weights"]
