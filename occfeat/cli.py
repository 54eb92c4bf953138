"""The ``occfeat`` command line. Verbs import torch only when they run, so ``--version`` and ``--help`` are instant."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence

from . import __version__


def _cmd_models(args: argparse.Namespace) -> int:
    from .models import get_model_config, list_models

    names = list_models(args.pattern)
    if args.json:
        print(json.dumps({name: get_model_config(name).to_dict() for name in names}, indent=2))
        return 0
    print(f"{'architecture':<16} {'view transform':<15} {'backbone':<16} {'image':>9} {'BEV grid':>9}")
    for name in names:
        cfg = get_model_config(name)
        h, w = cfg.grid.shape
        image = f"{cfg.image_size[0]}x{cfg.image_size[1]}"
        print(f"{name:<16} {cfg.view_transform:<15} {cfg.backbone:<16} {image:>9} {f'{h}x{w}':>9}")
    return 0


def _print(data: object, as_json: bool, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if as_json else text)


def _cmd_list(args: argparse.Namespace) -> int:
    from .zoo.registry import get_weights, list_weights

    specs = [get_weights(name) for name in list_weights(args.pattern)]
    rows = [f"{'weight id':<36} {'aliases':<28} {'architecture':<16} status"]
    rows += [f"{s.id:<36} {','.join(s.aliases):<28} {s.architecture:<16} "
             f"{'published @' + s.commit[:8] if s.published else 'not published yet'}" for s in specs]
    _print({s.id: {"aliases": list(s.aliases), "architecture": s.architecture, "published": s.published,
                   "repo": s.repo, "commit": s.commit} for s in specs}, args.json, "\n".join(rows))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .zoo.registry import get_weights

    spec = get_weights(args.id)
    lines = [f"{spec.id}  (aliases: {', '.join(spec.aliases) or '-'}; registry: {spec.source})",
             f"  architecture  {spec.architecture} {spec.model_args or ''}",
             f"  hub           {spec.repo} @ {spec.commit or 'not published yet'}",
             *(f"  file          {f.path}  {f.size} bytes  sha256 {f.sha256}" for f in spec.files),
             f"  input         {spec.input['image_size']} px, cameras {len(spec.input.get('cameras', []))}",
             f"  classes       {spec.classes}",
             f"  licence       {spec.license};  dataset: {spec.dataset}",
             *(f"  metric        {m['task']}: {m['metric']} {m['value']} ({m['protocol']}; {m['source']})" for m in spec.metrics),
             f"  reproduce     {spec.recipe.get('pretraining', '-')}"]
    _print({"id": spec.id, **spec.to_dict()}, args.json, "\n".join(lines))
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


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out_dir=args.out, architectures=args.arch, batch_size=args.batch_size, seed=args.seed)
    return 0


# Verbs whose arguments and handler live in a module that imports torch: loaded only when the verb is used, so that
# `occfeat --version` and `occfeat --help` stay instant. verb -> (module, add_arguments, run, help).
_LAZY_VERBS = {
    "synth": (
        "occfeat.data.synthetic",
        "add_synth_arguments",
        "run_synth",
        "write a procedural nuScenes-format dataroot (the synthetic world)",
    ),
}


def _add_lazy_verbs(verbs: argparse._SubParsersAction, selected: str | None) -> None:
    import importlib

    for verb, (module, add_arguments, run, help_text) in _LAZY_VERBS.items():
        parser = verbs.add_parser(verb, help=help_text)
        if verb == selected:
            loaded = importlib.import_module(module)
            getattr(loaded, add_arguments)(parser)
            parser.set_defaults(func=getattr(loaded, run))


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="occfeat", description=__doc__)
    parser.add_argument("--version", action="version", version=f"occfeat {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    models = verbs.add_parser("models", help="list the registered architectures")
    models.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'bevformer-*'")
    models.add_argument("--json", action="store_true", help="print the full configs as JSON")
    models.set_defaults(func=_cmd_models)

    listing = verbs.add_parser("list", help="list the registered weights (no torch import)")
    listing.add_argument("pattern", nargs="?", default="*")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_cmd_list)

    info = verbs.add_parser("info", help="everything the registry knows about a weight id or alias")
    info.add_argument("id")
    info.add_argument("--json", action="store_true")
    info.set_defaults(func=_cmd_info)

    hub_options = argparse.ArgumentParser(add_help=False)
    hub_options.add_argument("--cache-dir", default=None, help="Hugging Face cache folder (default: HF_HOME's)")
    hub_options.add_argument("--json", action="store_true")

    download = verbs.add_parser("download", parents=[hub_options], help="fetch and verify weights (optionally into a bundle)")
    download.add_argument("ids", nargs="+")
    download.add_argument("--bundle", default=None, help="also copy them into plain folders here (air-gapped use)")
    download.add_argument("--endpoint", default=None, help="Hub endpoint (a mirror)")
    download.set_defaults(func=_cmd_download)

    verify = verbs.add_parser("verify", parents=[hub_options], help="re-hash cached weights against the registry")
    verify.add_argument("ids", nargs="*")
    verify.set_defaults(func=_cmd_verify)

    env = verbs.add_parser("env", help="versions, cache, endpoint and offline flags (paste into bug reports)")
    env.add_argument("--json", action="store_true")
    env.set_defaults(func=_cmd_env)

    card = verbs.add_parser("card", help="print a weight's model card, or (--out DIR) write the hub/ folders")
    card.add_argument("ids", nargs="*")
    card.add_argument("--out", default=None, help="write DIR/<id>/README.md + config.json for these ids (all if none)")
    card.add_argument("--json", action="store_true")
    card.set_defaults(func=_cmd_card)

    _add_lazy_verbs(verbs, selected)

    demo = verbs.add_parser("demo", help="the end-to-end job on the embedded default (see README)")
    demo.add_argument("--out", default="outputs/demo", help="report folder (default: %(default)s)")
    demo.add_argument("--arch", nargs="+", default=["bevformer-tiny", "simplebev-tiny"], help="architectures")
    demo.add_argument("--batch-size", type=int, default=2)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    selected = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(selected)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from .errors import OccfeatError

    try:
        return int(args.func(args))
    except OccfeatError as exc:  # typed errors already say what to do: no traceback for them
        print(f"occfeat: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
