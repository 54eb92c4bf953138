"""The zoo's trust boundaries (issue 23): typed errors from one module, offline that fails fast and never open, revisions
that override the pin honestly, registry paths that stay in their folder, uploads through an allow-list, read-only
storage, a poisoned cache that heals, weights of the wrong dtype or with NaN, safe weight ids, and third-party
exceptions that cross the API as ``occfeat.errors`` types.

The Hub is ``occfeat.testing.HubServer`` on 127.0.0.1; a dead endpoint is a loopback port nobody listens on, and
huggingface_hub's back-off sleeps are recorded instead of slept (``backoff``), so "no retry loop" is checked exactly
and fast.
"""

from __future__ import annotations

import ast
import errno
import inspect
import json
import os
import shutil
import socket
import stat
import time
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

import occfeat
import occfeat.errors as errors
from occfeat.errors import (
    ConfigError,
    HubError,
    IntegrityError,
    LoadError,
    TeacherWeightsError,
    WeightsNotCachedError,
)
from occfeat.testing import HubServer
from occfeat.zoo.registry import REGISTRY, register_weights

from .zoo_helpers import FILES, REPO, registry_entry, save_tiny

pytest_plugins = ["occfeat.testing.pytest_plugin"]  # the hub_server fixture

WEIGHT_ID = "simplebev-tiny.trust-test"
HUB_REPO = "occfeat-test/trust"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("saved")
    return save_tiny(folder, WEIGHT_ID), folder


@pytest.fixture
def published(saved, hub_server):
    """The saved simplebev-tiny committed to ``HUB_REPO`` and registered as ``WEIGHT_ID``, pinned at that commit."""
    model, folder = saved
    hub_server.create_repo(HUB_REPO)
    commit = hub_server.commit(HUB_REPO, {name: folder / name for name in FILES})
    register_weights({"weights": {WEIGHT_ID: registry_entry(folder, HUB_REPO, commit)}})
    yield hub_server, model, commit
    REGISTRY.reset()


class _RecordedSleeps:
    """Stands in for the ``time`` module of huggingface_hub's HTTP code: a retry loop's back-off sleeps are recorded,
    not slept."""

    def __init__(self) -> None:
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def __getattr__(self, name: str):
        return getattr(time, name)


@pytest.fixture
def backoff(monkeypatch):
    import huggingface_hub.file_download as file_download
    import huggingface_hub.utils._http as http

    clock = _RecordedSleeps()
    monkeypatch.setattr(http, "time", clock)
    monkeypatch.setattr(file_download, "time", clock)
    return clock


@pytest.fixture
def dead_endpoint(monkeypatch):
    """A loopback address that refuses connections, made the default endpoint (what timm's downloads use)."""
    from huggingface_hub import constants

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("OCCFEAT_OFFLINE", raising=False)
    return endpoint


# ---------------------------------------------------------------------------------------------------------------------
# 1. One home for the errors


MOVED = ("WeightsNotCachedError", "IntegrityError", "HubError", "LoadError", "WeightsNotPublishedError",
         "UnsafeWeightsError", "TeacherWeightsError")


def test_every_error_lives_in_occfeat_errors_and_is_exported():
    import occfeat.pretrain.teacher as teacher
    import occfeat.zoo.hub as hub
    import occfeat.zoo.loading as loading

    for name in MOVED:
        assert getattr(errors, name).__module__ == "occfeat.errors", name
    old_homes = {hub: ("WeightsNotCachedError", "IntegrityError", "HubError"),
                 loading: ("LoadError", "WeightsNotPublishedError", "UnsafeWeightsError"),
                 teacher: ("TeacherWeightsError",)}
    for module, names in old_homes.items():
        for name in names:
            assert getattr(module, name) is getattr(errors, name), f"{module.__name__}.{name}"
    defined = [value for value in vars(errors).values()
               if inspect.isclass(value) and issubclass(value, errors.OccfeatError) and value.__module__ == "occfeat.errors"]
    for error in defined:
        assert error.__name__ in occfeat.__all__ and getattr(occfeat, error.__name__) is error, error.__name__


