"""occfeat.engine: exact resume, pre-emption, kills during checkpoint writes, DDP equivalence, atomic files, logs.

The runs train a tiny conv net (BatchNorm, dropout) on a deterministic 24-sample set (tests/engine_scripts/).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from occfeat.engine import Trainer, atomic_write, latest_checkpoint, load_checkpoint
from occfeat.engine.checkpoint import STATE_FILE, save_checkpoint
from occfeat.errors import ConfigError, LoadError
from tests.engine_scripts.train_tiny import build

REPO = Path(__file__).resolve().parents[1]
# One thread, here and in the child processes: tiny tensors on a shared machine, and bit-equal results across them.
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


pytestmark = pytest.mark.usefixtures("one_thread")


def assert_same_training_state(a: Trainer, b: Trainer) -> None:
    """Model parameters and buffers, extra modules, optimizer moments and schedule: bit for bit."""
    for modules_a, modules_b in ((a.model, b.model), *zip(a.extra_modules.values(), b.extra_modules.values())):
        state_b = modules_b.state_dict()
        for name, tensor in modules_a.state_dict().items():
            assert torch.equal(tensor, state_b[name]), name
    optim_a, optim_b = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert optim_a["param_groups"] == optim_b["param_groups"]
    for index, moments in optim_a["state"].items():
        for name, tensor in moments.items():
            assert torch.equal(tensor, optim_b["state"][index][name]), f"optimizer state {index}.{name}"
    assert a.scheduler.get_last_lr() == b.scheduler.get_last_lr()


def read_log(out_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl without the wall-clock times."""
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in record.items() if k != "time"} for record in records]


def child(out_dir: Path, config: dict[str, Any], *args: str, **popen: Any) -> subprocess.Popen:
    """``train_tiny`` in a child process, talking over stdin/stdout."""
    command = [sys.executable, "-m", "tests.engine_scripts.train_tiny", str(out_dir), "--config", json.dumps(config)]
    return subprocess.Popen(
        [*command, *args], cwd=REPO, env=CHILD_ENV, text=True,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen,
    )  # fmt: skip


@pytest.mark.parametrize(
    "shuffle, accum, workers",
    [(False, 1, 0), (True, 2, 0), (True, 3, 2)],
    ids=["in-order", "shuffled+accumulation", "shuffled+accumulation+workers,stop-at-epoch-end"],
)
def test_stop_and_resume_is_bit_identical_to_a_straight_run(tmp_path, shuffle, accum, workers):
    settings = dict(
        shuffle=shuffle, grad_accum_steps=accum, num_workers=workers, loss_weight=True,
        checkpoint_every=4, eval_every=5, best_metric="val_loss", best_mode="min",
    )  # fmt: skip
    straight = build(tmp_path / "straight", **settings)
    straight_result = straight.fit()

    first = build(tmp_path / "resumed", stop_at=10, **settings).fit()  # step 10: no periodic checkpoint, an eval
    assert (first.status, first.step, first.checkpoint.name) == ("preempted", 10, "step-00000010")
    with (tmp_path / "resumed" / "metrics.jsonl").open("a") as log:
        log.write('{"step": 11, "lo')  # a line cut short by a kill: the resumed run drops it
    resumed = build(tmp_path / "resumed", **settings)  # a new Trainer (new model, new loader), as after a restart
    result = resumed.fit()

    assert (result.status, result.step, result.steps_run) == ("completed", 20, 10)
    assert_same_training_state(straight, resumed)
    assert (result.best_value, result.best_step) == (straight_result.best_value, straight_result.best_step)
    assert read_log(tmp_path / "resumed") == read_log(tmp_path / "straight")  # same lines: losses, lr, evals


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_leaves_the_previous_one_and_the_run_resumable(tmp_path):
    out, config = tmp_path / "run", {"max_steps": 12, "checkpoint_every": 4}
    proc = child(out, config, "--pause-in-checkpoint", "8")
    assert proc.stdout.readline() == "paused\n", proc.stderr.read()  # step 8: model.safetensors written, not state
    proc.kill()
    proc.wait()

    half_written = next((out / "checkpoints").glob(".step-00000008.tmp-*"))
    assert (half_written / "model.safetensors").is_file() and not (half_written / STATE_FILE).exists()
    assert latest_checkpoint(out).name == "step-00000004"
    _, state = load_checkpoint(latest_checkpoint(out))
    assert state["trainer"]["step"] == 4

    resumed = build(out, **config)
    result = resumed.fit()
    assert (result.status, result.steps_run, result.checkpoint.name) == ("completed", 8, "step-00000012")
    assert not half_written.exists()
    straight = build(tmp_path / "straight", **config)
    straight.fit()
    assert_same_training_state(straight, resumed)


