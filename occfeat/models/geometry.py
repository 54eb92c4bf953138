"""Moved to ``occfeat.conventions.geometry`` (the conventions layer below ``models`` and ``data``); this name stays
for existing imports."""

from ..conventions.geometry import *  # noqa: F401,F403
from ..conventions.geometry import __all__  # noqa: F401
