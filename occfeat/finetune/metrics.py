"""Dataset-level IoU of the BEV segmentation protocol (docs/bev-networks.md, "Metric").

True positives, false positives and false negatives are summed over the whole evaluation set, then
IoU = TP / (TP + FP + FN): not a mean of per-image IoUs, which would over-weight images with few positives. The counts
are int64, so summing them across ranks gives exactly the single-process result.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from ..errors import ConfigError, InputError

COUNTS = ("tp", "fp", "fn", "tn")


def confusion_counts(logits: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """(K, 4) int64 (TP, FP, FN, TN) per channel of (B, K, H, W) ``logits`` against a {0, 1} ``target`` of the same
    shape, over the cells where ``valid`` (broadcastable, {0, 1}) is 1. A cell is predicted positive when its
    sigmoid exceeds 0.5, i.e. its logit is > 0."""
    pred = logits > 0
    positive = target > 0.5
    keep = torch.ones_like(pred) if valid is None else (valid > 0.5).expand_as(pred)
    dims = (0, 2, 3)
    tp = (pred & positive & keep).sum(dims)
    fp = (pred & ~positive & keep).sum(dims)
    fn = (~pred & positive & keep).sum(dims)
    tn = (~pred & ~positive & keep).sum(dims)
    return torch.stack([tp, fp, fn, tn], dim=1).to(torch.int64)


class IoUMeter:
    """Accumulates TP / FP / FN over an evaluation set for the vehicle head (visibility filter on and off) and every
    map class.

    Keys of ``compute()``: ``vehicle_iou`` (filter on: cells of vehicles below visibility 2 excluded),
    ``vehicle_iou_nofilter`` (every vehicle a positive), ``map_iou/<class>``. A key appears once its head has been
    seen by ``update``; it is NaN when no cell was positive in either prediction or target.

    Distributed evaluation: every rank updates on its shard, then calls ``all_reduce()`` once, then ``compute()``.

    >>> meter = IoUMeter(map_classes=model.config.map_classes)  # doctest: +SKIP
    >>> for batch in loader:  # doctest: +SKIP
    ...     meter.update(model(batch["images"], batch["intrinsics"], batch["cam_to_ego"]), batch)
    >>> meter.all_reduce().compute()  # doctest: +SKIP
    {'vehicle_iou': 0.43, 'vehicle_iou_nofilter': 0.37, 'map_iou/drivable_area': 0.78}
    """

    def __init__(self, map_classes: Sequence[str] = ("drivable_area",)):
        self.names: tuple[str, ...] = ("vehicle_iou", "vehicle_iou_nofilter", *(f"map_iou/{c}" for c in map_classes))
        self.counts = torch.zeros(len(self.names), len(COUNTS), dtype=torch.int64)  # rows: self.names

    def reset(self) -> None:
        """Zero every count (start of an evaluation)."""
        self.counts = torch.zeros_like(self.counts)

    @torch.no_grad()
    def update(self, outputs: Mapping[str, Tensor], batch: Mapping[str, Tensor]) -> None:
        """Add one batch.

        Args:
            outputs: raw head outputs; ``vehicle`` (B, 1, H, W) and ``map`` (B, K, H, W) logits are used, other keys
                ignored.
            batch: ``vehicle``, ``vehicle_ignore`` (B, 1, H, W) and ``map`` (B, K, H, W) labels in {0, 1}.
        """
        if "vehicle" in outputs:
            logits = outputs["vehicle"]
            self._follow(logits)
            vehicle = self._label(batch, "vehicle", logits)
            ignore = self._label(batch, "vehicle_ignore", logits)
            self.counts[0] += confusion_counts(logits, vehicle, valid=ignore < 0.5)[0]
            self.counts[1] += confusion_counts(logits, vehicle)[0]
        if "map" in outputs:
            logits = outputs["map"]
            self._follow(logits)
            classes = [name.removeprefix("map_iou/") for name in self.names[2:]]
            if logits.shape[1] != len(classes):
                raise InputError(
                    f"outputs['map']: {logits.shape[1]} channels, but the meter was built for the map classes "
                    f"{classes}; pass map_classes=model.config.map_classes."
                )
            self.counts[2:] += confusion_counts(logits, self._label(batch, "map", logits))

    def _follow(self, logits: Tensor) -> None:
        # Counting stays on the outputs' device: no host synchronisation per batch.
        self.counts = self.counts.to(logits.device)

    @staticmethod
    def _label(batch: Mapping[str, Tensor], key: str, like: Tensor) -> Tensor:
        if key not in batch or batch[key].shape != like.shape:
            got = tuple(batch[key].shape) if key in batch else "missing"
            raise InputError(f"batch[{key!r}]: {got}, expected shape {tuple(like.shape)} like the head output.")
        return batch[key].to(like.device)

    def all_reduce(self, group: dist.ProcessGroup | None = None) -> IoUMeter:
        """Sum the counts over the ranks of ``group`` (every rank must call it, once); a no-op outside
        ``torch.distributed``. Returns ``self``."""
        if not (dist.is_available() and dist.is_initialized()):
            return self
        # NCCL reduces CUDA tensors only; gloo reduces CPU tensors.
        backend = dist.get_backend(group)
        device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        counts = self.counts.to(device)
        dist.all_reduce(counts, op=dist.ReduceOp.SUM, group=group)
        self.counts = counts
        return self

    def compute(self) -> dict[str, float]:
        """IoU = TP / (TP + FP + FN) per key, from the accumulated counts (see the class docstring for the keys)."""
        result = {}
        for name, (tp, fp, fn, tn) in zip(self.names, self.counts.tolist()):
            if tp + fp + fn + tn == 0:  # this head was never updated
                continue
            union = tp + fp + fn
            result[name] = tp / union if union else float("nan")
        return result

    def state_dict(self) -> dict[str, Any]:
        """The counts (CPU int64, rows ``names``, columns ``COUNTS``) and the key names."""
        return {"names": list(self.names), "counts": self.counts.cpu().clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore counts saved by ``state_dict``; raises ``ConfigError`` when they were saved for other map classes."""
        if list(state["names"]) != list(self.names):
            raise ConfigError(
                f"IoUMeter state holds {list(state['names'])}, this meter {list(self.names)}; build the meter with the "
                "map_classes the state was saved with."
            )
        self.counts = state["counts"].to(self.counts.device, torch.int64).clone()
