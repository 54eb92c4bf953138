"""The training data as an endless stream of micro-batches that knows its position and can restart from it."""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset

from ..errors import ConfigError


class BatchStream:
    """Micro-batches from ``loader``, epoch after epoch, with the position ``(epoch, consumed)`` (batches already
    taken from that epoch) that a checkpoint records.

    Each epoch's batch order is computed up front from ``(order_seed, epoch)`` alone, by the loader's own batch
    sampler: a ``DistributedSampler`` (``set_epoch``) shards it per rank, a shuffling loader draws it from its
    generator, reseeded here. Starting at a position therefore means dropping the first ``consumed`` batches of that
    order, without loading them. Datasets with a ``set_epoch`` method are told the epoch too (``NuScenesBEV`` draws
    its augmentations from (seed, epoch, index), so a batch is the same whichever worker loads it).

    Each epoch runs through a new DataLoader with ``loader``'s settings, and fresh (non-persistent) workers: a
    persistent worker keeps the copy of the dataset made at the first epoch and would never see ``set_epoch``.
    """

    def __init__(self, loader: DataLoader, order_seed: int):
        if isinstance(loader.dataset, IterableDataset) or loader.batch_sampler is None:
            raise ConfigError(
                "train loader: the engine needs a map-style dataset batched by the loader (batch_size set, "
                "not an IterableDataset), so that it can shard, reorder and resume it. Build it with "
                "occfeat.data.make_loader(dataset, batch_size, ...)."
            )
        if len(loader) == 0:
            raise ConfigError(
                f"train loader: no batches (dataset of {len(loader.dataset)} samples, batch_size={loader.batch_size},"
                f" drop_last={loader.drop_last}). Use a larger dataset or a smaller batch."
            )
        self.loader = loader
        self.order_seed = order_seed
        self.epoch = 0
        self.consumed = 0
        self._batches: Any = None

    def __len__(self) -> int:
        """Batches per epoch (per process)."""
        return len(self.loader)

    def next(self) -> Any:
        """The next micro-batch, moving on to the next epoch when this one is used up."""
        if self._batches is None:
            self._batches = iter(self._epoch_loader())
        batch = next(self._batches, None)
        if batch is None:
            self.epoch, self.consumed = self.epoch + 1, 0
            self._batches = iter(self._epoch_loader())
            batch = next(self._batches)
        self.consumed += 1
        return batch

    def close(self) -> None:
        """Stop the current epoch's workers (they restart at the next ``next``)."""
        self._batches = None

    def _epoch_loader(self) -> DataLoader:
        loader = self.loader
        for owner in (loader.batch_sampler, loader.sampler, loader.dataset):
            if callable(getattr(owner, "set_epoch", None)):
                owner.set_epoch(self.epoch)
        seed = self.order_seed + self.epoch
        # A shuffling sampler draws from the loader's generator, or from torch's global one when it has none: seed
        # both for this draw, then put them back as they were, so that neither the model's randomness nor the
        # loader's seed depends on where the epoch started.
        generator = loader.generator
        saved = generator.get_state() if generator is not None else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            if generator is not None:
                generator.manual_seed(seed)
            order = list(loader.batch_sampler)
        if generator is not None:
            generator.set_state(saved)
        return DataLoader(
            loader.dataset,
            batch_sampler=order[self.consumed :],
            num_workers=loader.num_workers,
            collate_fn=loader.collate_fn,
            pin_memory=loader.pin_memory,
            timeout=loader.timeout,
            worker_init_fn=functools.partial(_init_worker, user_init=loader.worker_init_fn),
            multiprocessing_context=loader.multiprocessing_context,
            generator=torch.Generator().manual_seed(seed),  # worker seeds: a function of the epoch only
            prefetch_factor=loader.prefetch_factor,
        )


def _init_worker(worker_id: int, user_init: Callable[[int], None] | None) -> None:
    """Workers ignore SIGINT and SIGTERM. Ctrl-C and a scheduler's pre-emption notice (SLURM ``--signal=TERM@120``
    signals every process of the job) reach the workers too, and the main process, which handles them, needs its
    workers to finish the current step; with the default SIGTERM action they would die and the step would crash.
    The loader still stops its workers: it sends them its end-of-data sentinel, and a worker whose main process has
    gone exits on its own (torch's worker watchdog); a scheduler's final SIGKILL is not ignorable."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if user_init is not None:
        user_init(worker_id)


def move_to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` (tensors in nested dicts, lists, tuples) with every tensor on ``device``; other values as they
    are. Copies from pinned memory overlap with compute."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=batch.is_pinned())
    if isinstance(batch, dict):
        return {k: move_to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device) for v in batch)
    return batch
