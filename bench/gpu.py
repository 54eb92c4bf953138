"""The GPU benchmark: step times, memory and MFU of the paper's two networks, eager and compiled, an OccFeat
pretraining step, and what they mean in GPU-hours for the zoo's recipes. Prepared to run in under 8 minutes:

    python bench/gpu.py                          # one GPU: bevformer-enb0 + simplebev-enb0, bf16, batch 8
    python bench/gpu.py --no-compile --repeats 10
    python bench/gpu.py --dry-run                # the same code on CPU: tiny architectures, batch 1, ~30 s

Measured, per architecture at full size (6 cameras at 224x480, the 200x200 raster, random weights, the nominal
nuScenes rig), under bf16 autocast with float32 weights (the recipes' precision):

- forward (eval, no grad) and training step (forward + fine-tuning loss + backward + AdamW), median of ``--repeats``
  after ``--warmup`` untimed steps; peak memory (``torch.cuda.max_memory_allocated``) of each;
- eager and compiled (``occfeat.models.compile.compile_model``, inductor): the compile is timed on its own (the
  warm-up calls, less as many steps) and never enters the step times; Dynamo's graph count, graph breaks, and whether
  the timed steps recompiled;
- FLOPs counted by ``torch.utils.flop_counter`` as ``bench/models.py`` counts them (matmuls and convolutions only, so
  MFU is a lower bound), with the weight gradient of grouped convolutions counted right (``count_flops``), against
  the dense bf16 matmul peak measured first in the same run (``--peak-size``^3 matmuls, best of 5 loops);
- an OccFeat pretraining step (``OccFeatPretrainer``, mode ``occfeat``) on ray-cast Lidar from a generated world, the
  teacher's features given as cached maps of DINOv2 ViT-S/14's shape (no teacher forward runs), eager;
- projections: GPU-hours of the ``occfeat-nuscenes`` pretraining recipe and of the ``nuscenes-224x480`` fine-tuning
  recipe at 1 % and 100 % of nuScenes train (28,130 key frames), from the measured seconds per sample.

Each measurement runs in its own process with a time limit from ``--budget-s`` (a compile that overruns is recorded
as skipped, the rest still runs); ``--dry-run`` runs them in this process. Writes ``OUT/gpu.json`` and
``OUT/gpu.md`` (``--out``, default ``bench/gpu/``), prints the table and a summary line.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from models import IMAGE_HW
from timing import count_flops, median_seconds

FULL_SIZE = ["bevformer-enb0", "simplebev-enb0"]
TINY = ["bevformer-tiny", "simplebev-tiny"]
NUSCENES_TRAIN_KEY_FRAMES = 28_130
PRETRAIN_RECIPE = "occfeat-nuscenes"
FINETUNE_RECIPE = "nuscenes-224x480"
FINETUNE_FRACTIONS = (0.01, 1.0)
# The pretraining recipe's teacher (DINOv2 ViT-S/14): what a cached feature map of one camera looks like.
TEACHER_PATCH, TEACHER_DIM = 14, 384
DEFAULT_OUT = Path(__file__).resolve().parent / "gpu"


@dataclass(frozen=True)
class Settings:
    """What every measurement of one run shares (handed to child processes as JSON)."""

    device: str
    batch_size: int
    warmup: int
    repeats: int
    autocast: str  # "bf16" or "fp32" (no autocast)
    backend: str  # the compile backend

    @property
    def dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.autocast == "bf16" else None


# ---------------------------------------------------------------------------------------------------------------------
# Measuring


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(settings: Settings) -> torch.autocast:
    device = torch.device(settings.device)
    return torch.autocast(device.type, dtype=settings.dtype or torch.float32, enabled=settings.dtype is not None)


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_gib(device: torch.device) -> float:
    """CUDA: the peak allocated since the last reset; CPU: the process's peak RSS (covers everything run so far)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, loops: int = 5, per_loop: int = 20) -> float:
    """Dense matmul throughput (FLOP/s) of ``n``^3 products in ``dtype``: the best of ``loops`` loops of ``per_loop``
    back-to-back products, timed with one synchronisation per loop (a peak, not a typical figure)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    best = float("inf")
    for _ in range(loops):
        tic = time.perf_counter()
        for _ in range(per_loop):
            a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - tic)
    return 2 * n**3 * per_loop / best


def timed_phase(step: Callable[[], object], settings: Settings, device: torch.device) -> dict[str, float]:
    """``warmup`` untimed calls (a compile happens there: their wall times are kept apart), then the median of
    ``repeats`` calls, the peak memory over all of them, and the graphs Dynamo made during the timed calls."""
    def call() -> None:
        step()
        synchronize(device)

    reset_peak_memory(device)
    warmups = []
    for _ in range(max(settings.warmup, 1)):
        tic = time.perf_counter()
        call()
        warmups.append(time.perf_counter() - tic)
    graphs = dynamo_counts()["graphs"]
    seconds = median_seconds(call, settings.repeats, warmup=0)
    return {"first_s": warmups[0], "warmup_s": sum(warmups), "warmup_calls": len(warmups), "step_s": seconds,
            "peak_memory_gib": peak_memory_gib(device), "graphs_in_timed_steps": dynamo_counts()["graphs"] - graphs}


def dynamo_counts() -> dict[str, int]:
    from torch._dynamo.utils import counters

    return {"graphs": int(counters["stats"]["unique_graphs"]),
            "graph_breaks": int(sum(counters["graph_break"].values()))}


def fine_tuning_labels(config: Any, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Random labels of the heads' shapes (what ``bench/pretrain.py`` trains on): the loss's cost, not its value."""
    h, w = config.grid.shape
    shape = (batch_size, 1, h, w)
    return dict(vehicle=(torch.rand(shape, device=device) > 0.95).float(),
                vehicle_ignore=torch.zeros(shape, device=device),
                center=torch.rand(shape, device=device), offset=torch.randn(batch_size, 2, h, w, device=device),
                map=(torch.rand(batch_size, len(config.map_classes), h, w, device=device) > 0.6).float())


