"""The training loop: AdamW + OneCycle schedule, gradient accumulation, mixed precision, DDP, checkpoints, exact resume.

What the loop does not know is given to it: ``step_fn(model, batch) -> (loss, metrics)`` computes the loss of one
micro-batch (fine-tuning's segmentation losses, pretraining's occupancy + distillation losses) and
``evaluate(model) -> metrics`` scores the model now and then.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from ..errors import ConfigError
from . import distributed as dist
from .checkpoint import (
    BEST_FILE,
    latest_checkpoint,
    load_checkpoint,
    newest_intact_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    save_weights,
    step_dir,
)
from .config import TrainConfig
from .data import BatchStream, move_to_device
from .logging import RunLog
from .rng import rng_state, seed_everything, set_rng_state
from .schedule import one_cycle

StepFn = Callable[[nn.Module, Any], tuple[Tensor, Mapping[str, float]]]
Evaluator = Callable[[nn.Module], Mapping[str, float]]
ParamGroups = Iterable[dict[str, Any]] | Callable[[nn.Module], Iterable[dict[str, Any]]]
_AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class TrainResult:
    """How a call of ``Trainer.fit`` ended, and where its files are."""

    status: Literal["completed", "preempted"]
    step: int  # optimizer steps done, over all sessions of the run
    max_steps: int
    epoch: float  # passes over the training data so far
    steps_run: int  # steps done by this call (after a resume: since the checkpoint)
    seconds: float  # wall time of this call
    final_loss: float | None  # mean loss over the last logged steps (None when this call ran no step)
    best_metric: str | None
    best_value: float | None
    best_step: int | None
    checkpoint: Path | None  # the newest checkpoint folder
    best_weights: Path | None  # best.safetensors
    metrics_log: Path

    def this_call(self) -> str:
        """What this call did, for a caller's summary line: `` (3 run in 4.2 s, loss 0.41)``."""
        if not self.steps_run:
            return f" ({self.status}; none run by this call)"
        loss = f", loss {self.final_loss:.4g}" if self.final_loss is not None else ""
        return f" ({self.steps_run} run in {self.seconds:.1f} s{loss})"

    def summary(self) -> str:
        """One line for a report."""
        parts = [f"train: {self.status} {self.step}/{self.max_steps} steps (epoch {self.epoch:.2f})"]
        if self.steps_run:
            parts.append(f"{self.steps_run} steps in {self.seconds:.1f} s ({self.seconds / self.steps_run:.3g} s/step)")
        if self.final_loss is not None:
            parts.append(f"loss {self.final_loss:.4g}")
        if self.best_value is not None:
            parts.append(f"best {self.best_metric} {self.best_value:.4g} at step {self.best_step}")
        if self.checkpoint is not None:
            parts.append(f"checkpoint {self.checkpoint}")
        return ", ".join(parts)


