"""The ``hub_server`` pytest fixture: a fresh :class:`~occfeat.testing.HubServer` for each test.

Enable it in your top-level ``conftest.py``, and give ``huggingface_hub`` a private home there, before anything
imports it (it reads its environment once, at import)::

    import os, tempfile

    os.environ.setdefault("HF_HOME", tempfile.mkdtemp(prefix="hf-test-"))
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

    pytest_plugins = ["occfeat.testing.pytest_plugin"]

Then test your pipeline against it with the real client: seed a repository, point your code at ``hub.endpoint``
(always pass it explicitly: ``HF_ENDPOINT`` is read only at import) and a ``tmp_path`` cache, and look at what was
requested::

    def test_pinned_weights_load_from_cache_without_a_request(hub_server, tmp_path):
        hub_server.create_repo("me/tiny")
        commit = hub_server.commit("me/tiny", {"model.safetensors": save_file_to_bytes(...)})
        load(..., revision=commit, endpoint=hub_server.endpoint, cache_dir=tmp_path)
        hub_server.request_log.clear()
        load(..., revision=commit, endpoint=hub_server.endpoint, cache_dir=tmp_path)
        assert hub_server.request_log == []

Publishing code works too: ``HfApi(endpoint=hub_server.endpoint, token="any").create_repo(...)`` and
``upload_folder(...)`` create real commits; read them back with ``hub_server.files(repo_id)``. Gated (403), private or
missing (401) repositories, missing revisions and files (404) raise the client's typed errors; ``with
hub_server.corrupted(repo_id, path):`` serves a file with a flipped byte; ``hub_server.stop()`` makes the endpoint
refuse connections (test offline paths with ``local_files_only=True``: a dead endpoint costs ~23 s of retries).

Scope: one server per test (starting one takes about a millisecond), so no state leaks between tests. Implicit tokens
are off while the fixture runs: a request carries a token only when the test passes one, whatever the machine's
``HF_TOKEN`` or stored login, so gated and private repositories behave the same everywhere.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from occfeat.testing.hub_server import HubServer


@pytest.fixture
def hub_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubServer]:
    """A started :class:`~occfeat.testing.HubServer`, stopped after the test."""
    from huggingface_hub import constants  # imported late: the conftest must set HF_HOME first

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", True)
    with HubServer() as hub:
        yield hub
