"""The in-memory state behind :class:`~occfeat.testing.HubServer`: model repositories, their commits and branches.

No HTTP here (``hub_routes`` speaks the protocol). A repository is a set of commits, each holding the complete file
tree of that revision (path -> blob), and a table of branches (name -> commit id). Every repository starts with an
empty ``"initial commit"`` on ``main``, so ``main`` resolves as soon as the repository exists, as it does on the Hub.

Commit ids are deterministic: the sha1 of the repository id, the parent id, the message and the sorted (path, sha256)
pairs. The same files committed the same way give the same id in every test run, so a test may pin a commit id in a
registry entry.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_BRANCH = "main"
COMMIT_ID = re.compile(r"[0-9a-f]{40}")
REPO_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")


def is_valid_path(path: str) -> bool:
    """A relative POSIX path inside a repository: no leading slash, no empty, ``.`` or ``..`` part, no backslash."""
    return bool(path) and all(part not in ("", ".", "..") for part in path.split("/")) and "\\" not in path


@dataclass(frozen=True)
class Blob:
    """One file's bytes and the two hashes the Hub reports for it.

    ``sha256`` is what the server sends as ``ETag`` and as ``lfs.sha256`` (every file is served as the Hub serves an
    LFS file); ``blob_id`` is the git blob sha1 of the content (``oid`` / ``blobId`` in listings).
    """

    data: bytes = field(repr=False)
    sha256: str
    blob_id: str

    @classmethod
    def of(cls, data: bytes) -> Blob:
        git_header = b"blob %d\0" % len(data)
        return cls(data, hashlib.sha256(data).hexdigest(), hashlib.sha1(git_header + data).hexdigest())


@dataclass(frozen=True)
class Commit:
    """An immutable revision: ``files`` is the whole tree at this commit, not a diff."""

    id: str
    parent: str | None
    message: str
    files: Mapping[str, Blob]


@dataclass
class Repo:
    """A model repository. ``gated`` and ``private`` decide who may read it (see ``hub_server``)."""

    repo_id: str
    gated: bool = False
    private: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.commit(DEFAULT_BRANCH, parent=None, files={}, message="initial commit")

    def resolve(self, revision: str) -> Commit | None:
        """The commit a branch name or a full 40-hex commit id points to, or None when there is none."""
        if COMMIT_ID.fullmatch(revision) and revision in self.commits:
            return self.commits[revision]
        commit_id = self.branches.get(revision)
        return None if commit_id is None else self.commits[commit_id]

    def commit(self, branch: str, *, parent: Commit | None, files: Mapping[str, Blob], message: str) -> Commit:
        """Record ``files`` (the complete new tree) as a child of ``parent`` and move ``branch`` onto it."""
        parent_id = parent.id if parent else None
        digest = hashlib.sha1(f"{self.repo_id}\n{parent_id}\n{message}\n".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{files[path].sha256}\n".encode())
        commit = Commit(digest.hexdigest(), parent_id, message, dict(files))
        self.commits[commit.id] = commit
        self.branches[branch] = commit.id
        return commit


@dataclass
class HubState:
    """Everything one server holds. Take ``lock`` for any read-modify-write: request handlers run in threads.

    ``corrupted`` lists the (repo id, commit id, path) whose downloads are served with one byte flipped.
    """

    repos: dict[str, Repo] = field(default_factory=dict)
    corrupted: set[tuple[str, str, str]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
