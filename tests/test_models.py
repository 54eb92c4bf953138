"""The BEV networks: shapes, gradients, visibility, configs, meta-device builds, BEV augmentation, input errors."""

from __future__ import annotations

import json

import pytest
import torch

import occfeat
from occfeat.errors import ConfigError, InputError, UnknownNameError
from occfeat.models import BEVModel, BEVModelConfig, create_model, list_models
from occfeat.models.bevformer import SpatialCrossAttention
from occfeat.models.geometry import BEVGrid, bev_augmentation_matrix, nuscenes_camera_rig, project_to_cameras

from .conftest import make_batch

# Every registered architecture at test size: small images and a coarse raster, same code paths.
SMALL = dict(image_size=(64, 128), grid=BEVGrid(x_range=(-16.0, 16.0), y_range=(-16.0, 16.0), resolution=2.0))


def test_registry_lists_the_published_architectures():
    expected = {"bevformer-enb0", "bevformer-r50", "simplebev-enb0", "simplebev-r50", "simplebev-r101"}
    lite0 = {"bevformer-lite0", "simplebev-lite0", "bevformer-lite0-tiny", "simplebev-lite0-tiny"}
    assert expected | lite0 | {"bevformer-tiny", "simplebev-tiny"} == set(list_models())
    assert list_models("bevformer-*") == ["bevformer-enb0", "bevformer-lite0", "bevformer-lite0-tiny", "bevformer-r50",
                                          "bevformer-tiny"]
    assert occfeat.list_models is list_models


def test_unknown_architecture_suggests_close_names():
    with pytest.raises(UnknownNameError, match="bevformer-enb0"):
        create_model("bevformer-enb1")


def test_unknown_override_names_the_known_options():
    with pytest.raises(ConfigError, match="bev_channels"):
        create_model("simplebev-tiny", bev_chanels=32)


@pytest.mark.parametrize("arch", list_models())
def test_every_architecture_gives_the_documented_output_shapes(arch):
    model = create_model(arch, **SMALL).eval()
    batch = make_batch(SMALL["image_size"], batch_size=2)
    with torch.no_grad():
        features = model.forward_features(**batch)
        outputs = model(**batch)
    h, w = SMALL["grid"].shape
    assert features.shape == (2, model.config.bev_channels, h, w)
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        "vehicle": (2, 1, h, w),
        "map": (2, 1, h, w),
        "center": (2, 1, h, w),
        "offset": (2, 2, h, w),
    }
    assert all(torch.isfinite(v).all() for v in outputs.values())


def test_full_size_bevformer_enb0_has_about_nine_million_parameters_most_in_the_query_map():
    model = create_model("bevformer-enb0", device="meta")
    total = sum(p.numel() for p in model.parameters())
    assert 8.5e6 < total < 9.5e6
    assert model.view_transform.bev_queries.numel() == 200 * 200 * 128
    assert {name.split(".")[0] for name in model.state_dict()} == {"backbone", "neck", "view_transform", "heads"}


def test_head_set_is_configurable():
    model = create_model("simplebev-tiny", heads=("vehicle", "map"), map_classes=("drivable_area", "walkway"))
    outputs = model(**make_batch(model.config.image_size))
    assert set(outputs) == {"vehicle", "map"}
    assert outputs["map"].shape[1] == 2


def test_gradients_reach_backbone_queries_and_deformable_offsets():
    model = create_model("bevformer-tiny", dropout=0.0)
    outputs = model(**make_batch(model.config.image_size))
    sum((v * torch.randn_like(v)).sum() for v in outputs.values()).backward()
    nonzero = lambda p: p.grad is not None and p.grad.abs().sum() > 0  # noqa: E731
    assert nonzero(model.backbone.conv_stem.weight)
    assert nonzero(model.view_transform.bev_queries)
    for layer in model.view_transform.layers:
        assert nonzero(layer.self_attn.sampling_offsets.weight)
        assert nonzero(layer.cross_attn.sampling_offsets.weight)
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters outside the graph (DDP would fail on them): {missing}"
    # The positional embedding enters only through the offset / weight projections, which start at zero (Deformable
    # DETR's init): it gets gradients from the second step on.
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    model.zero_grad()
    outputs = model(**make_batch(model.config.image_size))
    sum((v * torch.randn_like(v)).sum() for v in outputs.values()).backward()
    assert nonzero(model.view_transform.row_embed) and nonzero(model.view_transform.col_embed)


def test_simplebev_every_parameter_gets_a_gradient():
    model = create_model("simplebev-tiny")
    outputs = model(**make_batch(model.config.image_size))
    sum(v.sum() for v in outputs.values()).backward()
    assert not [n for n, p in model.named_parameters() if p.grad is None]


def one_forward_camera(image_hw):
    intrinsics, cam_to_ego = nuscenes_camera_rig(image_hw, cameras=("CAM_FRONT", "CAM_BACK"))
    return intrinsics[None], cam_to_ego[None]


