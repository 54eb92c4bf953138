"""occfeat.testing.HubServer: the real huggingface_hub client downloads, uploads and gets its typed errors."""

from __future__ import annotations

import os
import tempfile

# huggingface_hub reads its environment once, at import: these must be set before it is imported.
os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="occfeat-test-hf-"))
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

import hashlib  # noqa: E402
import socket  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import pytest  # noqa: E402
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download  # noqa: E402
from huggingface_hub import snapshot_download  # noqa: E402
from huggingface_hub.errors import (  # noqa: E402
    GatedRepoError,
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get, hf_hub_url  # noqa: E402

from occfeat.errors import InputError, UnknownNameError  # noqa: E402
from occfeat.testing import HubServer  # noqa: E402

pytest_plugins = ["occfeat.testing.pytest_plugin"]

WEIGHTS = bytes(range(256)) * 40  # 10 KiB standing in for a safetensors file
CONFIG = '{"arch": "simplebev-tiny"}'


@pytest.fixture
def hub(hub_server: HubServer) -> HubServer:
    """The fixture under test, holding ``org/tiny`` with weights and a config on ``main``."""
    hub_server.create_repo("org/tiny")
    hub_server.commit("org/tiny", {"model.safetensors": WEIGHTS, "config.json": CONFIG})
    return hub_server


def download(hub: HubServer, cache: Path, filename: str, repo_id: str = "org/tiny", **kwargs) -> bytes:
    path = hf_hub_download(repo_id, filename, endpoint=hub.endpoint, cache_dir=cache, **kwargs)
    return Path(path).read_bytes()


# --- downloads -------------------------------------------------------------------------------------------------------


def test_download_by_branch_and_by_pinned_commit_returns_the_committed_bytes(hub, tmp_path):
    commit = hub.resolve("org/tiny")
    assert download(hub, tmp_path / "a", "model.safetensors") == WEIGHTS
    assert download(hub, tmp_path / "b", "model.safetensors", revision=commit) == WEIGHTS
    assert download(hub, tmp_path / "b", "config.json", revision=commit) == CONFIG.encode()
    assert ("HEAD", f"/org/tiny/resolve/{commit}/model.safetensors") in hub.request_log


def test_a_cached_pinned_download_makes_no_request(hub, tmp_path):
    commit = hub.resolve("org/tiny")
    download(hub, tmp_path, "model.safetensors", revision=commit)
    hub.request_log.clear()
    assert download(hub, tmp_path, "model.safetensors", revision=commit) == WEIGHTS
    assert hub.request_log == []


def test_a_branch_follows_new_commits_while_a_pinned_commit_keeps_its_bytes(hub, tmp_path):
    old = hub.resolve("org/tiny")
    new = hub.commit("org/tiny", {"model.safetensors": b"retrained"}, message="new run")
    assert new != old and hub.resolve("org/tiny") == new
    assert download(hub, tmp_path, "model.safetensors") == b"retrained"
    assert download(hub, tmp_path, "model.safetensors", revision=old) == WEIGHTS
    assert download(hub, tmp_path, "config.json", revision=new) == CONFIG.encode()  # a commit keeps untouched files


def test_a_resumed_download_asks_for_and_gets_the_rest_of_the_file(hub, tmp_path):
    url = hf_hub_url("org/tiny", "model.safetensors", endpoint=hub.endpoint)
    with open(tmp_path / "partial", "wb") as file:
        file.write(WEIGHTS[:1000])
        http_get(url, file, resume_size=1000, expected_size=len(WEIGHTS))  # sends Range: bytes=1000-
    assert (tmp_path / "partial").read_bytes() == WEIGHTS


def test_model_info_and_snapshot_download_see_every_file_of_the_commit(hub, tmp_path):
    info = HfApi(endpoint=hub.endpoint).model_info("org/tiny")
    assert info.sha == hub.resolve("org/tiny")
    assert sorted(s.rfilename for s in info.siblings) == ["config.json", "model.safetensors"]
    sha256 = {sibling.rfilename: sibling.lfs.sha256 for sibling in info.siblings}
    assert sha256["model.safetensors"] == hashlib.sha256(WEIGHTS).hexdigest()
    folder = Path(snapshot_download("org/tiny", endpoint=hub.endpoint, cache_dir=tmp_path))
    assert folder.name == info.sha
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS


@pytest.mark.parametrize(
    ("repo_id", "filename", "revision", "error"),
    [
        ("org/missing", "model.safetensors", None, RepositoryNotFoundError),
        ("org/tiny", "missing.safetensors", None, RemoteEntryNotFoundError),
        ("org/tiny", "model.safetensors", "no-such-branch", RevisionNotFoundError),
        ("org/tiny", "model.safetensors", "0" * 40, RevisionNotFoundError),
        ("org/gated", "model.safetensors", None, GatedRepoError),
        ("org/private", "model.safetensors", None, RepositoryNotFoundError),
    ],
)
def test_the_client_raises_its_typed_error_for_each_failure(hub, tmp_path, repo_id, filename, revision, error):
    hub.create_repo("org/gated", gated=True)
    hub.create_repo("org/private", private=True)
    for restricted in ("org/gated", "org/private"):
        hub.commit(restricted, {"model.safetensors": WEIGHTS})
    with pytest.raises(error) as raised:
        download(hub, tmp_path, filename, repo_id=repo_id, revision=revision)
    assert raised.type is error  # GatedRepoError is a RepositoryNotFoundError: be exact


def test_any_token_opens_gated_and_private_repositories_and_is_recorded(hub, tmp_path):
    hub.create_repo("org/gated", gated=True)
    hub.create_repo("org/private", private=True)
    for repo_id in ("org/gated", "org/private"):
        hub.commit(repo_id, {"model.safetensors": WEIGHTS})
        assert download(hub, tmp_path, "model.safetensors", repo_id=repo_id, token="hf_test") == WEIGHTS
    assert set(hub.tokens) == {"hf_test"}


def test_the_fixture_never_sends_the_machines_own_token(hub, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_from_the_environment")
    hub.create_repo("org/gated", gated=True)
    hub.commit("org/gated", {"model.safetensors": WEIGHTS})
    with pytest.raises(GatedRepoError):
        download(hub, tmp_path, "model.safetensors", repo_id="org/gated")
    assert hub.tokens == []


def test_a_corrupted_file_keeps_its_size_and_etag_so_only_a_content_check_catches_it(hub, tmp_path):
    sha256 = hashlib.sha256(WEIGHTS).hexdigest()
    with hub.corrupted("org/tiny", "model.safetensors"):
        served = download(hub, tmp_path, "model.safetensors")
    assert len(served) == len(WEIGHTS) and hashlib.sha256(served).hexdigest() != sha256
    blob = next((tmp_path / "models--org--tiny" / "blobs").iterdir())
    assert blob.name == sha256  # the client named the bad bytes after the committed sha256
    assert download(hub, tmp_path, "model.safetensors", force_download=True) == WEIGHTS


def test_a_stopped_server_refuses_connections_and_the_cache_still_answers_offline(hub, tmp_path):
    download(hub, tmp_path, "model.safetensors")  # by branch: the cache also learns where main points
    hub.stop()
    address = urlsplit(hub.endpoint)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address.hostname, address.port), timeout=1)
    for revision in ("main", hub.resolve("org/tiny")):
        assert download(hub, tmp_path, "model.safetensors", revision=revision, local_files_only=True) == WEIGHTS


