"""Evaluation: dataset-level IoU (exact across DDP ranks), a JSON report, prediction pictures, nuScenes-C tables."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from ..data import NuScenesBEV, collate
from ..data.corruptions import CORRUPTIONS, SEVERITIES, corruption_table
from ..engine import distributed as dist_utils
from ..engine.data import move_to_device
from ..viz import save_prediction_png
from .metrics import IoUMeter


def _shard(dataset: NuScenesBEV) -> Subset:
    """This rank's samples, every world_size-th one: no padding, so summed counts are exact (a DistributedSampler
    would repeat samples to even out the shards)."""
    return Subset(dataset, list(range(dist_utils.rank(), len(dataset), dist_utils.world_size())))


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    dataset: NuScenesBEV,
    *,
    batch_size: int = 4,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    pictures: int = 0,
    picture_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """IoU over the whole ``dataset`` (TP/FP/FN summed over every sample and every rank, then IoU).

    With ``pictures`` > 0, writes that many PNGs of predictions over labels (rank 0) to ``picture_dir``.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    meter = IoUMeter(model.config.map_classes)
    loader = DataLoader(_shard(dataset), batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
    written = 0
    show = progress and dist_utils.is_main()
    for batch in tqdm(loader, desc="evaluate", unit="batch", disable=not show, leave=False):
        batch = move_to_device(batch, device)
        outputs = model(batch["images"], batch["intrinsics"], batch["cam_to_ego"], batch["bev_aug"])
        meter.update(outputs, batch)
        if dist_utils.is_main() and written < pictures:
            for index in range(min(batch["images"].shape[0], pictures - written)):
                save_prediction_png(outputs, batch, index, Path(picture_dir or ".") / f"prediction-{written:02d}.png")
                written += 1
    model.train(was_training)
    return meter.all_reduce().compute()


def write_report(metrics: dict[str, Any], path: str | Path, **context: Any) -> Path:
    """The evaluation report as JSON: metrics plus what produced them (model, data, corruption, time)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"metrics": metrics, **context, "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    return path


def evaluate_corruptions(
    model: nn.Module,
    make_dataset,  # type: ignore[no-untyped-def]  # (corruption | None) -> NuScenesBEV
    *,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = SEVERITIES,
    metric: str = "vehicle_iou",
    **kwargs: Any,
) -> tuple[dict[str, Any], str]:
    """The clean score and one score per (corruption, severity); returns (results, markdown table of ``metric``)."""
    results: dict[str, Any] = {"clean": evaluate_model(model, make_dataset(None), **kwargs)}
    table: dict[tuple[str, int], float] = {}
    for name in tqdm(corruptions, desc="nuScenes-C", unit="corruption", disable=not dist_utils.is_main()):
        for severity in severities:
            scores = evaluate_model(model, make_dataset((name, severity)), **kwargs)
            results[f"{name}/{severity}"] = scores
            table[(name, severity)] = 100.0 * scores[metric]
    return results, corruption_table(table)
