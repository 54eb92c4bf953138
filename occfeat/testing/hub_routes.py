"""The Hub's HTTP endpoints, as ``huggingface_hub`` (2.x) calls them, answered from a :class:`HubState`.

Model repositories only. ``{repo}`` is ``namespace/name``; ``{revision}`` is a branch or a full 40-hex commit id, sent
percent-encoded as one path segment (``refs%2Fpr%2F1``).

- ``HEAD /{repo}/resolve/{revision}/{path}``: ``X-Repo-Commit``, ``ETag`` (the quoted sha256), ``Content-Length``.
- ``GET /{repo}/resolve/{revision}/{path}``: the bytes; a single ``Range: bytes=a-b`` gets 206 and ``Content-Range``.
- ``GET /api/models/{repo}`` and ``.../revision/{revision}``: ``model_info`` / ``repo_info`` (id, sha, siblings, ...).
- ``GET /api/models/{repo}/tree/{revision}[/{folder}]``: ``list_repo_tree``, ``list_repo_files`` (``recursive=true``),
  in one page.
- ``POST /api/repos/create``: ``create_repo``; 200 ``{url}``, or 409 ``{url}`` when the repository exists.
- ``POST /api/models/{repo}/preupload/{revision}``: ``uploadMode: "regular"`` for every file, so contents come inline.
- ``POST /api/models/{repo}/commit/{revision}``: NDJSON, a header line then ``file`` / ``deletedFile`` /
  ``deletedFolder`` lines; answers ``commitOid`` and ``commitUrl``.
- ``POST /api/validate-yaml``: README.md front matter parsed as a ``ModelCard``; 400 lists the errors.

Errors carry the ``X-Error-Code`` the client turns into its typed exceptions: unknown repository 401 ``RepoNotFound``,
unknown revision 404 ``RevisionNotFound``, unknown file 404 ``EntryNotFound`` (with ``X-Repo-Commit``, which the
client uses to cache the absence), gated repository 403 ``GatedRepo``.

Access, simple and consistent: a private repository does not exist (401 ``RepoNotFound``) and a gated repository's
files are refused (403 ``GatedRepo``) for requests without a token; any token grants access (the user accepted the
terms). Writes need a token, any token. Every file is served the way the Hub serves LFS files: its ETag is its sha256.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from occfeat.testing.hub_repo import DEFAULT_BRANCH, REPO_ID, Blob, Commit, HubState, Repo, is_valid_path


class HubError(Exception):
    """An error answer: HTTP status, the Hub's ``X-Error-Code`` (when it sends one) and extra headers."""

    def __init__(self, status: int, message: str, *, code: str | None = None, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Request:
    """One parsed request. ``segments``: the URL path split on ``/``, then percent-decoded one by one."""

    method: str
    segments: list[str]
    query: dict[str, list[str]]
    headers: Message  # case-insensitive .get(), as http.server parses them
    body: bytes
    token: str | None


@dataclass
class Answer:
    """What to send back: status, body and headers (the handler adds ``Content-Length`` and ``Connection``)."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, payload: Any, status: int = 200) -> Answer:
        return cls(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    @classmethod
    def error(cls, error: HubError) -> Answer:
        # Header values must be latin-1; a message may quote a unicode path.
        message = error.message.encode("ascii", "backslashreplace").decode()
        reply = cls.json({"error": error.message}, status=error.status)
        reply.headers.update({"X-Error-Message": message, **error.headers})
        if error.code is not None:
            reply.headers["X-Error-Code"] = error.code
        return reply


def answer(state: HubState, request: Request, endpoint: str) -> Answer:
    """Route ``request`` to its endpoint. Raises :class:`HubError` for every error answer."""
    match request.method, request.segments:
        case ("HEAD" | "GET"), [namespace, name, "resolve", revision, *path] if path:
            return _resolve(state, request, f"{namespace}/{name}", revision, "/".join(path))
        case "GET", ["api", "models", namespace, name]:
            return _model_info(state, request, f"{namespace}/{name}", DEFAULT_BRANCH)
        case "GET", ["api", "models", namespace, name, "revision", revision]:
            return _model_info(state, request, f"{namespace}/{name}", revision)
        case "GET", ["api", "models", namespace, name, "tree", revision, *path]:
            return _tree(state, request, f"{namespace}/{name}", revision, "/".join(path).strip("/"))
        case "POST", ["api", "repos", "create"]:
            return _create_repo(state, request, endpoint)
        case "POST", ["api", "models", namespace, name, "preupload", revision]:
            return _preupload(state, request, f"{namespace}/{name}", revision)
        case "POST", ["api", "models", namespace, name, "commit", revision]:
            return _commit(state, request, f"{namespace}/{name}", revision, endpoint)
        case "POST", ["api", "validate-yaml"]:
            return _validate_yaml(request)
    raise HubError(404, f"HubServer does not implement {request.method} /{'/'.join(request.segments)}")


# --- access ----------------------------------------------------------------------------------------------------------


def _readable(state: HubState, request: Request, repo_id: str, *, files: bool) -> Repo:
    """The repository, if this request may see it (``files``: and download its files)."""
    repo = state.repos.get(repo_id)
    if repo is None or (repo.private and request.token is None):
        raise HubError(401, f"Repository Not Found: {repo_id}", code="RepoNotFound")
    if files and repo.gated and request.token is None:
        raise HubError(403, f"Access to model {repo_id} is restricted: send a token", code="GatedRepo")
    return repo


def _require_token(request: Request) -> None:
    if request.token is None:
        raise HubError(401, "Invalid credentials in Authorization header: writes need a token (any token)")


def _writable(state: HubState, request: Request, repo_id: str) -> Repo:
    _require_token(request)
    return _readable(state, request, repo_id, files=True)


def _revision(repo: Repo, revision: str) -> Commit:
    commit = repo.resolve(revision)
    if commit is None:
        raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
    return commit


def _entry_not_found(path: str, commit: Commit, why: str = "Entry not found") -> HubError:
    return HubError(404, f"{why}: {path}", code="EntryNotFound", headers={"X-Repo-Commit": commit.id})


# --- downloads and listings ------------------------------------------------------------------------------------------


def _resolve(state: HubState, request: Request, repo_id: str, revision: str, path: str) -> Answer:
    repo = _readable(state, request, repo_id, files=True)
    commit = _revision(repo, revision)
    blob = commit.files.get(path)
    if blob is None:
        raise _entry_not_found(path, commit)
    data = blob.data
    if (repo_id, commit.id, path) in state.corrupted:
        data = bytes([data[0] ^ 0xFF]) + data[1:]  # same size, so only a content check can tell
    headers = {
        "X-Repo-Commit": commit.id,
        "ETag": f'"{blob.sha256}"',
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
    }
    byte_range = _byte_range(request.headers.get("Range"), len(data))
    if byte_range is None:
        return Answer(200, data, headers)
    start, stop = byte_range
    headers["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
    return Answer(206, data[start:stop], headers)


_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``[start, stop)`` of a single ``bytes=`` range; None (serve it all, as RFC 9110 allows) for anything else."""
    match = _RANGE.fullmatch(header) if header else None
    if match is None or match.groups() == ("", ""):
        return None
    first, last = match.groups()
    if first:
        start, stop = int(first), min(int(last) + 1, size) if last else size
    else:  # suffix range: the last N bytes
        start, stop = max(size - int(last), 0), size
    if start >= stop:
        raise HubError(416, f"Range not satisfiable: {header}", headers={"Content-Range": f"bytes */{size}"})
    return start, stop


def _pointer_size(blob: Blob) -> int:
    """Size of the git-lfs pointer file that would stand for ``blob`` in git."""
    return len(f"version https://git-lfs.github.com/spec/v1\noid sha256:{blob.sha256}\nsize {len(blob.data)}\n")


def _model_info(state: HubState, request: Request, repo_id: str, revision: str) -> Answer:
    repo = _readable(state, request, repo_id, files=False)
    commit = _revision(repo, revision)
    siblings = [
        {
            "rfilename": path,
            "size": len(blob.data),
            "blobId": blob.blob_id,
            "lfs": {"size": len(blob.data), "sha256": blob.sha256, "pointerSize": _pointer_size(blob)},
        }
        for path, blob in sorted(commit.files.items())
    ]
    return Answer.json(
        {
            "id": repo_id,
            "modelId": repo_id,
            "author": repo_id.split("/")[0],
            "sha": commit.id,
            "private": repo.private,
            "gated": "auto" if repo.gated else False,
            "disabled": False,
            "tags": [],
            "siblings": siblings,
        }
    )


def _tree(state: HubState, request: Request, repo_id: str, revision: str, folder: str) -> Answer:
    """Files and folders under ``folder``: its direct children, or everything below with ``recursive=true``."""
    repo = _readable(state, request, repo_id, files=False)
    commit = _revision(repo, revision)
    recursive = request.query.get("recursive", ["false"])[0].lower() == "true"
    prefix = f"{folder}/" if folder else ""
    below = sorted(path for path in commit.files if path.startswith(prefix))
    if folder and not below:
        raise _entry_not_found(folder, commit)
    folders: set[str] = set()
    entries = []
    for path in below:
        parts = path[len(prefix) :].split("/")
        depth = len(parts) if recursive else min(len(parts), 2)
        folders.update(prefix + "/".join(parts[:level]) for level in range(1, depth))
        if recursive or len(parts) == 1:
            blob = commit.files[path]
            lfs = {"oid": blob.sha256, "size": len(blob.data), "pointerSize": _pointer_size(blob)}
            entries.append({"type": "file", "path": path, "oid": blob.blob_id, "size": len(blob.data), "lfs": lfs})
    for path in sorted(folders):
        content = "".join(f"{p}\0{commit.files[p].blob_id}\n" for p in below if p.startswith(f"{path}/"))
        tree_id = hashlib.sha1(content.encode()).hexdigest()
        entries.append({"type": "directory", "path": path, "oid": tree_id, "size": 0})
    return Answer.json(entries)


# --- uploads ---------------------------------------------------------------------------------------------------------


def _json_body(request: Request) -> Any:
    try:
        return json.loads(request.body)
    except json.JSONDecodeError as error:
        raise HubError(400, f"Request body is not JSON: {error}") from error


def _no_pull_requests(request: Request) -> None:
    if "create_pr" in request.query:
        raise HubError(400, "HubServer does not implement pull requests (create_pr)")


def _create_repo(state: HubState, request: Request, endpoint: str) -> Answer:
    _require_token(request)
    payload = _json_body(request)
    if payload.get("type", "model") != "model":
        raise HubError(400, f"HubServer hosts model repositories only, not {payload['type']!r}")
    if not payload.get("organization"):
        raise HubError(400, "HubServer has no user account: name repositories 'namespace/name'")
    repo_id = f"{payload['organization']}/{payload['name']}"
    if not REPO_ID.fullmatch(repo_id):
        raise HubError(400, f"Invalid repository id: {repo_id}")
    url = f"{endpoint}/{repo_id}"
    with state.lock:
        if repo_id in state.repos:
            # The client reads "url" from this 409 too when called with exist_ok=True.
            return Answer.json({"error": "You already created this model repo", "url": url}, status=409)
        private = payload.get("visibility") == "private" or payload.get("private") is True
        state.repos[repo_id] = Repo(repo_id, private=private)
    return Answer.json({"url": url, "name": repo_id})


def _preupload(state: HubState, request: Request, repo_id: str, revision: str) -> Answer:
    repo = _writable(state, request, repo_id)
    _no_pull_requests(request)
    commit = _revision(repo, revision)
    # "regular" makes the client send each file base64-encoded inside the commit call: no LFS or Xet transfer.
    # "oid" (git blob sha1 of what is there now) lets the client drop files that did not change.
    files = [
        {
            "path": file["path"],
            "uploadMode": "regular",
            "shouldIgnore": False,
            "oid": commit.files[file["path"]].blob_id if file["path"] in commit.files else None,
        }
        for file in _json_body(request)["files"]
    ]
    return Answer.json({"files": files, "commitOid": commit.id})


def _commit(state: HubState, request: Request, repo_id: str, branch: str, endpoint: str) -> Answer:
    """Apply an NDJSON commit: a ``header`` line, then one line per added file, deleted file or deleted folder."""
    repo = _writable(state, request, repo_id)
    _no_pull_requests(request)
    lines = [json.loads(line) for line in request.body.splitlines() if line.strip()]
    if not lines or lines[0]["key"] != "header":
        raise HubError(400, "A commit payload starts with a 'header' line")
    header = lines[0]["value"]
    with state.lock:
        if branch not in repo.branches:
            raise HubError(404, f"Invalid rev id: {branch} (commits go onto a branch)", code="RevisionNotFound")
        parent = repo.commits[repo.branches[branch]]
        if header.get("parentCommit", parent.id) != parent.id:
            raise HubError(412, f"A commit has happened since {header['parentCommit']}: {branch} is at {parent.id}")
        files = dict(parent.files)
        for line in lines[1:]:
            _apply(line["key"], line["value"], files, parent)
        message = "\n\n".join(part for part in (header["summary"], header.get("description")) if part)
        commit = repo.commit(branch, parent=parent, files=files, message=message)
    url = f"{endpoint}/{repo_id}/commit/{commit.id}"
    return Answer.json({"success": True, "commitOid": commit.id, "commitUrl": url})


def _apply(key: str, value: dict[str, Any], files: dict[str, Blob], parent: Commit) -> None:
    """Apply one commit operation to ``files`` (the tree being built)."""
    path = value["path"]
    if not is_valid_path(path.rstrip("/")):
        raise HubError(400, f"Invalid path in repository: {path!r}")
    match key:
        case "file":
            if value.get("encoding") != "base64":
                raise HubError(400, f"Unsupported encoding {value.get('encoding')!r} for {path}: use base64")
            files[path] = Blob.of(base64.b64decode(value["content"], validate=True))
        case "deletedFile":
            if path not in files:
                raise _entry_not_found(path, parent, "A file with this name doesn't exist")
            del files[path]
        case "deletedFolder":
            below = [name for name in files if name.startswith(path.rstrip("/") + "/")]
            if not below:
                raise _entry_not_found(path, parent, "A folder with this name doesn't exist")
            for name in below:
                del files[name]
        case "lfsFile":
            raise HubError(400, f"HubServer takes file contents inline only (uploadMode 'regular'), not LFS: {path}")
        case _:
            raise HubError(400, f"Unknown commit operation {key!r}")


def _validate_yaml(request: Request) -> Answer:
    """Check a README.md's metadata the way ``huggingface_hub`` itself parses it (YAML, a mapping, eval results)."""
    content = _json_body(request).get("content", "")
    if content.lstrip().startswith("---"):
        # Imported here: importing huggingface_hub freezes HF_HOME, HF_ENDPOINT, ... and only the client may do that.
        from huggingface_hub import ModelCard

        try:
            ModelCard(content)
        except Exception as error:  # whatever the card parser rejects is invalid metadata
            return Answer.json({"errors": [{"message": f"{type(error).__name__}: {error}"}], "warnings": []}, 400)
    return Answer.json({"errors": [], "warnings": []})