def camera_batch(config: Any, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    from occfeat.models.geometry import nuscenes_camera_rig

    image_hw = tuple(config.image_size)
    intrinsics, cam_to_ego = nuscenes_camera_rig(image_hw)
    n = intrinsics.shape[0]
    return dict(images=torch.randn(batch_size, n, 3, *image_hw, device=device),
                intrinsics=intrinsics.expand(batch_size, -1, -1, -1).to(device),
                cam_to_ego=cam_to_ego.expand(batch_size, -1, -1, -1).to(device),
                bev_aug=torch.eye(4, device=device).expand(batch_size, 4, 4))


def build_network(arch: str) -> Any:
    import occfeat

    torch.manual_seed(0)
    # Full-size architectures at 224x480 (as bench/models.py runs them); the tiny ones at their own size.
    return occfeat.create_model(arch, **({} if arch.endswith("-tiny") else {"image_size": IMAGE_HW}))


def bench_network(arch: str, compiled: bool, settings: Settings) -> dict[str, Any]:
    """Forward and training step of ``arch``, eager or compiled."""
    from occfeat.finetune.losses import SegmentationLoss
    from occfeat.finetune.training import _ModelWithLoss
    from occfeat.models.compile import compile_model, is_compiled

    device = torch.device(settings.device)
    network = build_network(arch).to(device)
    batch = camera_batch(network.config, settings.batch_size, device)
    cameras = {k: batch[k] for k in ("images", "intrinsics", "cam_to_ego", "bev_aug")}
    labelled = {**batch, **fine_tuning_labels(network.config, settings.batch_size, device)}
    # The fine-tuning step as finetune() runs it: the network compiled, the loss (and its logged floats) eager.
    module = _ModelWithLoss(network, SegmentationLoss(network.config.heads)).to(device)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)

    def forward() -> None:
        with torch.no_grad(), autocast(settings):
            network(**cameras)

    def train_step() -> None:
        with autocast(settings):
            loss, _ = module(labelled)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def forward_backward() -> None:
        with autocast(settings):
            loss, _ = module(labelled)
        loss.backward()
        module.zero_grad(set_to_none=True)

    # Counted eagerly (the compiled graphs do the same matmuls), with autograd on: see bench/models.py.
    network.eval()
    with autocast(settings):
        forward_flops = count_flops(lambda: network(**cameras))
    module.train()
    train_flops = count_flops(forward_backward)

    torch._dynamo.reset()
    result: dict[str, Any] = {"arch": arch, "mode": "compiled" if compiled else "eager",
                              "params": sum(p.numel() for p in network.parameters()),
                              "forward_gflops": forward_flops / 1e9, "train_gflops": train_flops / 1e9}
    if compiled:
        compile_model(network, {"backend": settings.backend}, device=device)
        if not is_compiled(network):
            return {**result, "skipped": f"compile backend {settings.backend!r} cannot run here (see the warning)"}
    phases = {}
    for name, step, training in (("forward", forward, False), ("train", train_step, True)):
        module.train(training)
        phases[name] = timed_phase(step, settings, device)
    flops = {"forward": forward_flops, "train": train_flops}
    for name, phase in phases.items():
        result[f"{name}_s"] = phase["step_s"]
        result[f"{name}_first_call_s"] = phase["first_s"]
        result[f"{name}_peak_memory_gib"] = phase["peak_memory_gib"]
        result[f"{name}_flops_per_s"] = flops[name] / phase["step_s"]
        if compiled:  # the warm-up calls' time beyond that many steps: the compile, and any recompile there
            result[f"{name}_compile_s"] = max(phase["warmup_s"] - phase["warmup_calls"] * phase["step_s"], 0.0)
            result[f"{name}_graphs_in_timed_steps"] = phase["graphs_in_timed_steps"]  # > 0: it recompiled there
    if compiled:
        result.update(dynamo_counts())
        result["compiled_still"] = is_compiled(network)  # False: the guarded first call fell back to eager
    return result


