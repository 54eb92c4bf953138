"""Pictures of an OccFeat pretraining run: what the auxiliary head predicts, for a person to look at.

``save_pretraining_pictures`` (rank 0, at the end of ``pretrain``) writes to ``out_dir``:

``occupancy-<k>.png`` (modes with an occupancy output), one per picked sample ``k``
    BEV top views of the Lidar occupancy target and of the prediction (p > 0.5): the height of the highest occupied
    voxel of each column (white where the column is empty), the per-column agreement of the voxels (true positives
    green, false positives red, false negatives blue, mixed by their counts) and the highest probability over heights.

``pca-bev.png``, ``pca-cameras-A.png``, ``pca-cameras-B.png`` (modes with a feature output)
    The head's voxel features, as in the paper's Figure 5: one PCA (3 components -> RGB) fitted on the features of
    sample A and applied unchanged to sample B, from another scene, so that a colour means the same feature in both.
    The features are read at the voxels predicted occupied (p > 0.5), or at the Lidar-occupied ones when fewer than
    ``MIN_PREDICTED_VOXELS`` are predicted or the head has no occupancy output; only surface voxels (those with an
    empty neighbour) are kept, as interior voxels are never seen. Features are L2-normalised first (the distillation
    loss is a cosine: their norm means nothing). ``pca-bev.png``: each BEV cell coloured by its highest voxel, black
    where none; with a teacher, the teacher's targets (at the Lidar-occupied voxels the cameras see) through the same
    PCA beside them. ``pca-cameras-*.png``: the six camera images, and below each the voxel centres projected into it
    (nearest voxel wins each pixel, drawn as squares about a voxel's apparent size) over the darkened image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Subset

from ..data import collate
from ..engine.data import move_to_device
from ..errors import InputError
from ..conventions.geometry import BEVGrid, project_to_cameras, transform_points
from ..viz import colorize, save_bev_panels, save_image_grid
from .targets import unravel_voxel_index, voxel_centers_of

MIN_PREDICTED_VOXELS = 32  # fewer predicted-occupied voxels in a sample: show the Lidar-occupied ones instead
MAX_VOXELS_PER_SAMPLE = 60_000  # caps the (K, D) features of an untrained head that predicts everything occupied
PANEL_PIXELS = 400  # BEV rasters are scaled up (nearest) to about this width
CAMERA_TILE_WIDTH = 400  # each camera image is drawn this wide
MAX_SQUARE_HALF = 8  # display pixels: the largest half-size of a projected voxel's square

_TP, _FP, _FN = (40, 170, 60), (220, 50, 40), (40, 90, 220)


class PCA(NamedTuple):
    """A fitted PCA to colours: ``mean`` (D,), ``components`` (D, k) by decreasing variance, and per component the
    robust range ``lo`` / ``hi`` (k,) of the fitted data (1st / 99th percentiles) mapped to [0, 1]."""

    mean: Tensor
    components: Tensor
    lo: Tensor
    hi: Tensor


def fit_pca(features: Tensor, k: int = 3, percentiles: tuple[float, float] = (1.0, 99.0)) -> PCA:
    """PCA of (N, D) ``features`` (exact: eigenvectors of the covariance, in float64).

    Each component's sign is fixed so that its largest loading is positive (the same data always gives the same
    colours). ``lo`` / ``hi`` are the ``percentiles`` of the fitted data's projections, so a few outliers do not wash
    the colours out.
    """
    if features.dim() != 2 or features.shape[0] == 0:
        raise InputError(f"fit_pca: expected (N >= 1, D) features, got shape {tuple(features.shape)}.")
    if not 1 <= k <= features.shape[1]:
        raise InputError(f"fit_pca: k={k} components of {features.shape[1]}-dimensional features.")
    x = features.detach().double()
    mean = x.mean(0)
    centred = x - mean
    covariance = centred.T @ centred / max(x.shape[0] - 1, 1)
    # The (D, D) eigenproblem on the CPU with numpy's LAPACK: torch's float64 eigh can spin for seconds on a busy
    # multi-threaded CPU, and a CUDA eigh of a 384x384 matrix is no faster.
    _, vectors = np.linalg.eigh(covariance.cpu().numpy())  # ascending eigenvalues
    components = torch.from_numpy(np.ascontiguousarray(vectors[:, ::-1][:, :k])).to(x.device)
    largest = components.gather(0, components.abs().argmax(0, keepdim=True))
    components = components * torch.where(largest < 0, -1.0, 1.0)
    projected = centred @ components
    if projected.shape[0] > 1_000_000:  # torch.quantile's input limit; a strided sample is as good a range
        projected = projected[:: projected.shape[0] // 1_000_000 + 1]
    lo = torch.quantile(projected, percentiles[0] / 100.0, dim=0)
    hi = torch.quantile(projected, percentiles[1] / 100.0, dim=0)
    hi = torch.maximum(hi, lo + 1e-6)
    return PCA(mean.float(), components.float(), lo.float(), hi.float())


def apply_pca(features: Tensor, pca: PCA) -> Tensor:
    """(N, D) features -> (N, k) float32 colours in [0, 1] (the fitted range of each component mapped to [0, 1],
    clipped)."""
    mean, components, lo, hi = (t.to(features.device, torch.float64) for t in pca)
    projected = (features.detach().double() - mean) @ components
    return ((projected - lo) / (hi - lo)).clamp(0.0, 1.0).float()


def to_uint8(colors: Tensor | np.ndarray) -> np.ndarray:
    """Colours in [0, 1] -> uint8."""
    array = colors.detach().float().cpu().numpy() if isinstance(colors, Tensor) else np.asarray(colors, float)
    return (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ---- which samples -------------------------------------------------------------------------------------------------


def _tokens_and_base(dataset: Any) -> tuple[list[str] | None, Any]:
    """The sample token of each index of ``dataset`` and the underlying ``NuScenesBEV`` (through wrappers exposing
    ``.dataset``, e.g. ``WithTeacherFeatures``, and ``Subset``), or (None, None)."""
    if hasattr(dataset, "sample_tokens") and hasattr(dataset, "nusc"):
        return list(dataset.sample_tokens), dataset
    if isinstance(dataset, Subset):
        tokens, base = _tokens_and_base(dataset.dataset)
        return ([tokens[i] for i in dataset.indices] if tokens is not None else None), base
    if hasattr(dataset, "dataset"):
        return _tokens_and_base(dataset.dataset)
    return None, None


def pick_samples(dataset: Any) -> tuple[list[int], list[str]]:
    """Indices of two samples from two different scenes (the middle key frame of the first two scenes in the
    dataset's order), or, with one scene, its first and last samples; one sample when there is only one. Returns the
    indices and a label for each (the scene's name when known)."""
    n = len(dataset)
    if n == 0:
        raise InputError("save_pretraining_pictures: the dataset is empty.")
    tokens, base = _tokens_and_base(dataset)
    if tokens is None or len(tokens) != n:
        picked = [0, n - 1] if n > 1 else [0]
        return picked, [f"sample {i}" for i in picked]
    nusc = base.nusc
    scenes = [nusc.get("sample", t)["scene_token"] for t in tokens]
    order = list(dict.fromkeys(scenes))  # scenes in order of first appearance
    if len(order) >= 2:
        picked = []
        for scene in order[:2]:
            members = [i for i, s in enumerate(scenes) if s == scene]
            picked.append(members[len(members) // 2])
    else:
        picked = [0, n - 1] if n > 1 else [0]
    names = [f"{nusc.get('scene', scenes[i])['name']}, sample {i}" for i in picked]
    return picked, names


# ---- voxels ----------------------------------------------------------------------------------------------------------


def _surface(index: Tensor, shape: tuple[int, ...]) -> Tensor:
    """The voxels of ``index`` (flat into ``shape`` = (B, Z, H, W)) that have at least one of their 26 neighbours
    outside the set (the grid's outside counts as empty)."""
    occupied = torch.zeros(int(np.prod(shape)), device=index.device)
    occupied[index] = 1.0
    padded = F.pad(occupied.view(shape)[:, None], (1, 1, 1, 1, 1, 1))
    interior = -F.max_pool3d(-padded, 3, stride=1)  # erosion: 1 where the whole 3x3x3 block is occupied
    return index[interior.view(-1)[index] < 0.5]


def _top_of_columns(index: Tensor, grid: BEVGrid) -> Tensor:
    """(K,) bool: the voxel is the highest of ``index`` in its (sample, row, column)."""
    sample, z, row, col = unravel_voxel_index(index, grid)
    h, w = grid.shape
    column = (sample * h + row) * w + col
    top = torch.full((int(column.max()) + 1 if len(column) else 1,), -1, dtype=z.dtype, device=z.device)
    top = top.scatter_reduce(0, column, z, "amax")
    return z == top[column]


def _cap(index: Tensor, grid: BEVGrid, limit: int) -> Tensor:
    """At most ``limit`` voxels of one sample: every column's top voxel, then a fixed random choice of the others."""
    if len(index) <= limit:
        return index
    top = _top_of_columns(index, grid)
    others = index[~top]
    keep = max(0, limit - int(top.sum()))
    chosen = torch.randperm(len(others), generator=torch.Generator().manual_seed(0))[:keep].to(index.device)
    return index[top] if keep == 0 else torch.cat([index[top], others[chosen]]).sort().values


def _bev_colors(index: Tensor, colors: np.ndarray, grid: BEVGrid, background: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: each cell coloured as the highest voxel of ``index`` (one sample) in its column."""
    h, w = grid.shape
    raster = np.full((h, w, 3), background, np.uint8)
    if len(index):
        top = _top_of_columns(index, grid)
        _, _, row, col = (t.cpu().numpy() for t in unravel_voxel_index(index[top], grid))
        raster[row, col] = colors[top.cpu().numpy()]
    return raster


# ---- drawing ---------------------------------------------------------------------------------------------------------


def _splat(canvas: np.ndarray, uv: np.ndarray, depth: np.ndarray, half: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """Paint a square of half-size ``half`` (pixels) per point at ``uv`` (display pixels, pixel-centre convention)
    into ``canvas`` (H, W, 3), the nearest point (smallest ``depth``) winning every pixel (a z-buffer). Returns the
    (H, W) bool mask of painted pixels."""
    h, w = canvas.shape[:2]
    painted = np.zeros((h, w), bool)
    if len(depth) == 0:
        return painted
    order = np.argsort(depth, kind="stable")  # nearest first
    rank = np.empty(len(depth), np.int64)
    rank[order] = np.arange(len(depth))
    centre = np.rint(uv).astype(np.int64)
    pixels, ranks = [], []
    for r in np.unique(half):
        members = np.nonzero(half == r)[0]
        dy, dx = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1), indexing="ij")
        u = centre[members, 0, None] + dx.reshape(1, -1)
        v = centre[members, 1, None] + dy.reshape(1, -1)
        inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
        pixels.append((v * w + u)[inside])
        ranks.append(np.broadcast_to(rank[members, None], u.shape)[inside])
    # Per pixel, the smallest depth rank among the squares covering it.
    best = torch.full((h * w,), len(depth), dtype=torch.int64).scatter_reduce_(
        0, torch.from_numpy(np.concatenate(pixels)), torch.from_numpy(np.concatenate(ranks)), "amin"
    ).numpy()
    painted.reshape(-1)[:] = best < len(depth)
    canvas.reshape(-1, 3)[painted.reshape(-1)] = colors[order[best[painted.reshape(-1)]]]
    return painted


def _camera_tiles(
    batch: dict[str, Any], b: int, index: Tensor, colors: np.ndarray, grid: BEVGrid,
    mean: Sequence[float], std: Sequence[float], cameras: Sequence[str],
) -> dict[str, np.ndarray]:
    """One tile per camera: the (un-normalised) image above, the projected voxels over the darkened image below."""
    images = batch["images"][b].float().cpu()  # (N, 3, H, W)
    n, _, h, w = images.shape
    scale = CAMERA_TILE_WIDTH / w
    size = (CAMERA_TILE_WIDTH, max(1, round(h * scale)))
    pixels = images * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    pixels = to_uint8(pixels.permute(0, 2, 3, 1))
    centers = transform_points(batch["bev_aug"][b].float(), voxel_centers_of(index, grid))
    projection = project_to_cameras(centers[None], batch["intrinsics"][b : b + 1].float(),
                                    batch["cam_to_ego"][b : b + 1].float(), (h, w))
    focal = batch["intrinsics"][b, :, 0, 0].float().cpu().numpy()
    tiles = {}
    for c in range(n):
        image = np.asarray(Image.fromarray(pixels[c]).resize(size, Image.BILINEAR))
        overlay = (image.astype(np.float32) * 0.35).astype(np.uint8)
        visible = projection.visible[0, c].cpu().numpy()
        uv = projection.pixels[0, c].cpu().numpy()[visible]
        depth = projection.depth[0, c].cpu().numpy()[visible]
        uv = (uv + 0.5) * scale - 0.5
        half = np.clip(np.rint(0.5 * focal[c] * scale * grid.resolution / np.maximum(depth, 1e-3)), 1, MAX_SQUARE_HALF)
        _splat(overlay, uv, depth, half.astype(np.int64), colors[visible])
        name = cameras[c] if c < len(cameras) else f"camera {c}"
        tiles[f"{name} ({int(visible.sum())} voxels in view)"] = np.concatenate([image, overlay], axis=0)
    return tiles


def _top_height(occupancy: Tensor, grid: BEVGrid) -> tuple[np.ndarray, np.ndarray]:
    """(Z, H, W) bool -> the height (m, centre of the bin) of each column's highest occupied voxel, and the
    (H, W) mask of non-empty columns."""
    z = torch.arange(1, occupancy.shape[0] + 1, device=occupancy.device).view(-1, 1, 1)
    top = (occupancy.long() * z).amax(0)  # 0: empty column
    height = grid.z_range[0] + (top.float() - 0.5) * grid.z_resolution
    return height.cpu().numpy(), (top > 0).cpu().numpy()


def _occupancy_panels(logits: Tensor, target: Tensor, grid: BEVGrid, label: str) -> dict[str, np.ndarray]:
    predicted = logits > 0
    z0, z1 = grid.z_range
    panels = {}
    for title, occupancy in ((f"{label}: Lidar occupancy, top height", target),
                             ("predicted (p > 0.5), top height", predicted)):
        height, filled = _top_height(occupancy, grid)
        rgb = colorize(height, z0, z1)
        rgb[~filled] = 255
        panels[title] = rgb
    tp = (predicted & target).sum(0).float().cpu().numpy()
    fp = (predicted & ~target).sum(0).float().cpu().numpy()
    fn = (~predicted & target).sum(0).float().cpu().numpy()
    total = tp + fp + fn
    mixed = (tp[..., None] * _TP + fp[..., None] * _FP + fn[..., None] * _FN) / np.maximum(total, 1)[..., None]
    agreement = np.where(total[..., None] > 0, mixed, 255).astype(np.uint8)
    iou = tp.sum() / max(total.sum(), 1.0)
    panels[f"voxels: TP green FP red FN blue (IoU {iou:.2f})"] = agreement
    panels["max probability over heights (0..1)"] = colorize(torch.sigmoid(logits.float()).amax(0), 0.0, 1.0)
    return panels


# ---- the pictures ----------------------------------------------------------------------------------------------------


def save_pretraining_pictures(
    pretrainer: Any,
    dataset: Any,
    out_dir: str | Path,
    *,
    teacher: Any = None,
    cache: Any = None,
    device: torch.device | str | None = None,
) -> list[Path]:
    """Write the pictures of the module docstring for two samples of ``dataset`` (from two scenes) to ``out_dir``.

    Args:
        pretrainer: an ``OccFeatPretrainer`` (evaluated in eval mode under no_grad; its mode is restored).
        dataset: a ``NuScenesBEV`` with Lidar (``lidar_sweeps`` > 0), possibly wrapped (``WithTeacherFeatures``,
            ``Subset``).
        teacher, cache: the teacher (and its feature cache) for the teacher's targets beside the prediction's PCA;
            None leaves them out (cached maps in a ``WithTeacherFeatures`` item are still used when all present).
        device: where the batch is evaluated (default: the pretrainer's device).
    Returns:
        The paths written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(device) if device is not None else next(pretrainer.parameters()).device
    picked, labels = pick_samples(dataset)
    batch = collate([dataset[i] for i in picked])
    if "lidar" not in batch:
        raise InputError("save_pretraining_pictures: the dataset gives no Lidar; build it with lidar_sweeps >= 1.")
    batch = move_to_device(batch, device)
    was_training = pretrainer.training
    pretrainer.eval()
    try:
        with torch.no_grad():
            return _draw(pretrainer, dataset, batch, labels, out, teacher, cache)
    finally:
        pretrainer.train(was_training)


def _draw(pretrainer: Any, dataset: Any, batch: dict[str, Any], labels: list[str], out: Path,
          teacher: Any, cache: Any) -> list[Path]:
    from .teacher import teacher_maps_for

    grid: BEVGrid = pretrainer.grid
    head = pretrainer.head
    uses_features = head.features is not None
    maps = None
    if uses_features and teacher is not None:
        maps = teacher_maps_for(batch, teacher, cache)
    elif uses_features and "teacher_maps" in batch and bool(batch["teacher_cached"].all()):
        maps = batch["teacher_maps"].float()
    targets = pretrainer.targets(batch, maps)
    network = pretrainer.network
    bev = network.forward_features(batch["images"], batch["intrinsics"], batch["cam_to_ego"], batch["bev_aug"])
    logits = head(bev)["occupancy"] if head.occupancy is not None else None
    written: list[Path] = []
    scale = max(1, PANEL_PIXELS // max(grid.shape))
    letters = "AB"

    if logits is not None:
        for k, label in enumerate(labels):
            panels = _occupancy_panels(logits[k], targets.occupancy[k], grid, f"{letters[k]} ({label})")
            written.append(save_bev_panels(panels, out / f"occupancy-{k}.png", scale=scale))
    if not uses_features:
        return written

    # The voxels whose features are shown: predicted occupied, else Lidar-occupied; surface only; capped.
    shape = tuple(targets.occupancy.shape)
    sample_of_lidar = unravel_voxel_index(targets.occupied_index, grid)[0]
    chosen, sources = [], []
    for k in range(len(labels)):
        index = None
        if logits is not None:
            index = (logits[k] > 0).view(-1).nonzero().squeeze(1) + k * logits[k].numel()
            source = "predicted occupied"
        if index is None or len(index) < MIN_PREDICTED_VOXELS:
            index = targets.occupied_index[sample_of_lidar == k]
            source = "Lidar-occupied" if logits is None else "Lidar-occupied (too few predicted)"
        chosen.append(_cap(_surface(index, shape), grid, MAX_VOXELS_PER_SAMPLE))
        sources.append(source)
    if len(chosen[0]) == 0:
        return written  # no voxel to fit a PCA on (no Lidar point in the grid)
    index = torch.cat(chosen)
    features = F.normalize(head(bev, index)["features"].float(), dim=1)
    parts = list(features.split([len(c) for c in chosen]))
    pca = fit_pca(parts[0])
    colors = [to_uint8(apply_pca(part, pca)) for part in parts]

    titles = [f"scene A (PCA fitted here): {labels[0]}", f"scene B (same PCA): {labels[-1]}"]
    panels = {titles[k]: _bev_colors(chosen[k], colors[k], grid) for k in range(len(labels))}
    if targets.features is not None:
        seen_index, seen_features = targets.distilled_index, F.normalize(targets.distilled_features.float(), dim=1)
        sample_of_seen = unravel_voxel_index(seen_index, grid)[0]
        for k in range(len(labels)):
            mine = sample_of_seen == k
            teacher_colors = to_uint8(apply_pca(seen_features[mine], pca)) if bool(mine.any()) else np.zeros((0, 3), np.uint8)
            panels[f"teacher targets {letters[k]} (same PCA)"] = _bev_colors(seen_index[mine], teacher_colors, grid)
    written.append(save_bev_panels(panels, out / "pca-bev.png", scale=scale))

    _, base = _tokens_and_base(dataset)
    cameras = tuple(getattr(base, "cameras", ())) if base is not None else ()
    config = network.config
    for k in range(len(labels)):
        tiles = _camera_tiles(batch, k, chosen[k], colors[k], grid, config.image_mean, config.image_std, cameras)
        fitted = "PCA fitted on this sample" if k == 0 else "PCA of scene A"
        header = (f"scene {letters[k]} ({labels[k]}): features of the {len(chosen[k])} {sources[k]} surface voxels, "
                  f"{fitted}; nearest voxel per pixel")
        written.append(save_image_grid(tiles, out / f"pca-cameras-{letters[k]}.png", columns=3, header=header))
    return written
