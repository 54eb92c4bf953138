"""``occfeat.finetune(...)`` and ``occfeat.pretrain(...)``: a subpackage that is also its main function.

The training runs live in the subpackages ``occfeat.finetune`` and ``occfeat.pretrain``, whose names a user also
expects to call (``occfeat.finetune("bevformer-enb0-occfeat", dataroot=..., fraction=0.01, out_dir=...)``, the same
arguments as the CLI verb). A module cannot be called, so each of the two sets its module's class to a subclass whose
``__call__`` forwards to its function; everything else (``from occfeat.finetune import ...``) is unchanged.
"""

from __future__ import annotations

import sys
import types
from typing import Any


def make_callable(module_name: str, function_name: str) -> None:
    """Let ``module_name(...)`` call ``module_name.function_name(...)`` (looked up at call time, so it may be lazy)."""

    class CallableModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return getattr(self, function_name)(*args, **kwargs)

    CallableModule.__call__.__doc__ = f"Calls ``{module_name}.{function_name}``."
    sys.modules[module_name].__class__ = CallableModule
