"""BEVFormer-seg (static, single frame): learned BEV queries refined by deformable self-attention and spatial
cross-attention into the camera feature maps.

Shapes: B batch, N cameras, Q = H*W BEV queries, C channels, M heads, P sampling points, Z height anchors.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.utils.checkpoint
from einops import rearrange
from torch import Tensor, nn

from ..conventions.geometry import BEVGrid, pixels_to_unit, project_to_cameras, transform_points
from .layers import Dropout
from .ops import exporting, ms_deform_attn

# Sampling location given to anchors a camera does not see: far outside [0, 1], so bilinear sampling with zero padding
# returns exactly zero even after the learned offsets (a few cells) are added.
_OUTSIDE = -2.0
# Queries per FFN chunk on CPU (see BEVFormerLayer._feed_forward).
_FFN_CHUNK = 4096


def softmax_last(logits: Tensor) -> Tensor:
    """Softmax over a short last dimension (the P points). Written out because ``torch.softmax`` over a last
    dimension of 8 runs ~4x slower on CPU than these three element-wise passes (bench/models.py)."""
    e = (logits - logits.amax(dim=-1, keepdim=True)).exp()
    return e / e.sum(dim=-1, keepdim=True)


class _DeformableAttention(nn.Module):
    """The projections shared by both BEVFormer attentions, initialised as in Deformable DETR: zero offset weights
    with a bias pointing each head in its own direction, growing with the point index; zero attention logits
    (uniform weights); Xavier value and output projections."""

    def __init__(self, dim: int, heads: int = 4, points: int = 8, dropout: float = 0.1):
        super().__init__()
        self.heads, self.points = heads, points
        self.sampling_offsets = nn.Linear(dim, heads * points * 2)
        self.attention_weights = nn.Linear(dim, heads * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self.dropout = Dropout(dropout)
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(heads, dtype=torch.float32) * (2.0 * math.pi / heads)
        direction = torch.stack([theta.cos(), theta.sin()], dim=-1)
        direction = direction / direction.abs().max(dim=-1, keepdim=True).values  # (M, 2) on the unit square
        scale = torch.arange(1, points + 1, dtype=torch.float32).view(1, points, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_((direction[:, None, :] * scale).reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        for proj in (self.value_proj, self.output_proj):
            nn.init.xavier_uniform_(proj.weight)
            nn.init.zeros_(proj.bias)


class DeformableSelfAttention(_DeformableAttention):
    """Each BEV query attends to ``points`` locations around its own cell of the query map (one level).

    Reference points are cell centres in unit **(x, y) = (column, row)** order; offsets are in cells.
    """

    def forward(self, query: Tensor, query_pos: Tensor, reference_xy: Tensor, hw: tuple[int, int]) -> Tensor:
        """query (B, Q, C), query_pos (1, Q, C), reference_xy (Q, 2) -> (B, Q, C) with the residual added."""
        b, q, c = query.shape
        h, w = hw
        with_pos = query + query_pos
        value = self.value_proj(query).view(b, q, self.heads, c // self.heads)
        offsets = self.sampling_offsets(with_pos).view(b, q, self.heads, 1, self.points, 2)
        cells = offsets.new_tensor([w, h])  # offsets are in cells: divide by (W, H) in (x, y) order
        locations = reference_xy.view(1, q, 1, 1, 1, 2) + offsets / cells
        weights = softmax_last(self.attention_weights(with_pos).view(b, q, self.heads, self.points))
        out = ms_deform_attn(value, [(h, w)], locations, weights.view(b, q, self.heads, 1, self.points))
        return query + self.dropout(self.output_proj(out))


class CameraGather(NamedTuple):
    """The (camera, query) pairs in which the camera sees at least one of the query's height anchors, sorted by
    (sample, camera, query). Computed once per forward, shared by every layer."""

    batch: Tensor  # (T,) sample of each pair
    query: Tensor  # (T,) query index of each pair
    feature_map: Tensor  # (T,) the camera feature map each pair samples: sample * N + camera
    anchors: Tensor  # (T, Z, 2) unit (x, y) of the query's anchors in that camera; _OUTSIDE where it does not see them
    pairs_per_camera: list[int]  # B*N counts, in (sample, camera) order
    cameras_hit: Tensor  # (B, Q) number of cameras that see the query


def gather_queries_per_camera(anchors_unit: Tensor, anchors_visible: Tensor) -> CameraGather:
    """anchors_unit (B, N, Q, Z, 2), anchors_visible (B, N, Q, Z) -> ``CameraGather``."""
    hit = anchors_visible.any(dim=-1)  # (B, N, Q)
    batch, camera, query = hit.nonzero(as_tuple=True)  # row-major: sorted by (sample, camera, query)
    anchors = torch.where(
        anchors_visible[batch, camera, query, :, None], anchors_unit[batch, camera, query], anchors_unit.new_tensor(_OUTSIDE)
    )
    return CameraGather(batch, query, batch * hit.shape[1] + camera, anchors, hit.sum(dim=-1).view(-1).tolist(),
                        hit.sum(dim=1))


class SpatialCrossAttention(_DeformableAttention):
    """Each query samples every camera that sees one of its height anchors, ``points // Z`` points per anchor per
    head around the anchor's projection; the per-camera results are summed and divided by the number of cameras hit.

    Work is done only for the (camera, query) pairs that exist, with no padding: the projections and the sampling
    run once over all pairs, each pair sampling its own camera's feature map.
    """

    def forward(self, query: Tensor, query_pos: Tensor, features: Tensor, gather: "CameraGather | DenseGather") -> Tensor:
        """query (B, Q, C), query_pos (1, Q, C), features (B, N, C, Hf, Wf) -> (B, Q, C) with the residual added."""
        if isinstance(gather, DenseGather):
            return self._forward_dense(query, query_pos, features, gather)
        b, q, c = query.shape
        hf, wf = features.shape[-2:]
        z = gather.anchors.shape[1]
        m, p = self.heads, self.points
        pairs = (query + query_pos)[gather.batch, gather.query]  # (T, C)
        t = pairs.shape[0]

        value = self.value_proj(rearrange(features, "b n c h w -> (b n) (h w) c")).view(-1, hf * wf, m, c // m)
        offsets = self.sampling_offsets(pairs).view(t, m, p // z, z, 2)
        locations = (gather.anchors.view(t, 1, 1, z, 2) + offsets / offsets.new_tensor([wf, hf])).view(1, t, m, 1, p, 2)
        weights = softmax_last(self.attention_weights(pairs).view(t, m, p)).view(1, t, m, 1, p)
        per_pair = ms_deform_attn(value, [(hf, wf)], locations, weights, value_map=gather.feature_map[None]).view(t, c)

        # Sum each query's cameras, then average over the cameras hit (a query no camera sees gets zero).
        summed = query.new_zeros(b * q, c).index_add_(0, gather.batch * q + gather.query, per_pair.to(query.dtype))
        averaged = summed.view(b, q, c) / gather.cameras_hit.clamp(min=1).unsqueeze(-1).to(summed.dtype)
        return query + self.dropout(self.output_proj(averaged))

    def _forward_dense(self, query: Tensor, query_pos: Tensor, features: Tensor, gather: "DenseGather") -> Tensor:
        """The export path: every (camera, query) pair, with static shapes. A pair whose anchors the camera does not
        see samples at _OUTSIDE and so adds exactly zero, as in the sparse path, which skips it."""
        b, q, c = query.shape
        n, hf, wf = features.shape[1], features.shape[-2], features.shape[-1]
        z = gather.anchors.shape[3]
        m, p = self.heads, self.points
        with_pos = query + query_pos  # (B, Q, C): a query's offsets and weights are the same in every camera
        value = self.value_proj(rearrange(features, "b n c h w -> (b n) (h w) c")).view(b * n, hf * wf, m, c // m)
        offsets = self.sampling_offsets(with_pos).view(b, 1, q, m, p // z, z, 2)
        anchors = gather.anchors.view(b, n, q, 1, 1, z, 2)
        locations = (anchors + offsets / offsets.new_tensor([wf, hf])).view(b * n, q, m, 1, p, 2)
        weights = softmax_last(self.attention_weights(with_pos).view(b, 1, q, m, p)).expand(b, n, q, m, p)
        sampled = ms_deform_attn(value, [(hf, wf)], locations, weights.reshape(b * n, q, m, 1, p))  # (B*N, Q, C)
        summed = sampled.view(b, n, q, c).sum(dim=1).to(query.dtype)
        averaged = summed / gather.cameras_hit.clamp(min=1).unsqueeze(-1).to(summed.dtype)
        return query + self.dropout(self.output_proj(averaged))


class DenseGather(NamedTuple):
    """``CameraGather`` with static shapes (the export path): every (sample, camera, query)."""

    anchors: Tensor  # (B, N, Q, Z, 2) unit (x, y); _OUTSIDE where the camera does not see the anchor
    cameras_hit: Tensor  # (B, Q)


class BEVFormerLayer(nn.Module):
    """Post-norm encoder layer: self-attention -> norm -> cross-attention -> norm -> FFN -> norm."""

    def __init__(self, dim: int, heads: int, self_points: int, cross_points: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = DeformableSelfAttention(dim, heads, self_points, dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = SpatialCrossAttention(dim, heads, cross_points, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_dim), nn.ReLU(inplace=True), Dropout(dropout), nn.Linear(ffn_dim, dim), Dropout(dropout)
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
        return self.norm3(query + self._feed_forward(query))

    def _feed_forward(self, query: Tensor) -> Tensor:
        """The FFN, over chunks of queries on CPU: the (chunk, ffn_dim) hidden activations then stay in cache
        instead of a fresh 160 MB buffer per layer at 200x200 (1.6x faster, bench/models.py). A GPU does it at once."""
        if query.device.type != "cpu" or query.shape[1] <= _FFN_CHUNK or exporting():
            return self.ffn(query)
        return torch.cat([self.ffn(part) for part in query.split(_FFN_CHUNK, dim=1)], dim=1)


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
        # Recompute each layer's activations in backward instead of keeping them (BEVModel.set_activation_checkpointing)
        self.activation_checkpointing = False

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
        visible = projection.visible.view(b, n, -1, z)
        if exporting():
            anchors = torch.where(visible.unsqueeze(-1), unit, unit.new_tensor(_OUTSIDE))
            return DenseGather(anchors, visible.any(dim=-1).sum(dim=1))  # type: ignore[return-value]
        return gather_queries_per_camera(unit, visible)

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
            if self.activation_checkpointing and torch.is_grad_enabled():
                query = torch.utils.checkpoint.checkpoint(layer, query, query_pos, reference_xy, (h, w), features,
                                                          gather, use_reentrant=False)
            else:
                query = layer(query, query_pos, reference_xy, (h, w), features, gather)
        # A channels-last view, not a transpose: the heads' convolutions take that layout as it is.
        return query.view(b, h, w, -1).permute(0, 3, 1, 2)
