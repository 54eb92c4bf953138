"""Multi-scale deformable attention (Deformable DETR) in pure PyTorch: no compiled extension, runs on CPU and CUDA."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError


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
        (B, Lq, M * D).

    The work per level is one ``grid_sample`` over all heads, queries and points at once followed by one batched
    weighted sum (no (..., L, P) stack of samples is ever materialised), so memory stays at one level's samples.
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
    # Sample in the wider of the two dtypes: bf16 locations would be off by a fraction of a cell.
    dtype = torch.promote_types(value.dtype, sampling_locations.dtype)
    # (B, S, M, D) -> (B*M, D, S): one "image" per batch element and head.
    value_bm = value.to(dtype).permute(0, 2, 3, 1).reshape(b * m, d, s)
    # (B, Lq, M, L, P, 2) -> (B*M, L, Lq, P, 2) in grid_sample's [-1, 1].
    grids = (2.0 * sampling_locations.to(dtype) - 1.0).permute(0, 2, 3, 1, 4, 5).reshape(b * m, num_levels, lq, p, 2)
    weights = attention_weights.permute(0, 2, 3, 1, 4).reshape(b * m, num_levels, lq, p)
    output = value_bm.new_zeros(b * m, d, lq)
    start = 0
    for level, (h, w) in enumerate(shapes):
        level_value = value_bm[:, :, start : start + h * w].view(b * m, d, h, w)
        start += h * w
        sampled = F.grid_sample(
            level_value, grids[:, level], mode="bilinear", padding_mode="zeros", align_corners=False
        )  # (B*M, D, Lq, P)
        # Weighted sum over the points: einsum lowers to one batched matmul per level.
        output = output + torch.einsum("bdqp,bqp->bdq", sampled, weights[:, level].to(sampled.dtype))
    return output.view(b, m * d, lq).transpose(1, 2).contiguous()
