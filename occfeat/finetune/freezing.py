"""Freezing named parts of a ``BEVModel`` (``occfeat.models.PARTS``) and building the optimizer's parameter groups.

BatchNorm needs more than ``requires_grad_(False)``: in train mode it still normalises with batch statistics and
overwrites its running statistics, so a "frozen" backbone would drift. ``freeze`` offers three behaviours:

- ``"eval"``: BatchNorm layers of the frozen parts normalise with their running statistics and never update them,
  even after ``model.train()``. Implemented with a forward pre-hook that sets ``training = False`` right before each
  call. Overriding ``train`` instead would rely on every caller going through ``Module.train`` (some set
  ``training`` directly); swapping the class would change what ``torch.save(model)`` pickles. A hook keeps the class,
  the state-dict keys, ``deepcopy`` and pickling intact, and every ``module(...)`` call runs it.
- ``"frozen"``: BatchNorm layers are replaced by their frozen affine equivalent (timm's ``FrozenBatchNorm2d`` /
  ``FrozenBatchNormAct2d``: buffers only, same state-dict keys except ``num_batches_tracked``, which loading
  tolerates both ways). Cheaper, and it cannot be switched back to training by accident. 1-d and 3-d BatchNorm
  get the ``"eval"`` treatment.
- ``"train"``: BatchNorm keeps updating its running statistics (weights frozen): adapts the statistics to the new
  domain.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
from timm.layers import freeze_batch_norm_2d, unfreeze_batch_norm_2d
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.parallel import DataParallel, DistributedDataParallel

from ..errors import ConfigError
from ..models import PARTS

BN_MODES: tuple[str, ...] = ("eval", "frozen", "train")
# Substrings of a parameter's name (inside its part) that never get weight decay: biases, norm affines, learned
# embeddings and the BEV query map (decaying them pulls the queries towards zero for no regularisation benefit).
NO_WEIGHT_DECAY: tuple[str, ...] = ("bias", "norm", "bn", "embed", "queries")
_EVAL_HOOK = "_occfeat_bn_eval_hook"  # attribute holding the hook handle, so that unfreeze can remove it


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a (Distributed)DataParallel wrapper, so part names do not carry the ``module.`` prefix."""
    return model.module if isinstance(model, (DataParallel, DistributedDataParallel)) else model


def _check_parts(parts: Sequence[str] | str) -> list[str]:
    parts = [parts] if isinstance(parts, str) else list(parts)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ConfigError(f"parts: unknown {unknown}; choose from {list(PARTS)}.")
    return parts


def _stay_in_eval(module: nn.Module, args: tuple[Any, ...]) -> None:
    """Forward pre-hook of a frozen BatchNorm: whatever ``model.train()`` set, normalise with the running statistics
    and leave them untouched."""
    module.training = False


def _device(module: nn.Module) -> torch.device:
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _replace_part(model: nn.Module, name: str, convert: Callable[[nn.Module], nn.Module]) -> nn.Module:
    """Apply timm's in-place BatchNorm conversion ``convert`` to part ``name``; new layers are built on the part's
    device. Returns the part."""
    part = getattr(model, name)
    with torch.device(_device(part)):
        converted = convert(part)
    if converted is not part:  # the part was itself a BatchNorm layer
        setattr(model, name, converted)
    return converted


def _restore_batch_norm(model: nn.Module, name: str) -> nn.Module:
    """Undo what a previous ``freeze`` did to the BatchNorm layers of part ``name``; returns the part."""
    part = _replace_part(model, name, unfreeze_batch_norm_2d)
    for module in part.modules():
        handle = module.__dict__.pop(_EVAL_HOOK, None)
        if handle is not None:
            handle.remove()
    return part


def freeze(model: nn.Module, parts: Sequence[str] | str, bn: str = "eval") -> None:
    """Stop training ``parts`` (names from ``occfeat.models.PARTS``) of ``model``, in place.

    Args:
        model: a ``BEVModel`` (or a DDP / DataParallel wrapper of one). Freeze before wrapping it in DDP: DDP records
            the trainable parameters when it is built.
        parts: e.g. ``("backbone", "neck")``.
        bn: ``"eval"``, ``"frozen"`` or ``"train"``: what BatchNorm layers inside the parts do (module docstring).

    >>> freeze(model, ("backbone",), bn="eval")  # doctest: +SKIP
    >>> model.train()  # the backbone's BatchNorm still uses (and keeps) its running statistics  # doctest: +SKIP
    """
    if bn not in BN_MODES:
        raise ConfigError(f"bn={bn!r}: choose from {list(BN_MODES)}.")
    model = _unwrap(model)
    for name in _check_parts(parts):
        part = _restore_batch_norm(model, name)
        if bn == "frozen":
            part = _replace_part(model, name, freeze_batch_norm_2d)
        part.requires_grad_(False)
        if bn == "train":
            continue
        for module in part.modules():
            if isinstance(module, _BatchNorm):
                module.eval()
                setattr(module, _EVAL_HOOK, module.register_forward_pre_hook(_stay_in_eval))