def _imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at module or function level, as dotted names relative to occfeat.zoo."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = ("." * node.level) + (node.module or "")
            names.add(base)
            names.update(f"{base}.{alias.name}" if node.module else f"{base}{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_hub_does_not_import_loading():
    """``loading`` uses ``hub``; ``hub`` must not reach back (the cycle the consolidation left)."""
    imported = _imported_modules(REPO / "occfeat" / "zoo" / "hub.py")
    assert not {".loading", "occfeat.zoo.loading", "..zoo.loading"} & imported, imported


# ---------------------------------------------------------------------------------------------------------------------
# 2. Offline means fail fast, never fail open


def test_pretrained_backbone_offline_is_a_typed_error_not_a_random_backbone(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "RANDOMLY INITIALISED" warning: an error
        with pytest.raises(WeightsNotCachedError, match=r"pretrained_backbone=PATH") as caught:
            occfeat.create_model("simplebev-tiny", pretrained_backbone=True)
    assert "model.safetensors" in str(caught.value) and "timm/efficientnet_b0" in str(caught.value)


def test_pretrained_backbone_with_a_dead_hub_fails_at_once(dead_endpoint, backoff):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(HubError, match=r"pretrained_backbone=PATH"):
            occfeat.create_model("simplebev-tiny", pretrained_backbone=True)
    assert backoff.sleeps == [], "no retry loop"


def test_hub_teacher_with_a_dead_hub_fails_at_once(dead_endpoint, backoff, tmp_path, monkeypatch):
    from occfeat.pretrain.teacher import Teacher

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty Hub cache
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    with pytest.raises(TeacherWeightsError, match=r"--teacher-weights"):
        Teacher("vit_small_patch14_dinov2.lvd142m", image_size=(28, 28), weights="hub", image_mean=(0.5,) * 3,
                image_std=(0.5,) * 3, cameras=("CAM_FRONT",), model_kwargs={"depth": 1})
    assert backoff.sleeps == [], "no retry loop"


def test_hf_hub_load_from_a_refusing_port_fails_at_once(dead_endpoint, backoff, tmp_path):
    with pytest.raises(WeightsNotCachedError, match="could not be reached") as caught:
        occfeat.load("hf-hub:org/repo", endpoint=dead_endpoint, cache_dir=tmp_path)
    assert backoff.sleeps == [], "no retry loop"
    assert caught.value.__cause__ is not None


@pytest.fixture
def timm_hub(hub_server, tmp_path, monkeypatch):
    """``hub_server`` as the default endpoint (where timm's repositories are), with an empty default cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", hub_server.endpoint)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                        hub_server.endpoint + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # the teacher reads the cache's place from the environment
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return hub_server


def _publish_timm(hub: HubServer, repo: str, state: dict) -> None:
    from safetensors.torch import save

    hub.create_repo(repo)
    hub.commit(repo, {"model.safetensors": save({k: v.contiguous() for k, v in state.items()})})


def test_pretrained_backbone_from_the_hub_then_from_the_cache_offline(timm_hub, monkeypatch):
    import timm

    torch.manual_seed(2)
    imagenet = timm.create_model("efficientnet_b0")  # stands in for timm's ImageNet weights
    _publish_timm(timm_hub, "timm/efficientnet_b0.ra_in1k", imagenet.state_dict())
    model = occfeat.create_model("simplebev-tiny", pretrained_backbone=True)
    assert torch.equal(model.backbone.conv_stem.weight, imagenet.conv_stem.weight)
    init = model.provenance["backbone_init"]
    assert init["hf_hub_id"] == "timm/efficientnet_b0.ra_in1k" and len(init["commit"]) == 40 and len(init["sha256"]) == 64
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = len(timm_hub.request_log)
    again = occfeat.create_model("simplebev-tiny", pretrained_backbone=True)
    assert torch.equal(again.backbone.conv_stem.weight, imagenet.conv_stem.weight)
    assert len(timm_hub.request_log) == before, "offline: the cache only"


def test_hub_teacher_downloads_its_weights_once(timm_hub):
    import timm

    from occfeat.pretrain.teacher import Teacher

    name = "vit_small_patch14_dinov2.lvd142m"
    torch.manual_seed(3)
    dinov2 = timm.create_model(name, pretrained=False, img_size=28, depth=1)
    _publish_timm(timm_hub, "timm/vit_small_patch14_dinov2.lvd142m", dinov2.state_dict())
    options = dict(image_size=(28, 28), weights="hub", image_mean=(0.5,) * 3, image_std=(0.5,) * 3,
                   cameras=("CAM_FRONT",), model_kwargs={"depth": 1})
    teacher = Teacher(name, **options)
    assert teacher.spec.weights == f"hub:{name}"
    assert torch.equal(teacher.model.blocks[0].attn.qkv.weight, dinov2.blocks[0].attn.qkv.weight)
    downloads = [path for method, path in timm_hub.request_log if method == "GET"]
    Teacher(name, **options)
    assert [path for method, path in timm_hub.request_log if method == "GET"] == downloads, "cached: no download"


# ---------------------------------------------------------------------------------------------------------------------
# 3. An explicit revision overrides the pin


def test_an_explicit_revision_overrides_the_pin_and_records_the_resolved_commit(published, saved, tmp_path):
    hub, reference, pinned = published
    torch.manual_seed(1)
    retrained = occfeat.create_model("simplebev-tiny").eval()
    newer = tmp_path / "newer"
    occfeat.save_pretrained(retrained, newer, weight_id=WEIGHT_ID)
    head = hub.commit(HUB_REPO, {name: newer / name for name in FILES}, message="retrained")
    cache = tmp_path / "cache"

    model = occfeat.load(WEIGHT_ID, revision="main", endpoint=hub.endpoint, cache_dir=cache)
    assert model.provenance["commit"] == head and not model.provenance["pinned"]
    assert all(torch.equal(retrained.state_dict()[k], v) for k, v in model.state_dict().items())
    assert not list(cache.rglob("*.corrupt-*")), "legitimate new bytes are not corrupt"

    pinned_model = occfeat.load(WEIGHT_ID, endpoint=hub.endpoint, cache_dir=cache)
    assert pinned_model.provenance["commit"] == pinned and pinned_model.provenance["pinned"]
    assert all(torch.equal(reference.state_dict()[k], v) for k, v in pinned_model.state_dict().items())
    by_commit = occfeat.load(WEIGHT_ID, revision=pinned, endpoint=hub.endpoint, cache_dir=cache)
    assert by_commit.provenance["commit"] == pinned and by_commit.provenance["pinned"]


def test_hf_hub_provenance_names_the_resolved_commit(published, tmp_path):
    hub, _, commit = published
    model = occfeat.load(f"hf-hub:{HUB_REPO}", revision="main", endpoint=hub.endpoint, cache_dir=tmp_path)
    assert model.provenance["commit"] == commit


# ---------------------------------------------------------------------------------------------------------------------
# 4. Registry paths stay inside their folder


@pytest.mark.parametrize("path", ["../model.safetensors", "/etc/model.safetensors", "sub/../../x.safetensors",
                                  "a\\b.safetensors", "./model.safetensors", "", "sub//x.safetensors"])
def test_registry_file_paths_must_stay_inside_the_repository(saved, path):
    _, folder = saved
    entry = registry_entry(folder, HUB_REPO, "0" * 40)
    entry["files"] = {path: {"sha256": "0" * 64, "size": 10}}
    try:
        with pytest.raises(ConfigError, match="relative inside the repository"):
            register_weights({"weights": {WEIGHT_ID: entry}})
    finally:
        REGISTRY.reset()


def test_a_bad_bundle_file_never_renames_anything_outside_the_bundle(published, saved, tmp_path, monkeypatch):
    _, _, _ = published
    _, folder = saved
    bundle = tmp_path / "bundle"
    (bundle / WEIGHT_ID).mkdir(parents=True)
    shutil.copyfile(folder / "config.json", bundle / WEIGHT_ID / "config.json")
    outside = tmp_path / "elsewhere" / "precious.safetensors"
    outside.parent.mkdir()
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    outside.write_bytes(bytes(data))
    (bundle / WEIGHT_ID / "model.safetensors").symlink_to(outside)
    monkeypatch.setenv("OCCFEAT_WEIGHTS_DIR", str(bundle))
    with pytest.raises(IntegrityError, match="sha256"):
        occfeat.load(WEIGHT_ID, cache_dir=tmp_path / "cache", local_files_only=True)
    assert outside.is_file() and sorted(p.name for p in outside.parent.iterdir()) == ["precious.safetensors"]


# ---------------------------------------------------------------------------------------------------------------------
# 5. Uploads go through an allow-list


def test_push_to_hub_uploads_only_what_save_pretrained_writes(saved, hub_server, tmp_path):
    _, folder = saved
    upload = tmp_path / "upload"
    shutil.copytree(folder, upload)
    (upload / ".model.safetensors.tmp-3f9a2c").write_bytes(b"half a file")
    (upload / "notes.txt").write_text("private notes")
    (upload / "scratch").mkdir()
    with pytest.warns(UserWarning, match=r"skipped \['.model.safetensors.tmp-3f9a2c', 'notes.txt', 'scratch/'\]"):
        result = occfeat.push_to_hub(upload, "occfeat-test/allow-list", endpoint=hub_server.endpoint, token="t",
                                     print_entry=False)
    assert set(hub_server.files("occfeat-test/allow-list")) == {"config.json", "model.safetensors", "README.md"}
    assert result["skipped"] == [".model.safetensors.tmp-3f9a2c", "notes.txt", "scratch/"]
    assert set(result["files"]) == {"config.json", "model.safetensors"}


# ---------------------------------------------------------------------------------------------------------------------
# 6. Verification works on read-only storage


def test_a_read_only_bundle_loads(published, tmp_path, monkeypatch):
    hub, reference, _ = published
    bundle = tmp_path / "bundle"
    occfeat.download([WEIGHT_ID], bundle=bundle, endpoint=hub.endpoint, cache_dir=tmp_path / "cache")
    if os.geteuid() == 0:  # root writes through any mode bits: make the storage refuse the stamp instead
        original = Path.write_text

        def read_only(self, *args, **kwargs):
            if self.name.endswith(".occfeat-sha256"):
                raise OSError(errno.EROFS, "Read-only file system", str(self))
            return original(self, *args, **kwargs)

        monkeypatch.setattr(Path, "write_text", read_only)
    else:
        for path in [bundle, *bundle.rglob("*")]:
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    monkeypatch.setenv("OCCFEAT_WEIGHTS_DIR", str(bundle))
    try:
        for _ in range(2):  # twice: without a stamp every load hashes again, and still loads
            model = occfeat.load(WEIGHT_ID, cache_dir=tmp_path / "empty", local_files_only=True)
            assert all(torch.equal(reference.state_dict()[k], v) for k, v in model.state_dict().items())
    finally:
        for path in [bundle, *bundle.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert not list(bundle.rglob("*.occfeat-sha256"))


# ---------------------------------------------------------------------------------------------------------------------
# 7. A poisoned unpinned download heals with verify="always"


def test_verify_always_catches_a_poisoned_unpinned_download_and_the_next_load_heals(published, tmp_path):
    hub, reference, commit = published
    name = f"hf-hub:{HUB_REPO}"
    with hub.corrupted(HUB_REPO, "model.safetensors", revision=commit):
        with pytest.raises(LoadError, match='verify="always"'):
            occfeat.load(name, endpoint=hub.endpoint, cache_dir=tmp_path)
    with pytest.raises(IntegrityError, match="sha256"):
        occfeat.load(name, endpoint=hub.endpoint, cache_dir=tmp_path, verify="always")
    assert list(tmp_path.rglob("*.corrupt-*")), "the bad blob is moved aside"
    model = occfeat.load(name, endpoint=hub.endpoint, cache_dir=tmp_path, verify="always")
    assert all(torch.equal(reference.state_dict()[k], v) for k, v in model.state_dict().items())


# ---------------------------------------------------------------------------------------------------------------------
# 8. Dtypes and non-finite values are checked at load


def _rewrite(folder: Path, out: Path, change) -> Path:
    shutil.copytree(folder, out)
    state = load_file(str(out / "model.safetensors"))
    save_file({k: v.contiguous() for k, v in change(state).items()}, str(out / "model.safetensors"))
    return out


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_floating_weights_of_another_dtype_are_cast_and_said_so(saved, tmp_path, dtype):
    reference, folder = saved
    other = _rewrite(folder, tmp_path / "other", lambda s: {k: v.to(dtype) if v.is_floating_point() else v for k, v in s.items()})
    model = occfeat.load(f"local-dir:{other}")
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    short = str(dtype).replace("torch.", "")
    assert f"{short} -> float32" in str(model.load_report) and model.load_report.cast
    key = "neck.fuse.2.weight"
    torch.testing.assert_close(model.state_dict()[key], reference.state_dict()[key].to(dtype).float())


def test_integer_tensors_where_floats_belong_are_refused(saved, tmp_path):
    _, folder = saved
    key = "neck.fuse.2.weight"
    bad = _rewrite(folder, tmp_path / "int", lambda s: {**s, key: s[key].to(torch.int32)})
    with pytest.raises(LoadError, match=key):
        occfeat.load(f"local-dir:{bad}")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_weights_are_refused(saved, tmp_path, value):
    _, folder = saved
    key = "neck.fuse.2.weight"

    def poison(state):
        tensor = state[key].clone()
        tensor.view(-1)[0] = value
        return {**state, key: tensor}

    bad = _rewrite(folder, tmp_path / "nan", poison)
    with pytest.raises(LoadError, match=rf"NaN or infinite.*{key}"):
        occfeat.load(f"local-dir:{bad}")


# ---------------------------------------------------------------------------------------------------------------------
# 9. Weight ids are validated


@pytest.mark.parametrize("bad", ['simplebev-tiny.x"); import os; ("', "simplebev-tiny.two words", "simplebev-tiny.a\nb",
                                 "simplebev-tiny.it's"])
def test_weight_ids_with_quotes_spaces_or_newlines_are_refused(saved, tmp_path, hub_server, bad):
    model, folder = saved
    try:
        with pytest.raises(ConfigError, match="not a valid name"):
            register_weights({"weights": {bad: registry_entry(folder, HUB_REPO, None)}})
        with pytest.raises(ConfigError, match="not a valid name"):
            register_weights({"weights": {WEIGHT_ID: registry_entry(folder, HUB_REPO, None, aliases=[bad])}})
    finally:
        REGISTRY.reset()
    with pytest.raises(ConfigError, match="not a valid name"):
        occfeat.save_pretrained(model, tmp_path / "out", weight_id=bad)
    with pytest.raises(ConfigError, match="not a valid name"):
        occfeat.push_to_hub(model, "occfeat-test/ids", endpoint=hub_server.endpoint, token="t", weight_id=bad)
    assert "occfeat-test/ids" not in repr(hub_server), "refused before anything was uploaded"


def test_the_card_snippet_is_a_valid_python_literal(saved, tmp_path):
    model, _ = saved
    occfeat.save_pretrained(model, tmp_path / "card", weight_id="me/simplebev-tiny.v2")
    card = (tmp_path / "card" / "README.md").read_text()
    snippet = card.split("```python\n", 1)[1].split("```", 1)[0]
    call = next(node for node in ast.walk(ast.parse(snippet)) if isinstance(node, ast.Call))
    assert ast.literal_eval(call.args[0]) == "me/simplebev-tiny.v2"


# ---------------------------------------------------------------------------------------------------------------------
# 10. Third-party exceptions cross the API as occfeat.errors types, chaining the original


def test_a_corrupt_safetensors_file_is_a_load_error(saved, tmp_path):
    _, folder = saved
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    (broken / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(LoadError, match="not a readable safetensors file") as caught:
        occfeat.load(f"local-dir:{broken}")
    assert isinstance(caught.value.__cause__, SafetensorError)


@pytest.mark.parametrize("text, cause", [
    ('{"model": ', json.JSONDecodeError),
    ("[" * 200_000 + "]" * 200_000, RecursionError),
])
def test_unreadable_config_json_is_a_config_error(saved, tmp_path, text, cause):
    _, folder = saved
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    (bad / "config.json").write_text(text)
    with pytest.raises(ConfigError) as caught:
        occfeat.load(f"local-dir:{bad}")
    assert isinstance(caught.value.__cause__, cause)


def test_wrongly_typed_config_sections_are_config_errors(saved, tmp_path, hub_server):
    _, folder = saved
    document = json.loads((folder / "config.json").read_text())
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    (bad / "config.json").write_text(json.dumps({**document, "provenance": ["not", "a", "mapping"]}))
    with pytest.raises(ConfigError, match="provenance"):  # was TypeError
        occfeat.load(f"local-dir:{bad}")
    hub_server.create_repo("occfeat-test/typed")
    hub_server.commit("occfeat-test/typed", {"config.json": json.dumps({**document, "provenance": "text"}),
                                             "model.safetensors": folder / "model.safetensors"})
    with pytest.raises(ConfigError, match="provenance"):  # was AttributeError
        occfeat.load("hf-hub:occfeat-test/typed", endpoint=hub_server.endpoint, cache_dir=tmp_path / "cache")


def _http_error_types():
    from occfeat.zoo.hub import connection_error_types

    return connection_error_types()[1]


@pytest.mark.parametrize("how, options, message", [
    ("status", {"status": 500}, "answered 500"),
    ("status", {"status": 503}, "answered 503"),
    ("status", {"status": 401, "message": "Invalid credentials in Authorization header"}, "answered 401"),
    ("garbage", {}, "failed"),
    ("redirect-loop", {}, "TooManyRedirects"),
])
def test_hub_failures_are_typed_and_immediate(published, tmp_path, backoff, how, options, message):
    from huggingface_hub.errors import HfHubHTTPError

    hub, _, _ = published
    with hub.misbehaving(how, **options):
        for name in (f"hf-hub:{HUB_REPO}", WEIGHT_ID):
            with pytest.raises(HubError, match=message) as caught:
                occfeat.load(name, endpoint=hub.endpoint, cache_dir=tmp_path, token="t")
            assert isinstance(caught.value.__cause__, (HfHubHTTPError, *_http_error_types()))
    assert backoff.sleeps == [], "no retry loop"


def test_a_hub_that_does_not_answer_in_time_is_a_typed_error(published, tmp_path, backoff, monkeypatch):
    from huggingface_hub import constants

    hub, _, _ = published
    monkeypatch.setattr(constants, "HF_HUB_ETAG_TIMEOUT", 0.2)
    with hub.misbehaving("stall", seconds=1.0):
        with pytest.raises(WeightsNotCachedError, match="Timeout") as caught:
            occfeat.load(WEIGHT_ID, endpoint=hub.endpoint, cache_dir=tmp_path)
    assert isinstance(caught.value.__cause__, _http_error_types())
    assert backoff.sleeps == [], "no retry loop"


def test_push_to_hub_failures_are_typed(saved, hub_server, backoff):
    model, _ = saved
    with hub_server.misbehaving("status", status=500):
        with pytest.raises(HubError, match="answered 500"):
            occfeat.push_to_hub(model, "occfeat-test/pushed", endpoint=hub_server.endpoint, token="t",
                                print_entry=False)
