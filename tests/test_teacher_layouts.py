"""The OccFeat teacher (DINOv2) from every DINOv2 file a user may hold: timm's, transformers' and the official
release's layouts, Hub cache folders offline, and the errors for files that are not what the teacher needs.

Every model is random-initialised and two blocks deep; nothing is downloaded (conftest's socket guard fails any
request). Layer scales are randomised: DINOv2's init (1e-5) would make the blocks vanish and hide conversion bugs.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from occfeat.errors import ConfigError, InputError, OccfeatError
from occfeat.pretrain.dinov2 import convert_dinov2_checkpoint, detect_layout, to_timm_state_dict
from occfeat.pretrain.teacher import Teacher, TeacherSpec, TeacherWeightsError

timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

VITS = "vit_small_patch14_dinov2.lvd142m"
VITB = "vit_base_patch14_dinov2.lvd142m"
VITL = "vit_large_patch14_dinov2.lvd142m"
DEPTH = 2
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # DINOv2's own: Teacher's renormalisation is the identity
WORKING_SIZE = (224, 476)  # the teacher's input at the 224x480 network images: a 16x34 patch grid
# At 224x476, occfeat (timm) vs transformers / vs official-style resampling, measured on these random models with
# smooth positional embeddings (test_transformers_layout_at_working_size prints them): tokens max |diff| 0.153 / 0.296,
# relative L2 0.018 / 0.040; positional embeddings relative L2 0.026 / 0.056; white noise 0.64 / 0.65. ~2x headroom.
WORKING_SIZE_TOKEN_BOUND = 0.6
WORKING_SIZE_TOKEN_REL_BOUND = 0.1
WORKING_SIZE_POS_EMBED_BOUND = 0.12
WHITE_NOISE_POS_EMBED_BOUND = 1.0

pytestmark = pytest.mark.usefixtures("one_thread")


def make_teacher(weights, *, name=VITS, image_size=(518, 518), model_kwargs=None) -> Teacher:
    return Teacher(name, image_size=image_size, weights=weights, image_mean=MEAN, image_std=STD,
                   cameras=("CAM_FRONT",), model_kwargs={"depth": DEPTH} if model_kwargs is None else model_kwargs)


def patch_tokens(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.forward_features(x)[:, model.num_prefix_tokens:]


def randomise_layer_scales(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith(("gamma", "lambda1")):
                parameter.uniform_(0.3, 1.5)


def timm_dinov2(name: str = VITS, **kwargs) -> torch.nn.Module:
    model = timm.create_model(name, pretrained=False, depth=DEPTH, **kwargs).eval()
    randomise_layer_scales(model)
    return model


@pytest.fixture(scope="module")
def hf_dinov2():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(1)
    config = transformers.Dinov2Config(hidden_size=384, num_attention_heads=6, num_hidden_layers=DEPTH,
                                       intermediate_size=1536, patch_size=14, image_size=518, layerscale_value=0.7)
    model = transformers.Dinov2Model(config).eval()
    randomise_layer_scales(model)
    with torch.no_grad():  # learned positional embeddings vary smoothly over the grid; white noise would not
        model.embeddings.position_embeddings[:, 1:] = smooth_pos_embed(37, 384)
    return model


def smooth_pos_embed(side: int, dim: int, std: float = 0.5) -> torch.Tensor:
    """(1, side*side, dim): per channel a sum of 4 random 2D waves of at most 3 cycles across the grid, scaled to
    ``std`` (about that of the patch embeddings of this random model)."""
    rows, cols = torch.meshgrid(torch.arange(side) / side, torch.arange(side) / side, indexing="ij")
    frequency = torch.rand(4, dim, 2) * 3
    phase = torch.rand(4, dim) * 2 * math.pi
    waves = torch.cos(2 * math.pi * (frequency[..., 0, None, None] * rows + frequency[..., 1, None, None] * cols)
                      + phase[..., None, None]).sum(0)  # (dim, side, side)
    waves = waves / waves.std() * std
    return waves.flatten(1).T[None]


@pytest.fixture(scope="module")
def hf_file(hf_dinov2, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("hf-dinov2")
    hf_dinov2.save_pretrained(folder)
    return folder / "model.safetensors"


def test_transformers_layout_matches_transformers_at_518(hf_dinov2, hf_file):
    assert detect_layout(safetensors_torch.load_file(str(hf_file))) == "transformers"
    teacher = make_teacher(hf_file)
    assert teacher.spec.weights_layout == "transformers" and teacher.spec.weights.startswith("file:")
    assert teacher.spec.weights == f"file:{hashlib.sha256(hf_file.read_bytes()).hexdigest()}"
    x = torch.randn(2, 3, 518, 518)
    with torch.no_grad():
        expected = hf_dinov2(pixel_values=x).last_hidden_state[:, 1:]
    diff = (patch_tokens(teacher.model, x) - expected).abs().max().item()
    print(f"\ntransformers vs occfeat (timm) patch tokens at 518x518: max |diff| = {diff:.2e}")
    assert diff <= 1e-4
    # The save_pretrained folder itself is a weights folder too, with the same identity as its file.
    assert make_teacher(hf_file.parent).spec.weights == teacher.spec.weights


def _official_style_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], offset: float = 0.1) -> torch.Tensor:
    """facebookresearch/dinov2's interpolate_pos_encoding as its hub models run it (interpolate_offset=0.1,
    interpolate_antialias=False): bicubic with a scale factor of (n + 0.1) / M, class token kept."""
    cls, patches = pos_embed[:, :1], pos_embed[:, 1:]
    side, dim = math.isqrt(patches.shape[1]), patches.shape[-1]
    scale = tuple(float(n + offset) / side for n in grid)
    resized = F.interpolate(patches.reshape(1, side, side, dim).permute(0, 3, 1, 2), scale_factor=scale,
                            mode="bicubic", antialias=False)
    assert tuple(resized.shape[-2:]) == grid
    return torch.cat([cls, resized.permute(0, 2, 3, 1).reshape(1, -1, dim)], dim=1)


def test_transformers_layout_at_working_size(hf_dinov2, hf_file):
    """At 224x476 the three codes resample the 37x37 positional embeddings differently: timm (occfeat) at load time
    with antialiased bicubic to 16x34, transformers at forward time with plain bicubic to the same size, the official
    repo with plain bicubic by a scale factor of (n + 0.1) / 37. Measured here and bounded."""
    teacher = make_teacher(hf_file, image_size=WORKING_SIZE)
    assert teacher.spec.input_size == WORKING_SIZE and teacher.spec.patch_grid == (16, 34)
    x = torch.randn(2, 3, *WORKING_SIZE)
    ours = patch_tokens(teacher.model, x)
    with torch.no_grad():
        theirs = hf_dinov2(pixel_values=x).last_hidden_state[:, 1:]
    token_diff = (ours - theirs).abs().max().item()
    token_rel = ((ours - theirs).norm() / theirs.norm()).item()

    source = hf_dinov2.embeddings.position_embeddings.detach()
    timm_pos = teacher.model.pos_embed.detach()[:, 1:]
    grid = teacher.spec.patch_grid
    hf_pos = hf_dinov2.embeddings.interpolate_pos_encoding(torch.zeros(1, 1 + grid[0] * grid[1], 384), *WORKING_SIZE)
    official_pos = _official_style_pos_embed(source, grid)
    pos_rel_hf = ((timm_pos - hf_pos[:, 1:]).norm() / hf_pos[:, 1:].norm()).item()
    pos_rel_official = ((timm_pos - official_pos[:, 1:]).norm() / official_pos[:, 1:].norm()).item()

    official_model = make_teacher(hf_file, image_size=WORKING_SIZE).model
    with torch.no_grad():
        official_model.pos_embed.copy_(official_pos)
    official_tokens = patch_tokens(official_model, x)
    official_diff = (ours - official_tokens).abs().max().item()
    official_rel = ((ours - official_tokens).norm() / official_tokens.norm()).item()
    print(f"\nat 224x476, occfeat (timm load-time, bicubic antialiased) vs transformers (forward-time bicubic): patch "
          f"tokens max |diff| = {token_diff:.3f}, relative L2 = {token_rel:.3f}; positional embeddings relative L2 = "
          f"{pos_rel_hf:.3f}\nat 224x476, occfeat vs official-style (bicubic, scale (n+0.1)/37, no antialias): tokens "
          f"max |diff| = {official_diff:.3f}, relative L2 = {official_rel:.3f}; positional embeddings relative L2 = "
          f"{pos_rel_official:.3f}")
    for diff, rel, pos_rel in ((token_diff, token_rel, pos_rel_hf), (official_diff, official_rel, pos_rel_official)):
        assert 0 < diff <= WORKING_SIZE_TOKEN_BOUND and rel <= WORKING_SIZE_TOKEN_REL_BOUND
        assert 0 < pos_rel <= WORKING_SIZE_POS_EMBED_BOUND
    # The worst case, positional embeddings of white noise (what antialiasing removes most of): embeddings only.
    noise = torch.randn(1, 1 + 37 * 37, 384)
    embeddings = hf_dinov2.embeddings
    with torch.no_grad():
        embeddings.position_embeddings, saved = torch.nn.Parameter(noise), embeddings.position_embeddings
        noise_hf = embeddings.interpolate_pos_encoding(torch.zeros(1, 1 + grid[0] * grid[1], 384), *WORKING_SIZE)
        embeddings.position_embeddings = saved
    from timm.layers import resample_abs_pos_embed

    noise_timm = resample_abs_pos_embed(noise, new_size=list(grid), num_prefix_tokens=1)
    noise_rel_hf = ((noise_timm - noise_hf).norm() / noise_hf.norm()).item()
    noise_official = _official_style_pos_embed(noise, grid)
    noise_rel_official = ((noise_timm - noise_official).norm() / noise_official.norm()).item()
    print(f"white-noise positional embeddings at 16x34: relative L2 occfeat vs transformers = {noise_rel_hf:.3f}, "
          f"vs official-style = {noise_rel_official:.3f}")
    assert noise_rel_hf <= WHITE_NOISE_POS_EMBED_BOUND and noise_rel_official <= WHITE_NOISE_POS_EMBED_BOUND
    # The same resampling as timm's own pretrained path (checkpoint_filter_fn's resample_abs_pos_embed, antialiased).
    expected = resample_abs_pos_embed(source, new_size=list(grid), num_prefix_tokens=1, interpolation="bicubic",
                                      antialias=True)
    torch.testing.assert_close(teacher.model.pos_embed.detach(), expected, rtol=0, atol=0)
    # And the Teacher's own forward gives the (B, N, D, h, w) maps on that grid.
    assert teacher(torch.randn(1, 1, 3, *WORKING_SIZE)).shape == (1, 1, 384, 16, 34)


def _official_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The official release's key names and shapes (dinov2_vits14_pretrain.pth): timm's plus mask_token."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["mask_token"] = torch.zeros(1, model.embed_dim)
    return state


def test_official_pth_through_convert_and_cli(tmp_path, capsys):
    from occfeat.cli import main

    source = timm_dinov2()
    official = _official_state_dict(source)
    assert detect_layout(official) == "official"
    pth = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(official, pth)
    out = tmp_path / "dinov2_vits14.safetensors"
    report = convert_dinov2_checkpoint(pth, out)
    assert report["layout"] == "official" and report["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert (report["embed_dim"], report["depth"], report["tensors"]) == (384, DEPTH, len(source.state_dict()))
    assert report["teacher"] == VITS

    teacher = make_teacher(out)
    assert teacher.spec.weights == f"file:{report['sha256']}" and teacher.spec.weights_layout == "timm"
    x = torch.randn(2, 3, 518, 518)
    diff = (patch_tokens(teacher.model, x) - patch_tokens(source, x)).abs().max().item()
    with capsys.disabled():
        print(f"\nofficial .pth -> convert -> occfeat vs the source timm model at 518x518: max |diff| = {diff:.2e}")
    assert diff <= 1e-5

    cli_out = tmp_path / "cli.safetensors"
    assert main(["convert", "dinov2", str(pth), str(cli_out)]) == 0
    assert "official layout" in capsys.readouterr().out
    assert cli_out.read_bytes() == out.read_bytes()

    # A training checkpoint nests the backbone ({"teacher": {"backbone.*", "dino_head.*"}}); FSDP releases chunk the
    # blocks (blocks.<chunk>.<global n>.): both convert to the same tensors.
    nested = {"teacher": {**{f"backbone.{k}": v for k, v in official.items()}, "dino_head.last_layer.weight":
                          torch.zeros(2, 2)}, "iteration": 7}
    torch.save(nested, tmp_path / "teacher_checkpoint.pth")
    chunked = {(f"blocks.{int(k.split('.')[1])}.{k[len('blocks.'):]}" if k.startswith("blocks.") else k): v
               for k, v in official.items()}
    assert "blocks.1.1.norm1.weight" in chunked and detect_layout(chunked) == "official"
    expected = safetensors_torch.load_file(str(out))
    nested_report = convert_dinov2_checkpoint(tmp_path / "teacher_checkpoint.pth", tmp_path / "n.safetensors")
    assert nested_report["layout"] == "official"
    for converted in (safetensors_torch.load_file(str(tmp_path / "n.safetensors")), to_timm_state_dict(chunked)[0]):
        assert converted.keys() == expected.keys()
        assert all(torch.equal(converted[k], expected[k]) for k in expected)


def test_official_register_model(tmp_path):
    """Official register models fold the class token's positional embedding into timm's no-embed-class layout."""
    source = timm_dinov2("vit_small_patch14_reg4_dinov2.lvd142m")
    state = {k: v.clone() for k, v in source.state_dict().items()}
    cls_pos = torch.randn(1, 1, 384) * 0.02
    official = {k: v for k, v in state.items() if k not in ("reg_token", "cls_token", "pos_embed")}
    official |= {"register_tokens": state["reg_token"], "cls_token": state["cls_token"] - cls_pos,
                 "pos_embed": torch.cat([cls_pos, state["pos_embed"]], dim=1), "mask_token": torch.zeros(1, 384)}
    torch.save(official, tmp_path / "reg4.pth")
    report = convert_dinov2_checkpoint(tmp_path / "reg4.pth", tmp_path / "reg4.safetensors")
    assert report["registers"] == 4 and report["teacher"] == "vit_small_patch14_reg4_dinov2.lvd142m"
    teacher = make_teacher(tmp_path / "reg4.safetensors", name="vit_small_patch14_reg4_dinov2.lvd142m")
    x = torch.randn(1, 3, 518, 518)
    assert (patch_tokens(teacher.model, x) - patch_tokens(source, x)).abs().max().item() <= 1e-5


def test_transformers_swiglu_matches_timm_giant_layout(tmp_path):
    """The giant's SwiGLU (transformers' weights_in/weights_out) maps onto timm's packed fc1/fc2."""
    transformers = pytest.importorskip("transformers")
    config = transformers.Dinov2Config(hidden_size=384, num_attention_heads=6, num_hidden_layers=DEPTH,
                                       patch_size=14, image_size=518, use_swiglu_ffn=True)
    hf = transformers.Dinov2Model(config).eval()
    randomise_layer_scales(hf)
    hf.save_pretrained(tmp_path)
    teacher = make_teacher(tmp_path / "model.safetensors", name="vit_giant_patch14_dinov2.lvd142m",
                           model_kwargs={"depth": DEPTH, "embed_dim": 384, "num_heads": 6})
    x = torch.randn(1, 3, 518, 518)
    with torch.no_grad():
        expected = hf(pixel_values=x).last_hidden_state[:, 1:]
    assert (patch_tokens(teacher.model, x) - expected).abs().max().item() <= 1e-4


