"""One training loop for fine-tuning and pretraining: devices, DDP, mixed precision, gradient accumulation,
checkpoints with exact resume, pre-emption, logging and progress.

A caller brings the model, a ``step_fn(model, batch) -> (loss, metrics)`` and the data; the engine brings the rest::

    from occfeat.data import make_loader
    from occfeat.engine import Trainer, TrainConfig, shutdown_distributed

    def step_fn(model, batch):
        out = model(batch["images"], batch["intrinsics"], batch["cam_to_ego"], batch["bev_aug"])
        loss = segmentation_loss(out, batch)
        return loss, {}  # plus any floats to log

    trainer = Trainer(
        model, step_fn,
        lambda: make_loader(train_set, batch_size=4, shuffle=True, drop_last=True, num_workers=4),
        TrainConfig(out_dir="runs/simplebev", epochs=100, precision="bf16", checkpoint_every=500,
                    eval_every=1000, best_metric="iou_vehicle"),
        evaluate=lambda model: {"iou_vehicle": vehicle_iou(model, val_set)},
    )
    result = trainer.fit()   # resumes from runs/simplebev when it holds a checkpoint
    shutdown_distributed()

The same script runs on one CPU or GPU (``python train.py``), on the GPUs of one machine
(``torchrun --standalone --nproc_per_node 8 train.py``), or on several machines (run on each of them
``torchrun --nnodes 4 --nproc_per_node 8 --rdzv_backend c10d --rdzv_endpoint HOST0:29500 --rdzv_id RUN train.py``).
Under torchrun each process takes ``batch_size`` samples, so the global batch is ``batch_size × processes ×
grad_accum_steps``; ``out_dir`` must be on a file system every machine sees (rank 0 writes, all ranks resume from it).

SIGTERM or SIGINT (a cluster's pre-emption notice, Ctrl-C) finishes the current step, writes a checkpoint and returns
``status="preempted"``; running the same command again continues exactly where it stopped.
"""

from ..io import atomic_write
from .checkpoint import latest_checkpoint, load_checkpoint
from .config import TrainConfig
from .distributed import init_distributed, is_main, rank, shutdown_distributed, world_size
from .rng import seed_everything
from .trainer import Evaluator, ParamGroups, StepFn, Trainer, TrainResult

__all__ = [
    "Evaluator",
    "ParamGroups",
    "StepFn",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "atomic_write",
    "init_distributed",
    "is_main",
    "latest_checkpoint",
    "load_checkpoint",
    "rank",
    "seed_everything",
    "shutdown_distributed",
    "world_size",
]