@pytest.mark.slow
@pytest.mark.parametrize(
    "signum, to_group, workers, accum",
    [(signal.SIGTERM, False, 1, 1), (signal.SIGINT, True, 1, 1), (signal.SIGTERM, True, 2, 2)],
    ids=["SIGTERM (scheduler)", "SIGINT to the process group (Ctrl-C), data worker included",
         "SIGTERM to the process group (SLURM pre-emption), two data workers, a batch still to load in the step"],
)
def test_a_signal_finishes_the_step_checkpoints_exits_cleanly_and_the_run_resumes(tmp_path, signum, to_group, workers,
                                                                                  accum):
    # With accumulation the signal arrives in the step's first micro-batch: the step still loads its second one.
    out, config = tmp_path / "run", {"max_steps": 12, "num_workers": workers, "grad_accum_steps": accum}
    proc = child(out, {**config, "pause_at": 6}, start_new_session=True)
    assert proc.stdout.readline() == "paused\n", proc.stderr.read()  # inside step 6
    (os.killpg if to_group else os.kill)(proc.pid, signum)
    stdout, stderr = proc.communicate("\n", timeout=120)  # let step 6 go on

    assert proc.returncode == 0, stderr
    report = json.loads(stdout.splitlines()[-1])
    assert (report["status"], report["step"]) == ("preempted", 6)
    assert latest_checkpoint(out).name == "step-00000006"

    resumed = build(out, **config)
    assert resumed.fit().status == "completed"
    straight = build(tmp_path / "straight", **config)
    straight.fit()
    assert_same_training_state(straight, resumed)


@pytest.mark.slow
def test_two_processes_on_half_batches_match_one_process_on_the_global_batch(tmp_path):
    # In order, so that rank 0's and rank 1's half batches (DistributedSampler: every other sample) make up the
    # single process's batch. No BatchNorm: on the CPU each process normalises over its own half batch
    # (SyncBatchNorm is CUDA-only).
    config = dict(
        max_steps=6, grad_accum_steps=2, log_every=1, shuffle=False, batchnorm=False, loss_weight=True, device="cpu"
    )
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    script = ["-m", "tests.engine_scripts.train_tiny", str(tmp_path / "ddp"), "--config", json.dumps(config)]
    done = subprocess.run([*torchrun, *script], cwd=REPO, env=CHILD_ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]

    single = build(tmp_path / "single", batch_size=8, **config)
    single.fit()

    ddp_model, ddp_state = load_checkpoint(latest_checkpoint(tmp_path / "ddp"))
    assert ddp_state["trainer"]["world_size"] == 2
    ddp_log, single_log = read_log(tmp_path / "ddp"), read_log(tmp_path / "single")
    assert len(ddp_log) == 7  # steps 1..6 (loss, metrics, lr, gradient norm), then the evaluation
    torch.testing.assert_close(ddp_log, single_log, rtol=1e-5, atol=1e-6)
    for name, tensor in single.model.state_dict().items():
        torch.testing.assert_close(ddp_model[name], tensor, rtol=1e-5, atol=1e-6)
    ddp_weight = ddp_state["extra_modules"]["loss_weight"]["log_var"]
    torch.testing.assert_close(ddp_weight, single.extra_modules["loss_weight"].log_var.detach())


