"""Runs in parallel: two one-thread processes against one two-thread process, on the demo's own runs.

``occfeat demo`` (and ``bench/lowdata.py --workers 2``) runs its independent runs in worker processes, each with an
equal share of the threads (``occfeat.demo.run_grid``). This measures what that buys: the same two runs of the demo's
network (``simplebev-lite0-tiny``, the ``cpu-tiny`` recipe), first one after the other in one process with every
thread (the baseline: how the demo ran before), then both at once in two processes with half the threads each.
Each kind of run is timed: an OccFeat pretraining (the stand-in teacher, whose features each run computes and caches) and a fine-tuning from scratch.

    python bench/workers.py                  # 2 threads in all, 30 steps per run
    python bench/workers.py --threads 4 --steps 60

Prints, per kind, the wall time of the pair each way and the ratio (one process / two processes: above 1, the
workers finish the pair sooner). Wall times include each process's start (importing torch, opening the dataroot),
which the demo's pool pays once per worker, not per run: so the ratio here is a lower bound for the demo.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from occfeat.demo import DEFAULT, _FinetuneRun, _Runs


def run_one(kind: str, world: str, out: str, steps: int, seed: int) -> None:
    """One run of ``kind`` in this process (the subprocess side), with its own teacher cache, as each way pays."""
    from occfeat.demo import _finetune_run, _pretraining_run

    settings = dataclasses.replace(DEFAULT, pretrain_steps=steps, finetune_min_steps=steps, finetune_epochs=0.0,
                                   fractions=(1.0,), seeds_per_fraction=(1,))
    runs = _Runs(world, "v1.0-synthetic", settings, out, endpoint="")  # no Hub: scratch runs and pretrainings only
    if kind == "pretraining":
        _pretraining_run(runs, "occfeat", seed, progress=False)
    else:
        _finetune_run(runs, _FinetuneRun(1.0, seed, "scratch", None), None, None)


def pair(kind: str, world: str, out: Path, steps: int, threads: int, parallel: bool) -> float:
    """Wall seconds for two runs of ``kind``: one after the other with ``threads`` threads, or at once with half."""
    def start(index: int, run_threads: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, __file__, "--run", kind, "--world", world, "--steps", str(steps),
                                 "--threads", str(run_threads), "--seed", str(index),
                                 "--out", str(out / f"{kind}-{'parallel' if parallel else 'serial'}-{index}")],
                                stdout=subprocess.DEVNULL)

    started = time.perf_counter()
    if parallel:
        processes = [start(i, max(1, threads // 2)) for i in range(2)]
        codes = [p.wait() for p in processes]
    else:
        codes = [start(i, threads).wait() for i in range(2)]
    if any(codes):
        raise SystemExit(f"a {kind} run failed (exit codes {codes})")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2, help="threads in all (default: 2, this project's CI cores)")
    parser.add_argument("--steps", type=int, default=30, help="optimiser steps per run")
    parser.add_argument("--run", choices=("pretraining", "fine-tuning"), help=argparse.SUPPRESS)
    parser.add_argument("--world", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.run:
        run_one(args.run, args.world, args.out, args.steps, args.seed)
        return
    from occfeat.synthetic import generate_world

    folder = Path(tempfile.mkdtemp(prefix="occfeat-bench-workers-"))
    world = generate_world(folder / "world", scenes=5, samples_per_scene=DEFAULT.samples_per_scene,
                           image_hw=DEFAULT.world_image_hw, semantic_maps=True, progress=False)
    results = {}
    print(f"two runs of {DEFAULT.arch} ({args.steps} steps each, cpu-tiny recipe), {args.threads} threads in all")
    print("| run | one process, one after the other (s) | two processes at once (s) | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for kind in ("fine-tuning", "pretraining"):
        serial = pair(kind, str(world.dataroot), folder, args.steps, args.threads, parallel=False)
        parallel = pair(kind, str(world.dataroot), folder, args.steps, args.threads, parallel=True)
        results[kind] = {"serial_s": serial, "parallel_s": parallel, "ratio": serial / parallel}
        print(f"| {kind} | {serial:.1f} | {parallel:.1f} | {serial / parallel:.2f}x |", flush=True)
    print(json.dumps({"threads": args.threads, "steps": args.steps, **results}))


if __name__ == "__main__":
    main()
