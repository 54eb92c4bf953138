"""``occfeat demo`` and ``bench/lowdata.py``: OccFeat's low-data claim, end to end, on a generated world.

The paper: pretrain on every train frame without labels, fine-tune on 1 % of them, and OccFeat beats occupancy-only
pretraining, which beats no pretraining. The miniature keeps that design:

1. ``occfeat.synthetic`` writes a nuScenes-format dataroot (the real nuscenes-devkit reads it) whose train
   scenes are the unlabelled pretraining pool and whose held-out scenes (several towns) are the evaluation split,
   fixed for every run. The labelled subsets are nested, seeded fractions of the train split, so the pool is
   ``1 / fraction`` times the labelled set (10x and more).
2. The tiny architecture, its backbone initialised from ImageNet (EfficientNet-Lite0's packaged weights, for every
   initialisation, scratch included, as in the paper), is pretrained without labels once per initialisation and
   pretraining seed: occupancy only (the paper's ablation), OccFeat with the **stand-in teacher**
   (``synthetic-semantic``: features made from the renderer's class and instance maps and the image's colours,
   what DINOv2 is to real images; a stand-in, not OccFeat's teacher), and OccFeat with a
   random-weight ViT-S/14 (what distillation gives without a semantic teacher). DINOv2 itself joins as
   ``occfeat-dinov2`` where its weights exist (``ComparisonSettings.dinov2_weights``).
3. Each pretrained network is exported (``save_pretrained``), pushed to a Hub repository served on loopback by
   ``occfeat.testing.HubServer``, registered from a user registry file, and loaded back by name (the zoo path).
4. Every initialisation is fine-tuned at every fraction with the same seeds, crossed with the pretraining seeds: a
   seed fixes the labelled subset, the fresh heads and the data order, so the differences per seed are paired, and
   the intervals hold the pretraining seeds' variance too (``crossed_interval``). Schedules follow the recipe's epochs
   rule (``schedule_steps``): more labels never get fewer updates. The final weights are evaluated (no model
   selection on the held-out split).
5. ``results.json`` (every run's own numbers and the settings), the tables (mean ± std per cell, paired differences
   with a 95 % t interval over seeds) and a chart.

The runs are independent but for one order (a fine-tuning run starts from its pretraining), so ``run_grid`` runs
them in worker processes, two at a time by default. ``run_demo`` is one seed of a smaller comparison, with a report;
``bench/lowdata.py`` runs the benchmark.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import math
import multiprocessing
import os
import shutil
import statistics
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .progress import progress_bar

from .errors import ConfigError, WorkerError
from .models.load_report import describe_backbone_init
from .pretrain.teacher import DEFAULT_TEACHER, STAND_IN_TEACHER

# The pretrainings a fine-tuning run can start from (besides "scratch"): the pretraining mode and teacher of each.
PRETRAININGS: dict[str, dict[str, str]] = {
    "occupancy": {"mode": "occupancy"},
    "occfeat": {"mode": "occfeat", "teacher": STAND_IN_TEACHER},
    "occfeat-random-teacher": {"mode": "occfeat", "teacher": DEFAULT_TEACHER, "teacher_weights": "random"},
    "occfeat-dinov2": {"mode": "occfeat", "teacher": DEFAULT_TEACHER},  # weights: ComparisonSettings.dinov2_weights
}
INITS = ("scratch", *PRETRAININGS)  # how the network starts fine-tuning
INIT_LABELS = {
    "scratch": "no pretraining",
    "occupancy": "occupancy only",
    "occfeat": "OccFeat, stand-in teacher",
    "occfeat-random-teacher": "OccFeat, random-weight teacher",
    "occfeat-dinov2": "OccFeat, DINOv2 teacher",
}
INIT_COLOURS = {"scratch": "#9e9e9e", "occupancy": "#4c8cbf", "occfeat": "#e07b39",
                "occfeat-random-teacher": "#c9a13b", "occfeat-dinov2": "#7b4ea3"}
# The paired differences reported: (initialisation, baseline). Together they separate what occupancy pretraining,
# distillation and the teacher's semantics each contribute.
COMPARISONS = (
    ("occupancy", "scratch"),
    ("occfeat", "scratch"),
    ("occfeat", "occupancy"),
    ("occfeat", "occfeat-random-teacher"),
    ("occfeat-random-teacher", "occupancy"),
    ("occfeat-dinov2", "occupancy"),
)
METRICS = {"vehicle_iou": "vehicle IoU", "map_iou/drivable_area": "drivable-area IoU"}
STAND_IN_NOTE = (f"`{STAND_IN_TEACHER}` is a stand-in for DINOv2 on generated worlds (features made from the "
                 "renderer's class and instance maps and the image's colours), not OccFeat's teacher")


@dataclass(frozen=True)
class ComparisonSettings:
    """One comparison: the world, the initialisations, the pretraining length, the fractions, seeds and schedule."""

    arch: str = "simplebev-lite0-tiny"
    # Every initialisation, scratch included, starts from ImageNet weights (the paper's regime): the Lite0 backbone's
    # packaged weights (occfeat[imagenet]). False: random backbones (the earlier regime).
    pretrained_backbone: bool = True
    scenes: int = 25  # the world's last 20 % of scenes (2 per town) are the held-out split
    samples_per_scene: int = 12
    world_image_hw: tuple[int, int] = (144, 256)
    world_seed: int = 0
    inits: tuple[str, ...] = ("scratch", "occupancy", "occfeat", "occfeat-random-teacher")
    pretrain_steps: int = 400
    fractions: tuple[float, ...] = (0.02, 0.1)  # of the train split, which is also the unlabelled pool
    seeds_per_fraction: tuple[int, ...] = (5, 3)  # fine-tuning seeds first_seed, first_seed + 1, ... per fraction
    first_seed: int = 0  # also the first pretraining seed, unless first_pretraining_seed says otherwise
    # Pretraining runs per pretrained initialisation (seeds first_seed, first_seed + 1, ...), crossed with the
    # fine-tuning seeds: the paired intervals then hold both sources of variance.
    pretraining_seeds: int = 1
    # None: first_seed. Set it to run later pretraining seeds as a separate part of a benchmark, merged afterwards
    # (bench/lowdata.py --merge-with).
    first_pretraining_seed: int | None = None
    pretrain_eval_every: int = 0  # held-out occupancy IoU and feature cosine every N steps (the curves); 0: at the end
    # The fine-tuning schedule: the recipe's rule, max(min_steps, ceil(epochs * labelled samples / batch)).
    finetune_epochs: float = 20.0
    finetune_min_steps: int = 100
    val_samples: int | None = None  # None: every held-out key frame
    pretrain_val_samples: int | None = 12  # the pretraining's held-out occupancy IoU (a diagnostic only)
    dinov2_weights: str | None = None  # "hub" | "auto" | a DINOv2 .safetensors, for the "occfeat-dinov2" init
    # Pretraining recipe fields changed for every pretraining (ablations: ("lambda_feat", 0.25), ("pos_weight", 1.0)).
    pretrain_overrides: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        unknown = [i for i in self.inits if i not in INITS]
        if unknown or len(set(self.inits)) != len(self.inits) or not self.inits:
            raise ConfigError(f"ComparisonSettings: inits {self.inits} (unknown {unknown}); choose from {INITS}.")
        if "occfeat-dinov2" in self.inits and not self.dinov2_weights:
            raise ConfigError("ComparisonSettings: the 'occfeat-dinov2' init needs dinov2_weights= (a DINOv2 "
                              ".safetensors file, or 'hub' where huggingface.co is reachable).")
        if len(self.seeds_per_fraction) != len(self.fractions) or min(self.seeds_per_fraction, default=0) < 1:
            raise ConfigError(f"ComparisonSettings: seeds_per_fraction {self.seeds_per_fraction} needs one count "
                              f">= 1 per fraction {self.fractions}.")
        if self.pretraining_seeds < 1:
            raise ConfigError(f"ComparisonSettings: pretraining_seeds={self.pretraining_seeds}; at least 1.")
        if list(self.fractions) != sorted(set(self.fractions)) or not all(0 < f <= 1 for f in self.fractions):
            raise ConfigError(f"ComparisonSettings: fractions {self.fractions} must be increasing, in (0, 1].")
        from .pretrain.recipes import get_recipe

        get_recipe("cpu-tiny", **dict(self.pretrain_overrides))  # a misspelt override fails before the world is made

    def pretrain_seeds(self) -> list[int]:
        first = self.first_seed if self.first_pretraining_seed is None else self.first_pretraining_seed
        return list(range(first, first + self.pretraining_seeds))

    def backbone_options(self) -> dict[str, Any]:
        """The load options every initialisation is built with (the ImageNet backbone, or nothing)."""
        return {"pretrained_backbone": True} if self.pretrained_backbone else {}

    def seeds(self, fraction: float) -> list[int]:
        """The fine-tuning seeds at ``fraction``."""
        count = self.seeds_per_fraction[self.fractions.index(fraction)]
        return list(range(self.first_seed, self.first_seed + count))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# bench/lowdata.py. 3,200 pretraining steps (26.7 passes over the pool, the paper's 24 epochs): the length at which
# held-out occupancy IoU and feature cosine have levelled off (bench/lowdata/length; the 800-step benchmark that came
# before is bench/lowdata/800-steps).
BENCHMARK = ComparisonSettings(inits=("scratch", "occupancy", "occfeat"), pretrain_steps=3200, pretraining_seeds=2,
                               pretrain_eval_every=400)
# The demo: one seed, one fraction, a smaller world and shorter schedules, so that `make demo` fits 15 minutes on
# 2 CPU cores. Its 180 pretraining steps use λ = 0.25: at that length λ = 1 leaves OccFeat's head behind
# occupancy-only's on occupancy; λ = 0.25 keeps pace, and after 800 steps (the earlier benchmark's length) it fine-tunes like λ = 1
# (bench/RESULTS.md, "Paired ablations" and "`make demo`").
DEFAULT = ComparisonSettings(scenes=15, samples_per_scene=8, inits=("scratch", "occupancy", "occfeat"),
                             pretrain_steps=180, fractions=(0.05,), seeds_per_fraction=(1,),
                             finetune_min_steps=60, pretrain_val_samples=6, pretrain_overrides=(("lambda_feat", 0.25),))
QUICK = ComparisonSettings(scenes=5, samples_per_scene=4, world_image_hw=(90, 160), inits=("scratch", "occupancy", "occfeat"),
                           pretrain_steps=20, fractions=(0.25, 1.0), seeds_per_fraction=(1, 1), finetune_epochs=2.0,
                           finetune_min_steps=12, pretrain_val_samples=4)


def _world(settings: ComparisonSettings, root: Path, progress: bool) -> Any:
    from .synthetic import generate_world

    # semantic_maps: the stand-in teacher's input, side-car files outside the nuScenes tables.
    return generate_world(root, scenes=settings.scenes, samples_per_scene=settings.samples_per_scene,
                          image_hw=settings.world_image_hw, seed=settings.world_seed, semantic_maps=True,
                          overwrite=True, progress=progress)


def world_split(world: Any, settings: ComparisonSettings) -> dict[str, Any]:
    """The pool / labelled / held-out sizes of a comparison (what the design promises, measured on the world)."""
    pool = len(world.train_scenes) * settings.samples_per_scene
    labelled = {f"{f:g}": math.ceil(f * pool) for f in settings.fractions}
    return {"pool_samples": pool, "labelled_samples": labelled, "pool_to_largest_labelled": pool / max(labelled.values()),
            "val_samples": len(world.val_scenes) * settings.samples_per_scene
            if settings.val_samples is None else settings.val_samples,
            "val_scenes": list(world.val_scenes), "train_scenes": len(world.train_scenes), "towns": world.towns}


@dataclass(frozen=True)
class _Runs:
    """What every run of one comparison reads: plain values, so a worker process can be handed it."""

    dataroot: str
    version: str
    settings: ComparisonSettings
    out: str
    endpoint: str  # the loopback Hub the pretrained networks are published to and loaded back from


def _pretraining_run(runs: _Runs, init: str, seed: int, progress: bool) -> dict[str, Any]:
    """Pretrain ``settings.arch`` for ``init`` with pretraining seed ``seed`` on the unlabelled train split; the run's
    record, with its held-out curve."""
    from .pretrain import pretrain

    settings, out = runs.settings, Path(runs.out)
    spec = PRETRAININGS[init]
    run = out / "runs" / f"pretrain-{init}-s{seed}"
    overrides: dict[str, Any] = {"eval_every": settings.pretrain_eval_every, **dict(settings.pretrain_overrides)}
    if "teacher" in spec:
        overrides["teacher"] = spec["teacher"]
    weights = settings.dinov2_weights if init == "occfeat-dinov2" else spec.get("teacher_weights")
    started = time.perf_counter()
    result = pretrain(settings.arch, dataroot=runs.dataroot, version=runs.version, out_dir=run, recipe="cpu-tiny",
                      mode=spec["mode"], max_steps=settings.pretrain_steps, val_samples=settings.pretrain_val_samples,
                      seed=seed, device="cpu", progress=progress, teacher_weights=weights,
                      cache_dir=out / "teacher-cache", recipe_overrides=overrides,
                      load_kwargs=settings.backbone_options())
    info = json.loads((run / "run.json").read_text())
    return {"init": init, "seed": seed, "run": str(run), "mode": spec["mode"], "samples": info["samples"],
            "steps": info["steps"], "teacher": info["teacher"], "teacher_role": info["teacher_role"],
            "backbone_init": info["backbone_init"], "seconds": time.perf_counter() - started, "metrics": result.metrics,
            "curve": pretraining_curve(run)}


def _publish(runs: _Runs, record: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    """Export a pretraining run, push it to the loopback Hub, register it and load it back by name (the zoo path).
    Returns (weight id, its registry entry, the load report)."""
    import occfeat

    from .pretrain import export_pretrain_run
    from .zoo.publishing import push_to_hub
    from .zoo.registry import register_weights

    weight_id = f"{runs.settings.arch}.{record['init']}-synthetic-s{record['seed']}"
    folder = Path(runs.out) / "weights" / weight_id
    export_pretrain_run(record["run"], folder, weight_id=weight_id)
    pushed = push_to_hub(folder, f"occfeat-demo/{weight_id}", endpoint=runs.endpoint, token="occfeat-demo",
                         print_entry=False)
    entry = {**pushed["registry_entry"], "aliases": [], "dataset": f"generated world {runs.dataroot}"}
    register_weights({"schema": 1, "weights": {weight_id: entry}})
    model = occfeat.load(weight_id, endpoint=runs.endpoint, cache_dir=Path(runs.out) / "hf-cache")
    return weight_id, entry, str(model.load_report)


def pretraining_curve(run: Path) -> list[dict[str, float]]:
    """The held-out evaluations a pretraining run logged (``eval/...`` lines of its ``metrics.jsonl``), by step."""
    path = run / "metrics.jsonl"
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return [{"step": r["step"], **{k[len("eval/"):]: v for k, v in r.items() if k.startswith("eval/")}}
            for r in lines if any(k.startswith("eval/") for k in r)]


@dataclass(frozen=True)
class _FinetuneRun:
    """One cell's run: a fraction, a fine-tuning seed, an initialisation and (pretrained ones) its pretraining seed."""

    fraction: float
    seed: int
    init: str
    pretrain_seed: int | None

    @property
    def start(self) -> tuple[str, int] | None:
        """The pretraining it starts from; None for scratch."""
        return None if self.pretrain_seed is None else (self.init, self.pretrain_seed)

    @property
    def folder(self) -> str:
        scratch = self.pretrain_seed is None
        return f"finetune-{self.init}{'' if scratch else f'-p{self.pretrain_seed}'}-{self.fraction:g}-s{self.seed}"


