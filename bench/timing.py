"""Timing shared by the benchmark scripts (run as ``python bench/NAME.py``: this folder is on ``sys.path``)."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def paired_seconds(fn: Callable[[], object], reference: Callable[[], float], repeats: int,
                   warmup: int = 1) -> list[tuple[float, float]]:
    """(wall time of ``fn``, ``reference()``) for each of ``repeats`` calls, the reference (e.g. the matmul peak)
    measured just before each call. On a VM whose speed drifts between seconds (a neighbour's load), a ratio of
    the two taken call by call is what stays comparable; a peak measured minutes earlier is not."""
    for _ in range(warmup):
        fn()
    pairs = []
    for _ in range(repeats):
        ref = reference()
        tic = time.perf_counter()
        fn()
        pairs.append((time.perf_counter() - tic, ref))
    return pairs


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, _groups, output_mask, out_shape=None, **kwargs) -> int:
    """A convolution's backward: each of the input and the weight gradient costs what the forward does. torch's own
    formula counts the weight gradient of a grouped convolution as if it were dense, (C + 1) / 2 times too much for a
    depthwise one: with EfficientNet's, torch's count puts a tiny SimpleBEV's backward at 10x its forward instead
    of 2x."""
    forward = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed)
    return forward * (int(output_mask[0]) + int(output_mask[1]))


def count_flops(fn: Callable[[], object]) -> int:
    """Matmul and convolution FLOPs of ``fn()`` (torch's ``FlopCounterMode``, with ``conv_backward_flops``): what
    every benchmark here counts."""
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops}) as c:
        fn()
    return c.get_total_flops()
