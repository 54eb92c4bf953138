"""The learning-rate schedule of the recipe: OneCycle with linear warm-up and linear decay, stepped per update."""

from __future__ import annotations

import functools

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

# OneCycle's usual ends (torch's OneCycleLR defaults): start at peak / 25, finish at peak / (25 * 1e4).
START_FACTOR = 1 / 25
END_FACTOR = START_FACTOR / 1e4


def one_cycle_factor(step: int, *, total_steps: int, warmup_fraction: float) -> float:
    """The learning rate of update ``step`` (0-based) as a fraction of the peak: linear from ``START_FACTOR`` to 1
    over the first ``warmup_fraction`` of the updates, then linear down to ``END_FACTOR`` at the last one.

    >>> [round(one_cycle_factor(s, total_steps=5, warmup_fraction=0.4), 3) for s in range(5)]
    [0.04, 0.52, 1.0, 0.5, 0.0]
    """
    warmup = warmup_fraction * total_steps
    if step < warmup:
        return START_FACTOR + (1 - START_FACTOR) * step / warmup
    progress = (step - warmup) / max(total_steps - 1 - warmup, 1)
    return 1 + (END_FACTOR - 1) * min(progress, 1.0)


def one_cycle(optimizer: Optimizer, total_steps: int, warmup_fraction: float) -> LambdaLR:
    """The schedule over ``total_steps`` updates; each group's current ``lr`` is its peak. Call ``step()`` after
    every optimizer step. (torch's ``OneCycleLR`` has the same shape but divides by zero when the warm-up is exactly
    one update, as in short test runs.)"""
    factor = functools.partial(one_cycle_factor, total_steps=total_steps, warmup_fraction=warmup_fraction)
    return LambdaLR(optimizer, factor)
