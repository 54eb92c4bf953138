"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch: no compiled extension, runs on CPU and CUDA."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError

_BILINEAR, _ZEROS = 0, 0  # grid_sampler_2d's interpolation and padding codes
# Sampling locations per chunk of the bilinear-tap arithmetic (see _BilinearTaps): its dozen element-wise passes then
# run over tensors of about a megabyte that stay in cache, not over fresh 20 MB buffers (3x faster on BEVFormer-enb0).
TAP_CHUNK = 1 << 17
IMPLEMENTATIONS = ("gather", "grid_sample")


def exporting() -> bool:
    """True while ``torch.export`` (and so the ONNX exporter) traces the network. The few places whose fast path is
    data-dependent (sparse gathers sized by ``nonzero``, a custom autograd function, cache-sized chunks) then take a
    dense path that computes the same numbers with static shapes."""
    return bool(torch.compiler.is_exporting())


def _sample(level_value: Tensor, grid: Tensor) -> Tensor:
    """(BM, D, H, W), (BM, P, Lq, 2) in [-1, 1] -> (BM, D, P, Lq)."""
    return F.grid_sample(level_value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class _WeightedSample(torch.autograd.Function):
    """sum_p w[p, q] * bilinear(value, grid[p, q]) for one level, without keeping the samples for backward.

    Keeping the (BM, D, P, Lq) samples would cost D times the memory of the inputs (about 0.8 GiB per BEVFormer layer
    at 200x200); backward recomputes them instead.
    """

    @staticmethod
    def forward(ctx, level_value: Tensor, grid: Tensor, weights: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(level_value, grid, weights)
        return _sample(level_value, grid).mul_(weights[:, None]).sum(dim=2)  # (BM, D, Lq)

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        level_value, grid, weights = ctx.saved_tensors
        need_value, need_grid, need_weights = ctx.needs_input_grad
        grad_weights = None
        if need_weights:
            grad_weights = _sample(level_value, grid).mul_(grad_out[:, :, None]).sum(dim=1)
        grad_value = grad_grid = None
        if need_value or need_grid:
            grad_samples = grad_out[:, :, None] * weights[:, None]  # (BM, D, P, Lq)
            grad_value, grad_grid = torch.ops.aten.grid_sampler_2d_backward(
                grad_samples, level_value, grid, _BILINEAR, _ZEROS, False, [need_value, need_grid])
        return grad_value, grad_grid, grad_weights


def ms_deform_attn(
    value: Tensor,
    spatial_shapes: Tensor | list[tuple[int, int]],
    sampling_locations: Tensor,
    attention_weights: Tensor,
    value_map: Tensor | None = None,
    implementation: str | None = None,
) -> Tensor:
    """Sum of bilinearly sampled values, weighted per head over levels and points.

    Args:
        value: (V, S, M, D), the L levels flattened row-major one after the other, S = sum(H_l * W_l). V = B unless
            ``value_map`` says otherwise.
        spatial_shapes: (L, 2) as (H_l, W_l).
        sampling_locations: (B, Lq, M, L, P, 2) unit (x, y) over each level's extent; a point outside [0, 1]
            samples zeros (bilinear, zero padding, ``align_corners=False``).
        attention_weights: (B, Lq, M, L, P), normally softmaxed over L * P.
        value_map: optional (B, Lq) integer index into ``value``'s first dimension: the map each query samples
            (default: its own batch entry). BEVFormer's cross-attention samples one camera per (camera, query) pair
            with it, all cameras in one call.
        implementation: "gather" (default on CPU) or "grid_sample" (default elsewhere); the same numbers.
    Returns:
        (B, Lq, M * D), in the dtype of ``value``.

    "gather" fuses sampling and weighting: each query's L * P * 4 bilinear taps and their weights (tap weight times
    attention weight) are computed in cache-sized chunks, then one ``embedding_bag`` sums the weighted value rows, so
    the (Lq, M, P, D) samples are never written. "grid_sample" samples all heads, points and queries of a level with
    one ``grid_sample`` and sums the points in place, without keeping the samples for backward. Computed in the wider
    of the value and location dtypes, with autocast off: bf16 locations would be off by a fraction of a cell.
    """
    v, s, m, d = value.shape
    shapes = spatial_shapes.tolist() if isinstance(spatial_shapes, Tensor) else [tuple(x) for x in spatial_shapes]
    b, lq, m_loc, num_levels, p, _ = sampling_locations.shape
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
    if value_map is None and v != b:
        raise InputError(f"ms_deform_attn: value has {v} maps for a batch of {b}: give value_map (B, Lq) to say "
                         "which map each query samples.")
    if value_map is not None and (value_map.shape != (b, lq) or value_map.is_floating_point()):
        raise InputError(f"ms_deform_attn: value_map must be an integer tensor of shape (B, Lq) = {(b, lq)}, got "
                         f"{value_map.dtype} {tuple(value_map.shape)}.")
    if implementation is None:
        implementation = "gather" if value.device.type == "cpu" else "grid_sample"
    if implementation not in IMPLEMENTATIONS:
        raise InputError(f"ms_deform_attn: implementation={implementation!r}, expected one of {IMPLEMENTATIONS}.")
    dtype, out_dtype = torch.promote_types(value.dtype, sampling_locations.dtype), value.dtype
    if exporting():  # one grid_sample and one weighted sum per level: a static graph, the same sums
        if value_map is not None:
            raise InputError("ms_deform_attn: value_map is data-dependent and cannot be exported; sample each "
                             "map's queries densely instead (BEVFormer's DenseGather).")
        return _deform_attn_grid_sample(value.to(dtype), shapes, sampling_locations.to(dtype),
                                        attention_weights.to(dtype), plain_ops=True).to(out_dtype)
    with torch.autocast(device_type=value.device.type, enabled=False):
        value, locations, weights = value.to(dtype), sampling_locations.to(dtype), attention_weights.to(dtype)
        if implementation == "gather":
            output = _deform_attn_gather(value, shapes, locations, weights, value_map)
        elif value_map is None:
            output = _deform_attn_grid_sample(value, shapes, locations, weights)
        else:
            output = _per_map(_deform_attn_grid_sample, value, shapes, locations, weights, value_map)
    return output.to(out_dtype)


def _deform_attn_grid_sample(value: Tensor, shapes: list, locations: Tensor, weights: Tensor,
                             plain_ops: bool = False) -> Tensor:
    """``ms_deform_attn`` with ``grid_sample``: (B, S, M, D) values, one map per batch entry -> (B, Lq, M * D).

    ``plain_ops`` (the export path) sums the points with plain ops instead of ``_WeightedSample``, whose custom
    autograd function ``torch.export`` cannot trace; the numbers are the same."""
    b, s, m, d = value.shape
    _, lq, _, num_levels, p, _ = locations.shape
    # (B, S, M, D) -> (B*M, S, D): per head, each location's D channels contiguous (channels-last levels).
    values = value.permute(0, 2, 1, 3).reshape(b * m, s, d)
    # (B, Lq, M, L, P, 2) -> (B*M, L, P, Lq, 2): point-major, so the weighted sum reduces a middle dimension.
    grids = (2.0 * locations - 1.0).permute(0, 2, 3, 4, 1, 5).reshape(b * m, num_levels, p, lq, 2)
    point_weights = weights.permute(0, 2, 3, 4, 1).reshape(b * m, num_levels, p, lq)
    output: Tensor | None = None
    start = 0
    for level, (h, w) in enumerate(shapes):
        level_value = values[:, start : start + h * w].view(b * m, h, w, d).permute(0, 3, 1, 2)
        start += h * w
        if plain_ops:
            summed = (_sample(level_value, grids[:, level]) * point_weights[:, level, None]).sum(dim=2)
        else:
            summed = _WeightedSample.apply(level_value, grids[:, level], point_weights[:, level])  # (B*M, D, Lq)
        output = summed if output is None else output + summed
    assert output is not None
    return output.view(b, m, d, lq).permute(0, 3, 1, 2).reshape(b, lq, m * d)


def _per_map(sample, value: Tensor, shapes: list, locations: Tensor, weights: Tensor, value_map: Tensor) -> Tensor:
    """A one-map-per-batch-entry ``sample`` applied with a ``value_map``: the queries grouped by map, one call each."""
    b, lq = value_map.shape
    flat_map = value_map.reshape(-1)
    order = torch.argsort(flat_map, stable=True)
    counts = torch.bincount(flat_map, minlength=value.shape[0]).tolist()
    flat_locations, flat_weights = locations.flatten(0, 1)[order], weights.flatten(0, 1)[order]
    parts, start = [], 0
    for index, count in enumerate(counts):
        if count:
            span = slice(start, start + count)
            parts.append(sample(value[index : index + 1], shapes, flat_locations[None, span], flat_weights[None, span])[0])
            start += count
    output = torch.empty(b * lq, value.shape[2] * value.shape[3], dtype=value.dtype, device=value.device)
    output[order] = torch.cat(parts) if parts else output[:0]
    return output.view(b, lq, -1)


def _deform_attn_gather(value: Tensor, shapes: list, locations: Tensor, weights: Tensor,
                        value_map: Tensor | None) -> Tensor:
    """``ms_deform_attn`` as bilinear taps and one ``embedding_bag`` (the CPU path)."""
    v, s, m, d = value.shape
    b, lq, _, num_levels, p, _ = locations.shape
    # The table: each level of each (map, head) with a one-cell zero border, one row of D channels per cell. A tap
    # that falls off its level reads a zero row, so no tap needs a mask.
    padded, level_starts, start, rows_per_head = [], [], 0, 0
    for h, w in shapes:
        level = value[:, start : start + h * w].view(v, h, w, m, d).permute(0, 3, 1, 2, 4)
        padded.append(F.pad(level, (0, 0, 1, 1, 1, 1)).reshape(v, m, (h + 2) * (w + 2), d))
        level_starts.append(rows_per_head)
        rows_per_head += (h + 2) * (w + 2)
        start += h * w
    table = (padded[0] if num_levels == 1 else torch.cat(padded, dim=2)).reshape(v * m * rows_per_head, d)
    if rows_per_head >= 2**24:
        raise InputError(f"ms_deform_attn: {rows_per_head} cells per head (with borders) exceed the gather path's 2^24; "
                         'use implementation="grid_sample".')
    index_dtype = torch.int32 if table.shape[0] < 2**31 else torch.int64
    maps = value_map if value_map is not None else torch.arange(b, device=value.device).view(b, 1)
    heads = torch.arange(m, device=value.device, dtype=index_dtype)
    head_rows = (maps.to(index_dtype).unsqueeze(-1) * m + heads) * rows_per_head  # (B, Lq or 1, M)
    taps, tap_weights = _BilinearTaps.apply(locations, weights, head_rows, shapes, level_starts)
    # One bag per (query, head): every tap of every point of every level.
    corner_steps = [_corner_steps(w) for _, w in shapes]
    summed = _WeightedTaps.apply(table, taps.view(-1, num_levels, 4, p), tap_weights.view(-1, num_levels, 4, p),
                                 corner_steps)
    return summed.view(b, lq, m * d)


class _WeightedTaps(torch.autograd.Function):
    """out[i] = sum over the bag's taps of tap_weight * table[tap]: ``embedding_bag``'s weighted sum over the
    (L, 4, P) bilinear taps of each bag, with a faster backward.

    torch's own backward of the table scatters one row at a time (an axpy call per tap: 0.33 s per BEVFormer-enb0
    attention layer). Here the table's gradient is itself a weighted sum: the points are sorted by their top-left
    tap once per level, and for each of the 4 corners one ``embedding_bag`` sums, per table row, the upstream
    gradients of the bags whose points have their top-left tap there; shifted by the corner's row step, the four add
    up to the gradient (4x faster). Sorting points, not taps, sorts a quarter of the entries.
    """

    @staticmethod
    def forward(ctx, table: Tensor, taps: Tensor, tap_weights: Tensor,  # type: ignore[override]
                corner_steps: list) -> Tensor:
        ctx.save_for_backward(table, taps, tap_weights)
        ctx.corner_steps = corner_steps
        bags = taps.shape[0]
        return F.embedding_bag(taps.view(bags, -1), table, mode="sum", per_sample_weights=tap_weights.view(bags, -1))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor):  # type: ignore[override]
        table, taps, tap_weights = ctx.saved_tensors
        bags, num_levels, _, points = taps.shape
        rows = table.shape[0]
        grad_out = grad_out.contiguous()
        grad_table = grad_weights = None
        if ctx.needs_input_grad[0]:
            grad_table = torch.zeros_like(table)
            for level, steps in enumerate(ctx.corner_steps):
                top_left = taps[:, level, 0].reshape(-1)  # (bags * P,): the bag of entry e is e // P
                order = torch.argsort(top_left)
                readers = torch.bincount(top_left, minlength=rows)
                offsets = torch.cumsum(readers, 0) - readers
                # A shift when P is a power of two: int64 division is slow.
                reader_bags = order >> (points.bit_length() - 1) if points & (points - 1) == 0 else order // points
                for corner, step in enumerate(steps):
                    weights = tap_weights[:, level, corner].reshape(-1).index_select(0, order)
                    part = F.embedding_bag(reader_bags, grad_out, offsets, mode="sum", per_sample_weights=weights)
                    grad_table[step:] += part[: rows - step]  # a corner's row is its top-left tap's row + step
        if ctx.needs_input_grad[2]:
            # d out / d weight = <grad_out[bag], table[tap]>: the op autograd itself uses for embedding_bag's
            # per-sample weights (2.5x the speed of gathering the rows and a bmm).
            flat = taps.reshape(-1)
            per_bag = num_levels * 4 * points
            offsets = torch.arange(0, bags * per_bag, per_bag, dtype=flat.dtype, device=flat.device)
            bag_of_tap = torch.arange(bags, dtype=flat.dtype, device=flat.device).view(-1, 1).expand(-1, per_bag)
            grad_weights = torch.ops.aten._embedding_bag_per_sample_weights_backward(
                grad_out, table, flat, offsets, bag_of_tap.reshape(-1), 0).view_as(tap_weights)  # mode 0: sum
        return grad_table, None, grad_weights, None


def _corner_steps(width: int) -> tuple[int, int, int, int]:
    """Row steps from a point's top-left tap to its 4 taps on a level of ``width`` cells with a one-cell border, in
    (row, column) order: itself, one column, one row, both."""
    return 0, 1, width + 2, width + 3


def _axis_taps(unit: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Unit coordinates along one axis of a level of ``size`` cells -> (the first tap's cell, as a float; the second
    tap's weight).

    Pixels are clamped to [-1, size]: past that both taps lie in the zero border, so clamping changes no sample (and
    leaves no gradient, see ``_moves_taps``).
    """
    pixel = (unit * size).sub_(0.5).clamp_(-1.0, float(size))
    first = pixel.floor().clamp_(max=size - 1)
    return first, pixel.sub_(first)


def _moves_taps(unit: Tensor, size: int) -> Tensor:
    """Where a unit coordinate lies strictly inside ``_axis_taps``' clamp, i.e. where it has a gradient."""
    pixel = unit * size
    return (pixel > -0.5) & (pixel < size + 0.5)


def _query_spans(lq: int, locations_per_query: int) -> list[slice]:
    chunk = max(1, TAP_CHUNK // max(1, locations_per_query))
    return [slice(start, min(start + chunk, lq)) for start in range(0, lq, chunk)]


class _BilinearTaps(torch.autograd.Function):
    """Sampling locations and attention weights -> the four bilinear taps of every point as rows of the padded
    table, and their weights (bilinear weight times attention weight): (B, Lq, M, L, 4, P) each.

    Computed in cache-sized chunks of queries. Backward recomputes the fractional positions (nothing but the inputs
    is kept) and returns the gradients of the locations and attention weights.
    """

    @staticmethod
    def forward(ctx, locations: Tensor, weights: Tensor, head_rows: Tensor, shapes: list,  # type: ignore[override]
                level_starts: list) -> tuple[Tensor, Tensor]:
        b, lq, m, num_levels, p, _ = locations.shape
        taps = torch.empty(b, lq, m, num_levels, 4, p, dtype=head_rows.dtype, device=locations.device)
        tap_weights = weights.new_empty(b, lq, m, num_levels, 4, p)
        for span in _query_spans(lq, b * m * num_levels * p):
            rows = head_rows[:, span] if head_rows.shape[1] > 1 else head_rows
            for level, ((h, w), level_start) in enumerate(zip(shapes, level_starts)):
                x_first, fx = _axis_taps(locations[:, span, :, level, :, 0], w)
                y_first, fy = _axis_taps(locations[:, span, :, level, :, 1], h)
                # Row of the top-left tap among the head's rows (exact in float: fewer than 2^24 of them), then among
                # all rows; the other taps are one column, one row and both further on.
                cell = y_first.mul_(w + 2).add_(x_first).add_(level_start + w + 3).to(taps.dtype).add_(rows.unsqueeze(-1))
                for corner, step in enumerate(_corner_steps(w)):  # 4 scalar adds beat one broadcast add here
                    torch.add(cell, step, out=taps[:, span, :, level, corner])
                _corner_weights(weights[:, span, :, level], fx, fy, out=tap_weights[:, span, :, level])
        ctx.save_for_backward(locations, weights)
        ctx.shapes = shapes
        ctx.mark_non_differentiable(taps)
        ctx.set_materialize_grads(False)  # no zero-filled (B, Lq, M, L, 4, P) gradient for the integer taps
        return taps, tap_weights

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, _grad_taps: Tensor | None, grad_tap_weights: Tensor | None):  # type: ignore[override]
        locations, weights = ctx.saved_tensors
        need_locations, need_weights = ctx.needs_input_grad[:2]
        if grad_tap_weights is None:
            return None, None, None, None, None
        b, lq, m, num_levels, p, _ = locations.shape
        grad_locations = torch.zeros_like(locations) if need_locations else None
        grad_weights = torch.empty_like(weights) if need_weights else None
        for span in _query_spans(lq, b * m * num_levels * p):
            for level, (h, w) in enumerate(ctx.shapes):
                x, y = locations[:, span, :, level, :, 0], locations[:, span, :, level, :, 1]
                (_, fx), (_, fy) = _axis_taps(x, w), _axis_taps(y, h)
                g00, g01, g10, g11 = grad_tap_weights[:, span, :, level].unbind(-2)  # (row, column) taps
                top = torch.lerp(g00, g01, fx)  # d loss / d (attention * (1 - fy)), and below: * fy
                bottom = torch.lerp(g10, g11, fx)
                if need_weights:
                    torch.lerp(top, bottom, fy, out=grad_weights[:, span, :, level])
                if need_locations:
                    a = weights[:, span, :, level]
                    across = torch.lerp(g01 - g00, g11 - g10, fy)  # d loss / d (attention * fx)
                    grad_locations[:, span, :, level, :, 0] = across.mul_(a).mul_(_moves_taps(x, w)).mul_(w)
                    grad_locations[:, span, :, level, :, 1] = bottom.sub_(top).mul_(a).mul_(_moves_taps(y, h)).mul_(h)
        return grad_locations, grad_weights, None, None, None


def _corner_weights(attention: Tensor, fx: Tensor, fy: Tensor, out: Tensor) -> None:
    """Bilinear weight times attention weight of the 4 taps, into ``out`` (..., 4, P) in (row, column) order:
    (1-fy)(1-fx), (1-fy)fx, fy(1-fx), fy fx."""
    bottom = attention * fy
    top = attention - bottom
    torch.mul(top, fx, out=out[..., 1, :])
    torch.sub(top, out[..., 1, :], out=out[..., 0, :])
    torch.mul(bottom, fx, out=out[..., 3, :])
    torch.sub(bottom, out[..., 3, :], out=out[..., 2, :])


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
