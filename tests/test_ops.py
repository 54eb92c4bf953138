"""ms_deform_attn, both implementations ("gather" and "grid_sample"), against an independent brute-force bilinear
reference and plain autograd."""

from __future__ import annotations

import math

import pytest
import torch

from occfeat.errors import InputError
from occfeat.models.ops import ms_deform_attn


def reference_ms_deform_attn(value, spatial_shapes, locations, weights):
    """Loop over every query, head, level and point; bilinear interpolation written out by hand, with zero padding
    and the align_corners=False convention (unit 0 and 1 are the outer edges of the first and last pixel)."""
    b, s, m, d = value.shape
    _, lq, _, num_levels, p, _ = locations.shape
    out = torch.zeros(b, lq, m, d, dtype=value.dtype)
    starts = [0]
    for h, w in spatial_shapes[:-1]:
        starts.append(starts[-1] + h * w)
    for bi in range(b):
        for qi in range(lq):
            for mi in range(m):
                for li, (h, w) in enumerate(spatial_shapes):
                    for pi in range(p):
                        x = float(locations[bi, qi, mi, li, pi, 0]) * w - 0.5
                        y = float(locations[bi, qi, mi, li, pi, 1]) * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        sample = torch.zeros(d, dtype=value.dtype)
                        for xi, wx in ((x0, x0 + 1 - x), (x0 + 1, x - x0)):
                            for yi, wy in ((y0, y0 + 1 - y), (y0 + 1, y - y0)):
                                if 0 <= xi < w and 0 <= yi < h:
                                    sample += wx * wy * value[bi, starts[li] + yi * w + xi, mi]
                        out[bi, qi, mi] += weights[bi, qi, mi, li, pi] * sample
    return out.reshape(b, lq, m * d)


IMPLEMENTATIONS = pytest.mark.parametrize("implementation", ["gather", "grid_sample"])


@IMPLEMENTATIONS
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ms_deform_attn_matches_brute_force_reference(seed, implementation):
    g = torch.Generator().manual_seed(seed)
    b, m, d, p, lq = 2, 3, 4, 3, 5
    spatial_shapes = [(int(torch.randint(2, 7, (1,), generator=g)), int(torch.randint(2, 9, (1,), generator=g))) for _ in range(3)]
    s = sum(h * w for h, w in spatial_shapes)
    value = torch.randn(b, s, m, d, generator=g, dtype=torch.float64)
    # Locations spread over [-0.3, 1.3]: many points fall partly or wholly outside the map.
    locations = torch.rand(b, lq, m, len(spatial_shapes), p, 2, generator=g, dtype=torch.float64) * 1.6 - 0.3
    weights = torch.rand(b, lq, m, len(spatial_shapes) * p, generator=g, dtype=torch.float64).softmax(-1)
    weights = weights.view(b, lq, m, len(spatial_shapes), p)
    assert ((locations < 0) | (locations > 1)).any(), "the test must exercise points outside the map"

    got = ms_deform_attn(value, torch.tensor(spatial_shapes), locations, weights, implementation=implementation)
    expected = reference_ms_deform_attn(value, spatial_shapes, locations, weights)
    assert got.shape == (b, lq, m * d)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@IMPLEMENTATIONS
def test_ms_deform_attn_float32_matches_reference(implementation):
    g = torch.Generator().manual_seed(3)
    shapes = [(4, 6), (2, 3)]
    value = torch.randn(1, 30, 2, 8, generator=g)
    locations = torch.rand(1, 7, 2, 2, 4, 2, generator=g) * 1.4 - 0.2
    weights = torch.rand(1, 7, 2, 2, 4, generator=g)
    got = ms_deform_attn(value, shapes, locations, weights, implementation=implementation)
    expected = reference_ms_deform_attn(value.double(), shapes, locations.double(), weights.double())
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)


