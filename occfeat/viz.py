"""Pictures (PNG): BEV maps a person would rather look at than read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw


def colorize(values: np.ndarray | torch.Tensor, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """(H, W) scalars -> (H, W, 3) uint8 with a perceptually ordered dark-blue -> yellow ramp."""
    array = values.detach().float().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, float)
    lo = float(array.min()) if vmin is None else vmin
    hi = float(array.max()) if vmax is None else vmax
    t = np.clip((array - lo) / max(hi - lo, 1e-12), 0.0, 1.0)[..., None]
    stops = np.array([[0.07, 0.05, 0.25], [0.15, 0.45, 0.55], [0.45, 0.75, 0.35], [0.99, 0.9, 0.15]])
    position = t * (len(stops) - 1)
    low = np.floor(position).astype(int).clip(0, len(stops) - 2)
    frac = position - low
    rgb = stops[low[..., 0]] * (1 - frac) + stops[low[..., 0] + 1] * frac
    return (rgb * 255).astype(np.uint8)


def save_bev_panels(panels: dict[str, np.ndarray], path: str | Path, scale: int = 4) -> Path:
    """Save (H, W, 3) uint8 BEV images side by side with a title each; the ego car (the raster centre) is marked.

    Rasters follow occfeat's convention: row 0 = far front, column 0 = far left, so the car drives up.
    """
    tiles = []
    for title, rgb in panels.items():
        image = Image.fromarray(rgb).resize((rgb.shape[1] * scale, rgb.shape[0] * scale), Image.NEAREST)
        canvas = Image.new("RGB", (image.width, image.height + 18), "white")
        canvas.paste(image, (0, 18))
        draw = ImageDraw.Draw(canvas)
        draw.text((4, 3), title, fill="black")
        cx, cy = image.width / 2, 18 + image.height / 2
        draw.polygon([(cx, cy - 6), (cx - 4, cy + 5), (cx + 4, cy + 5)], outline="red")  # ego, pointing up
        tiles.append(canvas)
    out = Image.new("RGB", (sum(t.width for t in tiles) + 8 * (len(tiles) - 1), max(t.height for t in tiles)), "white")
    x = 0
    for tile in tiles:
        out.paste(tile, (x, 0))
        x += tile.width + 8
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    return path


def overlay_errors(probability: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor,
                   ignore: np.ndarray | torch.Tensor | None = None, threshold: float = 0.5) -> np.ndarray:
    """(H, W) -> (H, W, 3) uint8: true positives green, false positives red, false negatives blue, ignored grey."""
    to_np = lambda t: t.detach().float().cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, float)  # noqa: E731
    predicted, truth = to_np(probability) >= threshold, to_np(target) > 0.5
    rgb = np.full(predicted.shape + (3,), 255, np.uint8)
    rgb[predicted & truth] = (40, 170, 60)
    rgb[predicted & ~truth] = (220, 50, 40)
    rgb[~predicted & truth] = (40, 90, 220)
    if ignore is not None:
        rgb[to_np(ignore) > 0.5] = (170, 170, 170)
    return rgb


def save_prediction_png(outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], index: int,
                        path: str | Path) -> Path:
    """One sample's BEV predictions over its labels: vehicle probability and errors, map probability and errors."""
    vehicle = torch.sigmoid(outputs["vehicle"][index, 0].float())
    panels = {
        "vehicle label": colorize(batch["vehicle"][index, 0], 0, 1),
        "vehicle probability": colorize(vehicle, 0, 1),
        "vehicle: TP green, FP red, FN blue": overlay_errors(vehicle, batch["vehicle"][index, 0],
                                                             batch.get("vehicle_ignore", batch["vehicle"] * 0)[index, 0]),
    }
    if "map" in outputs and "map" in batch:
        drivable = torch.sigmoid(outputs["map"][index, 0].float())
        panels["map probability"] = colorize(drivable, 0, 1)
        panels["map: TP green, FP red, FN blue"] = overlay_errors(drivable, batch["map"][index, 0])
    return save_bev_panels(panels, path, scale=max(1, 400 // int(vehicle.shape[-1])))


def save_image_grid(tiles: dict[str, np.ndarray], path: str | Path, columns: int = 3, header: str | None = None) -> Path:
    """Save (H, W, 3) uint8 images in a grid of ``columns`` per row (row-major, in the dict's order), a title above
    each and an optional ``header`` line above all; tiles of different sizes are top-left aligned in their cells."""
    if not tiles:
        raise ValueError("save_image_grid: no tiles to draw.")
    title_h, pad = 18, 8
    items = list(tiles.items())
    cell_w = max(rgb.shape[1] for _, rgb in items)
    cell_h = max(rgb.shape[0] for _, rgb in items) + title_h
    columns = max(1, min(columns, len(items)))
    rows = -(-len(items) // columns)
    top = title_h + 4 if header else 0
    out = Image.new("RGB", (columns * cell_w + (columns - 1) * pad, top + rows * cell_h + (rows - 1) * pad), "white")
    draw = ImageDraw.Draw(out)
    if header:
        draw.text((4, 3), header, fill="black")
    for i, (title, rgb) in enumerate(items):
        x, y = (i % columns) * (cell_w + pad), top + (i // columns) * (cell_h + pad)
        draw.text((x + 4, y + 3), title, fill="black")
        out.paste(Image.fromarray(np.ascontiguousarray(rgb)), (x, y + title_h))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)
    return path
