"""BEVFormer-seg (static, single frame): learned BEV queries refined by deformable self-attention and spatial
cross-attention into the camera feature maps.

Shapes: B batch, N cameras, Q = H*W BEV queries, C channels, M heads, P sampling points, Z height anchors.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from einops import rearrange
from torch import Tensor, nn

from .geometry import BEVGrid, pixels_to_unit, project_to_cameras, transform_points
from .ops import ms_deform_attn

# Sampling location given to anchors a camera does not see: far outside [0, 1], so bilinear sampling with zero padding
# returns exactly zero even after the learned offsets (a few cells) are added.
_OUTSIDE = -2.0


def _init_deformable(offsets: nn.Linear, weights: nn.Linear, value: nn.Linear, output: nn.Linear, heads: int) -> None:
    """Deformable-DETR initialisation: zero offset weights with a bias that points each head in its own direction,
    growing with the point index; zero attention logits (uniform weights); Xavier value/output projections."""
    nn.init.zeros_(offsets.weight)
    theta = torch.arange(heads, dtype=torch.float32) * (2.0 * math.pi / heads)
    direction = torch.stack([theta.cos(), theta.sin()], dim=-1)
    direction = direction / direction.abs().max(dim=-1, keepdim=True).values  # (M, 2) on the unit square
    points = offsets.out_features // (2 * heads)
    scale = torch.arange(1, points + 1, dtype=torch.float32).view(1, points, 1)
    with torch.no_grad():
        offsets.bias.copy_((direction[:, None, :] * scale).reshape(-1))
    nn.init.zeros_(weights.weight)
    nn.init.zeros_(weights.bias)
    for proj in (value, output):
        nn.init.xavier_uniform_(proj.weight)
        nn.init.zeros_(proj.bias)


class DeformableSelfAttention(nn.Module):
    """Each BEV query attends to ``points`` locations around its own cell of the query map (one level).

    Reference points are cell centres in unit **(x, y) = (column, row)** order; offsets are in cells.
    """

    def __init__(self, dim: int, heads: int = 4, points: int = 8, dropout: float = 0.1):
        super().__init__()
        self.heads, self.points = heads, points
        self.sampling_offsets = nn.Linear(dim, heads * points * 2)
        self.attention_weights = nn.Linear(dim, heads * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        _init_deformable(self.sampling_offsets, self.attention_weights, self.value_proj, self.output_proj, heads)

    def forward(self, query: Tensor, query_pos: Tensor, reference_xy: Tensor, hw: tuple[int, int]) -> Tensor:
        """query (B, Q, C), query_pos (1, Q, C), reference_xy (Q, 2) -> (B, Q, C) with the residual added."""
        b, q, c = query.shape
        h, w = hw
        with_pos = query + query_pos
        value = self.value_proj(query).view(b, q, self.heads, c // self.heads)
        offsets = self.sampling_offsets(with_pos).view(b, q, self.heads, 1, self.points, 2)
        cells = offsets.new_tensor([w, h])  # offsets are in cells: divide by (W, H) in (x, y) order
        locations = reference_xy.view(1, q, 1, 1, 1, 2) + offsets / cells
        weights = self.attention_weights(with_pos).view(b, q, self.heads, self.points).softmax(-1)
        out = ms_deform_attn(value, [(h, w)], locations, weights.view(b, q, self.heads, 1, self.points))
        return query + self.dropout(self.output_proj(out))


class CameraGather(NamedTuple):
    """Which queries each camera sees, padded to the busiest camera. Computed once, shared by every layer."""

    order: Tensor  # (B, N, K) query index of each gathered slot (K = most queries any camera sees)
    valid: Tensor  # (B, N, K) slot holds a real query (not padding)
    anchors: Tensor  # (B, N, K, Z, 2) unit (x, y) of the query's height anchors in that camera
    cameras_hit: Tensor  # (B, Q) number of cameras that see at least one anchor of the query


def gather_queries_per_camera(anchors_unit: Tensor, anchors_visible: Tensor) -> CameraGather:
    """anchors_unit (B, N, Q, Z, 2), anchors_visible (B, N, Q, Z) -> ``CameraGather``."""
    b, n, q, z, _ = anchors_unit.shape
    hit = anchors_visible.any(dim=-1)  # (B, N, Q)
    counts = hit.sum(dim=-1)  # (B, N)
    most = max(int(counts.max()), 1)
    # A stable descending sort puts each camera's hit queries first, in query order.
    order = torch.argsort(hit.to(torch.uint8), dim=-1, descending=True, stable=True)[..., :most]
    valid = torch.arange(most, device=order.device) < counts[..., None]
    anchors = torch.where(anchors_visible[..., None], anchors_unit, anchors_unit.new_tensor(_OUTSIDE))
    anchors = torch.gather(anchors, 2, order.view(b, n, most, 1, 1).expand(b, n, most, z, 2))
    return CameraGather(order, valid, anchors, hit.sum(dim=1))


class SpatialCrossAttention(nn.Module):
    """Each query samples every camera that sees one of its height anchors, ``points // Z`` points per anchor per
    head around the anchor's projection; the per-camera results are summed and divided by the number of cameras hit.

    Only the queries a camera sees are gathered for it, so the cost scales with what each camera sees.
    """

    def __init__(self, dim: int, heads: int = 4, points: int = 8, dropout: float = 0.1):
        super().__init__()
        self.heads, self.points = heads, points
        self.sampling_offsets = nn.Linear(dim, heads * points * 2)
        self.attention_weights = nn.Linear(dim, heads * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        _init_deformable(self.sampling_offsets, self.attention_weights, self.value_proj, self.output_proj, heads)

    def forward(self, query: Tensor, query_pos: Tensor, features: Tensor, gather: CameraGather) -> Tensor:
        """query (B, Q, C), query_pos (1, Q, C), features (B, N, C, Hf, Wf) -> (B, Q, C) with the residual added."""
        b, q, c = query.shape
        n, hf, wf = features.shape[1], features.shape[-2], features.shape[-1]
        k, z = gather.anchors.shape[2], gather.anchors.shape[3]
        m, p = self.heads, self.points
        batch_index = torch.arange(b, device=query.device).view(b, 1, 1)
        gathered = (query + query_pos)[batch_index, gather.order]  # (B, N, K, C)
        gathered = gathered.view(b * n, k, c)

        value = self.value_proj(rearrange(features, "b n c h w -> (b n) (h w) c")).view(b * n, hf * wf, m, c // m)
        offsets = self.sampling_offsets(gathered).view(b * n, k, m, 1, p // z, z, 2)
        anchors = gather.anchors.view(b * n, k, 1, 1, 1, z, 2)
        locations = (anchors + offsets / offsets.new_tensor([wf, hf])).view(b * n, k, m, 1, p, 2)
        weights = self.attention_weights(gathered).view(b * n, k, m, p).softmax(-1).view(b * n, k, m, 1, p)
        per_camera = ms_deform_attn(value, [(hf, wf)], locations, weights)  # (B*N, K, C)

        # Scatter the real slots back to their queries, summing over cameras, then average over cameras hit.
        flat_index = (gather.order + batch_index * q).view(-1)
        keep = gather.valid.view(-1)
        summed = query.new_zeros(b * q, c).index_add_(0, flat_index[keep], per_camera.reshape(-1, c)[keep])
        averaged = summed.view(b, q, c) / gather.cameras_hit.clamp(min=1).unsqueeze(-1).to(summed.dtype)
        return query + self.dropout(self.output_proj(averaged))


class BEVFormerLayer(nn.Module):
    """Post-norm encoder layer: self-attention -> norm -> cross-attention -> norm -> FFN -> norm."""

    def __init__(self, dim: int, heads: int, self_points: int, cross_points: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = DeformableSelfAttention(dim, heads, self_points, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = SpatialCrossAttention(dim, heads, cross_points, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(ffn_dim, dim), nn.Dropout(dropout)
        )
        self.norm3 = nn.LayerNorm(dim)

    def forward(
        self,
        query: Tensor,
        query_pos: Tensor,
        reference_xy: Tensor,
        hw: tuple[int, int],
        features: Tensor,
        gather: CameraGather,
    ) -> Tensor:
        query = self.norm1(self.self_attn(query, query_pos, reference_xy, hw))
        query = self.norm2(self.cross_attn(query, query_pos, features, gather))
        return self.norm3(query + self.ffn(query))


class BEVFormerEncoder(nn.Module):
    """The view transform of BEVFormer-seg: camera features (B, N, C, Hf, Wf) -> BEV features (B, C, H, W).

    Learned queries (H*W, C) and a separate learned positional embedding, factorised as in BEVFormer into a row and
    a column embedding (C/2 each) concatenated per cell, so it costs (H + W) * C/2 parameters, not H * W * C.
    """

    def __init__(
        self,
        grid: BEVGrid,
        dim: int = 128,
        layers: int = 6,
        heads: int = 4,
        self_points: int = 8,
        cross_points: int = 8,
        ffn_dim: int = 1024,
        dropout: float = 0.1,
    ):
        super().__init__()
        self.grid = grid
        h, w = grid.shape
        self.bev_queries = nn.Parameter(torch.randn(h * w, dim))
        self.row_embed = nn.Parameter(torch.rand(h, dim // 2))
        self.col_embed = nn.Parameter(torch.rand(w, dim - dim // 2))
        self.layers = nn.ModuleList(
            BEVFormerLayer(dim, heads, self_points, cross_points, ffn_dim, dropout) for _ in range(layers)
        )

    def positional_embedding(self) -> Tensor:
        """(1, H*W, C): column embedding then row embedding, per cell."""
        h, w = self.grid.shape
        pos = torch.cat(
            [self.col_embed.unsqueeze(0).expand(h, w, -1), self.row_embed.unsqueeze(1).expand(h, w, -1)], dim=-1
        )
        return pos.reshape(1, h * w, -1)

    def camera_gather(
        self, intrinsics: Tensor, cam_to_ego: Tensor, bev_aug: Tensor, image_hw: tuple[int, int]
    ) -> CameraGather:
        """Project every query's Z height anchors (the voxel centres above its cell) into every camera."""
        b = intrinsics.shape[0]
        voxels = self.grid.voxel_centers(device=intrinsics.device, dtype=intrinsics.dtype)  # (Z, H, W, 3)
        z = voxels.shape[0]
        anchors = rearrange(voxels, "z h w c -> (h w z) c")  # query-major, so (Q, Z) is a plain view
        projection = project_to_cameras(transform_points(bev_aug, anchors.expand(b, -1, -1)), intrinsics, cam_to_ego, image_hw)
        n = intrinsics.shape[1]
        unit = pixels_to_unit(projection.pixels, image_hw).view(b, n, -1, z, 2)
        return gather_queries_per_camera(unit, projection.visible.view(b, n, -1, z))

    def forward(
        self, features: Tensor, intrinsics: Tensor, cam_to_ego: Tensor, bev_aug: Tensor, image_hw: tuple[int, int]
    ) -> Tensor:
        b = features.shape[0]
        h, w = self.grid.shape
        # Geometry in float32 whatever the compute dtype: sub-pixel locations need the mantissa.
        gather = self.camera_gather(intrinsics.float(), cam_to_ego.float(), bev_aug.float(), image_hw)
        reference_xy = self.grid.reference_points_xy(device=features.device)
        query_pos = self.positional_embedding()
        query = self.bev_queries.unsqueeze(0).expand(b, -1, -1)
        for layer in self.layers:
            query = layer(query, query_pos, reference_xy, (h, w), features, gather)
        return rearrange(query, "b (h w) c -> b c h w", h=h, w=w)
