"""ms_deform_attn against an independent brute-force bilinear reference."""

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


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ms_deform_attn_matches_brute_force_reference(seed):
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

    got = ms_deform_attn(value, torch.tensor(spatial_shapes), locations, weights)
    expected = reference_ms_deform_attn(value, spatial_shapes, locations, weights)
    assert got.shape == (b, lq, m * d)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_ms_deform_attn_float32_matches_reference():
    g = torch.Generator().manual_seed(3)
    shapes = [(4, 6), (2, 3)]
    value = torch.randn(1, 30, 2, 8, generator=g)
    locations = torch.rand(1, 7, 2, 2, 4, 2, generator=g) * 1.4 - 0.2
    weights = torch.rand(1, 7, 2, 2, 4, generator=g)
    got = ms_deform_attn(value, shapes, locations, weights)
    expected = reference_ms_deform_attn(value.double(), shapes, locations.double(), weights.double())
    torch.testing.assert_close(got.double(), expected, atol=1e-5, rtol=0)


def test_ms_deform_attn_rejects_inconsistent_shapes():
    value = torch.randn(1, 10, 2, 4)
    with pytest.raises(InputError, match="sum\\(H\\*W\\) == S"):
        ms_deform_attn(value, [(3, 3)], torch.rand(1, 5, 2, 1, 2, 2), torch.rand(1, 5, 2, 1, 2))
    with pytest.raises(InputError, match="attention_weights"):
        ms_deform_attn(value, [(2, 5)], torch.rand(1, 5, 2, 1, 2, 2), torch.rand(1, 5, 2, 1, 3))