def test_ms_deform_attn_rejects_inconsistent_shapes():
    value = torch.randn(1, 10, 2, 4)
    with pytest.raises(InputError, match="sum\\(H\\*W\\) == S"):
        ms_deform_attn(value, [(3, 3)], torch.rand(1, 5, 2, 1, 2, 2), torch.rand(1, 5, 2, 1, 2))
    with pytest.raises(InputError, match="attention_weights"):
        ms_deform_attn(value, [(2, 5)], torch.rand(1, 5, 2, 1, 2, 2), torch.rand(1, 5, 2, 1, 3))
    with pytest.raises(InputError, match="value_map"):
        ms_deform_attn(value, [(2, 5)], torch.rand(3, 5, 2, 1, 2, 2), torch.rand(3, 5, 2, 1, 2))
    with pytest.raises(InputError, match="value_map must be an integer tensor of shape"):
        ms_deform_attn(value, [(2, 5)], torch.rand(1, 5, 2, 1, 2, 2), torch.rand(1, 5, 2, 1, 2),
                       value_map=torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(InputError, match="implementation"):
        ms_deform_attn(value, [(2, 5)], torch.rand(1, 5, 2, 1, 2, 2), torch.rand(1, 5, 2, 1, 2), implementation="cuda")


def autograd_ms_deform_attn(value, spatial_shapes, locations, weights):
    """The same computation left entirely to autograd (one grid_sample per level and head, samples kept)."""
    b, s, m, d = value.shape
    out, start = 0, 0
    for level, (h, w) in enumerate(spatial_shapes):
        level_value = value[:, start : start + h * w].permute(0, 2, 3, 1).reshape(b * m, d, h, w)
        start += h * w
        grid = (2 * locations[:, :, :, level] - 1).transpose(1, 2).flatten(0, 1)  # (B*M, Lq, P, 2)
        sampled = torch.nn.functional.grid_sample(level_value, grid, align_corners=False)  # (B*M, D, Lq, P)
        level_weights = weights[:, :, :, level].transpose(1, 2).flatten(0, 1)  # (B*M, Lq, P)
        out = out + (sampled * level_weights[:, None]).sum(-1)
    return out.view(b, m, d, -1).permute(0, 3, 1, 2).reshape(b, -1, m * d)


def differentiable_inputs(seed, batch, queries, shapes, heads, dim, points):
    """float64 (value, locations, weights) requiring grad, a third of the locations off the map, and an upstream
    gradient for the output."""
    g = torch.Generator().manual_seed(seed)
    size = sum(h * w for h, w in shapes)
    value = torch.randn(batch, size, heads, dim, generator=g, dtype=torch.float64, requires_grad=True)
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2
    weights = torch.rand(batch, queries, heads, len(shapes), points, generator=g, dtype=torch.float64)
    upstream = torch.randn(batch, queries, heads * dim, generator=g, dtype=torch.float64)
    return (value, locations.requires_grad_(), weights.requires_grad_()), upstream


@IMPLEMENTATIONS
def test_ms_deform_attn_gradients_match_plain_autograd(implementation):
    shapes = [(5, 7), (3, 4)]
    inputs, upstream = differentiable_inputs(4, batch=2, queries=6, shapes=shapes, heads=2, dim=3, points=3)
    value, locations, weights = inputs
    ours = torch.autograd.grad(ms_deform_attn(value, shapes, locations, weights, implementation=implementation),
                               inputs, upstream)
    plain = torch.autograd.grad(autograd_ms_deform_attn(value, shapes, locations, weights), inputs, upstream)
    for name, a, b in zip(("value", "locations", "weights"), ours, plain):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10, msg=name)
    assert torch.autograd.gradcheck(lambda *x: ms_deform_attn(x[0], shapes, x[1], x[2], implementation=implementation),
                                    inputs)


def test_ms_deform_attn_gather_in_query_chunks_is_identical(monkeypatch):
    """The gather path computes its taps in cache-sized chunks of queries; force many tiny chunks and compare."""
    from occfeat.models import ops

    shapes = [(6, 5), (3, 3)]
    inputs, upstream = differentiable_inputs(5, batch=2, queries=50, shapes=shapes, heads=2, dim=4, points=3)
    value, locations, weights = inputs
    whole = ms_deform_attn(value, shapes, locations, weights, implementation="gather")
    whole_grads = torch.autograd.grad(whole, inputs, upstream)
    monkeypatch.setattr(ops, "TAP_CHUNK", 7 * 2 * 2 * 2 * 3)  # 7 queries of B * M * L * P locations
    chunked = ms_deform_attn(value, shapes, locations, weights, implementation="gather")
    chunked_grads = torch.autograd.grad(chunked, inputs, upstream)
    torch.testing.assert_close(chunked, whole, atol=1e-12, rtol=0)
    for a, b in zip(chunked_grads, whole_grads):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


@IMPLEMENTATIONS
def test_ms_deform_attn_value_map_samples_the_named_maps(implementation):
    """Each query samples the map value_map names: equal to sampling that map alone, query by query, and with
    gradients equal to plain autograd's."""
    shapes = [(5, 6)]
    g = torch.Generator().manual_seed(6)
    value = torch.randn(4, 30, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    locations = (torch.rand(1, 9, 2, 1, 4, 2, generator=g, dtype=torch.float64) * 1.4 - 0.2).requires_grad_()
    weights = torch.rand(1, 9, 2, 1, 4, generator=g, dtype=torch.float64).requires_grad_()
    value_map = torch.tensor([[3, 0, 0, 2, 3, 1, 0, 3, 2]])  # unsorted, every map used
    got = ms_deform_attn(value, shapes, locations, weights, value_map=value_map, implementation=implementation)
    expected = torch.cat([
        autograd_ms_deform_attn(value[k : k + 1], shapes, locations[:, q : q + 1], weights[:, q : q + 1])
        for q, k in enumerate(value_map[0].tolist())
    ], dim=1)
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=0)
    upstream = torch.randn_like(got)
    inputs = (value, locations, weights)
    for a, b in zip(torch.autograd.grad(got, inputs, upstream), torch.autograd.grad(expected, inputs, upstream)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