def test_run_writes_jsonl_tensorboard_best_weights_and_a_summary_line(tmp_path, capsys):
    pytest.importorskip("tensorboard", reason="TensorBoard logging is optional (TrainConfig.tensorboard=None)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = build(tmp_path, max_steps=4, log_every=2, tensorboard=True, best_metric="val_loss", best_mode="min").fit()

    records = read_log(tmp_path)
    assert [r["step"] for r in records] == [2, 4, 4]  # two training lines, then the final evaluation
    assert {"lr", "loss", "mae", "grad_norm", "epoch"} <= records[0].keys() and "eval/val_loss" in records[2]
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("loss")] == [2, 4]
    assert result.best_weights.name == "best.safetensors" and result.best_step == 4
    assert capsys.readouterr().out.splitlines()[-1] == result.summary()
    assert result.summary().startswith("train: completed 4/4 steps")


def test_atomic_write_leaves_the_old_file_or_none_never_a_partial_one(tmp_path):
    target = tmp_path / "weights.bin"

    def crash(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, crash)
    assert not target.exists()
    atomic_write(target, lambda tmp: tmp.write_bytes(b"complete"))
    with pytest.raises(OSError):
        atomic_write(target, crash)
    assert target.read_bytes() == b"complete"
    assert [p.name for p in tmp_path.iterdir()] == ["weights.bin"]  # no temporary file left behind


class _RunsCodeWhenUnpickled:
    def __reduce__(self):
        return exec, ("raise AssertionError('unpickling the checkpoint ran code')",)


def test_checkpoint_round_trips_and_its_pickled_part_is_read_weights_only(tmp_path):
    state = {"step": 3, "moments": [torch.arange(3.0)], "groups": {0: (0.9, 0.999)}, "rng": (3, (1, 2), None)}
    folder = save_checkpoint(tmp_path / "step-00000003", {"w": torch.ones(2)}, state)
    model_state, loaded = load_checkpoint(folder)
    assert torch.equal(model_state["w"], torch.ones(2)) and torch.equal(loaded["moments"][0], torch.arange(3.0))
    assert (loaded["groups"], loaded["rng"], loaded["step"]) == ({0: (0.9, 0.999)}, (3, (1, 2), None), 3)

    torch.save({"step": _RunsCodeWhenUnpickled()}, folder / STATE_FILE)
    with pytest.raises(LoadError, match="cannot be read") as caught:  # typed, chaining what torch refused
        load_checkpoint(folder)
    assert isinstance(caught.value.__cause__, pickle.UnpicklingError)
    sources = "".join(p.read_text() for p in (REPO / "occfeat" / "engine").glob("*.py"))
    calls = re.findall(r"torch\.load\((.*)\)", sources)
    assert calls and all("weights_only=True" in call for call in calls)


@pytest.mark.parametrize(
    "settings, message",
    [
        (dict(precision="fp16", device="cpu"), "needs CUDA"),
        (dict(max_steps=None), "give exactly one"),
        (dict(epochs=3), "give exactly one"),
        (dict(warmup_fraction=1.0), "warmup_fraction"),
        (dict(with_evaluator=False, best_metric="val_loss"), "needs an evaluator"),
    ],
)
def test_bad_settings_raise_config_errors(tmp_path, settings, message):
    with pytest.raises(ConfigError, match=message):
        build(tmp_path, **settings)


def test_an_unknown_best_metric_and_an_existing_run_with_resume_false_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="evaluator returned \\['val_loss'\\]"):
        build(tmp_path / "a", max_steps=2, best_metric="val_iou").fit()
    build(tmp_path / "b", max_steps=2).fit()
    with pytest.raises(ConfigError, match="resume=False"):
        build(tmp_path / "b", max_steps=2, resume=False).fit()


def test_bf16_autocast_trains_on_cpu(tmp_path):
    result = build(tmp_path, max_steps=2, precision="bf16").fit()
    assert result.status == "completed" and 0 < result.final_loss < 10