def unfreeze(model: nn.Module, parts: Sequence[str] | str) -> None:
    """Make ``parts`` trainable again, in place: every parameter requires grad, and BatchNorm layers frozen by
    ``freeze`` train normally (``"frozen"`` ones become ``nn.BatchNorm2d`` / timm ``BatchNormAct2d`` again, with the
    same statistics and affine)."""
    model = _unwrap(model)
    for name in _check_parts(parts):
        _restore_batch_norm(model, name).requires_grad_(True)


def _named_extras(extra_modules: Mapping[str, nn.Module] | Iterable[nn.Module]) -> dict[str, nn.Module]:
    """Extra modules by rule name: the mapping's keys, or the class names of a plain sequence."""
    if isinstance(extra_modules, Mapping):
        extras = dict(extra_modules)
    else:
        modules = list(extra_modules)
        extras = {type(module).__name__: module for module in modules}
        if len(extras) != len(modules):
            raise ConfigError(
                "extra_modules: two modules of the same class; name them with a dict, e.g. "
                "extra_modules={'loss': loss, 'aux_head': head}."
            )
    clash = [name for name in extras if name in PARTS]
    if clash:
        raise ConfigError(f"extra_modules: names {clash} are model parts; choose other names.")
    return extras


def param_groups(
    model: nn.Module,
    lr: float,
    *,
    weight_decay: float = 1e-7,
    part_lr_mult: Mapping[str, float] | None = None,
    no_weight_decay: Sequence[str] = NO_WEIGHT_DECAY,
    extra_modules: Mapping[str, nn.Module] | Iterable[nn.Module] = (),
) -> list[dict[str, Any]]:
    """Optimizer parameter groups: every trainable parameter exactly once, two groups per part (or extra module).

    Each group is ``{"name": "<part>/decay" | "<part>/no_decay", "params", "lr": lr * multiplier, "weight_decay"}``.
    Parameters of 0 or 1 dimension (biases, norm affines, scalars) and parameters whose name inside their part
    contains one of ``no_weight_decay`` get weight decay 0.

    Args:
        model: a ``BEVModel`` (or a DDP / DataParallel wrapper of one); its parts are ``occfeat.models.PARTS``.
        lr: base learning rate.
        weight_decay: for the parameters not matched by ``no_weight_decay``.
        part_lr_mult: learning-rate multiplier by part or extra-module name, 1 when absent,
            e.g. ``{"backbone": 0.1}``.
        no_weight_decay: substrings of parameter names excluded from weight decay.
        extra_modules: trainable modules outside the model, e.g. ``{"loss": segmentation_loss}`` (its uncertainty
            weights); a sequence is named by class name.

    Raises:
        ConfigError: a trainable parameter of the model is covered by no part nor extra module, or by two; an unknown
            name in ``part_lr_mult``.

    >>> optimizer = torch.optim.AdamW(  # doctest: +SKIP
    ...     param_groups(model, 3e-4, part_lr_mult={"backbone": 0.1}, extra_modules={"loss": loss_fn})
    ... )
    """
    model = _unwrap(model)
    children = dict(model.named_children())
    extras = _named_extras(extra_modules)
    rules = {**{part: children[part] for part in PARTS if part in children}, **extras}
    multipliers = dict(part_lr_mult or {})
    unknown = [name for name in multipliers if name not in rules]
    if unknown:
        raise ConfigError(f"part_lr_mult: unknown names {unknown}; expected parts or extra modules {list(rules)}.")

    owner: dict[int, str] = {}  # id(parameter) -> the qualified name that claimed it
    groups: list[dict[str, Any]] = []
    for rule, module in rules.items():
        decay, no_decay = [], []
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            qualified = f"{rule}.{name}"
            if id(param) in owner:
                raise ConfigError(
                    f"parameter {qualified} is the same tensor as {owner[id(param)]}: covered twice. Pass each module "
                    "once, either as a part of the model or in extra_modules."
                )
            owner[id(param)] = qualified
            excluded = param.ndim <= 1 or any(pattern in name for pattern in no_weight_decay)
            (no_decay if excluded else decay).append(param)
        group_lr = lr * multipliers.get(rule, 1.0)
        for suffix, params, wd in (("decay", decay, weight_decay), ("no_decay", no_decay, 0.0)):
            if params:
                groups.append({"name": f"{rule}/{suffix}", "params": params, "lr": group_lr, "weight_decay": wd})

    uncovered = [name for name, p in model.named_parameters() if p.requires_grad and id(p) not in owner]
    if uncovered:
        raise ConfigError(
            f"trainable parameters outside the parts {list(PARTS)} and extra_modules {list(extras)}: "
            f"{uncovered[:5]}{' ...' if len(uncovered) > 5 else ''}. Pass their module in extra_modules "
            "(e.g. extra_modules={'loss': loss_fn}) or freeze them with requires_grad_(False)."
        )
    return groups
