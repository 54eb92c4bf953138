"""Fine-tuning parts: the segmentation loss, the dataset-level IoU meter (also across gloo ranks), freezing with the
three BatchNorm behaviours, and optimizer parameter groups."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from occfeat.errors import ConfigError
from occfeat.finetune import LOSS_COEFFICIENTS, IoUMeter, SegmentationLoss, freeze, param_groups, unfreeze
from occfeat.models import BEVGrid, BEVModel, create_model
from .conftest import make_batch

MAP_CLASSES = ("drivable_area", "walkway")
IMAGE_HW = (32, 64)


pytestmark = pytest.mark.usefixtures("one_thread")


def labelled_batch(seed: int, batch_size: int = 2, size: int = 8) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """(outputs, batch): random head outputs and labels shaped like the model's, vehicles partly ignored."""
    g = torch.Generator().manual_seed(seed)

    def rand(channels: int) -> Tensor:
        return torch.rand(batch_size, channels, size, size, generator=g)

    def randn(channels: int) -> Tensor:
        return torch.randn(batch_size, channels, size, size, generator=g)

    vehicle = (rand(1) < 0.4).float()
    ignore = vehicle * (rand(1) < 0.4).float()
    map_ = (rand(len(MAP_CLASSES)) < 0.5).float()
    batch = {"vehicle": vehicle, "vehicle_ignore": ignore, "map": map_, "center": rand(1)}
    batch["offset"] = 3 * randn(2) * vehicle  # targets in cells, valid on vehicle cells
    # Logits leaning towards the truth, so that the IoUs are neither 0 nor 1.
    outputs = {"vehicle": randn(1) + 2 * vehicle - 1, "map": randn(len(MAP_CLASSES)) + 2 * map_ - 1}
    outputs.update(center=randn(1), offset=randn(2))
    return outputs, batch


# ----------------------------------------------------------------------------------------------------- IoU meter


