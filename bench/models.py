"""Speed, FLOPs and memory of every full-size architecture, against this machine's dense-matmul throughput.

    python bench/models.py                      # all full-size architectures, 2 threads, batch 1
    python bench/models.py --arch bevformer-enb0 --repeats 7
    python bench/models.py --arch bevformer-enb0 bevformer-lite0 simplebev-enb0 simplebev-lite0   # + Lite0 / EN-B0
    python bench/models.py --deform-only        # just the ms_deform_attn vs per-level/per-head loop comparison

Each architecture runs in its own subprocess so that its peak RSS is its own (building and the timed steps; the FLOP
count runs after it is read). Input: 6 cameras at 224x480, the
200x200 BEV raster, the nominal nuScenes rig, random weights. FLOPs are counted by ``torch.utils.flop_counter`` (matmuls
and convolutions, a grouped convolution's backward counted as twice its forward, not as torch's dense formula;
grid_sample, norms and element-wise ops are not counted, so "achieved FLOP/s" is a lower bound on
the work done). The matmul peak is the best of 10 2048^3 float32 matmuls, measured in the same run with the same thread
count. This VM's speed drifts by up to 1.5x between minutes, so the "paired peak" columns also divide each timed call's
FLOP/s by a peak (best of 3) measured just before that call, and give the median of those shares.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from timing import count_flops, median_seconds, paired_seconds

FULL_SIZE = ["bevformer-enb0", "bevformer-lite0", "bevformer-r50", "simplebev-enb0", "simplebev-lite0", "simplebev-r50",
             "simplebev-r101"]
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


def bench_architecture(arch: str, repeats: int, warmup: int, batch_size: int, checkpointing: bool = False,
                       compiled: bool = False) -> dict:
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

    # Timed first, so that the peak RSS is the timed steps' (with checkpointing, if asked), not the FLOP count's.
    model.set_activation_checkpointing(checkpointing)
    counted = model
    if compiled:
        from occfeat.models.compile import compile_model

        counted = occfeat.create_model(arch, image_size=IMAGE_HW)  # FLOPs are counted on an eager copy
        counted.load_state_dict(model.state_dict())
        compile_model(model, True)
    model.eval()
    forward_pairs = paired_seconds(forward, lambda: matmul_peak_flops(3), repeats, warmup)
    model.train()
    train_pairs = paired_seconds(forward_backward, lambda: matmul_peak_flops(3), repeats, warmup)
    forward_s = statistics.median(t for t, _ in forward_pairs)
    train_s = statistics.median(t for t, _ in train_pairs)
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    # The network's work, counted eagerly and without checkpointing (its recomputation is overhead, not work), with
    # autograd on: FlopCounterMode's module hooks trip over views of parameters made under no_grad.
    model.set_activation_checkpointing(False)
    counted.eval()
    forward_flops = count_flops(lambda: counted(**batch))
    counted.train()

    def counted_step() -> None:
        counted.zero_grad(set_to_none=True)
        sum(v.float().mean() for v in counted(**batch).values()).backward()

    train_flops = count_flops(counted_step)
    return dict(
        arch=arch,
        params=sum(p.numel() for p in model.parameters()),
        forward_gflops=forward_flops / 1e9,
        train_gflops=train_flops / 1e9,
        forward_s=forward_s,
        train_s=train_s,
        forward_gflops_per_s=forward_flops / forward_s / 1e9,
        train_gflops_per_s=train_flops / train_s / 1e9,
        # Each call's FLOP/s over the peak measured just before it, median over the calls.
        forward_paired_share=statistics.median(forward_flops / t / peak for t, peak in forward_pairs),
        train_paired_share=statistics.median(train_flops / t / peak for t, peak in train_pairs),
        peak_rss_gib=peak_rss,
    )


def print_backbone_ratios(results: dict[str, dict]) -> None:
    """Each ``*-lite0`` network against its EN-B0 twin run in the same invocation: the same network on another
    trunk, so the ratios are the backbone's (times also as shares of each call's paired peak, to cancel drift)."""
    pairs = [(arch, arch.replace("-lite0", "-enb0")) for arch in results if arch.endswith("-lite0")]
    pairs = [(lite, enb0) for lite, enb0 in pairs if enb0 in results]
    if not pairs:
        return
    print("\n| Lite0 / EN-B0 | params | fwd GFLOPs | fwd s | fwd paired share | fwd+bwd GFLOPs | fwd+bwd s "
          "| fwd+bwd paired share | peak RSS |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for lite, enb0 in pairs:
        a, b = results[lite], results[enb0]
        keys = ("params", "forward_gflops", "forward_s", "forward_paired_share", "train_gflops", "train_s",
                "train_paired_share", "peak_rss_gib")
        print(f"| {lite} / {enb0} | " + " | ".join(f"{a[k] / b[k]:.2f}x" for k in keys) + " |", flush=True)


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
    """ms_deform_attn (its default implementation on this device, and "grid_sample") vs the loop on BEVFormer-enb0's
    shapes: its self-attention over the 200x200 query map, and its cross-attention as the model runs it (one call
    over every (camera, query) pair of the real rig, each pair sampling its camera; the loop runs per camera)."""
    import occfeat
    from occfeat.models.geometry import nuscenes_camera_rig
    from occfeat.models.ops import ms_deform_attn

    model = occfeat.create_model("bevformer-enb0", device="meta")
    intrinsics, cam_to_ego = nuscenes_camera_rig(IMAGE_HW)
    gather = model.view_transform.camera_gather(intrinsics[None], cam_to_ego[None], torch.eye(4)[None], IMAGE_HW)
    m, d, p = 4, 32, 8
    g = torch.Generator().manual_seed(0)

    def inputs(maps: int, hw: tuple[int, int], queries: int):
        value = torch.randn(maps, hw[0] * hw[1], m, d, generator=g)
        locations = torch.rand(1, queries, m, 1, p, 2, generator=g) * 1.2 - 0.1  # some points fall outside the map
        weights = torch.rand(1, queries, m, 1, p, generator=g).softmax(-1)
        return value, locations, weights

    self_value, self_locations, self_weights = inputs(1, (200, 200), 40000)
    counts = gather.pairs_per_camera
    cross_value, cross_locations, cross_weights = inputs(len(counts), (28, 60), sum(counts))
    cross_map = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))[None]
    spans = torch.tensor([0, *counts]).cumsum(0).tolist()

    def cross_loop(fn):
        return torch.cat([fn(cross_value[k : k + 1], [(28, 60)], cross_locations[:, spans[k] : spans[k + 1]],
                             cross_weights[:, spans[k] : spans[k + 1]]) for k in range(len(counts))], dim=1)

    cases = {
        "self-attention (40000 queries, 200x200 map)": (
            lambda **kw: ms_deform_attn(self_value, [(200, 200)], self_locations, self_weights, **kw),
            lambda: deform_attn_loop(self_value, [(200, 200)], self_locations, self_weights),
        ),
        f"cross-attention (6 cameras, {sum(counts)} camera-query pairs, 28x60 maps)": (
            lambda **kw: ms_deform_attn(cross_value, [(28, 60)], cross_locations, cross_weights, value_map=cross_map,
                                        **kw),
            lambda: cross_loop(deform_attn_loop),
        ),
    }
    rows = []
    for name, (ours, loop) in cases.items():
        torch.testing.assert_close(ours(), loop())
        torch.testing.assert_close(ours(implementation="grid_sample"), loop())
        with torch.no_grad():
            ours_s = median_seconds(ours, repeats, warmup)
            grid_s = median_seconds(lambda: ours(implementation="grid_sample"), repeats, warmup)
            loop_s = median_seconds(loop, repeats, warmup)
        rows.append(dict(case=name, ours_ms=ours_s * 1e3, grid_sample_ms=grid_s * 1e3, loop_ms=loop_s * 1e3,
                         speedup=loop_s / ours_s))
    return rows


def memory_bandwidth(repeats: int = 5) -> float:
    """Bytes per second of a large out-of-cache copy (256 MiB read + 256 MiB written), best of ``repeats``."""
    source = torch.randn(64 << 20)
    target = torch.empty_like(source)
    target.copy_(source)
    best = float("inf")
    for _ in range(repeats):
        tic = time.perf_counter()
        target.copy_(source)
        best = min(best, time.perf_counter() - tic)
    return 2 * source.numel() * source.element_size() / best


def profile_forward(arch: str, threads: int) -> None:
    """Where a forward's time goes, by aten op (self time), and the sampling's bytes against the memory bandwidth:
    the evidence for what limits BEVFormer on a CPU."""
    import occfeat
    from occfeat.models.geometry import nuscenes_camera_rig

    torch.manual_seed(0)
    model = occfeat.create_model(arch).eval()
    intrinsics, cam_to_ego = nuscenes_camera_rig(IMAGE_HW)
    batch = dict(images=torch.randn(1, 6, 3, *IMAGE_HW), intrinsics=intrinsics[None], cam_to_ego=cam_to_ego[None])
    with torch.no_grad():
        model(**batch)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            tic = time.perf_counter()
            model(**batch)
            total = time.perf_counter() - tic
    events = sorted(profiler.key_averages(), key=lambda e: -e.self_cpu_time_total)
    print(f"\n{arch} forward, {threads} threads, {total:.3f} s wall (profiled)\n")
    print("| aten op | self s | share | calls |")
    print("| --- | ---: | ---: | ---: |")
    for event in events[:12]:
        print(f"| {event.key} | {event.self_cpu_time_total / 1e6:.3f} | {event.self_cpu_time_total / 1e6 / total:.0%} "
              f"| {event.count} |")
    if model.config.view_transform != "bevformer":
        return
    # Bytes the deformable sampling moves at the least: every sample reads its 4 bilinear taps of D channels and
    # writes one D-vector, which the weighted sum reads back (the gathers' cache reuse can only lower the reads).
    config, gather = model.config, model.view_transform.camera_gather(
        intrinsics[None], cam_to_ego[None], torch.eye(4)[None], IMAGE_HW)
    d = config.bev_channels // config.bevformer_heads
    per_query = config.bevformer_heads * d * 4  # bytes of one head-sample vector set, float32
    self_samples = config.grid.shape[0] * config.grid.shape[1] * config.bevformer_self_points
    cross_samples = sum(gather.pairs_per_camera) * config.bevformer_cross_points
    samples = config.bevformer_layers * (self_samples + cross_samples)
    moved = samples * per_query * (4 + 1 + 1)
    sampling_s = sum(e.self_cpu_time_total for e in events if "grid_sampler" in e.key) / 1e6
    bandwidth = memory_bandwidth()
    print(f"\ndeformable sampling: {samples / 1e6:.1f} M samples of {config.bevformer_heads} heads x {d} channels, "
          f">= {moved / 1e9:.2f} GB moved (4 taps read, 1 sample written and read back); grid_sampler time "
          f"{sampling_s:.3f} s = {moved / sampling_s / 1e9:.1f} GB/s; this machine's copy bandwidth "
          f"{bandwidth / 1e9:.1f} GB/s: the sampling alone needs >= {moved / bandwidth:.3f} s at full bandwidth")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=FULL_SIZE)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--deform-only", action="store_true")
    parser.add_argument("--activation-checkpointing", action="store_true", help="time training with it on")
    parser.add_argument("--compile", action="store_true", help="time the compiled network (compile time excluded)")
    parser.add_argument("--profile", action="store_true", help="per-op forward breakdown and the bandwidth bound")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child mode: one architecture, JSON on stdout
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.one:
        print(json.dumps(bench_architecture(args.one, args.repeats, args.warmup, args.batch_size,
                                            args.activation_checkpointing, args.compile)))
        return

    if args.profile:
        for arch in args.arch:
            profile_forward(arch, args.threads)
        return
    peak = matmul_peak_flops()
    print(f"# torch {torch.__version__}, {args.threads} threads, dense fp32 matmul peak {peak / 1e9:.1f} GFLOP/s"
          f"{', activation checkpointing' if args.activation_checkpointing else ''}{', compiled' if args.compile else ''}")
    if not args.deform_only:
        print(
            "| architecture | params | fwd GFLOPs | fwd s | fwd GFLOP/s | fwd / peak | fwd / paired peak | fwd+bwd GFLOPs "
            "| fwd+bwd s | fwd+bwd / peak | fwd+bwd / paired peak | peak RSS GiB |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        results = {}
        for arch in args.arch:
            child = subprocess.run(
                [sys.executable, __file__, "--one", arch, "--repeats", str(args.repeats), "--warmup", str(args.warmup),
                 "--batch-size", str(args.batch_size), "--threads", str(args.threads),
                 *(["--activation-checkpointing"] if args.activation_checkpointing else []),
                 *(["--compile"] if args.compile else [])],
                capture_output=True, text=True, check=True,
            )
            r = results[arch] = json.loads(child.stdout.strip().splitlines()[-1])
            print(
                f"| {arch} | {r['params'] / 1e6:.2f} M | {r['forward_gflops']:.1f} | {r['forward_s']:.3f} "
                f"| {r['forward_gflops_per_s']:.1f} | {r['forward_gflops_per_s'] * 1e9 / peak:.0%} "
                f"| {r['forward_paired_share']:.0%} | {r['train_gflops']:.1f} | {r['train_s']:.3f} "
                f"| {r['train_gflops_per_s'] * 1e9 / peak:.0%} | {r['train_paired_share']:.0%} "
                f"| {r['peak_rss_gib']:.2f} |",
                flush=True,
            )
        print_backbone_ratios(results)
    print("\n| ms_deform_attn case | ours, default (ms) | ours, grid_sample (ms) | per-level/per-head loop (ms) "
          "| speed-up of the default |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in bench_deform_attn(args.repeats, args.warmup):
        print(f"| {r['case']} | {r['ours_ms']:.1f} | {r['grid_sample_ms']:.1f} | {r['loop_ms']:.1f} | {r['speedup']:.2f}x |")


if __name__ == "__main__":
    main()
