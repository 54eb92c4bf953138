"""Moved to ``occfeat.synthetic`` (the generated world is not part of the data layer); this name and its submodules
(``occfeat.data.synthetic.world`` ...) stay importable for existing code."""

from __future__ import annotations

import importlib
import sys

from ...synthetic import *  # noqa: F401,F403
from ...synthetic import __all__  # noqa: F401

for _name in ("annotate", "catalog", "preview", "render", "rig", "semantic", "tables", "town", "traffic", "world"):
    sys.modules[f"{__name__}.{_name}"] = importlib.import_module(f"occfeat.synthetic.{_name}")