def numpy_dataset_iou(pairs: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> float:
    """Reference: TP / FP / FN summed over every (logits, target, valid) pair, threshold 0.5 on the sigmoid."""
    tp = fp = fn = 0
    for logits, target, valid in pairs:
        pred = 1.0 / (1.0 + np.exp(-logits.astype(np.float64))) > 0.5
        truth, keep = target > 0.5, valid > 0.5
        tp += int((pred & truth & keep).sum())
        fp += int((pred & ~truth & keep).sum())
        fn += int((~pred & truth & keep).sum())
    return tp / (tp + fp + fn)


def test_iou_meter_equals_dataset_level_numpy_reference_over_batches():
    meter = IoUMeter(MAP_CLASSES)
    batches = [labelled_batch(seed, size=16) for seed in range(4)]
    for outputs, batch in batches:
        meter.update(outputs, batch)

    def pairs(key: str, channel: int, valid: str | None) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return [
            (
                o[key][:, channel].numpy(),
                b[key][:, channel].numpy(),
                (1 - b[valid][:, 0]).numpy() if valid else np.ones_like(b[key][:, channel].numpy()),
            )
            for o, b in batches
        ]

    expected = {
        "vehicle_iou": numpy_dataset_iou(pairs("vehicle", 0, "vehicle_ignore")),
        "vehicle_iou_nofilter": numpy_dataset_iou(pairs("vehicle", 0, None)),
        **{f"map_iou/{c}": numpy_dataset_iou(pairs("map", k, None)) for k, c in enumerate(MAP_CLASSES)},
    }
    assert meter.compute() == expected  # both are ratios of the same integers
    assert expected["vehicle_iou"] != expected["vehicle_iou_nofilter"]

    restored = IoUMeter(MAP_CLASSES)
    restored.load_state_dict(meter.state_dict())
    assert restored.compute() == expected
    meter.reset()
    assert meter.compute() == {}


def test_iou_meter_reports_only_the_heads_it_saw_and_rejects_other_map_classes():
    outputs, batch = labelled_batch(0)
    meter = IoUMeter(MAP_CLASSES)
    meter.update({"vehicle": outputs["vehicle"]}, batch)
    assert set(meter.compute()) == {"vehicle_iou", "vehicle_iou_nofilter"}
    with pytest.raises(ConfigError, match="map classes|map_classes"):
        IoUMeter(("drivable_area",)).load_state_dict(meter.state_dict())
    with pytest.raises(ValueError, match="map classes"):
        IoUMeter(("drivable_area",)).update(outputs, batch)


def _all_reduce_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        meter = IoUMeter(MAP_CLASSES)
        for seed in range(rank, 6, world_size):  # this rank's shard of the 6 batches
            meter.update(*labelled_batch(seed, size=16))
        torch.save(meter.all_reduce().state_dict(), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_iou_meter_all_reduce_over_two_gloo_ranks_equals_one_process_exactly(tmp_path):
    mp.spawn(_all_reduce_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2, join=True)

    single = IoUMeter(MAP_CLASSES)
    for seed in range(6):
        single.update(*labelled_batch(seed, size=16))
    for rank in range(2):
        reduced = IoUMeter(MAP_CLASSES)
        reduced.load_state_dict(torch.load(tmp_path / f"rank{rank}.pt", weights_only=True))
        assert torch.equal(reduced.counts, single.counts)
        assert reduced.compute() == single.compute()


# ----------------------------------------------------------------------------------------------------------- loss


def test_vehicle_loss_ignores_cells_of_filtered_vehicles_only_with_the_filter_on():
    outputs, batch = labelled_batch(0)
    ignored = batch["vehicle_ignore"].bool()
    assert ignored.any()
    moved_ignored = {**outputs, "vehicle": torch.where(ignored, outputs["vehicle"] + 5, outputs["vehicle"])}
    moved_valid = {**outputs, "vehicle": torch.where(ignored, outputs["vehicle"], outputs["vehicle"] + 5)}

    def vehicle_term(loss: SegmentationLoss, out: dict[str, Tensor]) -> float:
        return loss(out, batch)[1]["loss/vehicle"]

    on, off = SegmentationLoss(), SegmentationLoss(visibility_filter=False)
    assert vehicle_term(on, moved_ignored) == vehicle_term(on, outputs)
    assert vehicle_term(on, moved_valid) != vehicle_term(on, outputs)
    assert vehicle_term(off, moved_ignored) != vehicle_term(off, outputs)


def test_offset_loss_counts_vehicle_cells_only():
    outputs, batch = labelled_batch(0)
    loss = SegmentationLoss(visibility_filter=False)
    vehicle = batch["vehicle"].bool()
    off_vehicles = {**outputs, "offset": torch.where(vehicle, outputs["offset"], outputs["offset"] + 7)}
    on_vehicles = {**outputs, "offset": torch.where(vehicle, outputs["offset"] + 7, outputs["offset"])}
    base = loss(outputs, batch)[1]["loss/offset"]
    assert loss(off_vehicles, batch)[1]["loss/offset"] == base
    assert loss(on_vehicles, batch)[1]["loss/offset"] != base

    empty = {**batch, "vehicle": torch.zeros_like(batch["vehicle"]), "vehicle_ignore": torch.zeros_like(vehicle)}
    assert loss(outputs, empty)[1]["loss/offset"] == 0.0


def test_loss_total_equals_uncertainty_weighted_sum_of_hand_computed_terms():
    outputs, batch = labelled_batch(1)
    loss = SegmentationLoss(map_pos_weight=1.5)
    w = {"vehicle": 0.3, "map": -0.2, "center": 0.1, "offset": 0.5}
    with torch.no_grad():
        for head, value in w.items():
            loss.uncertainty[head].fill_(value)
    total, logs = loss(outputs, batch)

    o = {k: v.double().numpy() for k, v in outputs.items()}
    b = {k: v.double().numpy() for k, v in batch.items()}

    def bce(x: np.ndarray, y: np.ndarray, pos_weight: float) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-x))
        return -(pos_weight * y * np.log(p) + (1 - y) * np.log(1 - p))

    valid = 1 - b["vehicle_ignore"]
    visible = b["vehicle"] * valid
    terms = {
        "vehicle": (bce(o["vehicle"], visible, 2.13) * valid).sum() / valid.sum(),
        "map": bce(o["map"], b["map"], 1.5).mean(),
        "center": ((1.0 / (1.0 + np.exp(-o["center"])) - b["center"]) ** 2).mean(),
        "offset": (np.abs(o["offset"] - b["offset"]).sum(1, keepdims=True) * visible).sum() / visible.sum(),
    }
    expected = sum(LOSS_COEFFICIENTS[h] * np.exp(-w[h]) * terms[h] + 0.5 * w[h] for h in terms)
    assert LOSS_COEFFICIENTS == {"vehicle": 10.0, "map": 10.0, "center": 0.5, "offset": 0.5}
    for head, value in terms.items():
        assert logs[f"loss/{head}"] == pytest.approx(value, rel=1e-5)
        assert logs[f"uncertainty/{head}"] == pytest.approx(w[head])
    assert total.item() == pytest.approx(expected, rel=1e-5)
    assert logs["loss/total"] == pytest.approx(expected, rel=1e-5)


