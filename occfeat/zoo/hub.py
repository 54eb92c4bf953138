"""Hub access: pinned downloads through ``huggingface_hub``, offline semantics, sha256 integrity, bundles.

- One ``hf_hub_download`` per file, at the registry's pinned commit: once cached, a pinned load sends no request.
- Offline (argument, then ``OCCFEAT_OFFLINE``, then ``HF_HUB_OFFLINE``, read here at call time, not at import)
  always means ``local_files_only``: a cache miss fails at once with the ``occfeat download`` command to run.
- Online, one request without retries first asks the Hub for the file: a refused connection, a timeout or an error
  answer fails at once with a typed error (``huggingface_hub`` alone would retry for about 23 s first).
- Integrity: sha256 against the registry (not the server's ETag), hashed on first use and remembered in a stamp
  keyed on size + mtime (best-effort: read-only caches and bundles are hashed on every load instead); a mismatch
  raises and moves the bad blob aside so the next download fetches it again.
- Bundles (``occfeat download IDS --bundle DIR``) are plain folders with a manifest, for air-gapped clusters;
  ``OCCFEAT_WEIGHTS_DIR`` points loads at one. Nothing is read, stamped or moved outside the bundle's folder.

Every failure crosses this module as an ``occfeat.errors`` type, chaining what ``huggingface_hub`` or its HTTP
library raised.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import (  # HubError, WeightsNotCachedError and IntegrityError are also imported from here, their old home
    HubError,
    InputError,
    IntegrityError,
    WeightsNotCachedError,
    WeightsNotPublishedError,
)
from ..io import sha256_file
from .registry import FileSpec

logger = logging.getLogger(__name__)

OFFLINE_ENV = "OCCFEAT_OFFLINE"
WEIGHTS_DIR_ENV = "OCCFEAT_WEIGHTS_DIR"
BUNDLE_MANIFEST = "occfeat-bundle.json"
STAMP_SUFFIX = ".occfeat-sha256"
_TRUE = {"1", "true", "yes", "on"}
_COMMIT = re.compile(r"[0-9a-f]{40}")
_SHA256 = re.compile(r"[0-9a-f]{64}")

__all__ = [
    "BUNDLE_MANIFEST", "OFFLINE_ENV", "WEIGHTS_DIR_ENV", "HubError", "IntegrityError", "WeightsNotCachedError",
    "announced_sha256", "bundle_dir", "commit_of", "download", "fetch_file", "fetch_timm_weights", "is_offline",
    "timm_hub_source", "verify_file", "write_bundle",
]


def is_offline(local_files_only: bool | None = None) -> bool:
    """The explicit argument wins; else ``OCCFEAT_OFFLINE``; else ``HF_HUB_OFFLINE`` (read now, not at import)."""
    if local_files_only is not None:
        return bool(local_files_only)
    for name in (OFFLINE_ENV, "HF_HUB_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return True
    # A process that turned huggingface_hub's own switch on after importing it (a notebook, a test) is offline too;
    # looked up without importing huggingface_hub, which would freeze its environment.
    constants = sys.modules.get("huggingface_hub.constants")
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


# ---------------------------------------------------------------------------------------------------------------------
# Integrity


def verify_file(
    path: str | Path, expected: FileSpec, *, always: bool = False, weight_id: str = "", root: Path | None = None
) -> Path:
    """Check ``path`` against ``expected``; remember a success in a stamp beside the file (size + mtime), so later
    loads skip hashing. The stamp is best-effort: where it cannot be written (a read-only cache or bundle) every
    load hashes again. On a mismatch the file is moved aside (when the storage allows it) and ``IntegrityError``
    raised.

    ``root``: the folder the file belongs to (a bundle). The file is checked, stamped and moved aside where it is in
    that folder, never where a symbolic link points. Without ``root`` (the Hub cache) the real blob is, and the
    snapshot's link to it is removed as well, so that the next download fetches the blob again.
    """
    path = Path(path)
    entry = path if root is not None else Path(os.path.realpath(path))
    stat = path.stat()  # of the bytes, wherever a link points
    stamp = entry.with_name(entry.name + STAMP_SUFFIX)
    key = f"{stat.st_size}:{stat.st_mtime_ns}:{expected.sha256}"
    if not always and _read_stamp(stamp) == key:
        return path
    problem = None
    if stat.st_size != expected.size:
        problem = f"size {stat.st_size} bytes, expected {expected.size} (truncated or partial download?)"
    else:
        actual = sha256_file(path)
        if actual != expected.sha256:
            problem = f"sha256 {actual}, expected {expected.sha256}"
    if problem is None:
        _write_stamp(stamp, key)
        return path
    aside, why_kept = _move_aside(entry)
    if aside is not None and root is None and path != entry and path.is_symlink():
        with contextlib.suppress(OSError):  # the snapshot's link to the blob just moved: the next download refetches
            path.unlink()
    name = weight_id or expected.path
    if aside is None:
        outcome = (f"It could not be moved aside ({why_kept}): delete {entry} yourself, or fix the storage "
                   "(read-only?), then " + ("rebuild the bundle (`occfeat download ID --bundle DIR`)." if root is not None
                                            else "download it again (`occfeat download ID`)."))
    elif root is not None:
        outcome = f"The bundle's bad copy was moved to {aside}; rebuild the bundle (`occfeat download ID --bundle DIR`)."
    else:
        outcome = (f"The bad file was moved to {aside}; run the load again to download it afresh (`occfeat download "
                   "ID`), or check your mirror.")
    raise IntegrityError(f"{name}: {expected.path} has {problem}. {outcome}")


def announced_sha256(path: str | Path, filename: str) -> FileSpec | None:
    """What a Hub cache file should hash to when its blob is named by a sha256: the Hub cache stores LFS files under
    the sha256 the server announced (``blobs/<sha256>``). None for anything else (a small git file is named by its
    git sha1, a bundle or a local file by nothing)."""
    real = Path(os.path.realpath(path))
    if real.parent.name != "blobs" or not _SHA256.fullmatch(real.name):
        return None
    return FileSpec(filename, real.name, real.stat().st_size)


def _read_stamp(stamp: Path) -> str | None:
    try:
        return stamp.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _write_stamp(stamp: Path, key: str) -> None:
    """Remember a verified file; on storage that refuses it (read-only, full, no permission) the file is simply
    hashed again next time."""
    try:
        stamp.write_text(key)
    except OSError as error:
        logger.debug("could not write the verification stamp %s (%s): the file will be hashed on every load", stamp, error)


def _move_aside(entry: Path) -> tuple[Path | None, str]:
    """Rename a bad file to ``NAME.corrupt-TIME`` beside it: (new path, "") or (None, why it stayed)."""
    aside = entry.with_name(f"{entry.name}.corrupt-{int(time.time())}")
    try:
        entry.rename(aside)
    except OSError as error:
        return None, f"{type(error).__name__}: {error}"
    return aside, ""


def _is_within(path: Path, folder: Path) -> bool:
    """Whether ``path`` names something inside ``folder``, lexically (``..`` resolved, links not followed)."""
    inside, base = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(folder))
    return inside != base and os.path.commonpath([inside, base]) == base


# ---------------------------------------------------------------------------------------------------------------------
# Downloads


def bundle_dir() -> Path | None:
    value = os.environ.get(WEIGHTS_DIR_ENV)
    return Path(value).expanduser() if value else None


def fetch_file(
    repo: str,
    filename: str,
    *,
    revision: str | None,
    expected: FileSpec | None = None,
    weight_id: str = "",
    cache_dir: str | Path | None = None,
    local_files_only: bool | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
    verify: str = "once",
    what: str | None = None,
    remedy: str | None = None,
) -> Path:
    """One file of a Hub repository at ``revision``, checked.

    Where from: a bundle (``OCCFEAT_WEIGHTS_DIR``) for a pinned registry file (``expected`` given, ``weight_id``
    naming its folder); else the cache (no request for a cached pinned commit); else the Hub, unless offline. The
    first failure to reach the Hub is final: no retry loop.

    Checks: against ``expected`` (the registry's sha256) on first use (``verify="once"``) or on every load
    (``"always"``). Without ``expected``, ``"always"`` re-hashes a cache blob named by the sha256 the server announced
    (``announced_sha256``), so that a download once served bad bytes is caught, moved aside and fetched again.

    ``what`` names the file in error messages (default: the weight id, else ``hf-hub:REPO@REVISION``); ``remedy``
    replaces the default advice (the ``occfeat download`` command) when the file cannot be had.
    """
    if verify not in ("once", "always", "never"):
        raise InputError(f"verify={verify!r}: expected 'once', 'always' or 'never'.")
    bundle = bundle_dir()
    if bundle is not None and expected is not None and weight_id:
        candidate = bundle / weight_id / filename
        if not _is_within(candidate, bundle):
            raise InputError(f"{weight_id}: file {filename!r} would be read from outside the bundle {bundle}.")
        if candidate.is_file():
            if verify != "never":
                verify_file(candidate, expected, always=verify == "always", weight_id=weight_id, root=bundle)
            return candidate
    name = what or weight_id or f"hf-hub:{repo}@{revision or 'main'}"
    path = _download(repo, filename, revision=revision, cache_dir=cache_dir, offline=is_offline(local_files_only),
                     endpoint=endpoint, token=token, name=name, remedy=remedy)
    if expected is not None and verify != "never":
        verify_file(path, expected, always=verify == "always", weight_id=weight_id)
    elif verify == "always" and (announced := announced_sha256(path, filename)) is not None:
        verify_file(path, announced, always=True, weight_id=name)
    return path


def connection_error_types() -> tuple[tuple[type[BaseException], ...], tuple[type[BaseException], ...]]:
    """(the Hub is unreachable, any other failure of the connection) as the exception classes of the HTTP library
    huggingface_hub uses: ``httpx2`` / ``httpx`` (refused connection, timeout; protocol error, too many redirects, ...)
    or ``requests`` in older releases. Read from the loaded modules: occfeat depends on none of them directly."""
    unreachable: list[type[BaseException]] = []
    failure: list[type[BaseException]] = []
    for module_name in ("httpx2", "httpx"):
        module = sys.modules.get(module_name)
        if module is not None:
            unreachable += [module.ConnectError, module.TimeoutException]
            failure.append(module.HTTPError)
    requests = sys.modules.get("requests")
    if requests is not None:
        unreachable += [requests.ConnectionError, requests.Timeout]
        failure.append(requests.RequestException)
    return tuple(unreachable), tuple(failure)


def _download(
    repo: str,
    filename: str,
    *,
    revision: str | None,
    cache_dir: str | Path | None,
    offline: bool,
    endpoint: str | None,
    token: str | bool | None,
    name: str,
    remedy: str | None,
) -> Path:
    """The cached file, else one download. Online, a HEAD request without retries first: huggingface_hub retries a
    failed metadata request for about 23 s (5 tries, exponential backoff) when the file is not cached, so a dead
    endpoint, a 5xx or a timeout would cost that long before failing."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    unreachable, connection_failed = connection_error_types()
    where = f"{repo}@{revision or 'main'}"
    cache = Path(cache_dir) if cache_dir else Path(constants.HF_HUB_CACHE)
    advice = remedy or (f"On a machine with network run `occfeat download {name}` (add --bundle DIR for an air-gapped "
                        f"cluster, then set {WEIGHTS_DIR_ENV}=DIR).")

    def from_hub(local_only: bool) -> Path:
        return Path(hf_hub_download(repo_id=repo, filename=filename, revision=revision, cache_dir=cache_dir,
                                    local_files_only=local_only, endpoint=endpoint, token=token,
                                    library_name="occfeat", library_version=__version__))

    def not_cached(why: str) -> WeightsNotCachedError:
        return WeightsNotCachedError(f"{name}: {filename} from {where} is not in the cache ({cache}) {why}. {advice}")

    try:
        if offline:
            try:
                return from_hub(True)
            except LocalEntryNotFoundError as error:
                raise not_cached("and the Hub is off (offline mode)") from error
        if revision is not None and _COMMIT.fullmatch(revision):
            with contextlib.suppress(LocalEntryNotFoundError):
                return from_hub(True)  # a pinned commit's file never changes: no request once it is cached
        try:
            url = hf_hub_url(repo, filename, revision=revision, endpoint=endpoint)
            get_hf_file_metadata(url, token=token, timeout=constants.HF_HUB_ETAG_TIMEOUT, endpoint=endpoint,
                                 library_name="occfeat", library_version=__version__)
        except (*unreachable, OfflineModeIsEnabled) as error:
            try:  # the copy of this revision last downloaded, as huggingface_hub itself falls back to
                path = from_hub(True)
            except LocalEntryNotFoundError:
                raise not_cached(f"and the Hub could not be reached ({type(error).__name__}: {error})") from error
            logger.warning("%s: the Hub could not be reached (%s); using the cached copy of %s", name, error, where)
            return path
        return from_hub(False)
    except GatedRepoError as error:
        raise HubError(f"{where} is gated: accept its terms on the Hub, then pass token= (or `hf auth login`).") from error
    except RepositoryNotFoundError as error:
        raise HubError(f"repository {repo!r} was not found at {endpoint or 'the Hub'} (or it is private: pass token=)."
                       ) from error
    except RevisionNotFoundError as error:
        raise HubError(f"revision {revision!r} does not exist in {repo!r}.") from error
    except LocalEntryNotFoundError as error:  # e.g. the Hub stopped answering between the HEAD and the download
        raise not_cached("and the download failed") from error
    except EntryNotFoundError as error:  # after LocalEntryNotFoundError, its subclass in huggingface_hub 2.x
        raise HubError(f"{where} has no file {filename!r}.") from error
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        hint = {401: "the token was refused: pass a valid token= (or `hf auth login`), or token=False for a public "
                     "repository",
                403: "the token may not read this repository: check its permissions"}.get(
            status or 0, "the server failed: try again later, or use a mirror (endpoint=) or a bundle")
        raise HubError(f"{name}: the Hub at {endpoint or constants.ENDPOINT} answered {status} for {filename} from "
                       f"{where} ({first_line_of(error)}); {hint}.") from error
    except connection_failed as error:  # protocol errors, too many redirects, a timeout while downloading, ...
        raise HubError(f"{name}: fetching {filename} from {where} at {endpoint or constants.ENDPOINT} failed "
                       f"({type(error).__name__}: {first_line_of(error)}). Check the endpoint, proxy and network, or "
                       f"use a bundle. {advice}") from error
    except HFValidationError as error:  # not a repository id or revision huggingface_hub accepts
        raise InputError(f"{name}: {repo!r} @ {revision!r} is not a valid Hub repository and revision ({error}).") from error


def first_line_of(error: BaseException) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def commit_of(path: Path) -> str | None:
    """The commit a cached Hub file belongs to (``.../snapshots/<commit>/<file>``), if it is one."""
    parts = Path(path).parts
    if "snapshots" in parts:
        index = parts.index("snapshots")
        if index + 1 < len(parts):
            return parts[index + 1]
    return None


# ---------------------------------------------------------------------------------------------------------------------
# timm's pretrained weights (backbones, the DINOv2 teacher), through the same fast path


def timm_hub_source(model_name: str) -> tuple[str, str | None, str] | None:
    """(repository, revision, safetensors file) timm downloads the pretrained weights of ``model_name`` from (e.g.
    ``("timm/resnet50.a1_in1k", None, "model.safetensors")``), or None when timm names no Hub repository for it."""
    import timm

    try:
        cfg = timm.models.get_pretrained_cfg(model_name)
    except Exception:  # noqa: BLE001 (timm raises various errors for names without pretrained configs)
        return None
    repo = getattr(cfg, "hf_hub_id", None)
    if not repo:
        return None
    repo, _, revision = repo.partition("@")
    filename = getattr(cfg, "hf_hub_filename", None) or "model.safetensors"
    # timm's Hub repositories hold model.safetensors beside any pickle; occfeat reads only the safetensors.
    return repo, revision or None, filename if filename.endswith(".safetensors") else "model.safetensors"


def fetch_timm_weights(
    model_name: str, *, what: str, local_option: str, cache_dir: str | Path | None = None
) -> tuple[Path, dict[str, Any]]:
    """The safetensors file of timm's pretrained weights for ``model_name``, and where it came from (``hf_hub_id``,
    ``hf_hub_filename``, ``commit``), fetched like the zoo's files: the cache without a request, one attempt online,
    the cache only offline. Raises ``WeightsNotCachedError`` / ``HubError`` naming the file and the fixes:
    ``local_option`` (e.g. ``pretrained_backbone=PATH``) or downloading the file where there is network."""
    source = timm_hub_source(model_name)
    if source is None:
        raise HubError(f"{what}: timm names no Hugging Face Hub repository for the pretrained weights of "
                       f"{model_name!r}. Download them yourself and pass {local_option}.")
    repo, revision, filename = source
    remedy = (f"Pass {local_option} to a local copy of {filename}, or download it where there is network "
              f"(`hf download {repo} {filename}`{f' --revision {revision}' if revision else ''}) and copy the Hugging "
              "Face cache here.")
    path = fetch_file(repo, filename, revision=revision, cache_dir=cache_dir, what=what, remedy=remedy)
    return path, {"hf_hub_id": repo + (f"@{revision}" if revision else ""), "hf_hub_filename": filename,
                  "commit": commit_of(path)}


# ---------------------------------------------------------------------------------------------------------------------
# Pre-downloading and bundles


def write_bundle(weight_ids: list[str], out_dir: str | Path, files: dict[str, dict[str, Path]], specs: dict[str, Any]) -> Path:
    """Copy downloaded files into plain folders ``out_dir/<id>/<file>`` (no symlinks) with a manifest of sha256s."""
    import shutil

    out = Path(out_dir)
    manifest: dict[str, Any] = {"occfeat": __version__, "weights": {}}
    for weight_id in weight_ids:
        target = out / weight_id
        target.mkdir(parents=True, exist_ok=True)
        for filename, source in files[weight_id].items():
            destination = target / filename
            if not _is_within(destination, out):  # registry paths are checked at registration; this stays true
                raise InputError(f"{weight_id}: file {filename!r} would be written outside the bundle {out}.")
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(os.path.realpath(source), destination)
        spec = specs[weight_id]
        manifest["weights"][weight_id] = {
            "repo": spec.repo,
            "commit": spec.commit,
            "files": {f.path: {"sha256": f.sha256, "size": f.size} for f in spec.files},
        }
    (out / BUNDLE_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def download(
    names: list[str],
    *,
    bundle: str | Path | None = None,
    cache_dir: str | Path | None = None,
    endpoint: str | None = None,
    token: str | bool | None = None,
) -> dict[str, dict[str, Path]]:
    """Fetch (and verify) the files of registry weights into the cache; with ``bundle``, also copy them into plain
    folders ``bundle/<id>/`` with a manifest, for machines without network (``OCCFEAT_WEIGHTS_DIR=bundle``)."""
    from .registry import get_weights

    specs = {}
    fetched: dict[str, dict[str, Path]] = {}
    for name in names:
        spec = get_weights(name)
        if not spec.published:
            raise WeightsNotPublishedError(
                f"{spec.id} is not published yet (no pinned commit): nothing to download. "
                f"Reproduce it with `{spec.recipe.get('pretraining', 'occfeat pretrain ...')}`."
            )
        specs[spec.id] = spec
        fetched[spec.id] = {
            f.path: fetch_file(spec.repo, f.path, revision=spec.commit, expected=f, weight_id=spec.id,
                               cache_dir=cache_dir, local_files_only=False, endpoint=endpoint, token=token)
            for f in spec.files
        }
    if bundle is not None:
        write_bundle(list(fetched), bundle, fetched, specs)
    return fetched
