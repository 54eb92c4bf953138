"""The ``occfeat`` command line. Verbs import torch only when they need it, so ``--version`` and ``models`` are fast."""

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


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(out_dir=args.out, architectures=args.arch, batch_size=args.batch_size, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="occfeat", description=__doc__)
    parser.add_argument("--version", action="version", version=f"occfeat {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")

    models = verbs.add_parser("models", help="list the registered architectures")
    models.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'bevformer-*'")
    models.add_argument("--json", action="store_true", help="print the full configs as JSON")
    models.set_defaults(func=_cmd_models)

    demo = verbs.add_parser("demo", help="the end-to-end job on the embedded default (see README)")
    demo.add_argument("--out", default="outputs/demo", help="report folder (default: %(default)s)")
    demo.add_argument("--arch", nargs="+", default=["bevformer-tiny", "simplebev-tiny"], help="architectures")
    demo.add_argument("--batch-size", type=int, default=2)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
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