def test_uncertainty_weights_are_parameters_that_receive_gradients():
    outputs, batch = labelled_batch(0)
    loss = SegmentationLoss()
    assert len(list(loss.parameters())) == 4
    total, _ = loss({k: v.requires_grad_() for k, v in outputs.items()}, batch)
    total.backward()
    for head, weight in loss.uncertainty.items():
        assert weight.grad is not None and weight.grad.item() != 0.0, head


def test_loss_uses_only_the_heads_present_in_the_outputs():
    outputs, batch = labelled_batch(0)
    total, logs = SegmentationLoss()({"vehicle": outputs["vehicle"]}, batch)
    assert set(logs) == {"loss/vehicle", "uncertainty/vehicle", "loss/total"}
    assert total.item() == pytest.approx(10.0 * logs["loss/vehicle"])


# ------------------------------------------------------------------------------------------------------- freezing


def tiny_model(arch: str = "simplebev-tiny") -> BEVModel:
    """The tiny architecture at 32x64 images on a 16x16 raster: a training step takes ~0.1 s on 2 cores."""
    grid = BEVGrid(x_range=(-32.0, 32.0), y_range=(-32.0, 32.0), resolution=4.0)
    return create_model(arch, image_size=IMAGE_HW, grid=grid)


def snapshot(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def unchanged(before: dict[str, Tensor], module: nn.Module) -> bool:
    return all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def train_steps(model: BEVModel, steps: int = 3) -> None:
    """A few SGD steps in train mode on random images, on the trainable parameters only."""
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(steps):
        outputs = model(**make_batch(IMAGE_HW, batch_size=2))
        torch.stack([o.float().pow(2).mean() for o in outputs.values()]).sum().backward()
        optimizer.step()
        optimizer.zero_grad()


def batch_norm_stats(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items() if "running_" in k}


def test_freeze_eval_keeps_frozen_batchnorm_and_weights_bit_identical_through_model_train():
    model = tiny_model()
    freeze(model, ("backbone", "neck"), bn="eval")
    frozen_before = {part: snapshot(getattr(model, part)) for part in ("backbone", "neck")}
    decoder_stats, heads_before = batch_norm_stats(model.decoder), snapshot(model.heads)

    train_steps(model)

    assert all(unchanged(frozen_before[part], getattr(model, part)) for part in ("backbone", "neck"))
    assert not any(m.training for m in model.backbone.modules() if isinstance(m, _BatchNorm))
    assert not unchanged(heads_before, model.heads)
    assert all(not torch.equal(v, model.decoder.state_dict()[k]) for k, v in decoder_stats.items())


def test_freeze_train_mode_updates_batchnorm_statistics_but_not_weights():
    model = tiny_model()
    freeze(model, "backbone", bn="train")
    stats = batch_norm_stats(model.backbone)
    weights = {k: v.detach().clone() for k, v in model.backbone.named_parameters()}

    train_steps(model, steps=1)

    assert all(not torch.equal(v, model.backbone.state_dict()[k]) for k, v in stats.items())
    assert all(torch.equal(v, dict(model.backbone.named_parameters())[k]) for k, v in weights.items())


def test_freeze_frozen_swaps_batchnorm_for_equivalent_frozen_layers_and_unfreeze_restores_them():
    model = tiny_model().eval()
    inputs = make_batch(IMAGE_HW, batch_size=1)
    with torch.no_grad():
        reference = model(**inputs)["vehicle"]
    freeze(model, "backbone", bn="frozen")
    assert not any(isinstance(m, _BatchNorm) for m in model.backbone.modules())
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs)["vehicle"], reference, rtol=1e-4, atol=1e-4)
    before = snapshot(model.backbone)

    train_steps(model, steps=1)

    assert unchanged(before, model.backbone)
    unfreeze(model, "backbone")
    assert all(p.requires_grad for p in model.backbone.parameters())
    assert sum(isinstance(m, _BatchNorm) for m in model.backbone.modules()) == len(
        [k for k in before if k.endswith("running_mean")]
    )


