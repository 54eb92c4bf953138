"""The BEV segmentation loss: per-head terms combined by learned uncertainty weights (docs/bev-networks.md, "Heads and
losses").

Every term is computed in float32 so that mixed-precision logits do not lose the small BCE differences that matter
late in training.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError
from ..models.heads import HEAD_NAMES

# The published recipe: segmentation terms weigh 20x the centerness / offset terms before the learned weighting.
LOSS_COEFFICIENTS: dict[str, float] = {"vehicle": 10.0, "map": 10.0, "center": 0.5, "offset": 0.5}
VEHICLE_POS_WEIGHT = 2.13


def _target(batch: Mapping[str, Tensor], key: str, like: Tensor) -> Tensor:
    """``batch[key]`` as float32 on ``like``'s device; ``InputError`` when it is missing or not shaped like ``like``."""
    if key not in batch:
        raise InputError(f"batch: no {key!r} entry; the loss needs it (see occfeat.data.labels for the label keys).")
    target = batch[key]
    if target.shape != like.shape:
        raise InputError(
            f"batch[{key!r}]: shape {tuple(target.shape)} does not match the head output {tuple(like.shape)}; "
            "build the labels on the model's raster (model.config.grid) and with its map_classes."
        )
    return target.to(like.device, torch.float32)


def vehicle_valid_mask(batch: Mapping[str, Tensor], like: Tensor, visibility_filter: bool) -> Tensor:
    """(B, 1, H, W) float mask of the cells that count: with the visibility filter, every cell except those covered
    only by vehicles below visibility 2 (``vehicle_ignore``); without it, every cell."""
    if not visibility_filter:
        return torch.ones_like(like, dtype=torch.float32)
    return 1.0 - _target(batch, "vehicle_ignore", like)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the cells where ``mask`` is 1; 0 (still differentiable) when the mask is empty."""
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


class SegmentationLoss(nn.Module):
    """Vehicle / map BCE, centerness MSE and offset L1, each weighted as ``coeff * exp(-w) * L + 0.5 * w``.

    The ``w`` (one scalar ``nn.Parameter`` per head, initialised to 0) are learned with the network: put this module's
    parameters in the optimizer (``param_groups(model, lr, extra_modules={"loss": loss})``).

    Args:
        heads: the heads the loss is built for (usually ``model.config.heads``).
        visibility_filter: the standard protocol: cells of vehicles below visibility 2 are neither positives nor
            negatives (vehicle BCE and offset L1). Off: every vehicle is a positive.
        vehicle_pos_weight: BCE weight of vehicle positives.
        map_pos_weight: BCE weight of map positives.

    >>> loss_fn = SegmentationLoss(model.config.heads)  # doctest: +SKIP
    >>> total, logs = loss_fn(model(images, intrinsics, cam_to_ego), batch)  # doctest: +SKIP
    >>> logs["loss/vehicle"], logs["uncertainty/vehicle"]  # doctest: +SKIP
    """

    def __init__(
        self,
        heads: Sequence[str] = HEAD_NAMES,
        *,
        visibility_filter: bool = True,
        vehicle_pos_weight: float = VEHICLE_POS_WEIGHT,
        map_pos_weight: float = 1.0,
    ):
        super().__init__()
        unknown = [h for h in heads if h not in HEAD_NAMES]
        if unknown:
            raise InputError(f"heads: unknown {unknown}; choose from {list(HEAD_NAMES)}.")
        self.visibility_filter = visibility_filter
        self.vehicle_pos_weight = vehicle_pos_weight
        self.map_pos_weight = map_pos_weight
        self.uncertainty = nn.ParameterDict({head: nn.Parameter(torch.zeros(())) for head in heads})

    def terms(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The raw (unweighted) loss of every head present in ``outputs``.

        Args:
            outputs: raw head outputs: ``vehicle`` (B, 1, H, W) logits, ``map`` (B, K, H, W) logits, ``center``
                (B, 1, H, W) logit, ``offset`` (B, 2, H, W) in cells.
            batch: labels of the same shapes (``vehicle``, ``vehicle_ignore``, ``map``, ``center``, ``offset``).
        """
        extra = [head for head in outputs if head not in self.uncertainty]
        if extra:
            raise InputError(
                f"outputs: heads {extra} have no loss weight; build the loss with heads=model.config.heads "
                f"(it has {list(self.uncertainty)})."
            )
        losses: dict[str, Tensor] = {}
        if "vehicle" in outputs:
            logits = outputs["vehicle"].float()
            valid = vehicle_valid_mask(batch, logits, self.visibility_filter)
            target = _target(batch, "vehicle", logits) * valid
            bce = F.binary_cross_entropy_with_logits(
                logits, target, pos_weight=logits.new_tensor(self.vehicle_pos_weight), reduction="none"
            )
            losses["vehicle"] = masked_mean(bce, valid)
        if "map" in outputs:
            logits = outputs["map"].float()
            losses["map"] = F.binary_cross_entropy_with_logits(
                logits, _target(batch, "map", logits), pos_weight=logits.new_tensor(self.map_pos_weight)
            )
        if "center" in outputs:
            center = torch.sigmoid(outputs["center"].float())
            losses["center"] = F.mse_loss(center, _target(batch, "center", center))
        if "offset" in outputs:
            offset = outputs["offset"].float()
            l1 = (offset - _target(batch, "offset", offset)).abs().sum(dim=1, keepdim=True)  # (B, 1, H, W)
            # The offset target exists on vehicle cells only, and ignored vehicles stay ignored.
            vehicle = _target(batch, "vehicle", l1) * vehicle_valid_mask(batch, l1, self.visibility_filter)
            losses["offset"] = masked_mean(l1, vehicle)
        return losses

    def forward(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        """Returns ``(total, logs)``: the scalar to back-propagate, and floats for logging: ``loss/<head>`` (raw
        term), ``uncertainty/<head>`` (its ``w``) and ``loss/total``. Arguments as in ``terms``."""
        losses = self.terms(outputs, batch)
        if not losses:
            raise InputError(f"outputs: none of the heads {list(self.uncertainty)}; got keys {list(outputs)}.")
        weights = [self.uncertainty[head] for head in losses]
        weighted = [
            LOSS_COEFFICIENTS[head] * torch.exp(-w) * loss + 0.5 * w for (head, loss), w in zip(losses.items(), weights)
        ]
        total = torch.stack(weighted).sum()
        # One device->host copy for all the logged numbers, not one per number.
        values = torch.stack([*losses.values(), *weights, total]).detach().tolist()
        names = [*(f"loss/{head}" for head in losses), *(f"uncertainty/{head}" for head in losses), "loss/total"]
        return total, dict(zip(names, values))
