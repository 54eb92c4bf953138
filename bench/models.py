"""Speed, FLOPs and memory of every full-size architecture, against this machine's dense-matmul throughput.

    python bench/models.py                      # all full-size architectures, 2 threads, batch 1
    python bench/models.py --arch bevformer-enb0 --repeats 7
    python bench/models.py --deform-only        # just the ms_deform_attn vs per-level/per-head loop comparison

Each architecture runs in its own subprocess so that its peak RSS is its own. Input: 6 cameras at 224x480, the
200x200 BEV raster, the nominal nuScenes rig, random weights. FLOPs are counted by ``torch.utils.flop_counter`` (matmuls
and convolutions; grid_sample, norms and element-wise ops are not counted, so "achieved FLOP/s" is a lower bound on
the work done). The matmul peak is the best of 10 2048^3 float32 matmuls, measured in the same run with the same thread count.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from timing import median_seconds
from torch.utils.flop_counter import FlopCounterMode

FULL_SIZE = ["bevformer-enb0", "bevformer-r50", "simplebev-enb0", "simplebev-r50", "simplebev-r101"]
IMAGE_HW = (224, 480)


def matmul_peak_flops(repeats: int = 10) -> float:
    """Dense float32 matmul throughput of this machine at the current thread count (FLOP/s)."""
    n = 2048
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(repeats):  # the best run: a peak, not a typical figure
        tic = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - tic)
    return 2 * n**3 / best


def count_flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def bench_architecture(arch: str, repeats: int, warmup: int, batch_size: int) -> dict:
    import occfeat
    from occfeat.models.geometry import nuscenes_camera_rig

    torch.manual_seed(0)
    model = occfeat.create_model(arch, image_size=IMAGE_HW)
    intrinsics, cam_to_ego = nuscenes_camera_rig(IMAGE_HW)
    batch = dict(
        images=torch.randn(batch_size, 6, 3, *IMAGE_HW),
        intrinsics=intrinsics.expand(batch_size, -1, -1, -1),
        cam_to_ego=cam_to_ego.expand(batch_size, -1, -1, -1),
    )

    def forward() -> None:
        with torch.no_grad():
            model(**batch)

    def forward_backward() -> None:
        model.zero_grad(set_to_none=True)
        outputs = model(**batch)
        sum(v.float().mean() for v in outputs.values()).backward()

    model.eval()
    # Counted with autograd on: FlopCounterMode's module hooks trip over views of parameters made under no_grad.
    forward_flops = count_flops(lambda: model(**batch))
    forward_s = median_seconds(forward, repeats, warmup)
    model.train()
    train_flops = count_flops(forward_backward)
    train_s = median_seconds(forward_backward, repeats, warmup)
    return dict(
        arch=arch,
        params=sum(p.numel() for p in model.parameters()),
        forward_gflops=forward_flops / 1e9,
        train_gflops=train_flops / 1e9,
        forward_s=forward_s,
        train_s=train_s,
        forward_gflops_per_s=forward_flops / forward_s / 1e9,
        train_gflops_per_s=train_flops / train_s / 1e9,
        peak_rss_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    )


def deform_attn_loop(value, spatial_shapes, locations, weights):
    """The straightforward baseline: one grid_sample per level *and per head*, then multiply and sum the points."""
    b, s, m, d = value.shape
    _, lq, _, num_levels, p, _ = locations.shape
    heads = []
    for head in range(m):
        out = value.new_zeros(b, d, lq)
        start = 0
        for level, (h, w) in enumerate(spatial_shapes):
            level_value = value[:, start : start + h * w, head].transpose(1, 2).reshape(b, d, h, w)
            start += h * w
            grid = 2 * locations[:, :, head, level] - 1  # (B, Lq, P, 2)
            sampled = F.grid_sample(level_value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            out = out + (sampled * weights[:, None, :, head, level]).sum(-1)
        heads.append(out)
    return torch.cat(heads, dim=1).transpose(1, 2)


def bench_deform_attn(repeats: int, warmup: int) -> list[dict]:
    """ms_deform_attn vs the loop on BEVFormer-enb0's shapes: its self-attention over the 200x200 query map, and its
    cross-attention as the model runs it (one call per camera over the queries that camera sees on the real rig)."""
    import occfeat
    from occfeat.models.geometry import nuscenes_camera_rig
    from occfeat.models.ops import ms_deform_attn

    model = occfeat.create_model("bevformer-enb0", device="meta")
    intrinsics, cam_to_ego = nuscenes_camera_rig(IMAGE_HW)
    gather = model.view_transform.camera_gather(intrinsics[None], cam_to_ego[None], torch.eye(4)[None], IMAGE_HW)
    m, d, p = 4, 32, 8
    cases = {
        "self-attention (40000 queries, 200x200 map)": [((200, 200), 40000)],
        f"cross-attention (6 cameras, {sum(gather.pairs_per_camera)} camera-query pairs, 28x60 maps)": [
            ((28, 60), count) for count in gather.pairs_per_camera
        ],
    }
    rows = []
    for name, calls in cases.items():
        inputs = []
        for (h, w), lq in calls:
            value = torch.randn(1, h * w, m, d)
            locations = torch.rand(1, lq, m, 1, p, 2) * 1.2 - 0.1  # some points fall outside the map
            weights = torch.rand(1, lq, m, 1, p).softmax(-1)
            inputs.append(([(h, w)], value, locations, weights))
        for shapes, value, locations, weights in inputs:
            torch.testing.assert_close(
                ms_deform_attn(value, shapes, locations, weights), deform_attn_loop(value, shapes, locations, weights)
            )

        def run(fn):
            return lambda: [fn(value, shapes, locations, weights) for shapes, value, locations, weights in inputs]

        with torch.no_grad():
            ours = median_seconds(run(ms_deform_attn), repeats, warmup)
            loop = median_seconds(run(deform_attn_loop), repeats, warmup)
        rows.append(dict(case=name, ours_ms=ours * 1e3, loop_ms=loop * 1e3, speedup=loop / ours))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=FULL_SIZE)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--deform-only", action="store_true")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: one architecture, JSON on stdout
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.one:
        print(json.dumps(bench_architecture(args.one, args.repeats, args.warmup, args.batch_size)))
        return

    peak = matmul_peak_flops()
    print(f"# torch {torch.__version__}, {args.threads} threads, dense fp32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    if not args.deform_only:
        print(
            "| architecture | params | fwd GFLOPs | fwd s | fwd GFLOP/s | fwd / peak | fwd+bwd GFLOPs | fwd+bwd s "
            "| fwd+bwd / peak | peak RSS GiB |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for arch in args.arch:
            child = subprocess.run(
                [sys.executable, __file__, "--one", arch, "--repeats", str(args.repeats), "--warmup", str(args.warmup),
                 "--batch-size", str(args.batch_size), "--threads", str(args.threads)],
                capture_output=True, text=True, check=True,
            )
            r = json.loads(child.stdout.strip().splitlines()[-1])
            print(
                f"| {arch} | {r['params'] / 1e6:.2f} M | {r['forward_gflops']:.1f} | {r['forward_s']:.3f} "
                f"| {r['forward_gflops_per_s']:.1f} | {r['forward_gflops_per_s'] * 1e9 / peak:.0%} "
                f"| {r['train_gflops']:.1f} | {r['train_s']:.3f} | {r['train_gflops_per_s'] * 1e9 / peak:.0%} "
                f"| {r['peak_rss_gib']:.2f} |",
                flush=True,
            )
    print("\n| ms_deform_attn case | ours (ms) | per-level/per-head loop (ms) | speed-up |")
    print("| --- | ---: | ---: | ---: |")
    for r in bench_deform_attn(args.repeats, args.warmup):
        print(f"| {r['case']} | {r['ours_ms']:.1f} | {r['loop_ms']:.1f} | {r['speedup']:.2f}x |")


if __name__ == "__main__":
    main()
