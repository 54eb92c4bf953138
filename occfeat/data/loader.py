"""DataLoader helpers: reproducible workers, pinned memory on CUDA, the DDP sampler when a process group is up."""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .nuscenes import collate


def seed_worker(worker_id: int) -> None:
    """Seed numpy and ``random`` in a worker from the seed torch gave it (itself derived from the loader's generator),
    so any randomness outside torch is reproducible too. Per-sample augmentations in ``NuScenesBEV`` are drawn from
    (seed, epoch, index) and do not depend on workers at all."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    num_workers: int = 0,
    seed: int = 0,
    drop_last: bool = False,
    pin_memory: bool | None = None,
) -> DataLoader:
    """A DataLoader over ``dataset`` with occfeat's collate. Under ``torch.distributed`` each rank gets its own shard
    (``DistributedSampler``, seeded; call ``loader.sampler.set_epoch(epoch)`` each epoch). ``pin_memory`` defaults to
    whether CUDA is available. Workers are not persistent: a new epoch's workers must see ``dataset.set_epoch``."""
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if dist.is_available() and dist.is_initialized():
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
        shuffle = False
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        drop_last=drop_last,
        worker_init_fn=seed_worker,
        generator=generator,
    )
