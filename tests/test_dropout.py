"""occfeat's CPU dropout: the distribution, scaling and gradient of nn.Dropout, from a faster mask."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from occfeat.models.layers import Dropout, dropout_keep_mask


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_the_mask_keeps_each_element_with_probability_one_minus_p_independently(p):
    count = 1 << 21
    keep = dropout_keep_mask((count,), p, generator=torch.Generator().manual_seed(0)).double()
    sigma = ((1 - p) * p / count) ** 0.5
    assert abs(keep.mean().item() - (1 - p)) < 5 * sigma
    # Two elements drawn from the same 64-bit word, and neighbouring words, are independent.
    for first, second in ((keep[0::2], keep[1::2]), (keep[1:-1:2], keep[2::2])):
        both = (first * second).mean().item()
        assert abs(both - (1 - p) ** 2) < 5 * (((1 - p) ** 2 * (1 - (1 - p) ** 2)) / first.numel()) ** 0.5


def test_training_output_and_gradient_are_dropout():
    torch.manual_seed(0)
    layer = Dropout(0.25).train()
    x = torch.randn(64, 257, requires_grad=True)  # an odd element count: the last word is half used
    y = layer(x)
    kept = y != 0
    assert 0.6 < kept.float().mean() < 0.9
    torch.testing.assert_close(y[kept], x[kept] / 0.75)
    upstream = torch.randn_like(y)
    (grad,) = torch.autograd.grad(y, x, upstream)
    torch.testing.assert_close(grad, torch.where(kept, upstream / 0.75, 0.0))


def test_seeded_runs_repeat_and_calls_draw_new_masks():
    layer = Dropout(0.5).train()
    x = torch.ones(1000)
    torch.manual_seed(3)
    first, second = layer(x), layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), first)
    assert not torch.equal(first, second)


def test_eval_zero_p_and_in_place_are_nn_dropout():
    x = torch.randn(10, 10)
    assert torch.equal(Dropout(0.3).eval()(x), x)
    assert torch.equal(Dropout(0.0).train()(x), x)
    torch.manual_seed(1)
    expected = nn.Dropout(0.3, inplace=True).train()(x.clone())
    torch.manual_seed(1)
    assert torch.equal(Dropout(0.3, inplace=True).train()(x.clone()), expected)
    assert Dropout(0.3).state_dict() == {}  # no state: checkpoints of nn.Dropout networks load unchanged
