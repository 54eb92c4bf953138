"""Evaluation: dataset-level IoU (exact across DDP ranks), a JSON report, prediction pictures, nuScenes-C with RR / mRR."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from ..progress import progress_bar

from ..data import NuScenesBEV, collate
from ..data.corruptions import CORRUPTIONS, SEVERITIES, SEVERITY_NAMES, check_corruption, corruption_table, resilience
from ..engine import distributed as dist_utils
from ..engine.data import move_to_device
from ..viz import save_image_grid, save_prediction_png
from ..runs import rank_shard
from .metrics import IoUMeter


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
    loader = DataLoader(rank_shard(dataset), batch_size=batch_size, num_workers=num_workers, collate_fn=collate)
    written = 0
    show = progress and dist_utils.is_main()
    for batch in progress_bar(loader, desc="evaluate", unit="batch", disable=not show, leave=False):
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


def robustness_metrics(results: dict[str, Any]) -> list[str]:
    """The metric keys nuScenes-C tables report: vehicle IoU (visibility filter on) and every map class's IoU."""
    return [key for key in results["clean"] if key == "vehicle_iou" or key.startswith("map_iou/")]


def evaluate_corruptions(
    model: nn.Module,
    make_dataset,  # type: ignore[no-untyped-def]  # (corruption | None) -> NuScenesBEV
    *,
    corruptions: Sequence[str] = CORRUPTIONS,
    severities: Sequence[int] = SEVERITIES,
    picture_path: str | Path | None = None,
    picture_camera: str = "CAM_FRONT",
    **kwargs: Any,
) -> tuple[dict[str, Any], str]:
    """nuScenes-C: the clean scores, the scores per (corruption, severity), and RoboBEV's resilience metrics.

    Returns ``(results, tables)``. ``results`` has ``clean`` and ``"<Corruption>/<severity>"`` (the metrics of
    ``evaluate_model`` each) and ``robustness``: per metric (``vehicle_iou``, ``map_iou/<class>``) the resilience rate
    ``RR`` per corruption (mean over the severities / clean) and ``mRR`` (mean RR over the corruptions evaluated; the
    benchmark's needs all eight). ``tables`` is one markdown table per metric, IoU in %, with RR and mRR.
    With ``picture_path``, also a PNG of ``picture_camera``'s network image of the first sample under every
    corruption and severity (a row per corruption, the clean image first), to see what the network was shown.
    """
    for name in corruptions:
        for severity in severities:
            check_corruption(name, severity)
    clean = make_dataset(None)
    # Every dataset first: a released folder that is missing fails now, not after hours of evaluation.
    datasets = {(name, severity): make_dataset((name, severity)) for name in corruptions for severity in severities}
    results: dict[str, Any] = {"clean": evaluate_model(model, clean, **kwargs)}
    tiles: dict[str, np.ndarray] = {}
    draw = picture_path is not None and dist_utils.is_main()
    for name in progress_bar(corruptions, desc="nuScenes-C", unit="corruption", disable=not dist_utils.is_main()):
        if draw:
            tiles[f"{name}: clean"] = _camera_image(clean, picture_camera)
        for severity in severities:
            corrupted = datasets[(name, severity)]
            results[f"{name}/{severity}"] = evaluate_model(model, corrupted, **kwargs)
            if draw:
                tiles[f"{name} {SEVERITY_NAMES[SEVERITIES.index(severity)]} ({severity})"] = _camera_image(
                    corrupted, picture_camera)
    robustness: dict[str, Any] = {}
    tables = []
    for key in robustness_metrics(results):
        scores = {(name, severity): results[f"{name}/{severity}"][key] for name in corruptions for severity in severities}
        rates, mean_rate = resilience(scores, results["clean"][key])
        robustness[key] = {"RR": rates, "mRR": mean_rate, "corruptions": sum(math.isfinite(r) for r in rates.values()),
                           "severities": len(severities)}
        percent = {pair: 100.0 * value for pair, value in scores.items()}
        tables.append(f"{key} (%)\n\n" + corruption_table(percent, clean=100.0 * results["clean"][key]))
    results["robustness"] = robustness
    if draw:
        source = "released files" if getattr(clean, "corruption_root", None) else "regenerated"
        save_image_grid(tiles, picture_path, columns=1 + len(severities),
                        header=f"nuScenes-C ({source}): {picture_camera} of sample {clean.sample_tokens[0]}")
    return results, "\n\n".join(tables)


def _camera_image(dataset: NuScenesBEV, camera: str) -> np.ndarray:
    """(H, W, 3) uint8: one camera's network image of the dataset's first sample, un-normalised."""
    images = dataset[0]["images"][dataset.cameras.index(camera)]  # (3, H, W), normalised as the dataset does
    mean, std = torch.tensor(dataset.image_mean).view(3, 1, 1), torch.tensor(dataset.image_std).view(3, 1, 1)
    return (images * std + mean).clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).numpy()