def test_unfreeze_after_eval_freeze_lets_batchnorm_train_again():
    model = tiny_model()
    freeze(model, "backbone", bn="eval")
    unfreeze(model, "backbone")
    stats = batch_norm_stats(model.backbone)
    train_steps(model, steps=1)
    assert all(not torch.equal(v, model.backbone.state_dict()[k]) for k, v in stats.items())


def test_freeze_rejects_unknown_parts_and_modes():
    model = tiny_model()
    with pytest.raises(ConfigError, match="backbone"):
        freeze(model, ["bakbone"])
    with pytest.raises(ConfigError, match="eval"):
        freeze(model, ["backbone"], bn="sync")


# ------------------------------------------------------------------------------------------------- param groups


def test_param_groups_cover_every_trainable_parameter_once_with_part_learning_rates():
    model, loss = tiny_model("bevformer-tiny"), SegmentationLoss()
    freeze(model, "neck")
    multipliers = {"backbone": 0.1, "heads": 2.0}
    optimizer = torch.optim.AdamW(
        param_groups(model, 1e-3, part_lr_mult=multipliers, extra_modules={"loss": loss}, weight_decay=0.05)
    )

    grouped = [id(p) for group in optimizer.param_groups for p in group["params"]]
    trainable = [id(p) for p in [*model.parameters(), *loss.parameters()] if p.requires_grad]
    assert len(grouped) == len(set(grouped)) and set(grouped) == set(trainable)
    parts = {group["name"].split("/")[0] for group in optimizer.param_groups}
    assert parts == {"backbone", "view_transform", "heads", "loss"}  # neck frozen, decoder is an identity
    for group in optimizer.param_groups:
        part = group["name"].split("/")[0]
        assert group["lr"] == pytest.approx(1e-3 * multipliers.get(part, 1.0)), group["name"]


def test_param_groups_exempt_biases_norms_embeddings_and_queries_from_weight_decay():
    model, loss = tiny_model("bevformer-tiny"), SegmentationLoss()
    names = {id(p): n for n, p in [*model.named_parameters(), *loss.named_parameters(prefix="loss")]}
    decayed: set[str] = set()
    for group in param_groups(model, 1e-3, weight_decay=0.05, extra_modules={"loss": loss}):
        assert group["weight_decay"] == (0.05 if group["name"].endswith("/decay") else 0.0)
        if group["weight_decay"]:
            decayed |= {names[id(p)] for p in group["params"]}
    assert decayed and all(model.get_parameter(n).ndim > 1 for n in decayed)
    for never in ("bias", "norm", "bn", "queries", "embed", "loss."):
        assert not any(never in n for n in decayed), never
    assert "view_transform.layers.0.ffn.0.weight" in decayed


def test_param_groups_raise_naming_a_trainable_parameter_no_rule_covers():
    model = tiny_model()
    model.criterion = SegmentationLoss()  # the loss's weights sneaked into the model, outside its parts
    with pytest.raises(ConfigError, match=r"criterion\.uncertainty\.vehicle"):
        param_groups(model, 1e-3)
    assert param_groups(model, 1e-3, extra_modules={"criterion": model.criterion})

    with pytest.raises(ConfigError, match="covered twice"):
        param_groups(model, 1e-3, extra_modules={"criterion": model.criterion, "heads_again": model.heads})
    with pytest.raises(ConfigError, match="part_lr_mult"):
        param_groups(model, 1e-3, part_lr_mult={"backbon": 0.1}, extra_modules={"criterion": model.criterion})