def test_simplebev_lifting_is_a_masked_mean_and_unseen_voxels_get_nothing():
    model = create_model("simplebev-tiny")
    lifting = model.view_transform
    image_hw = model.config.image_size
    intrinsics, cam_to_ego = one_forward_camera(image_hw)
    c = model.config.bev_channels
    hf, wf = image_hw[0] // 8, image_hw[1] // 8
    # Constant features: 1 everywhere in the front camera, 3 in the back camera.
    features = torch.stack([torch.full((c, hf, wf), 1.0), torch.full((c, hf, wf), 3.0)])[None]
    volume = lifting.lift(features, intrinsics, cam_to_ego, torch.eye(4)[None], image_hw)  # (1, C, Z, H, W)
    grid = model.config.grid
    projection = project_to_cameras(grid.voxel_centers().view(1, -1, 3), intrinsics, cam_to_ego, image_hw)
    seen = projection.visible[0].view(2, *volume.shape[2:])
    unseen = ~seen.any(dim=0)
    assert unseen.any() and seen[0].any() and seen[1].any()
    assert (volume[0][:, unseen] == 0).all(), "a voxel seen by no camera must get exactly zero"
    # Away from the image borders bilinear sampling of a constant map returns the constant: the mean is exact.
    u, v = projection.pixels[0].view(2, *volume.shape[2:], 2).unbind(-1)
    interior = (u > 8) & (u < image_hw[1] - 9) & (v > 8) & (v < image_hw[0] - 9) & seen
    only_front = interior[0] & ~seen[1]
    only_back = interior[1] & ~seen[0]
    assert only_front.any() and only_back.any()
    torch.testing.assert_close(volume[0][:, only_front], torch.ones_like(volume[0][:, only_front]))
    torch.testing.assert_close(volume[0][:, only_back], torch.full_like(volume[0][:, only_back], 3.0))


def test_bevformer_queries_no_camera_sees_ignore_the_images():
    model = create_model("bevformer-tiny", dropout=0.0).eval()
    encoder = model.view_transform
    image_hw = model.config.image_size
    intrinsics, cam_to_ego = one_forward_camera(image_hw)
    gather = encoder.camera_gather(intrinsics, cam_to_ego, torch.eye(4)[None], image_hw)
    hidden = gather.cameras_hit[0] == 0
    assert hidden.any() and (~hidden).any()
    attention: SpatialCrossAttention = encoder.layers[0].cross_attn
    query = torch.randn(1, hidden.numel(), model.config.bev_channels)
    pos = encoder.positional_embedding()
    c, hf, wf = model.config.bev_channels, image_hw[0] // 8, image_hw[1] // 8
    with torch.no_grad():
        first = attention(query, pos, torch.randn(1, 2, c, hf, wf), gather)
        second = attention(query, pos, torch.randn(1, 2, c, hf, wf), gather)
    assert torch.equal(first[0, hidden], second[0, hidden])
    assert not torch.allclose(first[0, ~hidden], second[0, ~hidden])


def test_bevformer_cross_attention_works_only_on_the_camera_query_pairs_that_exist():
    model = create_model("bevformer-tiny")
    encoder = model.view_transform
    image_hw = model.config.image_size
    intrinsics, cam_to_ego = one_forward_camera(image_hw)
    gather = encoder.camera_gather(intrinsics, cam_to_ego, torch.eye(4)[None], image_hw)
    num_queries = gather.cameras_hit.shape[1]
    pairs = gather.query.shape[0]
    # Two narrow cameras see well under the raster: the pairs are what they see, no padding to the busiest camera.
    assert pairs == int(gather.cameras_hit.sum()) == sum(gather.pairs_per_camera)
    assert pairs < num_queries
    front_pairs = gather.query[: gather.pairs_per_camera[0]]
    assert torch.equal(front_pairs, torch.sort(front_pairs).values), "pairs are sorted by (sample, camera, query)"


def test_config_json_round_trip_rebuilds_the_same_state_dict_layout():
    for arch in list_models():
        model = create_model(arch, device="meta")
        text = model.config.to_json()
        json.loads(text)
        config = BEVModelConfig.from_json(text)
        assert config == model.config
        with torch.device("meta"):
            rebuilt = BEVModel(config)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()} == expected


def test_config_from_file_and_unknown_fields(tmp_path):
    config = create_model("simplebev-tiny", device="meta").config
    path = tmp_path / "config.json"
    config.to_json(path)
    assert BEVModelConfig.from_json(path) == config
    data = config.to_dict() | {"future_option": 1}
    with pytest.raises(ConfigError, match="future_option"):
        BEVModelConfig.from_dict(data)


@pytest.mark.parametrize("arch", ["bevformer-tiny", "simplebev-tiny"])
def test_meta_build_then_assign_gives_identical_outputs(arch):
    reference = create_model(arch).eval()
    meta = create_model(arch, device="meta")
    assert all(t.is_meta for t in meta.state_dict().values())
    meta.load_state_dict(reference.state_dict(), assign=True)
    meta.eval()
    assert not any(t.is_meta for t in [*meta.parameters(), *meta.buffers()])
    batch = make_batch(reference.config.image_size)
    with torch.no_grad():
        expected, got = reference(**batch), meta(**batch)
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


