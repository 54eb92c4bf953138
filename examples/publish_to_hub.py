"""Publish weights to a Hugging Face Hub repository and load them back by name through the zoo.

    python examples/publish_to_hub.py                                   # a loopback test Hub, nothing leaves the machine
    python examples/publish_to_hub.py --weights local-dir:weights/pt-tiny --endpoint https://huggingface.co \\
        --repo my-org/simplebev-tiny-occfeat --token hf_...

The push prints the registry entry (commit and sha256 pinned). Keep it in a JSON file and point OCCFEAT_REGISTRY at
it (or call occfeat.register_weights) and occfeat.load finds the weights by id, verifies them and caches them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

import occfeat


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default="simplebev-tiny", help="an architecture (random weights) or local-dir:/id")
    parser.add_argument("--weight-id", default="simplebev-tiny.example")
    parser.add_argument("--repo", default="occfeat-example/simplebev-tiny")
    parser.add_argument("--endpoint", default=None, help="a Hub endpoint (default: start a loopback test Hub)")
    parser.add_argument("--token", default="example-token")
    parser.add_argument("--out", default="outputs/examples/publish")
    args = parser.parse_args(argv)
    out = Path(args.out)

    model = occfeat.load(args.weights, pretrained=args.weights not in occfeat.list_models())
    folder = out / args.weight_id
    occfeat.save_pretrained(model, folder, weight_id=args.weight_id)  # config.json + model.safetensors + model card

    with contextlib.ExitStack() as stack:
        endpoint = args.endpoint
        if endpoint is None:
            from occfeat.testing import HubServer  # the Hub's HTTP API on 127.0.0.1, for tests and demos

            endpoint = stack.enter_context(HubServer()).endpoint
        pushed = occfeat.push_to_hub(folder, args.repo, endpoint=endpoint, token=args.token, print_entry=False)
        registry = out / "registry.json"
        registry.write_text(json.dumps({"schema": 1, "weights": {args.weight_id: pushed["registry_entry"]}}, indent=2))
        print(f"pushed {args.repo}@{pushed['commit']}; registry entry in {registry}")

        occfeat.register_weights(registry)  # or: export OCCFEAT_REGISTRY=outputs/examples/publish/registry.json
        loaded = occfeat.load(args.weight_id, endpoint=endpoint, cache_dir=out / "hf-cache")
        print(loaded.load_report)
        print(f"provenance: {loaded.provenance}")


if __name__ == "__main__":
    main()
