"""The zoo through the real huggingface_hub client against occfeat.testing.HubServer on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import occfeat
from occfeat.testing import HubServer
from occfeat.zoo.hub import HubError, IntegrityError, WeightsNotCachedError
from occfeat.zoo.registry import REGISTRY, register_weights

from .zoo_helpers import FILES, registry_entry, save_tiny

WEIGHT_ID = "simplebev-tiny.hub-test"


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    """A simplebev-tiny saved, committed to a local Hub and registered with its pinned commit and sha256s."""
    folder = tmp_path_factory.mktemp("published")
    model = save_tiny(folder, WEIGHT_ID)
    with HubServer() as hub:
        hub.create_repo("occfeat-test/simplebev-tiny")
        commit = hub.commit("occfeat-test/simplebev-tiny", {name: folder / name for name in FILES})
        entry = registry_entry(folder, "occfeat-test/simplebev-tiny", commit, aliases=["tiny-hub-test"])
        register_weights({"weights": {WEIGHT_ID: entry}})
        yield hub, model, commit
    REGISTRY.reset()


def test_load_by_alias_and_canonical_id(published, tmp_path):
    hub, reference, commit = published
    for name in ("tiny-hub-test", WEIGHT_ID):
        model = occfeat.load(name, endpoint=hub.endpoint, cache_dir=tmp_path)
        assert model.load_report.clean
        assert model.provenance["commit"] == commit and model.provenance["pinned"]
        assert all(torch.equal(reference.state_dict()[k], v) for k, v in model.state_dict().items())


def test_a_cached_pinned_load_sends_no_request(published, tmp_path):
    hub, _, _ = published
    occfeat.load(WEIGHT_ID, endpoint=hub.endpoint, cache_dir=tmp_path)
    before = len(hub.request_log)
    occfeat.load(WEIGHT_ID, endpoint=hub.endpoint, cache_dir=tmp_path)
    assert len(hub.request_log) == before


def test_offline_with_an_empty_cache_fails_fast_with_the_command(published, tmp_path, monkeypatch):
    hub, _, _ = published
    monkeypatch.setenv("OCCFEAT_OFFLINE", "1")
    before = len(hub.request_log)
    with pytest.raises(WeightsNotCachedError, match=f"occfeat download {WEIGHT_ID}"):
        occfeat.load(WEIGHT_ID, endpoint=hub.endpoint, cache_dir=tmp_path)
    assert len(hub.request_log) == before  # no request, so no timeout to wait for


def test_altered_bytes_raise_and_the_bad_blob_is_moved_aside(published, tmp_path):
    hub, _, commit = published
    with hub.corrupted("occfeat-test/simplebev-tiny", "model.safetensors", revision=commit):
        with pytest.raises(IntegrityError, match="sha256"):
            occfeat.load(WEIGHT_ID, endpoint=hub.endpoint, cache_dir=tmp_path)
    assert list(tmp_path.rglob("*.corrupt-*")), "the bad blob is kept aside for inspection"
    model = occfeat.load(WEIGHT_ID, endpoint=hub.endpoint, cache_dir=tmp_path)  # the next load fetches it afresh
    assert model.load_report.clean


def test_a_truncated_file_is_caught(published, tmp_path):
    hub, _, _ = published
    occfeat.load(WEIGHT_ID, endpoint=hub.endpoint, cache_dir=tmp_path)
    blob = next(p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink() and p.stat().st_size > 100_000
                and "occfeat" not in p.name)
    data = blob.read_bytes()
    blob.write_bytes(data[: len(data) // 2])
    with pytest.raises(IntegrityError, match="truncated"):
        occfeat.load(WEIGHT_ID, endpoint=hub.endpoint, cache_dir=tmp_path, local_files_only=True)


def test_hub_errors_are_typed_and_clear(published, tmp_path):
    hub, _, _ = published
    hub.create_repo("occfeat-test/gated", gated=True)
    hub.commit("occfeat-test/gated", {"config.json": "{}"})
    cases = {
        "hf-hub:occfeat-test/nothing-here": "was not found",
        "hf-hub:occfeat-test/simplebev-tiny@no-such-branch": "revision 'no-such-branch' does not exist",
        "hf-hub:occfeat-test/gated": "gated",
    }
    for name, message in cases.items():  # token=False: a developer's stored login must not open the gated repo
        with pytest.raises(HubError, match=message):
            occfeat.load(name, endpoint=hub.endpoint, cache_dir=tmp_path, token=False)
    hub.create_repo("occfeat-test/no-weights")
    hub.commit("occfeat-test/no-weights", {"notes.txt": "x"})
    with pytest.raises(HubError, match="has no file 'config.json'"):
        occfeat.load("hf-hub:occfeat-test/no-weights", endpoint=hub.endpoint, cache_dir=tmp_path)


def test_a_bundle_loads_with_no_network(published, tmp_path, monkeypatch):
    hub, reference, _ = published
    occfeat.download([WEIGHT_ID], bundle=tmp_path / "bundle", endpoint=hub.endpoint, cache_dir=tmp_path / "cache")
    assert (tmp_path / "bundle" / "occfeat-bundle.json").is_file()
    assert not any(p.is_symlink() for p in (tmp_path / "bundle").rglob("*"))
    monkeypatch.setenv("OCCFEAT_WEIGHTS_DIR", str(tmp_path / "bundle"))
    before = len(hub.request_log)
    model = occfeat.load(WEIGHT_ID, endpoint=hub.endpoint, cache_dir=tmp_path / "empty", local_files_only=True)
    assert len(hub.request_log) == before
    assert all(torch.equal(reference.state_dict()[k], v) for k, v in model.state_dict().items())
    direct = occfeat.load(f"local-dir:{tmp_path / 'bundle' / WEIGHT_ID}")
    assert direct.load_report.clean


def test_push_to_hub_returns_the_commit_and_hashes_and_loads_back(published, tmp_path, capsys):
    hub, reference, _ = published
    result = occfeat.push_to_hub(reference, "occfeat-test/pushed", endpoint=hub.endpoint, token="test-token",
                                 weight_id="simplebev-tiny.pushed")
    assert result["commit"] == hub.resolve("occfeat-test/pushed")
    assert set(result["files"]) == {"config.json", "model.safetensors"}
    printed = json.loads(capsys.readouterr().out)
    assert printed["weights"]["simplebev-tiny.pushed"]["hub"]["commit"] == result["commit"]
    served = hub.files("occfeat-test/pushed")
    assert {"config.json", "model.safetensors", "README.md"} <= set(served)
    loaded = occfeat.load(f"hf-hub:occfeat-test/pushed@{result['commit']}", endpoint=hub.endpoint, cache_dir=tmp_path)
    assert all(torch.equal(reference.state_dict()[k], v) for k, v in loaded.state_dict().items())


def _rank(rank: int, world: int, init_file: str, endpoint: str, cache: str, entry: dict, out: str) -> None:
    import torch.distributed as dist

    from occfeat.zoo.loading import load_distributed

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    register_weights({"weights": {WEIGHT_ID: entry}})
    model = load_distributed(WEIGHT_ID, endpoint=endpoint, cache_dir=cache)
    Path(f"{out}.{rank}").write_text(json.dumps({"clean": model.load_report.clean}))
    dist.barrier()
    dist.destroy_process_group()


def test_under_ddp_only_rank_zero_downloads(published, tmp_path):
    import torch.multiprocessing as mp

    from occfeat.zoo.registry import get_weights

    hub, _, _ = published
    entry = get_weights(WEIGHT_ID).to_dict()
    before = [r for r in hub.request_log if r[0] == "GET"]
    mp.spawn(_rank, args=(2, str(tmp_path / "init"), hub.endpoint, str(tmp_path / "cache"), entry, str(tmp_path / "out")),
             nprocs=2, join=True)
    gets = [r for r in hub.request_log if r[0] == "GET"][len(before):]
    assert sum(path.endswith("model.safetensors") for _, path in gets) == 1
    for rank in range(2):
        assert json.loads((tmp_path / f"out.{rank}").read_text())["clean"]


def test_cli_download_verify_and_env(published, tmp_path, capsys):
    from occfeat.cli import main

    hub, _, _ = published
    cache = str(tmp_path / "cache")
    assert main(["download", WEIGHT_ID, "--endpoint", hub.endpoint, "--cache-dir", cache, "--bundle", str(tmp_path / "b"), "--json"]) == 0
    fetched = json.loads(capsys.readouterr().out)
    assert set(fetched[WEIGHT_ID]) == {"config.json", "model.safetensors"}
    assert main(["verify", WEIGHT_ID, "--cache-dir", cache, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {WEIGHT_ID: "ok"}
    assert main(["env", "--json"]) == 0
    env = json.loads(capsys.readouterr().out)
    assert {"occfeat", "torch", "huggingface_hub", "hf_cache", "offline", "OCCFEAT_OFFLINE"} <= set(env)