@pytest.mark.parametrize("arch", ["bevformer-tiny", "simplebev-tiny"])
def test_identity_bev_aug_changes_nothing(arch):
    model = create_model(arch).eval()
    batch = make_batch(model.config.image_size, batch_size=2)
    with torch.no_grad():
        plain = model(**batch)
        augmented = model(**batch, bev_aug=torch.eye(4).expand(2, 4, 4))
    for name in plain:
        assert torch.equal(plain[name], augmented[name])


def test_bev_aug_translation_by_whole_cells_shifts_the_lifted_volume():
    model = create_model("simplebev-tiny")
    image_hw = model.config.image_size
    batch = make_batch(image_hw)
    features = torch.randn(1, 6, model.config.bev_channels, image_hw[0] // 8, image_hw[1] // 8)
    res = model.config.grid.resolution
    shift_rows, shift_cols = 3, -2
    # bev_aug maps the raster frame to ego: +x moves the content down the rows, +y moves it right.
    bev_aug = bev_augmentation_matrix((shift_rows * res, shift_cols * res))[None]
    lift = model.view_transform.lift
    plain = lift(features, batch["intrinsics"], batch["cam_to_ego"], torch.eye(4)[None], image_hw)
    moved = lift(features, batch["intrinsics"], batch["cam_to_ego"], bev_aug, image_hw)
    # moved[r, c] == plain[r - shift_rows, c - shift_cols] wherever both are on the raster.
    torch.testing.assert_close(moved[..., 3:, :-2], plain[..., :-3, 2:], atol=1e-5, rtol=0)
    assert not torch.allclose(moved, plain)


# ---- typed errors ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return create_model("simplebev-tiny").eval()


def test_wrong_image_rank_is_named(tiny):
    batch = make_batch(tiny.config.image_size)
    with pytest.raises(InputError, match=r"images: got shape \(6, 3, 112, 240\), expected \(B, N, 3, H, W\)"):
        tiny(batch["images"][0], batch["intrinsics"], batch["cam_to_ego"])


def test_camera_count_mismatch_is_named(tiny):
    batch = make_batch(tiny.config.image_size)
    with pytest.raises(InputError, match=r"intrinsics: got shape \(1, 5, 3, 3\), expected \(1, 6, 3, 3\).*N=6"):
        tiny(batch["images"], batch["intrinsics"][:, :5], batch["cam_to_ego"])
    with pytest.raises(InputError, match=r"cam_to_ego: got shape \(1, 4, 4, 4\), expected \(1, 6, 4, 4\)"):
        tiny(batch["images"], batch["intrinsics"], batch["cam_to_ego"][:, :4])


def test_non_finite_calibration_is_named(tiny):
    batch = make_batch(tiny.config.image_size)
    batch["cam_to_ego"][0, 2, 0, 3] = float("nan")
    with pytest.raises(InputError, match="cam_to_ego: contains NaN or Inf"):
        tiny(**batch)
    batch = make_batch(tiny.config.image_size)
    batch["intrinsics"][0, 0, 0, 0] = float("inf")
    with pytest.raises(InputError, match="intrinsics: contains NaN or Inf"):
        tiny(**batch)


def test_image_size_the_network_cannot_take_is_named(tiny):
    batch = make_batch((100, 200))
    with pytest.raises(InputError, match=r"\(100, 200\) is not a multiple of 16.*\(96, 192\)"):
        tiny(**batch)
    with pytest.raises(ConfigError, match="image_size"):
        create_model("simplebev-tiny", image_size=(100, 200))


def test_bad_bev_aug_shape_is_named(tiny):
    batch = make_batch(tiny.config.image_size)
    with pytest.raises(InputError, match=r"bev_aug: got shape \(4, 4\), expected \(1, 4, 4\)"):
        tiny(**batch, bev_aug=torch.eye(4))


def test_input_errors_are_value_errors_for_generic_callers(tiny):
    with pytest.raises(ValueError):
        tiny(torch.randn(3, 112, 240), torch.eye(3), torch.eye(4))


@pytest.mark.parametrize("arch", ["bevformer-tiny", "simplebev-tiny"])
def test_bf16_autocast_and_pure_bf16_track_float32(arch):
    model = create_model(arch).eval()
    batch = make_batch(model.config.image_size)
    with torch.no_grad():
        reference = model(**batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(**batch)
        pure = model.to(torch.bfloat16)(**{**batch, "images": batch["images"].bfloat16()})
    for name, expected in reference.items():
        scale = expected.abs().max()
        for got in (autocast[name], pure[name]):
            assert torch.isfinite(got).all()
            assert (got.float() - expected).abs().max() < 0.1 * scale, name


def test_geometry_stays_float32_under_autocast():
    from occfeat.models.geometry import transform_points

    points = torch.tensor([[[49.7, -31.3, 1.1]]])
    shift = bev_augmentation_matrix((0.013, 0.0))[None]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        moved = transform_points(shift, points)
        projection = project_to_cameras(points, *[t[None] for t in nuscenes_camera_rig((224, 480))], (224, 480))
    assert moved.dtype == torch.float32 and projection.pixels.dtype == torch.float32
    torch.testing.assert_close(moved, points + torch.tensor([0.013, 0.0, 0.0]))
