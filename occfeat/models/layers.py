"""Small building blocks shared by the neck, the view transforms, the BEV decoder and the heads."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def conv_norm_act(
    in_channels: int, out_channels: int, kernel_size: int = 3, activation: type[nn.Module] = nn.ReLU
) -> nn.Sequential:
    """k x k conv (no bias: the norm follows) + InstanceNorm + activation; spatial size kept."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.InstanceNorm2d(out_channels),
        activation(),
    )


def dropout_keep_mask(shape: torch.Size | tuple[int, ...], p: float, generator: torch.Generator | None = None) -> Tensor:
    """A CPU boolean mask, each element True with probability 1 - p, independently.

    Drawn as 64 random bits per two elements from torch's CPU generator (so ``torch.manual_seed`` and activation
    checkpointing's RNG replay apply); an element is kept when its 32 bits, read as a signed integer, clear p's
    threshold. p is thereby quantised to a multiple of 2^-32.
    """
    count = 1
    for size in shape:
        count *= size
    words = torch.empty((count + 1) // 2, dtype=torch.int64).random_(-(2**63), None, generator=generator)
    threshold = min(round(p * 2**32), 2**32 - 1) - 2**31  # P(int32 word < threshold) = p
    return (words.view(torch.int32)[:count] >= threshold).view(shape)


class _CPUDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:  # type: ignore[override]
        keep = dropout_keep_mask(x.shape, p)
        ctx.save_for_backward(keep)  # a byte per element, as torch's own dropout keeps
        ctx.scale = 1.0 / (1.0 - p)
        return torch.where(keep, x, 0).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad, 0).mul_(ctx.scale), None


class Dropout(nn.Dropout):
    """``nn.Dropout`` (same arguments, no state) with a faster mask on CPU.

    torch draws a CPU dropout mask one Bernoulli sample at a time: ~7 ns per element here, a fifth of a
    BEVFormer-enb0 training step. ``dropout_keep_mask`` draws the same distribution at ~1 ns per element (see its
    docstring; a different random stream from torch's). In eval, off the CPU (CUDA's fused dropout is fast) and in
    place, this is ``nn.Dropout``.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.inplace or x.device.type != "cpu" or not 0.0 < self.p < 1.0:
            return super().forward(x)
        return _CPUDropout.apply(x, self.p)
