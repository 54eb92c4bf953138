"""occfeat.load against the do-it-yourself load, and the cold load over loopback.

    python bench/load.py                        # bevformer-enb0, 7 repeats
    python bench/load.py --arch simplebev-r101

Publishes random weights of the architecture to an ``occfeat.testing.HubServer`` on 127.0.0.1, registers them
(pinned commit + sha256), then measures, in one run:
- cold: the first ``occfeat.load(ID)`` into an empty cache (download over loopback + sha256 + build + load);
- warm: ``occfeat.load(ID)`` again (cache hit: no request, sha256 stamp trusted);
- baseline: ``create_model(arch)`` + ``safetensors.torch.load_file`` + ``load_state_dict`` on the same file.
The goal is warm / baseline <= 1.1: the zoo's checks must cost nothing noticeable.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from timing import median_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="bevformer-enb0")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import occfeat
    from safetensors.torch import load_file

    from occfeat.testing import HubServer
    from occfeat.zoo.hub import sha256_file
    from occfeat.zoo.registry import register_weights

    weight_id = f"{args.arch}.bench"
    with tempfile.TemporaryDirectory() as scratch, HubServer() as hub:
        folder = Path(scratch) / "weights"
        occfeat.save_pretrained(occfeat.create_model(args.arch), folder, weight_id=weight_id)
        hub.create_repo(f"bench/{args.arch}")
        files = {name: folder / name for name in ("config.json", "model.safetensors")}
        commit = hub.commit(f"bench/{args.arch}", files)
        entry = json.loads((Path(occfeat.__file__).parent / "zoo" / "weights.json").read_text())["weights"]
        entry = {**next(iter(entry.values())), "architecture": args.arch, "aliases": [],
                 "hub": {"repo": f"bench/{args.arch}", "commit": commit},
                 "files": {n: {"sha256": sha256_file(p), "size": p.stat().st_size} for n, p in files.items()}}
        register_weights({"weights": {weight_id: entry}})
        cache = Path(scratch) / "cache"

        tic = time.perf_counter()
        occfeat.load(weight_id, endpoint=hub.endpoint, cache_dir=cache)
        cold = time.perf_counter() - tic
        requests = len(hub.request_log)
        warm = median_seconds(lambda: occfeat.load(weight_id, endpoint=hub.endpoint, cache_dir=cache), args.repeats)
        assert len(hub.request_log) == requests, "a warm pinned load must send no request"

        def baseline() -> None:
            model = occfeat.create_model(args.arch)
            model.load_state_dict(load_file(str(files["model.safetensors"])))

        base = median_seconds(baseline, args.repeats)
        size_mb = files["model.safetensors"].stat().st_size / 1e6
        print(f"# torch {torch.__version__}, {args.threads} threads, {args.arch}, {size_mb:.1f} MB of safetensors")
        print("| load | seconds | vs baseline |")
        print("| --- | ---: | ---: |")
        print(f"| create_model + load_file + load_state_dict (baseline) | {base:.3f} | 1.00x |")
        print(f"| occfeat.load, warm cache (0 requests) | {warm:.3f} | {warm / base:.2f}x |")
        print(f"| occfeat.load, cold over loopback ({requests} requests) | {cold:.3f} | {cold / base:.2f}x |")


if __name__ == "__main__":
    main()