def pretraining_batch(config: Any, batch_size: int, device: torch.device) -> dict[str, Any]:
    """``batch_size`` key frames of a generated world at the network's image size and raster, 5 Lidar sweeps each
    (ray-cast, like nuScenes' 32-beam Lidar), with cached-teacher maps of DINOv2 ViT-S/14's shape."""
    from occfeat.data import NuScenesBEV, collate, data_options
    from occfeat.engine.data import move_to_device
    from occfeat.pretrain.teacher import teacher_input_size
    from occfeat.synthetic import generate_world

    root = tempfile.mkdtemp(prefix="occfeat-bench-gpu-")
    world = generate_world(root, scenes=1, samples_per_scene=batch_size + 2, image_hw=(90, 160), seed=0, progress=False)
    data = NuScenesBEV(world.dataroot, world.version, "all", **data_options(config), lidar_sweeps=5, labels=False)
    # From the third key frame on: 5 full sweeps each.
    batch = move_to_device(collate([data[i] for i in range(2, 2 + batch_size)]), device)
    patches = [s // TEACHER_PATCH for s in teacher_input_size(tuple(config.image_size), TEACHER_PATCH)]
    cameras = batch["images"].shape[1]
    batch["teacher_maps"] = torch.randn(batch_size, cameras, TEACHER_DIM, *patches, device=device)
    return batch


def bench_pretraining(arch: str, settings: Settings) -> dict[str, Any]:
    """One OccFeat pretraining step (targets, network, head, loss, backward, AdamW), teacher features given."""
    from occfeat.pretrain import OccFeatPretrainer

    device = torch.device(settings.device)
    network = build_network(arch)
    pretrainer = OccFeatPretrainer(network, mode="occfeat", feature_dim=TEACHER_DIM).to(device).train()
    batch = pretraining_batch(network.config, settings.batch_size, device)
    maps = batch.pop("teacher_maps")
    optimizer = torch.optim.AdamW([p for p in pretrainer.parameters() if p.requires_grad], lr=1e-4)

    def forward_backward() -> None:
        with autocast(settings):
            loss, _ = pretrainer(batch, maps)
        loss.backward()
        pretrainer.zero_grad(set_to_none=True)

    def train_step() -> None:
        with autocast(settings):
            loss, _ = pretrainer(batch, maps)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    flops = count_flops(forward_backward)
    phase = timed_phase(train_step, settings, device)
    return {"arch": arch, "mode": "eager", "train_gflops": flops / 1e9, "train_s": phase["step_s"],
            "train_first_call_s": phase["first_s"], "train_peak_memory_gib": phase["peak_memory_gib"],
            "train_flops_per_s": flops / phase["step_s"], "teacher_maps": list(maps.shape),
            "lidar_points": int(batch["lidar_valid"].sum())}


def run_job(job: dict[str, Any], settings: Settings) -> dict[str, Any]:
    torch.manual_seed(0)
    if job["kind"] == "network":
        return bench_network(job["arch"], job["compiled"], settings)
    return bench_pretraining(job["arch"], settings)


# ---------------------------------------------------------------------------------------------------------------------
# Projections


PROJECTION_ASSUMPTIONS = ("seconds per sample as measured at this per-GPU batch, ideal data-parallel scaling, "
                          "data loading hidden, no evaluation or checkpoints, the teacher's one-time feature pass "
                          "not counted")


def projections(results: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """GPU-hours of the recipes from the measured step times (``PROJECTION_ASSUMPTIONS``)."""
    from occfeat.finetune.recipes import get_recipe as finetune_recipe, schedule_steps
    from occfeat.pretrain.recipes import get_recipe as pretrain_recipe

    b, n = settings.batch_size, NUSCENES_TRAIN_KEY_FRAMES
    pre = pretrain_recipe(PRETRAIN_RECIPE)
    pre_steps = pre.steps(n)
    pre_samples = pre_steps * pre.batch_size * pre.grad_accum_steps
    out: dict[str, Any] = {"assumptions": PROJECTION_ASSUMPTIONS,
                           "per_gpu_batch": b, "train_key_frames": n, "pretraining": {}, "finetuning": {}}
    out["pretraining_recipe"] = {"name": pre.name, "epochs": pre.epochs, "global_batch": pre.batch_size,
                                 "grad_accum_steps": pre.grad_accum_steps, "steps": pre_steps, "samples": pre_samples}
    for arch, row in results["pretraining"].items():
        if "train_s" in row:
            out["pretraining"][arch] = {"eager_gpu_hours": pre_samples * row["train_s"] / b / 3600}
    fine = finetune_recipe(FINETUNE_RECIPE)
    out["finetuning_recipe"] = {"name": fine.name, "epochs": fine.epochs, "min_steps": fine.min_steps,
                                "global_batch": fine.batch_size,
                                "rule": "max(min_steps, ceil(epochs * samples / batch))"}
    for fraction in FINETUNE_FRACTIONS:
        samples = math.ceil(fraction * n)  # occfeat.data.splits rounds a fraction up
        steps = schedule_steps(fine, samples)
        key = f"{fraction:.0%}"
        out["finetuning"][key] = {"labelled_samples": samples, "steps": steps, "step_samples": steps * fine.batch_size}
        for arch, modes in results["models"].items():
            hours = {f"{mode}_gpu_hours": steps * fine.batch_size * row["train_s"] / b / 3600
                     for mode, row in modes.items() if "train_s" in row}
            out["finetuning"][key][arch] = hours
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Report


def markdown(report: dict[str, Any]) -> str:
    meta, lines = report["meta"], []
    dry = " (DRY RUN: tiny architectures on CPU, not benchmark numbers)" if meta["dry_run"] else ""
    precision = "bf16 autocast" if meta["autocast"] == "bf16" else "float32"
    lines.append(f"# bench/gpu.py: {meta['device_name']}, torch {meta['torch']}, {precision}, batch "
                 f"{meta['batch_size']}, dense {meta['autocast']} matmul peak "
                 f"{report['peak']['flops_per_s'] / 1e12:.1f} TFLOP/s{dry}")
    lines += ["", "| architecture | mode | fwd ms | fwd MFU | fwd peak GiB | train step ms | train MFU "
              "| train peak GiB | compile s (fwd / train) | graphs / breaks |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    peak = report["peak"]["flops_per_s"]
    for arch, modes in report["models"].items():
        for mode, r in modes.items():
            if "skipped" in r:
                lines.append(f"| {arch} | {mode} | skipped: {r['skipped']} | | | | | | | |")
                continue
            compile_s = f"{r['forward_compile_s']:.1f} / {r['train_compile_s']:.1f}" if "forward_compile_s" in r else ""
            graphs = f"{r['graphs']} / {r['graph_breaks']}" if "graphs" in r else ""
            lines.append(f"| {arch} | {mode} | {r['forward_s'] * 1e3:.1f} | {r['forward_flops_per_s'] / peak:.1%} "
                         f"| {r['forward_peak_memory_gib']:.2f} | {r['train_s'] * 1e3:.1f} "
                         f"| {r['train_flops_per_s'] / peak:.1%} | {r['train_peak_memory_gib']:.2f} | {compile_s} "
                         f"| {graphs} |")
    lines += ["", "| pretraining step (cached teacher) | ms | MFU | peak GiB | counted GFLOPs |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for arch, r in report["pretraining"].items():
        if "skipped" in r:
            lines.append(f"| {arch} | skipped: {r['skipped']} | | | |")
            continue
        lines.append(f"| {arch} | {r['train_s'] * 1e3:.1f} | {r['train_flops_per_s'] / peak:.1%} "
                     f"| {r['train_peak_memory_gib']:.2f} | {r['train_gflops']:.0f} |")
    p = report["projections"]
    pr = p["pretraining_recipe"]
    lines += ["", f"Projected GPU-hours ({p['assumptions']}; per-GPU batch {p['per_gpu_batch']}):", "",
              "| run | architecture | eager GPU-h | compiled GPU-h |", "| --- | --- | ---: | ---: |"]
    for arch, h in p["pretraining"].items():
        lines.append(f"| pretraining {pr['name']} ({pr['steps']} steps x {pr['global_batch']}, {pr['epochs']:g} epochs "
                     f"of {p['train_key_frames']}) | {arch} | {h['eager_gpu_hours']:.1f} | |")
    for key, row in p["finetuning"].items():
        for arch, h in row.items():
            if isinstance(h, dict):
                compiled = f"{h['compiled_gpu_hours']:.1f}" if "compiled_gpu_hours" in h else ""
                eager = f"{h['eager_gpu_hours']:.1f}" if "eager_gpu_hours" in h else ""
                lines.append(f"| fine-tuning {p['finetuning_recipe']['name']} at {key} ({row['labelled_samples']} "
                             f"samples, {row['steps']} steps) | {arch} | {eager} | {compiled} |")
    return "\n".join(lines) + "\n"


def summary(report: dict[str, Any]) -> str:
    parts = []
    for arch, modes in report["models"].items():
        eager, compiled = modes.get("eager", {}), modes.get("compiled", {})
        text = f"{arch} train step {eager.get('train_s', float('nan')) * 1e3:.0f} ms eager"
        if "train_s" in compiled:
            speedup = f" ({eager['train_s'] / compiled['train_s']:.2f}x)" if "train_s" in eager else ""
            text += f", {compiled['train_s'] * 1e3:.0f} ms compiled{speedup}"
        parts.append(text)
    hours = report["projections"]["pretraining"]
    parts += [f"{report['projections']['pretraining_recipe']['name']} on {arch} ~{h['eager_gpu_hours']:.0f} GPU-h"
              for arch, h in hours.items()]
    meta = report["meta"]
    return (f"bench/gpu.py{' --dry-run' if meta['dry_run'] else ''}: {meta['device_name']}, {meta['autocast']}, batch "
            f"{meta['batch_size']}: " + "; ".join(parts) + f"; done in {meta['wall_s']:.0f} s")


# ---------------------------------------------------------------------------------------------------------------------
# Driver


def run_in_child(job: dict[str, Any], settings: Settings, timeout: float) -> dict[str, Any]:
    command = [sys.executable, __file__, "--job", json.dumps(job), "--settings", json.dumps(asdict(settings))]
    # Its own session, so that a timeout also ends the compile workers inductor starts.
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = child.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.communicate()
        return {"skipped": f"over its time limit of {timeout:.0f} s (--budget-s)"}
    if child.returncode != 0:
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        print(stderr[-4000:], file=sys.stderr)
        return {"skipped": f"failed (exit {child.returncode}): {tail[:200]}"}
    return json.loads(stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny architectures, batch 1, 1 warm-up + 1 step")
    parser.add_argument("--arch", nargs="+", default=None, help=f"default {FULL_SIZE} ({TINY} with --dry-run)")
    parser.add_argument("--batch-size", type=int, default=None, help="per GPU (default 8; 1 with --dry-run)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps, the first included (default 3; 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps (default 5; 1 with --dry-run)")
    parser.add_argument("--compile", dest="compile", action="store_true", default=None,
                        help="also measure compiled (the default on a GPU)")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--backend", default="inductor", help="compile backend (default inductor)")
    parser.add_argument("--bf16", dest="bf16", action="store_true", default=None,
                        help="bf16 autocast (the default on a GPU; the dry run is float32 unless given)")
    parser.add_argument("--peak-size", type=int, default=None, help="matmul side for the peak (8192; 1024 dry run)")
    parser.add_argument("--budget-s", type=float, default=450.0, help="wall-time budget of the measurements")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of a dry run (1: steady on a busy machine)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for gpu.json and gpu.md")
    parser.add_argument("--job", help=argparse.SUPPRESS)  # child mode: one measurement, JSON on stdout
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.job:
        print(json.dumps(run_job(json.loads(args.job), Settings(**json.loads(args.settings)))))
        return 0

    started = time.perf_counter()
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        parser.error("no CUDA device: run on a GPU machine, or pass --dry-run for the CPU rehearsal")
    if dry:
        torch.set_num_threads(args.threads)
    settings = Settings(device="cpu" if dry else "cuda", batch_size=args.batch_size or (1 if dry else 8),
                        warmup=args.warmup or (1 if dry else 3), repeats=args.repeats or (1 if dry else 5),
                        autocast="bf16" if (args.bf16 if args.bf16 is not None else not dry) else "fp32",
                        backend=args.backend)
    archs = args.arch or (TINY if dry else FULL_SIZE)
    from occfeat.models import get_model_config

    for arch in archs:  # a typo fails here, not in every child
        get_model_config(arch)
    compiled = args.compile if args.compile is not None else not dry
    device = torch.device(settings.device)

    peak_dtype = settings.dtype or torch.float32
    peak_size, per_loop = args.peak_size or (1024 if dry else 8192), 5 if dry else 20  # ~1 s on a CPU thread
    peak = matmul_peak(device, peak_dtype, peak_size, per_loop=per_loop)
    print(f"# dense {settings.autocast} matmul peak: {peak / 1e12:.2f} TFLOP/s", flush=True)

    # Eager first, the compiled runs (which may overrun) last, BEVFormer's (graph breaks, most graphs) at the end.
    jobs = [{"kind": "network", "arch": a, "compiled": False} for a in archs]
    jobs += [{"kind": "pretraining", "arch": a} for a in archs]
    jobs += [{"kind": "network", "arch": a, "compiled": True} for a in sorted(archs, key=lambda a: "bevformer" in a)]
    results: dict[str, Any] = {"models": {a: {} for a in archs}, "pretraining": {}}
    for position, job in enumerate(jobs):
        mode = ("compiled" if job["compiled"] else "eager") if "compiled" in job else ""
        label = f"{job['kind']} {job['arch']} {mode}".strip()
        if job.get("compiled") and not compiled:
            result = {"skipped": "not requested (pass --compile)"}
        elif dry:
            result = run_job(job, settings)
        else:
            # Each later job keeps at least a minute, whatever this one does.
            remaining = args.budget_s - (time.perf_counter() - started)
            result = run_in_child(job, settings, timeout=max(30.0, remaining - 60.0 * (len(jobs) - position - 1)))
        if job["kind"] == "network":
            results["models"][job["arch"]]["compiled" if job["compiled"] else "eager"] = result
        else:
            results["pretraining"][job["arch"]] = result
        print(f"# {label}: " + (result["skipped"] if "skipped" in result else
                                f"{result['train_s'] * 1e3:.1f} ms per training step"), flush=True)

    report = {
        "meta": {"torch": torch.__version__, "python": platform.python_version(), "dry_run": dry,
                 "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                                 else f"CPU ({args.threads} thread{'s' if args.threads != 1 else ''})"),
                 "command": " ".join(["python", "bench/gpu.py", *(sys.argv[1:] if argv is None else argv)]),
                 **asdict(settings), "image_size": "the architectures' own" if dry else list(IMAGE_HW),
                 "flops": "torch.utils.flop_counter: matmuls and convolutions only (MFU is a lower bound)",
                 "peak_memory": "torch.cuda.max_memory_allocated" if device.type == "cuda" else "process peak RSS"},
        "peak": {"dtype": str(peak_dtype).removeprefix("torch."), "flops_per_s": peak,
                 "method": f"best of 5 loops of {per_loop} dense {peak_size}^3 matmuls"},
        **results,
    }
    report["projections"] = projections(results, settings)
    report["meta"]["wall_s"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu.json").write_text(json.dumps(report, indent=2) + "\n")
    table = markdown(report)
    (args.out / "gpu.md").write_text(table)
    print(table)
    print(summary(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
