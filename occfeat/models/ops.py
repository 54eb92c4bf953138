"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch: no compiled extension, runs on CPU and CUDA."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError

_BILINEAR, _ZEROS = 0, 0  # grid_sampler_2d's interpolation and padding codes
# Bytes of samples per query chunk on CPU (see _query_chunks): forward, and backward, where every
# grid_sampler_2d_backward call returns a full-size value gradient, so fewer, larger chunks pay off.
FORWARD_CHUNK_BYTES = 8 << 20
BACKWARD_CHUNK_BYTES = 64 << 20


def exporting() -> bool:
    """True while ``torch.export`` (and so the ONNX exporter) traces the network. The few places whose fast path is
    data-dependent (sparse gathers sized by ``nonzero``, a custom autograd function, cache-sized chunks) then take a
    dense path that computes the same numbers with static shapes."""
    return bool(torch.compiler.is_exporting())


def _sample(level_value: Tensor, grid: Tensor) -> Tensor:
    """(BM, D, H, W), (BM, P, Lq, 2) in [-1, 1] -> (BM, D, P, Lq)."""
    return F.grid_sample(level_value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _query_chunks(level_value: Tensor, grid: Tensor, budget_bytes: int) -> list[slice]:
    """Split the queries so that one chunk's samples (BM, D, P, chunk) stay near ``budget_bytes``.

    On a CPU the samples of a whole BEVFormer layer are 100-250 MB: written once by grid_sample and read back by the
    weighted sum, they make the op memory-bound. Chunks that stay in cache halve its time (bench/models.py). A GPU
    has the bandwidth to do it in one go.
    """
    bm, d = level_value.shape[:2]
    p, lq = grid.shape[1], grid.shape[2]
    if level_value.device.type != "cpu":
        return [slice(0, lq)]
    per_query = bm * d * p * level_value.element_size()
    chunk = max(1, budget_bytes // per_query)
    return [slice(start, min(start + chunk, lq)) for start in range(0, lq, chunk)]


class _WeightedSample(torch.autograd.Function):
    """sum_p w[p, q] * bilinear(value, grid[p, q]) for one level, computed in cache-sized chunks of queries and
    without keeping the samples for backward.

    Keeping the (BM, D, P, Lq) samples would cost D times the memory of the inputs (about 0.8 GiB per BEVFormer layer
    at 200x200); backward recomputes them instead, one chunk at a time.
    """

    @staticmethod
    def forward(ctx, level_value: Tensor, grid: Tensor, weights: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(level_value, grid, weights)
        bm, d = level_value.shape[:2]
        out = level_value.new_empty(bm, d, grid.shape[2])
        for q in _query_chunks(level_value, grid, FORWARD_CHUNK_BYTES):
            samples = _sample(level_value, grid[:, :, q]).mul_(weights[:, None, :, q])
            torch.sum(samples, dim=2, out=out[:, :, q])
        return out  # (BM, D, Lq)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        level_value, grid, weights = ctx.saved_tensors
        need_value, need_grid, need_weights = ctx.needs_input_grad
        grad_value = torch.zeros_like(level_value) if need_value else None
        grad_grid = torch.empty_like(grid) if need_grid else None
        grad_weights = torch.empty_like(weights) if need_weights else None
        for q in _query_chunks(level_value, grid, BACKWARD_CHUNK_BYTES):
            if need_weights:
                samples = _sample(level_value, grid[:, :, q]).mul_(grad_out[:, :, None, q])
                torch.sum(samples, dim=1, out=grad_weights[:, :, q])
            if need_value or need_grid:
                grad_samples = grad_out[:, :, None, q] * weights[:, None, :, q]  # (BM, D, P, chunk)
                chunk_value, chunk_grid = torch.ops.aten.grid_sampler_2d_backward(
                    grad_samples, level_value, grid[:, :, q], _BILINEAR, _ZEROS, False, [need_value, need_grid]
                )
                if need_value:
                    grad_value += chunk_value
                if need_grid:
                    grad_grid[:, :, q] = chunk_grid
        return grad_value, grad_grid, grad_weights


def ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor | list[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
) -> Tensor:
    """Sum of bilinearly sampled values, weighted per head over levels and points.

    Args:
        value: (B, S, M, D), the L levels flattened row-major one after the other, S = sum(H_l * W_l).
        spatial_shapes: (L, 2) as (H_l, W_l).
        sampling_locations: (B, Lq, M, L, P, 2) unit (x, y) over each level's extent; a point outside [0, 1]
            samples zeros (bilinear, zero padding, ``align_corners=False``).
        attention_weights: (B, Lq, M, L, P), normally softmaxed over L * P.
    Returns:
        (B, Lq, M * D), in the dtype of ``value``.

    Per level, one ``grid_sample`` over all heads, points and queries at once, on a channels-last copy of the
    values (each bilinear tap then reads D contiguous numbers), followed by an in-place weighted sum over the
    points; the samples are not kept for backward (see ``_WeightedSample``). Computed in the wider of the value and
    location dtypes, with autocast off: bf16 locations would be off by a fraction of a cell.
    """
    b, s, m, d = value.shape
    shapes = spatial_shapes.tolist() if isinstance(spatial_shapes, Tensor) else [tuple(x) for x in spatial_shapes]
    _, lq, m_loc, num_levels, p, _ = sampling_locations.shape
    if m_loc != m or num_levels != len(shapes) or sum(h * w for h, w in shapes) != s:
        raise InputError(
            f"ms_deform_attn: value {tuple(value.shape)}, spatial_shapes {shapes} and sampling_locations "
            f"{tuple(sampling_locations.shape)} disagree: expected sum(H*W) == S, M equal, L == len(spatial_shapes)."
        )
    if attention_weights.shape != sampling_locations.shape[:-1]:
        raise InputError(
            f"ms_deform_attn: attention_weights has shape {tuple(attention_weights.shape)}, expected "
            f"{tuple(sampling_locations.shape[:-1])} (B, Lq, M, L, P)."
        )
    dtype = torch.promote_types(value.dtype, sampling_locations.dtype)
    if exporting():  # one grid_sample and one weighted sum per level: a static graph, the same sums
        return _ms_deform_attn_dense(value.to(dtype), shapes, sampling_locations.to(dtype),
                                     attention_weights.to(dtype)).to(value.dtype)
    with torch.autocast(device_type=value.device.type, enabled=False):
        # (B, S, M, D) -> (B*M, S, D): per head, each location's D channels contiguous (channels-last levels).
        values = value.to(dtype).permute(0, 2, 1, 3).reshape(b * m, s, d)
        # (B, Lq, M, L, P, 2) -> (B*M, L, P, Lq, 2): point-major, so the weighted sum reduces a middle dimension.
        grids = (2.0 * sampling_locations.to(dtype) - 1.0).permute(0, 2, 3, 4, 1, 5).reshape(b * m, num_levels, p, lq, 2)
        weights = attention_weights.to(dtype).permute(0, 2, 3, 4, 1).reshape(b * m, num_levels, p, lq)
        output: Tensor | None = None
        start = 0
        for level, (h, w) in enumerate(shapes):
            level_value = values[:, start : start + h * w].view(b * m, h, w, d).permute(0, 3, 1, 2)
            start += h * w
            summed = _WeightedSample.apply(level_value, grids[:, level], weights[:, level])  # (B*M, D, Lq)
            output = summed if output is None else output + summed
    assert output is not None
    return output.view(b, m, d, lq).permute(0, 3, 1, 2).reshape(b, lq, m * d).to(value.dtype)


def _ms_deform_attn_dense(value: Tensor, shapes: list, locations: Tensor, weights: Tensor) -> Tensor:
    """``ms_deform_attn`` in plain ops (the export path): the same samples and weighted sums, no chunking and no
    custom autograd function."""
    b, s, m, d = value.shape
    _, lq, _, num_levels, p, _ = locations.shape
    values = value.permute(0, 2, 3, 1).reshape(b * m, d, s)
    grids = (2.0 * locations - 1.0).permute(0, 2, 3, 4, 1, 5).reshape(b * m, num_levels, p, lq, 2)
    point_weights = weights.permute(0, 2, 3, 4, 1).reshape(b * m, num_levels, 1, p, lq)
    output = None
    start = 0
    for level, (h, w) in enumerate(shapes):
        level_value = values[:, :, start : start + h * w].reshape(b * m, d, h, w)
        start += h * w
        summed = (_sample(level_value, grids[:, level]) * point_weights[:, level]).sum(dim=2)  # (B*M, D, Lq)
        output = summed if output is None else output + summed
    assert output is not None
    return output.view(b, m, d, lq).permute(0, 3, 1, 2).reshape(b, lq, m * d)


def bilinear_taps(unit_xy: Tensor, hw: tuple[int, int], padding: str = "zeros") -> tuple[Tensor, Tensor]:
    """The four bilinear taps of unit (x, y) locations on an (H, W) map, ``grid_sample(align_corners=False)``
    semantics with ``padding_mode`` "zeros" or "border".

    Args:
        unit_xy: (..., 2) unit coordinates over the map's extent (0 and 1 are its outer edges).
        hw: (H, W) of the map.
        padding: "zeros": taps outside the map weigh 0 (a location in the outer half cell fades to zero);
            "border": locations are clamped to the outer cell centres first, so the map's edge values extend outwards.
    Returns:
        flat indices (..., 4) into the row-major (H*W) map, clamped to valid cells, and weights (..., 4).
        ``sum_k weights[k] * map.flatten()[indices[k]]`` equals ``grid_sample``.
    """
    if padding not in ("zeros", "border"):
        raise InputError(f"bilinear_taps: padding={padding!r}, expected 'zeros' or 'border'.")
    h, w = hw
    x = unit_xy[..., 0] * w - 0.5
    y = unit_xy[..., 1] * h - 0.5
    if padding == "border":
        x, y = x.clamp(0, w - 1), y.clamp(0, h - 1)
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    x0, y0 = x0.long(), y0.long()
    xs = torch.stack([x0, x0 + 1, x0, x0 + 1], dim=-1)
    ys = torch.stack([y0, y0, y0 + 1, y0 + 1], dim=-1)
    weights = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=-1)
    if padding == "zeros":
        weights = weights * ((xs >= 0) & (xs < w) & (ys >= 0) & (ys < h))
    # With "border", a tap past the last cell has weight 0 (the location sits exactly on the last centre).
    return ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1), weights


def average_over_cameras(
    table: Tensor,
    map_hw: tuple[int, int],
    unit_xy: Tensor,
    pair_bag: Tensor,
    pair_map: Tensor,
    bags: int,
    padding: str = "zeros",
    mean_over: str = "seeing",
    eps: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """Bilinear samples of camera feature maps at projected points, averaged over the cameras that see each point:
    the lifting of SimpleBEV and the teacher targets of OccFeat, one gather.

    Args:
        table: (M * H * W, C) the rows of M feature maps of size ``map_hw`` (map-major, then row-major cells).
        unit_xy: (K, 2) unit coordinates (``pixels_to_unit``) of K (point, camera) pairs where the camera sees the point.
        pair_bag: (K,) the point ("bag") of each pair, ascending: a point's pairs are consecutive.
        pair_map: (K,) the feature map (sample * cameras + camera) each pair samples.
        bags: the number of points; a point no camera sees gets zeros.
        padding: ``bilinear_taps``' "zeros" or "border".
        mean_over: "seeing" (the cameras that see the point) or "nonzero" (per channel, the pairs whose sample is not
            exactly zero, as Simple-BEV's ``reduce_masked_mean``; this keeps the (K, C) samples, ~C times the memory).
        eps: added to the count ("nonzero" only; Simple-BEV's 1e-6).
    Returns:
        (bags, C) the mean over seeing cameras of the bilinear samples, and (bags,) how many cameras see each point.
    """
    if mean_over not in ("seeing", "nonzero"):
        raise InputError(f"average_over_cameras: mean_over={mean_over!r}, expected 'seeing' or 'nonzero'.")
    height, width = map_hw
    taps, weights = bilinear_taps(unit_xy, map_hw, padding=padding)  # (K, 4)
    rows = taps + (pair_map * (height * width)).unsqueeze(1)
    seen_by = torch.bincount(pair_bag, minlength=bags)  # (bags,)
    if mean_over == "nonzero":
        pairs = unit_xy.shape[0]
        samples = F.embedding_bag(rows.view(-1), table, torch.arange(pairs, device=rows.device) * 4, mode="sum",
                                  per_sample_weights=weights.view(-1).to(table.dtype))  # (K, C), one bag per pair
        sums = table.new_zeros(bags, table.shape[1]).index_add_(0, pair_bag, samples)
        counts = table.new_zeros(bags, table.shape[1]).index_add_(0, pair_bag, (samples != 0).to(table.dtype))
        return sums / (counts + eps), seen_by
    weights = weights / seen_by[pair_bag].unsqueeze(1)
    offsets = 4 * (torch.cumsum(seen_by, 0) - seen_by)  # each point: one bag of 4 taps per camera that sees it
    averaged = F.embedding_bag(rows.view(-1), table, offsets, mode="sum",
                               per_sample_weights=weights.view(-1).to(table.dtype))
    return averaged, seen_by
