"""``HubServer``: a Hugging Face Hub look-alike on 127.0.0.1, for testing Hub code with the real client and no internet.

Example::

    with HubServer() as hub:
        hub.create_repo("org/tiny")
        commit = hub.commit("org/tiny", {"model.safetensors": weights, "config.json": '{"arch": "tiny"}'})
        path = hf_hub_download("org/tiny", "model.safetensors", revision=commit, endpoint=hub.endpoint,
                               cache_dir=tmp_path)

The endpoints, headers and errors are listed in ``hub_routes``; the repositories, commits and branches live in
``hub_repo``. This module is the lifecycle (a stdlib threading HTTP server in a daemon thread), the plumbing from HTTP
to routes, and the programmatic API tests use to set the scene and look at what happened.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, unquote, urlsplit

from occfeat.errors import InputError, UnknownNameError
from occfeat.testing.hub_repo import COMMIT_ID, DEFAULT_BRANCH, REPO_ID, Blob, Commit, HubState, Repo, is_valid_path
from occfeat.testing.hub_routes import Answer, HubError, Request, answer


class HubServer:
    """A Hub-compatible HTTP server on a free port of 127.0.0.1, started on construction.

    Use it as a context manager, or call :meth:`stop`. Pass ``endpoint=hub.endpoint`` to every ``huggingface_hub``
    call: the client reads ``HF_ENDPOINT`` only once, when it is imported.

    Attributes:
        request_log: ``(method, path)`` of every request served, in order; ``path`` as sent (percent-encoded), without
            the query string. Empty after a download that was answered from the cache.
        tokens: the bearer token of every request that sent one, in order. Any token is accepted.
    """

    def __init__(self) -> None:
        self.request_log: list[tuple[str, str]] = []
        self.tokens: list[str] = []
        self._state = HubState()
        self._misbehaviour: _Misbehaviour | None = None
        self._httpd = _HTTPServer(self)
        # A short poll interval keeps stop() fast: shutdown() waits for serve_forever to look at its flag.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="occfeat-hub-server", daemon=True
        )
        self._stopped = False
        self._thread.start()

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``, the value for ``endpoint=``."""
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def stop(self) -> None:
        """Stop serving and close the port: later connections are refused at once. Idempotent."""
        if not self._stopped:
            self._stopped = True
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join()

    def __enter__(self) -> HubServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = "stopped" if self._stopped else self.endpoint
        return f"HubServer({where}, repos={sorted(self._state.repos)})"

    # --- setting the scene -------------------------------------------------------------------------------------------

    def create_repo(self, repo_id: str, *, gated: bool = False, private: bool = False) -> None:
        """Create the model repository ``namespace/name``, with an empty initial commit on ``main``.

        ``gated``: downloads without a token get 403 ``GatedRepo``. ``private``: requests without a token get 401
        ``RepoNotFound``. Any token opens both.
        """
        if not REPO_ID.fullmatch(repo_id):
            raise InputError(f"repo_id must be 'namespace/name' (letters, digits, '.', '_', '-'), got {repo_id!r}")
        with self._state.lock:
            if repo_id in self._state.repos:
                raise InputError(f"repository {repo_id!r} already exists on this HubServer")
            self._state.repos[repo_id] = Repo(repo_id, gated=gated, private=private)

    def commit(
        self,
        repo_id: str,
        files: Mapping[str, bytes | str | Path],
        *,
        message: str = "Upload files",
        branch: str = DEFAULT_BRANCH,
    ) -> str:
        """Add or overwrite ``files`` on ``branch`` and return the new commit id (40 hex, deterministic).

        Values: ``bytes`` as they are, ``str`` as UTF-8 text, ``Path`` as the contents of that file. A new ``branch``
        starts from the head of ``main``.
        """
        if not files:
            raise InputError(f"commit to {repo_id!r} needs at least one file")
        if COMMIT_ID.fullmatch(branch):
            raise InputError(f"branch {branch!r} looks like a commit id; name branches otherwise")
        blobs = {_checked_path(path): Blob.of(_content(path, value)) for path, value in files.items()}
        with self._state.lock:
            repo = self._repo(repo_id)
            parent = repo.commits[repo.branches.get(branch, repo.branches[DEFAULT_BRANCH])]
            return repo.commit(branch, parent=parent, files={**parent.files, **blobs}, message=message).id

    @contextlib.contextmanager
    def corrupted(self, repo_id: str, path: str, *, revision: str = DEFAULT_BRANCH) -> Iterator[None]:
        """Within the block, serve ``path`` at ``revision`` with its first byte flipped.

        Size, ``ETag`` (the sha256 of the committed bytes) and ``X-Repo-Commit`` stay what they were, so the client
        accepts the download and stores it under the committed sha256: only a check of the content catches it.
        """
        commit = self._commit(repo_id, revision)
        blob = commit.files.get(path)
        if blob is None or not blob.data:
            raise InputError(f"{repo_id}@{commit.id} has no non-empty file {path!r} to corrupt")
        key = (repo_id, commit.id, path)
        self._state.corrupted.add(key)
        try:
            yield
        finally:
            self._state.corrupted.discard(key)

    @contextlib.contextmanager
    def misbehaving(
        self, how: str, *, status: int = 500, message: str = "Internal Error", seconds: float = 2.0
    ) -> Iterator[None]:
        """Within the block, answer every request the way a broken Hub, proxy or network does:

        - ``"status"``: the error ``status`` with ``message`` and no ``X-Error-Code`` (500: the Hub failed; 401 with
          ``message="Invalid credentials in Authorization header"``: a refused token);
        - ``"garbage"``: bytes that are not HTTP (the client sees a protocol error);
        - ``"redirect-loop"``: ``302`` back to the same address, for ever (too many redirects);
        - ``"stall"``: wait ``seconds`` before answering normally (a timeout, for a client that waits less).
        """
        if how not in _MISBEHAVIOURS:
            raise InputError(f"misbehaving({how!r}): expected one of {sorted(_MISBEHAVIOURS)}")
        self._misbehaviour = _Misbehaviour(how, status, message, seconds)
        try:
            yield
        finally:
            self._misbehaviour = None

    # --- looking at what happened ------------------------------------------------------------------------------------

    def resolve(self, repo_id: str, revision: str = DEFAULT_BRANCH) -> str:
        """The commit id ``revision`` (a branch or a commit id) points to now."""
        return self._commit(repo_id, revision).id

    def files(self, repo_id: str, revision: str = DEFAULT_BRANCH) -> dict[str, bytes]:
        """Every file at ``revision``: path -> bytes."""
        return {path: blob.data for path, blob in self._commit(repo_id, revision).files.items()}

    def _repo(self, repo_id: str) -> Repo:
        repo = self._state.repos.get(repo_id)
        if repo is None:
            known = ", ".join(sorted(self._state.repos)) or "none yet: call create_repo first"
            raise UnknownNameError(f"no repository {repo_id!r} on this HubServer; known: {known}")
        return repo

    def _commit(self, repo_id: str, revision: str) -> Commit:
        repo = self._repo(repo_id)
        commit = repo.resolve(revision)
        if commit is None:
            branches = ", ".join(sorted(repo.branches))
            raise UnknownNameError(f"{repo_id} has no revision {revision!r}; its branches: {branches}")
        return commit


