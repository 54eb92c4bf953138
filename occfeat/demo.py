"""``occfeat demo``: the main job on the embedded default.

What it runs today (the data, zoo, fine-tuning and pretraining paths land in later issues): for each tiny
architecture, build it, put a batch of images through it on the nominal nuScenes camera rig, take one optimiser step,
and write a report folder with timings and BEV pictures (camera coverage of the raster, predicted vehicle logits).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch
from tqdm import tqdm

from .models import create_model, get_model_config
from .models.geometry import nuscenes_camera_rig, project_to_cameras
from .viz import colorize, save_bev_panels


def camera_coverage(model_grid, intrinsics, cam_to_ego, image_hw) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """(H, W) number of cameras that see at least one voxel above each cell."""
    voxels = model_grid.voxel_centers().view(1, -1, 3)
    projection = project_to_cameras(voxels, intrinsics, cam_to_ego, image_hw)
    z, (h, w) = model_grid.num_heights, model_grid.shape
    return projection.visible.view(intrinsics.shape[1], z, h, w).any(dim=1).sum(dim=0)


def run_demo(
    out_dir: str | Path = "outputs/demo",
    architectures: Sequence[str] = ("bevformer-tiny", "simplebev-tiny"),
    batch_size: int = 2,
    seed: int = 0,
) -> Path:
    for arch in architectures:  # fail on a typo before writing anything
        get_model_config(arch)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    start = time.perf_counter()
    for arch in tqdm(architectures, desc="demo", unit="arch"):
        torch.manual_seed(seed)
        model = create_model(arch)
        cfg = model.config
        intrinsics, cam_to_ego = nuscenes_camera_rig(cfg.image_size)
        batch = dict(
            images=torch.randn(batch_size, intrinsics.shape[0], 3, *cfg.image_size),
            intrinsics=intrinsics.expand(batch_size, -1, -1, -1),
            cam_to_ego=cam_to_ego.expand(batch_size, -1, -1, -1),
        )
        model.eval()
        with torch.no_grad():
            tic = time.perf_counter()
            outputs = model(**batch)
            forward_s = time.perf_counter() - tic
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
        tic = time.perf_counter()
        loss = sum(v.float().square().mean() for v in model(**batch).values())
        loss.backward()
        optimizer.step()
        step_s = time.perf_counter() - tic
        coverage = camera_coverage(cfg.grid, intrinsics[None], cam_to_ego[None], cfg.image_size)
        picture = save_bev_panels(
            {
                "cameras seeing each cell": colorize(coverage, 0, 3),
                "vehicle logits (random weights)": colorize(outputs["vehicle"][0, 0]),
            },
            out / f"{arch}.png",
        )
        params = sum(p.numel() for p in model.parameters())
        shapes = ", ".join(f"{k} {tuple(v.shape[1:])}" for k, v in outputs.items())
        rows.append((arch, params, forward_s, step_s, shapes, picture.name))
    lines = [
        "# occfeat demo report",
        "",
        f"Batch of {batch_size} x 6 cameras on the nominal nuScenes rig, random images, seed {seed}.",
        "",
        "| architecture | parameters | forward (s) | train step (s) | outputs | picture |",
        "| --- | ---: | ---: | ---: | --- | --- |",
        *(f"| {a} | {p / 1e6:.2f} M | {f:.3f} | {s:.3f} | {o} | ![{a}]({png}) |" for a, p, f, s, o, png in rows),
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    total = time.perf_counter() - start
    print(f"occfeat demo: {len(rows)} architectures built, run and stepped in {total:.1f} s; report at {out / 'report.md'}")
    return out