def test_timm_layout_file_equals_timms_own_loading(tmp_path):
    """A timm-layout file gives exactly what timm's pretrained path gives at the working size (same resampling)."""
    path = tmp_path / "vits.safetensors"
    safetensors_torch.save_file(dict(timm_dinov2().state_dict()), str(path))
    teacher = make_teacher(path, image_size=WORKING_SIZE)
    assert teacher.spec.weights_layout == "timm"
    assert teacher.spec.weights == f"file:{hashlib.sha256(path.read_bytes()).hexdigest()}"  # the key as before
    reference = timm.create_model(VITS, pretrained=True, pretrained_cfg_overlay={"file": str(path)},
                                  img_size=WORKING_SIZE, depth=DEPTH).eval()
    x = torch.randn(1, 3, *WORKING_SIZE)
    assert torch.equal(patch_tokens(teacher.model, x), patch_tokens(reference, x))


def _write_hub_cache(hub: Path, repo: str, tensors: dict[str, torch.Tensor]) -> Path:
    """huggingface_hub's cache format: blobs/<sha256>, snapshots/<commit>/model.safetensors -> the blob, refs/main."""
    folder = hub / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(repo.encode()).hexdigest()
    (folder / "blobs").mkdir(parents=True)
    staged = folder / "blobs" / "staged"
    safetensors_torch.save_file(tensors, str(staged), metadata={"format": "pt"})
    blob = staged.rename(folder / "blobs" / hashlib.sha256(staged.read_bytes()).hexdigest())
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "model.safetensors").symlink_to(Path("..") / ".." / "blobs" / blob.name)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    return folder