def _checked_path(path: str) -> str:
    if not is_valid_path(path):
        raise InputError(f"file path {path!r} must be relative, '/'-separated, without '.', '..' or empty parts")
    return path


def _content(path: str, value: bytes | str | Path) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, Path):
        return value.read_bytes()
    raise InputError(f"content of {path!r} must be bytes, str (UTF-8 text) or Path, got {type(value).__name__}")


_MISBEHAVIOURS = ("status", "garbage", "redirect-loop", "stall")


@dataclass(frozen=True)
class _Misbehaviour:
    """How every request is answered during ``HubServer.misbehaving``."""

    how: str
    status: int
    message: str
    seconds: float


class _HTTPServer(ThreadingHTTPServer):
    """The stdlib threading server, bound to a free port of 127.0.0.1, knowing the HubServer its handlers serve."""

    def __init__(self, hub: HubServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.hub = hub


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, logs it on the HubServer, hands it to ``hub_routes.answer`` and writes the answer."""

    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def do_HEAD(self) -> None:
        self._serve("HEAD")

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def log_message(self, format: str, *args: object) -> None:
        """Silent: ``HubServer.request_log`` records requests, and error answers carry their message."""

    def _serve(self, method: str) -> None:
        hub = self.server.hub
        url = urlsplit(self.path)
        hub.request_log.append((method, url.path))
        scheme, _, credentials = self.headers.get("Authorization", "").partition(" ")
        token = credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None
        if token is not None:
            hub.tokens.append(token)
        request = Request(
            method=method,
            # Split before decoding: a revision like "refs%2Fpr%2F1" is one segment.
            segments=[unquote(segment) for segment in url.path.split("/")[1:]],
            query=parse_qs(url.query),
            headers=self.headers,
            body=self.rfile.read(int(self.headers.get("Content-Length") or 0)),
            token=token,
        )
        misbehaviour = hub._misbehaviour
        if misbehaviour is not None and misbehaviour.how == "garbage":
            self.close_connection = True
            self.wfile.write(b"this is not HTTP\r\n\r\n")
            return
        if misbehaviour is not None and misbehaviour.how == "stall":
            time.sleep(misbehaviour.seconds)
        try:
            if misbehaviour is not None and misbehaviour.how == "status":
                raise HubError(misbehaviour.status, misbehaviour.message)
            if misbehaviour is not None and misbehaviour.how == "redirect-loop":
                reply = Answer(302, b"", {"Location": self.path})
            else:
                reply = answer(hub._state, request, hub.endpoint)
        except HubError as error:
            reply = Answer.error(error)
        except (KeyError, TypeError, ValueError) as error:  # a payload without the fields the Hub expects
            reply = Answer.error(HubError(400, f"Malformed request: {type(error).__name__}: {error}"))
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        # The client pools connections; closing each one means nothing is answered once the server has stopped.
        self.send_header("Connection", "close")
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(reply.body)
