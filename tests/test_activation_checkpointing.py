"""Activation checkpointing (issue 15): the same gradients, with the encoder layers and backbone stages recomputed."""

from __future__ import annotations

import pytest
import torch
import torch.utils.checkpoint

import occfeat

from .conftest import make_batch


@pytest.mark.parametrize("arch", ["bevformer-tiny", "simplebev-tiny"])
def test_checkpointing_gives_the_same_gradients_and_recomputes(arch, monkeypatch):
    model = occfeat.create_model(arch).train()
    batch = make_batch(model.config.image_size, 2)
    calls = []
    original = torch.utils.checkpoint.checkpoint

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.utils.checkpoint, "checkpoint", counting)
    gradients = []
    for enabled in (False, True):
        model.set_activation_checkpointing(enabled)
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)  # the same dropout masks: checkpointing replays the RNG state in backward
        outputs = model(**batch)
        sum(v.square().mean() for v in outputs.values()).backward()
        gradients.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert gradients[0].keys() == gradients[1].keys()
    for name, grad in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], grad, rtol=1e-5, atol=1e-6, msg=name)
    assert calls, "nothing was checkpointed"
    if arch.startswith("bevformer"):
        assert sum(c.__class__.__name__ == "BEVFormerLayer" for c in calls) == model.config.bevformer_layers
    model.set_activation_checkpointing(False)
    with torch.no_grad():  # inference never checkpoints
        calls.clear()
        model(**batch)
    assert not [c for c in calls if c.__class__.__name__ == "BEVFormerLayer"]
