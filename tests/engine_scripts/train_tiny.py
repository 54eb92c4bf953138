"""A tiny training run for the engine tests: imported by tests/test_engine.py, and run as a child process
(``python -m tests.engine_scripts.train_tiny OUT_DIR ...``, alone or under torchrun) where a test needs to signal,
kill or launch processes. Prints the TrainResult as one JSON line at the end."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from occfeat.data import make_loader
from occfeat.engine import Trainer, TrainConfig, checkpoint, shutdown_distributed

DATASET_SIZE = 24


class TinySet(Dataset):
    """Deterministic 8x8 images and targets; sample i is a function of i and the epoch only."""

    def __init__(self, size: int = DATASET_SIZE):
        self.size, self.epoch = size, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        g = torch.Generator().manual_seed(1000 * self.epoch + index)
        x = torch.randn(3, 8, 8, generator=g)
        return {"x": x, "y": x.mean(0, keepdim=True).tanh()}


def tiny_model(batchnorm: bool = True) -> nn.Module:
    """Conv-BN-ReLU-Dropout-Conv; without BatchNorm and dropout, the per-process batch makes no difference."""
    torch.manual_seed(0)
    norm: list[nn.Module] = [nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.2)] if batchnorm else [nn.ReLU()]
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), *norm, nn.Conv2d(8, 1, 1))


class LossWeight(nn.Module):
    """A learned log-variance weighting the loss, as pretraining's learned loss weights do."""

    def __init__(self) -> None:
        super().__init__()
        self.log_var = nn.Parameter(torch.zeros(()))

    def forward(self, loss: Tensor) -> Tensor:
        return torch.exp(-self.log_var) * loss + self.log_var


def validation_loss(model: nn.Module) -> dict[str, float]:
    batch = TinySet(8)
    x = torch.stack([batch[i]["x"] for i in range(8)])
    y = torch.stack([batch[i]["y"] for i in range(8)])
    return {"val_loss": F.mse_loss(model(x), y).item()}


def build(
    out_dir: Path,
    *,
    batch_size: int = 4,
    shuffle: bool = True,
    num_workers: int = 0,
    batchnorm: bool = True,
    loss_weight: bool = False,
    with_evaluator: bool = True,
    stop_at: int | None = None,
    pause_at: int | None = None,
    **overrides: Any,
) -> Trainer:
    """A Trainer of ``tiny_model`` on ``TinySet``. ``stop_at=N`` requests a stop during step N (as a signal would);
    ``pause_at=N`` prints ``paused`` in step N and waits for a line on stdin (the test signals meanwhile)."""
    extras = {"loss_weight": LossWeight()} if loss_weight else {}
    paused = False

    def step_fn(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, float]]:
        if trainer.step + 1 == stop_at:
            trainer.request_stop()
        nonlocal paused
        if trainer.step + 1 == pause_at and not paused:
            paused = True
            print("paused", flush=True)
            sys.stdin.readline()
        pred = model(batch["x"])
        loss = F.mse_loss(pred, batch["y"])
        if extras:
            loss = extras["loss_weight"](loss)
        return loss, {"mae": (pred - batch["y"]).abs().mean().item()}

    settings: dict[str, Any] = dict(
        out_dir=str(out_dir), max_steps=20, checkpoint_every=5, log_every=2, progress=False, tensorboard=False
    )
    trainer = Trainer(
        tiny_model(batchnorm),
        step_fn,
        lambda: make_loader(TinySet(), batch_size, shuffle=shuffle, num_workers=num_workers, drop_last=True, seed=3),
        TrainConfig(**{**settings, **overrides}),
        extra_modules=extras,
        evaluate=validation_loss if with_evaluator else None,
    )
    return trainer


def pause_in_checkpoint_write(step: int) -> None:
    """Make the checkpoint of ``step`` stop half-written (model file done, state not yet): print ``paused`` and wait
    on stdin, where the test kills the process."""
    save_file = checkpoint.save_file

    def paused_save_file(tensors: dict[str, Tensor], filename: str, **kwargs: Any) -> None:
        path = Path(filename)
        if path.name == checkpoint.TENSORS_FILE and path.parent.name.startswith(f".step-{step:08d}.tmp"):
            print("paused", flush=True)
            sys.stdin.readline()
        save_file(tensors, filename, **kwargs)

    checkpoint.save_file = paused_save_file


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--config", default="{}", help="JSON: keyword arguments of build()")
    parser.add_argument("--pause-in-checkpoint", type=int, help="step whose checkpoint write pauses")
    args = parser.parse_args()
    if args.pause_in_checkpoint is not None:
        pause_in_checkpoint_write(args.pause_in_checkpoint)
    result = build(args.out_dir, **json.loads(args.config)).fit()
    print(json.dumps(dataclasses.asdict(result), default=str), flush=True)
    shutdown_distributed()


if __name__ == "__main__":
    main()