def test_hub_cache_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = timm_dinov2()
    folder = _write_hub_cache(tmp_path / "hf" / "hub", f"timm/{VITS}", dict(source.state_dict()))
    x = torch.randn(1, 3, 518, 518)
    expected = patch_tokens(source, x)
    for weights in ("hub", "auto"):
        teacher = make_teacher(weights)
        assert teacher.spec.weights == f"hub:{VITS}" and teacher.spec.weights_layout == "timm"
        assert (patch_tokens(teacher.model, x) - expected).abs().max().item() <= 1e-6
    # The cache folder, its snapshot, and the file: one identity (the file's sha256).
    snapshot = folder / "snapshots" / (folder / "refs" / "main").read_text()
    file_id = make_teacher(snapshot / "model.safetensors").spec.weights
    assert file_id == f"file:{hashlib.sha256((snapshot / 'model.safetensors').read_bytes()).hexdigest()}"
    assert make_teacher(folder).spec.weights == file_id and make_teacher(snapshot).spec.weights == file_id
    # Not cached and offline: "hub" fails at once, naming the cache it looked in.
    with pytest.raises(TeacherWeightsError, match="not in the Hub cache"):
        make_teacher("hub", name=VITB)


def test_keys_of_no_known_layout():
    with pytest.raises(InputError, match=r"timm .*transformers .*official"):
        detect_layout({"encoder.weight": torch.zeros(2), "decoder.bias": torch.zeros(2)})