# --- uploads ---------------------------------------------------------------------------------------------------------


def test_create_repo_and_upload_folder_make_a_commit_that_downloads_back_identical(hub_server, tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(WEIGHTS)
    (folder / "config.json").write_text(CONFIG)
    (folder / "README.md").write_text("---\nlicense: apache-2.0\nlibrary_name: occfeat\n---\n# tiny\n")
    api = HfApi(endpoint=hub_server.endpoint, token="hf_test")
    url = api.create_repo("me/tiny")
    assert url.repo_id == "me/tiny" and api.create_repo("me/tiny", exist_ok=True) == url
    info = api.upload_folder(repo_id="me/tiny", folder_path=folder, commit_message="publish tiny")
    assert info.oid == hub_server.resolve("me/tiny")
    assert hub_server.files("me/tiny") == {p.name: p.read_bytes() for p in folder.iterdir()}
    for path in folder.iterdir():
        assert download(hub_server, tmp_path, path.name, repo_id="me/tiny", revision=info.oid) == path.read_bytes()
    assert api.upload_folder(repo_id="me/tiny", folder_path=folder).oid == info.oid  # nothing changed: no new commit


def test_create_commit_adds_and_deletes_files_on_top_of_the_expected_parent(hub):
    api = HfApi(endpoint=hub.endpoint, token="hf_test")
    parent = hub.resolve("org/tiny")
    operations = [CommitOperationAdd("heads/seg.safetensors", b"head"), CommitOperationDelete("config.json")]
    info = api.create_commit("org/tiny", operations, commit_message="swap", parent_commit=parent)
    assert hub.files("org/tiny", info.oid) == {"model.safetensors": WEIGHTS, "heads/seg.safetensors": b"head"}
    with pytest.raises(HfHubHTTPError) as raised:  # main has moved on since `parent`
        api.create_commit("org/tiny", [CommitOperationAdd("x", b"x")], commit_message="late", parent_commit=parent)
    assert raised.value.response.status_code == 412


def test_uploads_without_a_token_are_refused(hub):
    with pytest.raises(HfHubHTTPError) as raised:
        HfApi(endpoint=hub.endpoint).upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id="org/tiny")
    assert raised.value.response.status_code == 401


def test_a_model_card_with_invalid_metadata_is_refused_before_any_upload(hub):
    api = HfApi(endpoint=hub.endpoint, token="hf_test")
    with pytest.raises(ValueError, match="Invalid metadata in README.md"):
        api.upload_file(path_or_fileobj=b"---\n- not\n- a mapping\n---\n", path_in_repo="README.md", repo_id="org/tiny")
    assert not any("/commit/" in path for _, path in hub.request_log)


# --- the programmatic API --------------------------------------------------------------------------------------------


def test_commit_ids_are_deterministic_so_tests_may_pin_them(tmp_path):
    (tmp_path / "w.bin").write_bytes(WEIGHTS)
    ids = []
    for _ in range(2):
        with HubServer() as server:
            server.create_repo("org/tiny")
            ids.append(server.commit("org/tiny", {"model.safetensors": tmp_path / "w.bin", "config.json": CONFIG}))
            assert server.files("org/tiny")["config.json"] == CONFIG.encode()  # str is UTF-8 text, Path a file
    assert ids[0] == ids[1] and len(ids[0]) == 40


def test_misuse_of_the_programmatic_api_raises_typed_errors(hub):
    with pytest.raises(InputError, match="namespace/name"):
        hub.create_repo("no-namespace")
    with pytest.raises(InputError, match="already exists"):
        hub.create_repo("org/tiny")
    with pytest.raises(InputError, match="relative"):
        hub.commit("org/tiny", {"../escape": b"x"})
    with pytest.raises(UnknownNameError, match="org/tiny"):
        hub.commit("org/other", {"x": b"x"})
    with pytest.raises(UnknownNameError, match="main"):
        hub.resolve("org/tiny", "dev")
