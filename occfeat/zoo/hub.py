"""Hub access: pinned downloads through ``huggingface_hub``, offline semantics, sha256 integrity, bundles.

- One ``hf_hub_download`` per file, at the registry's pinned commit: once cached, a pinned load sends no request.
- Offline (argument, then ``OCCFEAT_OFFLINE``, then ``HF_HUB_OFFLINE``, read here at call time, not at import)
  always means ``local_files_only``: a cache miss fails at once with the ``occfeat download`` command to run.
- Integrity: sha256 against the registry (not the server's ETag), hashed on first use and remembered in a stamp
  keyed on size + mtime; a mismatch raises and moves the bad blob aside so the next download fetches it again.
- Bundles (``occfeat download IDS --bundle DIR``) are plain folders with a manifest, for air-gapped clusters;
  ``OCCFEAT_WEIGHTS_DIR`` points loads at one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import IntegrityError, OccfeatError
from ..io import sha256_file
from .registry import FileSpec

OFFLINE_ENV = "OCCFEAT_OFFLINE"
WEIGHTS_DIR_ENV = "OCCFEAT_WEIGHTS_DIR"
BUNDLE_MANIFEST = "occfeat-bundle.json"
_TRUE = {"1", "true", "yes", "on"}


class HubError(OccfeatError, OSError):
    """The Hub could not give the weights: unknown repository, file or revision, gated repository, cache miss."""


class WeightsNotCachedError(HubError):
    """Offline, and the weights are not in the cache or a bundle."""


def is_offline(local_files_only: bool | None = None) -> bool:
    """The explicit argument wins; else ``OCCFEAT_OFFLINE``; else ``HF_HUB_OFFLINE`` (read now, not at import)."""
    if local_files_only is not None:
        return bool(local_files_only)
    for name in (OFFLINE_ENV, "HF_HUB_OFFLINE"):
        if os.environ.get(name, "").strip().lower() in _TRUE:
            return True
    return False


def verify_file(path: Path, expected: FileSpec, *, always: bool = False, weight_id: str = "") -> Path:
    """Check ``path`` against ``expected``; remember a success in a stamp beside the real file (size + mtime), so
    later loads skip hashing. On a mismatch the file is moved aside and ``IntegrityError`` raised."""
    real = Path(os.path.realpath(path))
    stat = real.stat()
    stamp = real.with_name(real.name + ".occfeat-sha256")
    key = f"{stat.st_size}:{stat.st_mtime_ns}:{expected.sha256}"
    if not always and stamp.is_file() and stamp.read_text() == key:
        return path
    problem = None
    if stat.st_size != expected.size:
        problem = f"size {stat.st_size} bytes, expected {expected.size} (truncated or partial download?)"
    else:
        actual = sha256_file(real)
        if actual != expected.sha256:
            problem = f"sha256 {actual}, expected {expected.sha256}"
    if problem:
        aside = real.with_name(f"{real.name}.corrupt-{int(time.time())}")
        real.rename(aside)
        if Path(path) != real and Path(path).is_symlink():
            Path(path).unlink()  # the cache's snapshot link, so that the next download fetches the blob again
        raise IntegrityError(
            f"{weight_id or expected.path}: {expected.path} has {problem}. The bad file was moved to {aside}; "
            "run the load again to download it afresh (`occfeat download ID`), or check your mirror."
        )
    stamp.write_text(key)
    return path


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
) -> Path:
    """One file of a Hub repository at ``revision``: from a bundle (``OCCFEAT_WEIGHTS_DIR``), else the cache, else
    the Hub (unless offline), checked against ``expected`` when the registry pins it."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    bundle = bundle_dir()
    if bundle is not None and weight_id and (bundle / weight_id / filename).is_file():
        path = bundle / weight_id / filename
    else:
        offline = is_offline(local_files_only)
        where = f"{repo}@{revision or 'main'}"
        try:
            path = Path(
                hf_hub_download(
                    repo_id=repo,
                    filename=filename,
                    revision=revision,
                    cache_dir=cache_dir,
                    local_files_only=offline,
                    endpoint=endpoint,
                    token=token,
                    library_name="occfeat",
                    library_version=__version__,
                )
            )
        except GatedRepoError as exc:
            raise HubError(f"{where} is gated: accept its terms on the Hub, then pass token= (or `hf auth login`).") from exc
        except RepositoryNotFoundError as exc:
            raise HubError(
                f"repository {repo!r} was not found at {endpoint or 'the Hub'} (or it is private: pass token=)."
            ) from exc
        except RevisionNotFoundError as exc:
            raise HubError(f"revision {revision!r} does not exist in {repo!r}.") from exc
        except LocalEntryNotFoundError as exc:
            from huggingface_hub import constants

            cache = cache_dir or constants.HF_HUB_CACHE
            name = weight_id or f"hf-hub:{repo}@{revision or 'main'}"
            raise WeightsNotCachedError(
                f"{name}: {filename} from {where} is not in the cache ({cache})"
                + (" and the Hub is off (offline mode)" if offline else " and the Hub could not be reached")
                + f". On a machine with network run `occfeat download {name}` (add --bundle DIR for an air-gapped "
                f"cluster, then set {WEIGHTS_DIR_ENV}=DIR)."
            ) from exc
        except EntryNotFoundError as exc:  # after LocalEntryNotFoundError, its subclass in huggingface_hub 2.x
            raise HubError(f"{where} has no file {filename!r}.") from exc
    if expected is not None and verify != "never":
        verify_file(path, expected, always=verify == "always", weight_id=weight_id)
    return path


def commit_of(path: Path) -> str | None:
    """The commit a cached Hub file belongs to (``.../snapshots/<commit>/<file>``), if it is one."""
    parts = Path(path).parts
    if "snapshots" in parts:
        index = parts.index("snapshots")
        if index + 1 < len(parts):
            return parts[index + 1]
    return None


def write_bundle(weight_ids: list[str], out_dir: str | Path, files: dict[str, dict[str, Path]], specs: dict[str, Any]) -> Path:
    """Copy downloaded files into plain folders ``out_dir/<id>/<file>`` (no symlinks) with a manifest of sha256s."""
    import shutil

    out = Path(out_dir)
    manifest: dict[str, Any] = {"occfeat": __version__, "weights": {}}
    for weight_id in weight_ids:
        target = out / weight_id
        target.mkdir(parents=True, exist_ok=True)
        for filename, source in files[weight_id].items():
            shutil.copyfile(os.path.realpath(source), target / filename)
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
    from .loading import WeightsNotPublishedError
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