def test_vit_that_is_not_dinov2(tmp_path):
    vit = timm.create_model("vit_small_patch16_224", pretrained=False, depth=DEPTH)
    safetensors_torch.save_file(dict(vit.state_dict()), str(tmp_path / "vit16.safetensors"))
    with pytest.raises(InputError, match=r"not DINOv2 \(16-pixel patches, no layer scale\)"):
        make_teacher(tmp_path / "vit16.safetensors")


def test_pickle_given_to_teacher_is_refused_unread(tmp_path, monkeypatch):
    torch.save(_official_state_dict(timm_dinov2()), tmp_path / "dinov2_vits14_pretrain.pth")

    def no_unpickling(*args, **kwargs):
        raise AssertionError("the training path must never torch.load")

    monkeypatch.setattr(torch, "load", no_unpickling)
    with pytest.raises(InputError, match=r"occfeat convert dinov2 IN\.pth OUT\.safetensors"):
        make_teacher(tmp_path / "dinov2_vits14_pretrain.pth")
    (tmp_path / "pickles").mkdir()
    (tmp_path / "dinov2_vits14_pretrain.pth").rename(tmp_path / "pickles" / "pytorch_model.bin")
    with pytest.raises(InputError, match="occfeat convert dinov2"):
        make_teacher(tmp_path / "pickles")


