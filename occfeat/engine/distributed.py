"""Processes and devices: the process group from ``torchrun``'s environment, rank helpers, DDP wrapping.

One process per device. ``torchrun`` sets ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and
``MASTER_PORT``; without them a run is a single process and nothing here talks to anyone.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import ConfigError


def launched_by_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (or any launcher that sets its environment)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def is_distributed() -> bool:
    """Whether a process group is up."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """Rank 0: the process that writes files, logs and shows progress."""
    return rank() == 0


def split_global_batch(global_batch: int, samples: int) -> tuple[int, int]:
    """A recipe's global batch -> (processes, samples per process and micro-batch), from ``WORLD_SIZE`` (set by
    torchrun; callable before the process group is up). The per-process batch is capped by the dataset size."""
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    if global_batch % processes:
        raise ConfigError(
            f"batch_size={global_batch} is the global batch: it must divide by the {processes} processes. Pick a "
            f"multiple of {processes}, or launch a number of processes that divides it."
        )
    return processes, min(global_batch // processes, samples)


def resolve_device(device: str) -> torch.device:
    """``"auto"``, ``"cpu"`` or ``"cuda"`` to this process's device (``cuda:LOCAL_RANK`` under torchrun)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                "device='cuda': no CUDA device is visible to this process. Use device='cpu' (or 'auto'), or check "
                "CUDA_VISIBLE_DEVICES and the driver."
            )
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    if device == "cpu":
        return torch.device("cpu")
    raise ConfigError(f"device={device!r}: choose from ['auto', 'cpu', 'cuda'].")


def init_distributed(device: str = "auto") -> torch.device:
    """Resolve this process's device and, under ``torchrun``, join the process group (NCCL on CUDA, gloo on CPU).

    Idempotent: a group that is already up is kept. Returns the device this process trains on.
    """
    resolved = resolve_device(device)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    if launched_by_torchrun() and not is_distributed():
        dist.init_process_group(backend="nccl" if resolved.type == "cuda" else "gloo")
    return resolved


def shutdown_distributed() -> None:
    """Leave the process group, if one is up (call once at the end of a ``torchrun`` script)."""
    if is_distributed():
        dist.destroy_process_group()


def wrap_model(model: nn.Module, device: torch.device, *, find_unused_parameters: bool = False) -> nn.Module:
    """``model`` as the training step should call it: DistributedDataParallel when a process group is up (with
    SyncBatchNorm on CUDA, so batch statistics span the global batch), else ``model`` itself.

    ``model`` must already be on ``device``. SyncBatchNorm has no CPU kernels, so on CPU each process normalises
    with its own batch's statistics.
    """
    if not is_distributed():
        return model
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=find_unused_parameters,
    )


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """The mean of ``tensor`` over processes (``tensor`` itself in a single process)."""
    if not is_distributed():
        return tensor
    tensor = tensor.clone()
    dist.all_reduce(tensor)
    return tensor / world_size()


def any_process(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is set in any process: lets every rank agree to stop when only some got a signal."""
    if not is_distributed():
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every process."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_all(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every process."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_distributed():
        dist.barrier()