def _finetune_runs(settings: ComparisonSettings) -> list[_FinetuneRun]:
    """Every fine-tuning run of the grid, in the order of the results."""
    return [_FinetuneRun(fraction, seed, init, None if init == "scratch" else pretrain_seed)
            for fraction in settings.fractions for seed in settings.seeds(fraction) for init in settings.inits
            for pretrain_seed in ([None] if init == "scratch" else settings.pretrain_seeds())]


def _finetune_run(runs: _Runs, cell: _FinetuneRun, weight_id: str | None, entry: dict[str, Any] | None) -> dict[str, Any]:
    """Fine-tune ``cell`` (from ``weight_id``, registered here from ``entry``: a worker process starts with the
    package's registry only; scratch builds ``settings.arch``); one row of the results."""
    from .finetune.training import finetune
    from .zoo.registry import register_weights

    settings, out = runs.settings, Path(runs.out)
    if weight_id is not None and entry is not None:
        register_weights({"schema": 1, "weights": {weight_id: entry}})
    overrides = {"epochs": settings.finetune_epochs, "min_steps": settings.finetune_min_steps, "eval_every": 0}
    started = time.perf_counter()
    result = finetune(
        weight_id or settings.arch, dataroot=runs.dataroot, version=runs.version, out_dir=out / "runs" / cell.folder,
        fraction=cell.fraction, recipe="cpu-tiny", val_samples=settings.val_samples, device="cpu", seed=cell.seed,
        progress=False, recipe_overrides=overrides,
        load_kwargs=settings.backbone_options() if weight_id is None else
        dict(endpoint=runs.endpoint, cache_dir=out / "hf-cache"),
    )
    info = json.loads((result.run_dir / "run.json").read_text())
    return {"init": cell.init, "fraction": cell.fraction, "seed": cell.seed, "pretrain_seed": cell.pretrain_seed,
            "train_samples": result.train_samples,
            "steps": result.steps, "epochs": result.steps * info["recipe"]["batch_size"] / result.train_samples,
            "label_protocol": info["label_protocol"], "seconds": time.perf_counter() - started,
            "run": str(result.run_dir), **{k: result.metrics[k] for k in METRICS}}