def test_vit_b_file_with_vit_s_name(tmp_path):
    safetensors_torch.save_file(dict(timm_dinov2(VITB).state_dict()), str(tmp_path / "vitb.safetensors"))
    with pytest.raises(ConfigError, match=rf"ViT-B/14 \(embed dim 768.*use --teacher {VITB}"):
        make_teacher(tmp_path / "vitb.safetensors")
    # A full-depth name for a 2-block file: says how to build the cut-down model.
    safetensors_torch.save_file(dict(timm_dinov2().state_dict()), str(tmp_path / "vits.safetensors"))
    with pytest.raises(OccfeatError, match=r"model_kwargs=\{'depth': 2\}"):
        make_teacher(tmp_path / "vits.safetensors", model_kwargs={})


@pytest.mark.parametrize(("name", "dim"), [(VITB, 768), (VITL, 1024)])
def test_larger_dinov2_names(name, dim):
    with pytest.warns(UserWarning, match="RANDOM weights"):
        teacher = make_teacher("random", name=name, image_size=(224, 480), model_kwargs={"depth": 1})
    assert teacher.spec.feature_dim == dim and teacher.spec.patch_grid == (16, 34)
    assert teacher.spec.input_size == WORKING_SIZE and teacher.spec.model_kwargs == {"depth": 1}


def test_spec_key_unchanged_for_old_specs():
    """Features cached before weights_layout/model_kwargs existed keep their folder."""
    spec = TeacherSpec(name=VITS, weights="file:abc", image_size=(224, 480), input_size=WORKING_SIZE,
                       patch_grid=(16, 34), feature_dim=384, cameras=("CAM_FRONT",), storage_dtype="float16",
                       weights_layout="transformers")
    old_fields = {k: v for k, v in asdict(spec).items() if k not in ("weights_layout", "model_kwargs")}
    old_key = f"{VITS}-{hashlib.sha256(json.dumps(old_fields, sort_keys=True).encode()).hexdigest()[:16]}"
    assert spec.key == old_key
    assert TeacherSpec(**{**asdict(spec), "model_kwargs": {"depth": 2}}).key != old_key
    recorded = spec.to_dict()  # what run.json records
    assert recorded["weights_layout"] == "transformers" and recorded["weights"] == "file:abc"
