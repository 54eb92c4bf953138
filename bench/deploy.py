"""Forward latency of an exported network: ONNX Runtime vs eager PyTorch vs compiled PyTorch, in one run, as ratios.

    python bench/deploy.py                                   # bevformer-enb0 and simplebev-enb0, batch 1, 2 threads
    python bench/deploy.py --arch simplebev-enb0 --repeats 5 --no-compile

Full size (6 cameras at 224x480, 200x200 raster), random weights, the nominal nuScenes rig. Every runner gets the same
thread count (torch.set_num_threads and ONNX Runtime's intra-op threads). The exported graph is the dense,
static-shape path (``occfeat.models.ops.exporting``): every camera samples every query or voxel, where eager PyTorch
gathers only the visible (camera, query) pairs; the table says what that costs. Outputs are checked equal first.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from timing import median_seconds

ARCHS = ["bevformer-enb0", "simplebev-enb0"]


def bench(arch: str, repeats: int, threads: int, compiled: bool) -> dict:
    import occfeat
    from occfeat.deploy import OnnxModel, compare, example_inputs, export_onnx, export_program
    from occfeat.models.compile import compile_model

    torch.manual_seed(0)
    model = occfeat.create_model(arch).eval()
    images, intrinsics, cam_to_ego = example_inputs(model, 1)
    batch = {"images": images, "intrinsics": intrinsics, "cam_to_ego": cam_to_ego}
    row: dict = {"arch": arch, "threads": threads}

    def eager() -> None:
        with torch.no_grad():
            model(**batch)

    row["eager_s"] = median_seconds(eager, repeats, warmup=1)
    with tempfile.TemporaryDirectory() as folder:
        tic = time.perf_counter()
        program = export_program(model)
        path = export_onnx(model, Path(folder) / "model.onnx", program=program)
        row["export_s"] = time.perf_counter() - tic
        runner = OnnxModel(path, threads=threads)
        row["onnx_max_relative_difference"] = max(compare(model, runner, batch_sizes=(1,)).values())
        row["onnxruntime_s"] = median_seconds(lambda: runner(batch), repeats, warmup=1)
        dense = program.module()
        row["exported_program_s"] = median_seconds(lambda: dense(images, intrinsics, cam_to_ego), repeats, warmup=1)
    if compiled:
        fast = compile_model(occfeat.create_model(arch).eval(), True)
        fast.load_state_dict(model.state_dict())
        tic = time.perf_counter()
        with torch.no_grad():
            fast(**batch)
        row["compile_s"] = time.perf_counter() - tic

        def compiled_runner(inputs: dict) -> dict:
            with torch.no_grad():
                return fast(**inputs)

        row["compiled_max_relative_difference"] = max(compare(model, compiled_runner, batch_sizes=(1,)).values())
        with torch.no_grad():
            row["compiled_s"] = median_seconds(lambda: fast(**batch), repeats, warmup=1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=ARCHS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = [bench(arch, args.repeats, args.threads, not args.no_compile) for arch in args.arch]
    print("| architecture | eager s | onnxruntime s | ORT / eager | exported program s | compiled s | compiled / eager "
          "| ORT max rel. diff | compiled max rel. diff | export s | compile s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        compiled = f"{r['compiled_s']:.3f} | {r['compiled_s'] / r['eager_s']:.2f}x" if "compiled_s" in r else "- | -"
        compiled_difference = f"{r['compiled_max_relative_difference']:.1e}" if "compiled_s" in r else "-"
        print(f"| {r['arch']} | {r['eager_s']:.3f} | {r['onnxruntime_s']:.3f} | {r['onnxruntime_s'] / r['eager_s']:.2f}x "
              f"| {r['exported_program_s']:.3f} | {compiled} | {r['onnx_max_relative_difference']:.1e} "
              f"| {compiled_difference} | {r['export_s']:.1f} | {r.get('compile_s', 0.0):.1f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    print(f"bench/deploy.py: {len(rows)} architecture(s), {args.threads} threads, median of {args.repeats}", file=sys.stderr)


if __name__ == "__main__":
    main()