class Trainer:
    """Trains ``model`` with the loss that ``step_fn`` computes, on one CPU, one GPU, or one process per GPU under
    ``torchrun``.

    Args:
        model: the network. ``step_fn`` receives it wrapped in DistributedDataParallel under ``torchrun``: call it
            (``model(...)``), which is what synchronises gradients; to train a network plus a head, pass one module
            whose ``forward`` runs both.
        step_fn: ``step_fn(model, batch) -> (loss, metrics)``: the mean loss over the micro-batch (a scalar tensor)
            and floats to log (the same keys at every step). It runs under autocast; the engine scales by
            ``1 / grad_accum_steps`` and calls backward.
        train_loader: a DataLoader over a map-style dataset, or a function returning one. Pass a function under
            ``torchrun``: it is called once the process group is up, so that ``occfeat.data.make_loader`` shards
            the data with a DistributedSampler. Each process takes ``batch_size`` samples per micro-batch.
        config: the run's settings.
        param_groups: AdamW parameter groups (a list of dicts, or a function of the model returning them); a
            group's ``"lr"`` is its peak learning rate (default ``config.lr``). Default: every trainable parameter.
        extra_modules: other trainable modules that ``step_fn`` uses (e.g. learned loss weights), by name: moved to
            the device, optimised without weight decay, gradients averaged over processes, and checkpointed.
        evaluate: ``evaluate(model) -> metrics``, called with the bare model in eval mode under ``torch.no_grad``
            every ``config.eval_every`` steps and at the end, on every process; rank 0's result counts (an
            evaluator may shard the validation data and all-reduce, or let rank 0 do all the work).
        print_summary: print ``TrainResult.summary()`` on rank 0 at the end; False for callers that print a summary
            of their own (``finetune``, ``pretrain``), so that a run ends with one line.

    >>> def step_fn(model, batch):
    ...     logits = model(batch["images"], batch["intrinsics"], batch["cam_to_ego"], batch["bev_aug"])["vehicle"]
    ...     loss = F.binary_cross_entropy_with_logits(logits, batch["vehicle"])
    ...     return loss, {}
    >>> trainer = Trainer(model, step_fn, lambda: make_loader(dataset, 4, shuffle=True, drop_last=True),
    ...                   TrainConfig(out_dir="runs/x", epochs=10))  # doctest: +SKIP
    >>> result = trainer.fit()  # doctest: +SKIP
    """

    def __init__(
        self,
        model: nn.Module,
        step_fn: StepFn,
        train_loader: DataLoader | Callable[[], DataLoader],
        config: TrainConfig,
        *,
        param_groups: ParamGroups | None = None,
        extra_modules: Mapping[str, nn.Module] | None = None,
        evaluate: Evaluator | None = None,
        print_summary: bool = True,
    ):
        if config.best_metric is not None and evaluate is None:
            raise ConfigError(
                f"TrainConfig.best_metric={config.best_metric!r} needs an evaluator: pass evaluate=... to the "
                "Trainer, or set best_metric=None."
            )
        self.config = config
        self.print_summary = print_summary
        self.out_dir = Path(config.out_dir)
        self.device = dist.init_distributed(config.device)
        self._autocast_dtype = _autocast_dtype(config.precision, self.device)
        self.step_fn = step_fn
        self.evaluate = evaluate
        self.extra_modules = {name: module.to(self.device) for name, module in (extra_modules or {}).items()}
        self._train_model = dist.wrap_model(
            model.to(self.device), self.device, find_unused_parameters=config.find_unused_parameters
        )
        is_ddp = isinstance(self._train_model, DistributedDataParallel)
        self.model: nn.Module = self._train_model.module if is_ddp else self._train_model

        loader = train_loader if isinstance(train_loader, DataLoader) else train_loader()
        # The epoch order follows the loader's own seed (make_loader's `seed`) when it has a generator.
        self.data = BatchStream(loader, loader.generator.initial_seed() if loader.generator else config.seed)
        self.max_steps = config.max_steps or config.epochs * len(self.data) // config.grad_accum_steps
        if self.max_steps < 1:
            raise ConfigError(
                f"TrainConfig.epochs={config.epochs}: {len(self.data)} batches per epoch make no full step of "
                f"grad_accum_steps={config.grad_accum_steps}. Train for more epochs or accumulate fewer batches."
            )

        self.optimizer = torch.optim.AdamW(
            self._param_groups(param_groups), lr=config.lr, weight_decay=config.weight_decay
        )
        self._params = [p for group in self.optimizer.param_groups for p in group["params"]]
        self.scheduler = one_cycle(self.optimizer, self.max_steps, config.warmup_fraction)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.precision == "fp16")
        self.step = 0
        self.best_value: float | None = None
        self.best_step: int | None = None
        self._seconds_before = 0.0  # wall time of the sessions before a resume
        self._stop_requested = False
        self._eval_pending = False

    @property
    def steps_per_epoch(self) -> float:
        """Optimizer steps per pass over the training data (to express ``eval_every`` etc. in epochs)."""
        return len(self.data) / self.config.grad_accum_steps

    def request_stop(self) -> None:
        """Finish the current step, write a checkpoint and return from ``fit`` with status ``"preempted"``.
        SIGTERM and SIGINT call this during ``fit``."""
        self._stop_requested = True

    def fit(self) -> TrainResult:
        """Train until ``max_steps`` (resuming from the newest checkpoint in ``out_dir``) or until stopped."""
        config, main = self.config, dist.is_main()
        self._restore()
        if main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            prune_checkpoints(self.out_dir, config.keep_checkpoints)  # also removes leftovers of killed writes
        start_step, started = self.step, time.perf_counter()
        log = RunLog(
            self.out_dir,
            total_steps=self.max_steps,
            start_step=start_step,
            enabled=main,
            progress=config.progress,
            tensorboard=config.tensorboard,
        )
        if self._eval_pending and self.evaluate is not None:
            self._run_evaluation(log)
        self._eval_pending = False
        window, final_loss, stopped = _Window(), None, False
        self._set_train_mode(True)
        try:
            with _stop_on_signals(self):
                while self.step < self.max_steps and not stopped:
                    self._train_step(window)
                    self.step += 1
                    stopped = dist.any_process(self._stop_requested, self.device)  # all ranks stop at one step
                    last = self.step == self.max_steps
                    if self.step % config.log_every == 0 or last or stopped:
                        record = window.reduce(self.device)
                        final_loss = record["loss"]
                        record["epoch"] = self._epoch()
                        record["time"] = self._seconds_before + time.perf_counter() - started
                        log.write(self.step, record)
                        log.advance({"loss": record["loss"], "lr": record["lr"]})
                    else:
                        log.advance()
                    eval_due = self.evaluate is not None and (last or _every(self.step, config.eval_every))
                    if eval_due and not stopped:  # a pre-empted run saves first; the resumed run evaluates
                        self._run_evaluation(log)
                    if self.step % config.checkpoint_every == 0 or last or stopped:
                        self._save(self._seconds_before + time.perf_counter() - started, eval_due and stopped)
        finally:
            log.close()
            self.data.close()
        dist.barrier()  # every process returns once rank 0's files are written
        result = TrainResult(
            status="preempted" if stopped and self.step < self.max_steps else "completed",
            step=self.step,
            max_steps=self.max_steps,
            epoch=self._epoch(),
            steps_run=self.step - start_step,
            seconds=time.perf_counter() - started,
            final_loss=final_loss,
            best_metric=config.best_metric,
            best_value=self.best_value,
            best_step=self.best_step,
            checkpoint=latest_checkpoint(self.out_dir),
            best_weights=self.out_dir / BEST_FILE if self.best_step is not None else None,
            metrics_log=log.path,
        )
        if main and self.print_summary:
            print(result.summary(), flush=True)
        return result

    # ---- one step ----------------------------------------------------------------------------------------------
    def _train_step(self, window: _Window) -> None:
        """``grad_accum_steps`` micro-batches, then one optimizer and scheduler step."""
        accum = self.config.grad_accum_steps
        for i in range(accum):
            batch = move_to_device(self.data.next(), self.device)
            # DDP all-reduces gradients inside backward: only the last micro-batch of a step needs to.
            sync = i == accum - 1 or not isinstance(self._train_model, DistributedDataParallel)
            with contextlib.nullcontext() if sync else self._train_model.no_sync():
                with self._autocast():
                    loss, metrics = self.step_fn(self._train_model, batch)
                self.scaler.scale(loss / accum).backward()
            window.add_micro_batch(loss, metrics)
        self._average_extra_gradients()
        self.scaler.unscale_(self.optimizer)
        grad_norm = (
            torch.nn.utils.clip_grad_norm_(self._params, self.config.grad_clip) if self.config.grad_clip else None
        )
        window.add_step(self.optimizer.param_groups[0]["lr"], grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()

    def _average_extra_gradients(self) -> None:
        """DDP averages the model's gradients; the extra modules are outside it and averaged here."""
        if not dist.is_distributed():
            return
        for module in self.extra_modules.values():
            for p in module.parameters():
                if p.requires_grad:
                    grad = p.grad if p.grad is not None else torch.zeros_like(p)
                    p.grad = dist.all_reduce_mean(grad)

    # ---- evaluation --------------------------------------------------------------------------------------------
    def _run_evaluation(self, log: RunLog) -> None:
        self._set_train_mode(False)
        with torch.no_grad():
            results = {k: float(v) for k, v in self.evaluate(self.model).items()}
        self._set_train_mode(True)
        results = dist.broadcast_from_main(results)
        log.write(self.step, {f"eval/{k}": v for k, v in results.items()})
        name = self.config.best_metric
        if name is None:
            return
        if name not in results:
            raise ConfigError(
                f"TrainConfig.best_metric={name!r}: the evaluator returned {sorted(results)}; choose one of those."
            )
        value = results[name]
        if self.best_value is not None:
            better = value > self.best_value if self.config.best_mode == "max" else value < self.best_value
            if not better:
                return
        self.best_value, self.best_step = value, self.step
        if dist.is_main():
            metadata = {"step": str(self.step), "metric": name, "value": repr(value)}
            save_weights(self.out_dir / BEST_FILE, self.model.state_dict(), metadata)

    # ---- checkpoints -------------------------------------------------------------------------------------------
    def _save(self, seconds: float, eval_pending: bool) -> None:
        rngs = dist.gather_to_all(rng_state())  # each process's generators, for an exact resume of every rank
        if not dist.is_main():
            return
        state = {
            "trainer": {
                "step": self.step,
                "max_steps": self.max_steps,
                "epoch": self.data.epoch,
                "consumed": self.data.consumed,  # batches of that epoch already trained on (per process)
                "best_value": self.best_value,
                "best_step": self.best_step,
                "eval_pending": eval_pending,  # the evaluation due at this step was left to the resumed run
                "seconds": seconds,
                "world_size": dist.world_size(),
            },
            "extra_modules": {name: module.state_dict() for name, module in self.extra_modules.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rngs,
            "config": dataclasses.asdict(self.config),
        }
        save_checkpoint(step_dir(self.out_dir, self.step), self.model.state_dict(), state)
        prune_checkpoints(self.out_dir, self.config.keep_checkpoints)

    def _restore(self) -> None:
        """Continue from the newest checkpoint in ``out_dir``, if any; else seed a fresh run (each rank its own
        stream, so that e.g. dropout masks differ between processes)."""
        if dist.is_main():  # damaged checkpoints are set aside once, before any process picks one
            newest_intact_checkpoint(self.out_dir, set_aside=True)
        dist.barrier()
        path = latest_checkpoint(self.out_dir)
        if path is None:
            seed_everything(self.config.seed + dist.rank())
            return
        if not self.config.resume:
            raise ConfigError(
                f"out_dir={str(self.out_dir)!r} already holds a run (checkpoint {path.name}) and resume=False. "
                "Pass resume=True to continue it, or choose an empty out_dir for a new run."
            )
        model_state, state = load_checkpoint(path)
        progress = state["trainer"]
        if progress["max_steps"] != self.max_steps:
            raise ConfigError(
                f"resume from {path}: that run trains for {progress['max_steps']} steps, this config for "
                f"{self.max_steps}; the learning-rate schedule spans the whole run, so resume with the same "
                "max_steps/epochs (and batch size), or start a new run in another out_dir."
            )
        saved_extras, extras = sorted(state["extra_modules"]), sorted(self.extra_modules)
        if saved_extras != extras:
            raise ConfigError(f"resume from {path}: it holds extra modules {saved_extras}, the Trainer has {extras}.")
        self.model.load_state_dict(model_state)
        for name, module in self.extra_modules.items():
            module.load_state_dict(state["extra_modules"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.step = progress["step"]
        self.data.epoch, self.data.consumed = progress["epoch"], progress["consumed"]
        self.best_value, self.best_step = progress["best_value"], progress["best_step"]
        self._eval_pending = progress["eval_pending"]
        self._seconds_before = progress["seconds"]
        if progress["world_size"] == dist.world_size():
            set_rng_state(state["rng"][dist.rank()])
        else:
            warnings.warn(
                f"resume from {path}: written by {progress['world_size']} processes, resumed by "
                f"{dist.world_size()}; the data shards and random streams change, so the run continues but not "
                "exactly as it would have.",
                stacklevel=2,
            )
            seed_everything(self.config.seed + dist.rank() + self.step)

    # ---- helpers -----------------------------------------------------------------------------------------------
    def _param_groups(self, param_groups: ParamGroups | None) -> list[dict[str, Any]]:
        if param_groups is None:
            groups = [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        else:
            groups = [dict(g) for g in (param_groups(self.model) if callable(param_groups) else param_groups)]
        extra = [p for module in self.extra_modules.values() for p in module.parameters() if p.requires_grad]
        if extra:
            # Learned loss weights and the like: decaying them towards zero would bias what they learn.
            groups.append({"params": extra, "weight_decay": 0.0})
        return groups

    def _autocast(self) -> torch.autocast:
        dtype = self._autocast_dtype
        return torch.autocast(self.device.type, dtype=dtype, enabled=dtype is not None)

    def _set_train_mode(self, training: bool) -> None:
        self._train_model.train(training)
        for module in self.extra_modules.values():
            module.train(training)

    def _epoch(self) -> float:
        return self.data.epoch + self.data.consumed / len(self.data)


class _Window:
    """Sums of what the steps report since the last log line: kept on the device (no synchronisation per step) and
    averaged over micro-batches and processes when a line is written."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.loss: Tensor | float = 0.0
        self.grad_norm: Tensor | float | None = None  # stays None when gradients are not clipped
        self.metrics: dict[str, float] = {}
        self.micro_batches = 0
        self.steps = 0
        self.lr = 0.0

    def add_micro_batch(self, loss: Tensor, metrics: Mapping[str, float]) -> None:
        self.loss = self.loss + loss.detach().float()
        for name, value in metrics.items():
            self.metrics[name] = self.metrics.get(name, 0.0) + float(value)
        self.micro_batches += 1

    def add_step(self, lr: float, grad_norm: Tensor | None) -> None:
        self.lr = lr
        if grad_norm is not None:
            self.grad_norm = (0.0 if self.grad_norm is None else self.grad_norm) + grad_norm.detach().float()
        self.steps += 1

    def reduce(self, device: torch.device) -> dict[str, float]:
        """The window's means (loss and metrics per micro-batch, gradient norm per step) over all processes, as
        a log record; then starts a new window."""
        names = sorted(self.metrics)
        values = [self.loss / self.micro_batches, *(self.metrics[n] / self.micro_batches for n in names)]
        if self.grad_norm is not None:
            values.append(self.grad_norm / self.steps)
        stacked = torch.stack([torch.as_tensor(v, dtype=torch.float32, device=device) for v in values])
        means = dist.all_reduce_mean(stacked).tolist()
        record = {"lr": self.lr, "loss": means[0], **dict(zip(names, means[1 : 1 + len(names)]))}
        if self.grad_norm is not None:
            record["grad_norm"] = means[-1]
        if not math.isfinite(record["loss"]):  # (an infinite gradient norm alone is fp16's scaler at work)
            raise FloatingPointError(
                f"training diverged: {record}. Lower lr, keep grad_clip on, or train in fp32 to find the first "
                "non-finite value."
            )
        self._reset()
        return record


@contextlib.contextmanager
def _stop_on_signals(trainer: Trainer) -> Iterator[None]:
    """While training, SIGTERM (cluster pre-emption, ``torchrun`` shutting down) and SIGINT (Ctrl-C) ask the
    trainer to checkpoint and stop after the current step; a second Ctrl-C interrupts at once."""
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set from the main thread
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and trainer._stop_requested:
            raise KeyboardInterrupt
        trainer.request_stop()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"TrainConfig.precision='fp16' on {device}: float16 training (autocast + GradScaler) needs CUDA. On the "
            "CPU use precision='bf16' or 'fp32'."
        )
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"TrainConfig.precision='bf16': {torch.cuda.get_device_name(device)} has no bfloat16 support; use 'fp16'."
        )
    return _AUTOCAST_DTYPES[precision]


def _every(step: int, interval: int) -> bool:
    return interval > 0 and step % interval == 0