class _InProcess(concurrent.futures.Executor):
    """``workers=1``: each run in this process, when it is submitted (and with its progress bar)."""

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as error:  # noqa: BLE001  (raised again by the caller's future.result())
            future.set_exception(error)
        return future


def _worker_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def default_workers() -> int:
    """Runs at once: two where there are two cores or more. On 2 cores, two one-thread processes finish two runs
    1.24-1.26x sooner than one two-thread process does (``bench/workers.py``; bench/RESULTS.md, "`make demo`")."""
    return 2 if (os.cpu_count() or 1) >= 2 else 1


def run_grid(world: Any, settings: ComparisonSettings, out: Path, hub: Any, *, workers: int = 1,
             progress: bool = True) -> tuple[dict[str, str], dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Every pretraining, published and loaded back by name, and every fine-tuning run of the grid.

    The runs are independent but for one order: a fine-tuning run starts from its pretraining. With ``workers`` > 1
    they run in that many processes (each with an equal share of this process's torch threads): the pretrainings
    and the scratch runs first, each pretraining's fine-tuning runs as soon as it is published. Which process runs
    what does not change a result (each run is seeded); the thread count does, in the last digits of floating point.
    A run that fails raises its own error here: the runs not started are cancelled, the ones running finish (each
    run folder resumes, so calling again with the same folder picks up where the grid stopped).

    Returns ({weight id: load report}, {"INIT-sSEED": the pretraining's record, with its held-out curve}, the rows in
    ``_finetune_runs`` order).
    """
    import torch

    runs = _Runs(str(world.dataroot), world.version, settings, str(out), hub.endpoint)
    pretrainings = [(init, seed) for init in settings.inits if init != "scratch" for seed in settings.pretrain_seeds()]
    cells = _finetune_runs(settings)
    if workers > 1:
        threads = max(1, torch.get_num_threads() // workers)
        pool: concurrent.futures.Executor = concurrent.futures.ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_threads, initargs=(threads,))
    else:
        pool = _InProcess()
    reports, records, entries, rows = {}, {}, {}, {}
    bar = progress_bar(total=len(pretrainings) + len(cells), desc="comparison runs", unit="run", disable=not progress)
    with pool, bar:
        pending = {pool.submit(_pretraining_run, runs, init, seed, progress and workers == 1): ("pretraining", (init, seed))
                   for init, seed in pretrainings}
        pending |= {pool.submit(_finetune_run, runs, cell, None, None): ("fine-tuning", cell)
                    for cell in cells if cell.start is None}
        while pending:
            done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                kind, key = pending.pop(future)
                try:
                    result = future.result()
                except BaseException as error:
                    for other in pending:
                        other.cancel()
                    if isinstance(error, concurrent.futures.BrokenExecutor):  # BrokenProcessPool
                        raise WorkerError(
                            f"a worker process stopped while running the {kind} run {key}, without a result or an "
                            "error (its output, above, says why): killed for memory (fewer --workers), or a script "
                            "that calls the comparison outside `if __name__ == \"__main__\":` (a worker imports the "
                            "main script); workers=1 runs everything in this process.") from error
                    raise
                bar.update(1)
                if kind == "fine-tuning":
                    rows[key] = result
                    continue
                records[f"{key[0]}-s{key[1]}"] = result
                weight_id, entries[weight_id], reports[weight_id] = _publish(runs, result)
                pending |= {pool.submit(_finetune_run, runs, cell, weight_id, entries[weight_id]): ("fine-tuning", cell)
                            for cell in cells if cell.start == key}
    registry = out / "registry.json"  # what a user keeps beside their code, or points OCCFEAT_REGISTRY at
    registry.write_text(json.dumps({"schema": 1, "weights": entries}, indent=2) + "\n")
    order = [f"{init}-s{seed}" for init, seed in pretrainings]
    return reports, {name: records[name] for name in order}, [rows[cell] for cell in cells]


def label(init: str) -> str:
    """The display name of an initialisation (an ablation's variant is shown as named)."""
    return INIT_LABELS.get(init, init)


def _inits_of(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({r["init"] for r in rows}, key=lambda i: (INITS.index(i) if i in INITS else len(INITS), i))


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation (over seeds) of every metric per (fraction, init) cell."""
    cells = []
    for fraction in sorted({r["fraction"] for r in rows}):
        for init in _inits_of(rows):
            group = [r for r in rows if r["fraction"] == fraction and r["init"] == init]
            if not group:
                continue
            cell = {"fraction": fraction, "init": init, "seeds": len(group), "train_samples": group[0]["train_samples"],
                    "steps": group[0]["steps"],
                    "pretraining_seeds": len({r.get("pretrain_seed") for r in group} - {None})}
            for key in METRICS:
                values = [r[key] for r in group]
                cell[key] = statistics.fmean(values)
                cell[key + "_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(cell)
    return cells


def paired_differences(
    rows: list[dict[str, Any]], comparisons: Sequence[tuple[str, str]] = COMPARISONS
) -> list[dict[str, Any]]:
    """Per fraction and comparison ((init, baseline) pairs), the paired differences init - baseline of every metric:
    one per (pretraining seed, fine-tuning seed) that both have (a scratch baseline has no pretraining seed: its run
    of that fine-tuning seed pairs with every pretraining seed's). Their mean, standard deviation and 95 % interval
    (``crossed_interval``: both sources of variance when there are several pretraining seeds), and whether the
    interval excludes zero (``resolved``)."""
    def key(r: dict[str, Any]) -> tuple:
        return r["fraction"], r["init"], r.get("pretrain_seed"), r["seed"]

    by_key = {key(r): r for r in rows}
    found = []
    for fraction in sorted({r["fraction"] for r in rows}):
        for init, baseline in comparisons:
            pairs = sorted(((p, s) for (f, i, p, s) in by_key if f == fraction and i == init
                            and ((f, baseline, p, s) in by_key or (f, baseline, None, s) in by_key)),
                           key=lambda pair: (-1 if pair[0] is None else pair[0], pair[1]))
            if not pairs:
                continue
            entry: dict[str, Any] = {"fraction": fraction, "init": init, "baseline": baseline,
                                     "seeds": sorted({s for _, s in pairs}),
                                     "pretrain_seeds": sorted({p for p, _ in pairs if p is not None}), "pairs": pairs}
            for metric in METRICS:
                diffs = {}
                for p, s in pairs:
                    other = by_key.get((fraction, baseline, p, s)) or by_key[(fraction, baseline, None, s)]
                    diffs[(p, s)] = by_key[(fraction, init, p, s)][metric] - other[metric]
                values = list(diffs.values())
                mean, half, dof = crossed_interval(diffs)
                entry[metric] = {"per_seed": values, "mean": mean,
                                 "std": statistics.stdev(values) if len(values) > 1 else None,  # JSON null, not NaN
                                 "ci95": [mean - half, mean + half] if half is not None else None,
                                 "dof": dof, "better_on": sum(d > 0 for d in values),
                                 "resolved": bool(half is not None and abs(mean) > half)}
            found.append(entry)
    return found


def crossed_interval(diffs: dict[tuple[Any, int], float]) -> tuple[float, float | None, float | None]:
    """Mean, 95 % half-width and degrees of freedom of the mean of paired differences indexed by (pretraining seed,
    fine-tuning seed).

    One pretraining seed (or none): the paired t interval over the fine-tuning seeds. Several, crossed with the
    fine-tuning seeds (every pair present): the two-way random-effects model d = mu + a_pretraining + b_finetuning +
    e, whose mean has variance (MS_a + MS_b - MS_e) / (P F) from the ANOVA mean squares (floored at the larger of
    MS_a, MS_b over P F, so a negative estimate never narrows it), with Satterthwaite's degrees of freedom. A seed
    of either kind then widens the interval as much as it varies the result. In simulations where both seeds matter
    it covers the true mean 92 % of the time with 2 pretraining x 5 fine-tuning seeds (95 % with 3 or 5), where a t
    interval treating the 10 differences as independent covers it 60 % (tests/test_demo.py). None where no spread
    is measurable."""
    from scipy import stats

    values = list(diffs.values())
    mean = statistics.fmean(values)
    pretrain_seeds = sorted({p for p, _ in diffs}, key=lambda p: -1 if p is None else p)
    finetune_seeds = sorted({s for _, s in diffs})
    P, F = len(pretrain_seeds), len(finetune_seeds)
    if P == 1 or len(values) != P * F:
        n = len(values)
        if n < 2:
            return mean, None, None
        return mean, float(stats.t.ppf(0.975, n - 1)) * statistics.stdev(values) / math.sqrt(n), float(n - 1)
    if F == 1:  # pretraining seeds only
        return mean, float(stats.t.ppf(0.975, P - 1)) * statistics.stdev(values) / math.sqrt(P), float(P - 1)
    table = [[diffs[(p, s)] for s in finetune_seeds] for p in pretrain_seeds]
    row_means = [statistics.fmean(r) for r in table]
    col_means = [statistics.fmean(table[i][j] for i in range(P)) for j in range(F)]
    ms_a = F * sum((m - mean) ** 2 for m in row_means) / (P - 1)
    ms_b = P * sum((m - mean) ** 2 for m in col_means) / (F - 1)
    ms_e = sum((table[i][j] - row_means[i] - col_means[j] + mean) ** 2
               for i in range(P) for j in range(F)) / ((P - 1) * (F - 1))
    variance = max(ms_a + ms_b - ms_e, ms_a, ms_b) / (P * F)
    if variance <= 0:
        return mean, 0.0, None
    if ms_a + ms_b - ms_e >= max(ms_a, ms_b):  # Satterthwaite for the combination MS_a + MS_b - MS_e
        dof = (ms_a + ms_b - ms_e) ** 2 / (ms_a**2 / (P - 1) + ms_b**2 / (F - 1) + ms_e**2 / ((P - 1) * (F - 1)))
    else:  # the floor: the larger mean square alone
        dof = float(P - 1) if ms_a >= ms_b else float(F - 1)
    return mean, float(stats.t.ppf(0.975, dof)) * math.sqrt(variance), dof


def _percent(value: float | None, signed: bool = False) -> str:
    return "n/a" if value is None else f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def markdown_table(cells: list[dict[str, Any]]) -> str:
    """The comparison as a markdown table (IoU in %, mean ± std over seeds when there are several)."""
    lines = ["| labels | fine-tuning steps | seeds | pretraining | " + " | ".join(METRICS.values()) + " |",
             "| --- | ---: | ---: | --- |" + " ---: |" * len(METRICS)]
    for c in cells:
        values = [_percent(c[k]) + (f" ± {_percent(c[k + '_std'])}" if c["seeds"] > 1 else "") for k in METRICS]
        lines.append(f"| {c['fraction']:.0%} ({c['train_samples']} samples) | {c['steps']} | {c['seeds']} | "
                     f"{label(c['init'])} | " + " | ".join(values) + " |")
    return "\n".join(lines)


def paired_table(paired: list[dict[str, Any]]) -> str:
    """The paired differences as a markdown table (points of IoU; per seed, mean ± std, 95 % interval)."""
    lines = ["| labels | difference | metric | per seed | mean ± std | 95 % interval | better on | beyond seed noise |",
             "| --- | --- | --- | --- | ---: | --- | ---: | --- |"]
    for p in paired:
        for key, name in METRICS.items():
            d = p[key]
            per_seed = " / ".join(_percent(v, signed=True) for v in d["per_seed"])
            interval = "n/a" if d["ci95"] is None else f"[{_percent(d['ci95'][0], True)}, {_percent(d['ci95'][1], True)}]"
            lines.append(f"| {p['fraction']:.0%} | {label(p['init'])} − {label(p['baseline'])} | {name} | "
                         f"{per_seed} | {_percent(d['mean'], True)} ± {_percent(d['std'])} | {interval} | "
                         f"{d['better_on']}/{len(d['per_seed'])} | {'**yes**' if d['resolved'] else 'no'} |")
    return "\n".join(lines)


def plot_comparison(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Grouped bars, one panel per metric: x = label fraction, one bar per initialisation (mean, error bar = std over
    seeds) with each seed's run as a dot, so that the pairing and the spread are both visible."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = summarise(rows)
    fractions = sorted({c["fraction"] for c in cells})
    inits = _inits_of(rows)
    figure, axes = plt.subplots(1, len(METRICS), figsize=(5.6 * len(METRICS), 4.4), squeeze=False)
    width = 0.8 / len(inits)
    for axis, (key, name) in zip(axes[0], METRICS.items()):
        for i, init in enumerate(inits):
            for j, fraction in enumerate(fractions):
                cell = next((c for c in cells if c["fraction"] == fraction and c["init"] == init), None)
                if cell is None:
                    continue
                x = j + (i - (len(inits) - 1) / 2) * width
                height, error = 100 * cell[key], 100 * cell[key + "_std"]
                axis.bar(x, height, width, yerr=error if cell["seeds"] > 1 else None, capsize=3,
                         color=INIT_COLOURS.get(init, f"C{i}"), label=label(init) if j == 0 else None,
                         error_kw={"elinewidth": 1, "alpha": 0.7})
                values = [100 * r[key] for r in rows if r["fraction"] == fraction and r["init"] == init]
                if len(values) > 1:
                    axis.scatter([x] * len(values), values, s=9, color="black", zorder=3, alpha=0.6)
                axis.text(x, max([height + error, *values]), f"{height:.1f}", ha="center", va="bottom", fontsize=7)
        samples = {c["fraction"]: c["train_samples"] for c in cells}
        axis.set_xticks(range(len(fractions)), [f"{f:.0%} of labels\n({samples[f]} samples)" for f in fractions])
        axis.set_ylabel(f"{name} (%)")
        axis.set_title(name)
        axis.set_ylim(0, max(5.0, 1.2 * max(100 * r[key] for r in rows)))
        axis.grid(axis="y", alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=len(inits), fontsize=8, frameon=False)
    figure.suptitle("\n".join(textwrap.wrap(title, 150)), fontsize=9)
    figure.tight_layout(rect=(0, 0.07, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def chart_title(settings: ComparisonSettings, results: dict[str, Any]) -> str:
    """The chart's title: what was run, on what, and that the teacher is a stand-in."""
    split, rows = results["split"], results.get("rows") or []
    # From the rows when there are some: after a merge or a pairing they hold more inits and seeds than this part ran.
    inits = _inits_of(rows) if rows else list(settings.inits)
    pretraining_seeds = len({r.get("pretrain_seed") for r in rows} - {None}) if rows else settings.pretraining_seeds
    runs_per_cell = max((c["seeds"] for c in summarise(rows)), default=1) if rows else max(settings.seeds_per_fraction)
    teacher = (" (OccFeat with the stand-in teacher for DINOv2 on generated worlds)"
               if any(i.startswith("occfeat") for i in inits) else "")
    backbone = "ImageNet Lite0 backbone for every row" if settings.pretrained_backbone else "random backbones"
    seeds = ("one run per cell" if runs_per_cell == 1 else
             "mean ± std over runs (fine-tuning" + (" x pretraining" if pretraining_seeds > 1 else "")
             + " seeds), dots = runs")
    return (f"{settings.arch} on a generated world (a stand-in for nuScenes): {split['pool_samples']} unlabelled train "
            f"frames, {split['val_samples']} held-out frames; {backbone}; {settings.pretrain_steps} pretraining "
            f"steps{teacher}; {seeds}")


def compare_pretrainings(
    out_dir: str | Path,
    settings: ComparisonSettings = BENCHMARK,
    *,
    progress: bool = True,
    workers: int = 1,
) -> dict[str, Any]:
    """Generate the world, pretrain each init once, publish, fine-tune the grid, summarise; writes results.json.
    ``workers``: runs at once, each in its own process (``run_grid``)."""
    from .models import get_model_config
    from .testing import HubServer
    from .zoo.registry import REGISTRY

    get_model_config(settings.arch)  # a typo fails now, not after the world is written
    if workers < 1:
        raise ConfigError(f"workers={workers}: runs at once, at least 1 (1 runs them one after another here).")
    _refuse_in_a_starting_worker()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _forget_other_comparisons(out, settings)
    started = time.perf_counter()
    world = _world(settings, out / "world", progress)
    split = world_split(world, settings)
    with HubServer() as hub:
        try:
            load_reports, pretrainings, rows = run_grid(world, settings, out, hub, workers=workers, progress=progress)
        finally:
            REGISTRY.reset()  # the demo's entries were for its own loopback Hub
    results = {"settings": settings.to_dict(), "world": str(world.dataroot), "split": split,
               "backbone_init": next((r["backbone_init"] for r in pretrainings.values()), None)
               if pretrainings else _backbone_init_of(rows),
               "stand_in": {"world": "a procedural nuScenes-format world, not nuScenes", "teacher": STAND_IN_NOTE},
               "label_protocol": sorted({r["label_protocol"] for r in rows}), "pretrainings": pretrainings,
               "rows": rows, "cells": summarise(rows), "paired": paired_differences(rows),
               "load_reports": load_reports, "seconds": time.perf_counter() - started}
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def _refuse_in_a_starting_worker() -> None:
    """A worker process (spawned) imports the parent's main script before it runs anything: a script that calls the
    comparison at import would start it again in each worker, rewriting the world the parent is reading. Refused
    there, with the fix."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):  # set while a spawned child starts
        raise ConfigError("the comparison was started while a worker process was importing the main script: call "
                          "it under `if __name__ == \"__main__\":` (each worker process imports the main script), "
                          "or pass workers=1 (`--workers 1`).")


def _forget_other_comparisons(out: Path, settings: ComparisonSettings) -> None:
    """The comparison's run folders resume an interrupted comparison of the same settings; a comparison of other
    settings in the same folder (``occfeat demo --quick``, then ``occfeat demo``) starts its runs anew, since a run
    folder holds one run (``occfeat.runs.claim_run_folder``)."""
    recorded = out / "settings.json"
    wanted = json.dumps(settings.to_dict(), sort_keys=True)
    if recorded.is_file() and recorded.read_text() != wanted and (out / "runs").is_dir():
        print(f"{out}: the runs there are of other comparison settings; starting them anew", flush=True)
        shutil.rmtree(out / "runs")
    recorded.write_text(wanted)


def _backbone_init_of(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The ImageNet weights the runs' backbones started from, as the first run recorded them."""
    return json.loads((Path(rows[0]["run"]) / "run.json").read_text()).get("backbone_init") if rows else None


# The benchmark's committed results, read by the demo's report for the seed spread of each difference.
BENCHMARK_RESULTS = Path(__file__).resolve().parents[1] / "bench" / "lowdata" / "results.json"


def benchmark_difference(reference: dict[str, Any] | None, paired: dict[str, Any],
                         fractions: Sequence[float]) -> dict[str, Any] | None:
    """The benchmark's entry for the same paired difference at the fraction of the same rank (lowest with lowest,
    highest with highest): its ``fraction`` and ``vehicle_iou`` (``mean``, ``std`` over seeds, ``ci95``), what one
    seed's difference must be compared with. None without a benchmark or without that comparison in it."""
    if not reference:
        return None
    theirs = sorted({p["fraction"] for p in reference["paired"]})
    rank = list(fractions).index(paired["fraction"])
    fraction = theirs[0] if rank == 0 else theirs[-1]
    return next((p for p in reference["paired"] if p["fraction"] == fraction and p["init"] == paired["init"]
                 and p["baseline"] == paired["baseline"]), None)


def run_demo(
    out_dir: str | Path = "outputs/demo",
    *,
    quick: bool = False,
    seed: int = 0,
    progress: bool = True,
    settings: ComparisonSettings | None = None,
    reference: str | Path | None = None,
    workers: int | None = None,
) -> Path:
    """The main job (see the module docstring); returns the report folder. ``settings`` overrides the default (or
    ``quick``) sizes; ``reference``: a benchmark ``results.json`` for the seed spread (default: the committed one,
    when this is a source checkout); ``workers``: runs at once (default ``default_workers()``)."""
    settings = dataclasses.replace(settings or (QUICK if quick else DEFAULT), first_seed=seed)
    out = Path(out_dir)
    ours = (out / "results.json").exists() or (out / "settings.json").exists()  # finished, or interrupted
    if out.exists() and not ours and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not an occfeat demo folder: choose another --out.")
    results = compare_pretrainings(out, settings, progress=progress,
                                   workers=default_workers() if workers is None else workers)
    plot_comparison(results["rows"], out / "comparison.png", chart_title(settings, results))
    pictures = out / "pictures"
    pictures.mkdir(exist_ok=True)
    for name in ("pca-bev.png", "pca-cameras-A.png", "occupancy-0.png"):
        source = out / "runs" / f"pretrain-occfeat-s{seed}" / "pictures" / name
        if source.is_file():
            shutil.copy(source, pictures / f"pretrain-{name}")
    low = min(settings.fractions)
    for init in settings.inits:
        folder = f"finetune-{init}{'' if init == 'scratch' else f'-p{seed}'}-{low:g}-s{seed}"
        source = out / "runs" / folder / "pictures" / "prediction-00.png"
        if source.is_file():
            shutil.copy(source, pictures / f"prediction-{init}-{low:g}.png")
    reference_path = Path(reference) if reference else BENCHMARK_RESULTS
    benchmark = json.loads(reference_path.read_text()) if reference_path.is_file() else None
    _write_report(out, settings, results, benchmark, reference_path)
    cells = results["cells"]
    best = {f: max((c for c in cells if c["fraction"] == f), key=lambda c: c["vehicle_iou"]) for f in settings.fractions}
    print(f"occfeat demo: {len(results['rows'])} fine-tuning runs in {results['seconds']:.0f} s; best vehicle IoU "
          + ", ".join(f"{f:.0%} labels: {label(c['init'])} {100 * c['vehicle_iou']:.1f}" for f, c in best.items())
          + f"; report {out / 'report.md'}", flush=True)
    return out


def _points(iou: float) -> str:
    """An IoU difference in points, signed; two decimals below one point, where one would round an interval's
    bound to zero."""
    return f"{100 * iou:+.1f}" if abs(100 * iou) >= 0.95 else f"{100 * iou:+.2f}"


def difference_verdicts(results: dict[str, Any], settings: ComparisonSettings,
                        benchmark: dict[str, Any] | None) -> tuple[list[str], list[str]]:
    """One plain sentence per paired difference of vehicle IoU: does it exceed the benchmark's seed spread, and does
    it go the benchmark's way? Returns (every verdict, the contradictions): a one-seed difference against the
    direction that the benchmark's paired runs resolved is labelled noise of this short run, never a finding."""
    lines, contradictions = [], []
    bench_steps = (benchmark or {}).get("settings", {}).get("pretrain_steps")
    for paired in results["paired"]:
        difference = paired["vehicle_iou"]["mean"]
        match = benchmark_difference(benchmark, paired, settings.fractions)
        name = f"{label(paired['init'])} − {label(paired['baseline'])} at {paired['fraction']:.0%} of the labels"
        if match is None:
            lines.append(f"- {name}: {100 * difference:+.1f} vehicle IoU points; no benchmark spread to compare it "
                         "with (run `python bench/lowdata.py`).")
            continue
        theirs = match["vehicle_iou"]
        spread, low, high = theirs["std"], *theirs["ci95"]
        runs = len(theirs.get("per_seed", ())) or "its"
        their_answer = (f"the benchmark: {_points(theirs['mean'])} [{_points(low)}, {_points(high)}] at "
                        f"{match['fraction']:.0%} over {runs} paired runs")
        # The threshold is printed as compared: "twice the std (2 x 1.63 = 3.26 points)", not the std alone; two
        # decimals, so that the product of the printed numbers is the printed threshold (not "2 x 1.6 = 3.3").
        threshold = f"2 x {100 * spread:.2f} = {200 * spread:.2f} points"
        if abs(difference) <= 2 * spread:
            lines.append(f"- {name}: {100 * difference:+.1f} vehicle IoU points, within twice the benchmark's "
                         f"seed-to-seed standard deviation of this difference ({threshold}): one seed "
                         f"cannot tell it from noise ({their_answer}).")
            continue
        against = (low > 0 and difference < 0) or (high < 0 and difference > 0)
        if not against:
            agrees = "agrees with" if low > 0 or high < 0 else "has a direction that is not resolved by"
            lines.append(f"- {name}: {100 * difference:+.1f} vehicle IoU points, **exceeds** twice the benchmark's "
                         f"seed-to-seed standard deviation of this difference ({threshold}) and "
                         f"{agrees} {their_answer}.")
            continue
        steps = (f" with {settings.pretrain_steps} pretraining steps, not the benchmark's {bench_steps}"
                 if bench_steps and bench_steps != settings.pretrain_steps else "")
        sentence = (f"- {name}: {100 * difference:+.1f} vehicle IoU points, **against** {their_answer}. It is "
                    f"larger than twice the benchmark's seed-to-seed standard deviation ({threshold}), but it is one "
                    f"seed of a smaller run{steps}: read it as this run's noise or its short schedule, not as a "
                    f"finding that overturns the benchmark's paired runs.")
        lines.append(sentence)
        contradictions.append(sentence)
    return lines, contradictions


def fraction_inversions(cells: list[dict[str, Any]]) -> list[str]:
    """One sentence per initialisation whose vehicle IoU is lower with more labels: every benchmark (and the paper)
    has IoU grow with the labels, so with one seed such a cell is noise, and the report says so rather than show it
    as a finding."""
    lines = []
    for init in _inits_of(cells):
        row = sorted((c for c in cells if c["init"] == init), key=lambda c: c["fraction"])
        for fewer, more in zip(row, row[1:]):
            if more["vehicle_iou"] < fewer["vehicle_iou"]:
                seeds = min(fewer["seeds"], more["seeds"])
                lines.append(
                    f"- {label(init)}: {100 * more['vehicle_iou']:.1f} vehicle IoU with {more['fraction']:.0%} of the "
                    f"labels, below {100 * fewer['vehicle_iou']:.1f} with {fewer['fraction']:.0%}. In the benchmark "
                    f"more labels raise the IoU; with {seeds} seed{'s' if seeds > 1 else ''} per cell and "
                    f"{more['steps']} vs {fewer['steps']} fine-tuning steps, this is noise, not a finding.")
    return lines


def _write_report(out: Path, settings: ComparisonSettings, results: dict[str, Any], benchmark: dict[str, Any] | None,
                  reference_path: Path) -> None:
    pictures = sorted(p.name for p in (out / "pictures").glob("*.png"))
    split = results["split"]
    labelled = ", ".join(f"{float(f):.0%}: {n}" for f, n in split["labelled_samples"].items())
    inversions = fraction_inversions(results["cells"])
    verdicts, contradictions = difference_verdicts(results, settings, benchmark)
    quick = settings == dataclasses.replace(QUICK, first_seed=settings.first_seed)
    lines = [
        "# occfeat demo" + (" --quick" if quick else ""),
        "",
        *([f"**`--quick` checks that every path runs** (world, pretraining, Hub, fine-tuning, report) in minutes: "
           f"{settings.pretrain_steps} pretraining steps, {settings.finetune_min_steps}-step fine-tuning on a "
           f"{settings.scenes}-scene world, so its numbers are noise. `occfeat demo` (the "
           f"{' / '.join(f'{f:.0%}' for f in DEFAULT.fractions)} comparison) and `bench/lowdata.py` are the ones to "
           "read.", ""] if quick else []),
        f"{settings.arch} on a **generated world** (a procedural stand-in for nuScenes, read by the real nuscenes-devkit; "
        f"{results['world']}): {split['train_scenes']} train scenes = the unlabelled pretraining pool of "
        f"{split['pool_samples']} key frames ({split['pool_to_largest_labelled']:.1f}x the largest labelled subset; "
        f"labelled samples {labelled}); held-out split {split['val_samples']} key frames of "
        f"{len(split['val_scenes'])} scenes. Backbones: "
        + (f"every initialisation, scratch included, starts from ImageNet weights "
           f"({describe_backbone_init(results['backbone_init'])})" if results.get("backbone_init") else "random")
        + f". Pretraining {settings.pretrain_steps} steps per initialisation"
        + (f" with {', '.join(f'`{k}={v}`' for k, v in settings.pretrain_overrides)} (the benchmark's pretraining "
           "uses the recipe's values)" if settings.pretrain_overrides else "") + "; fine-tuning "
        f"by the recipe's epochs rule ({settings.finetune_epochs:g} epochs, at least {settings.finetune_min_steps} steps), "
        f"recipe `cpu-tiny`, CPU, seed {settings.first_seed}. Every number below comes from this run "
        f"({results['seconds']:.0f} s); `results.json` holds each run's figures and folder.",
        "",
        f"The teacher: {STAND_IN_NOTE}. Its numbers say whether the pipeline turns a semantic teacher into better "
        "fine-tuning, not what OccFeat with DINOv2 gives on nuScenes. Vehicle labels: the "
        f"{', '.join(f'`{p}`' for p in results['label_protocol'])} protocol (`lss` is the literature's `cv2.fillPoly` "
        "raster: IoUs computed as published ones are).",
        "",
        "![comparison](comparison.png)",
        "",
        markdown_table(results["cells"]),
        "",
        "## Which differences exceed the seed spread",
        "",
        "This demo is one seed. A difference between two initialisations of one seed is noise unless it is larger than "
        "the spread that difference shows from seed to seed; the benchmark measured that spread "
        + (f"(`{reference_path}`, {len(benchmark['rows'])} runs)" if benchmark else "(not found here)") + ":",
        "",
        *verdicts,
        *(["", "**Against the benchmark's direction** (one seed; read these as noise, not findings):", "",
           *contradictions, *inversions] if inversions or contradictions else []),
        "",
        "## The zoo path",
        "",
        "Each pretrained network was exported without its heads, pushed to a loopback Hub (`occfeat.testing.HubServer`),",
        "registered from `registry.json` and fetched back by name with `occfeat.load` (pinned commit, sha256 checked):",
        "",
        *[f"- `{weight_id}`: {report}" for weight_id, report in results["load_reports"].items()],
        "",
        "## Pictures",
        "",
        *[f"- [`pictures/{name}`](pictures/{name})" for name in pictures],
        "",
        "`bench/lowdata.py` runs the same comparison at benchmark size: more frames, the pretraining length at which "
        "the held-out curves level off, and pretraining seeds crossed with fine-tuning seeds, paired per seed; "
        "`bench/RESULTS.md` has its table and analysis.",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
