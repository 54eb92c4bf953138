"""Typed errors. Every message names the input, what was expected, and how to fix it.

Each class also derives from the builtin a caller would naturally catch (``ValueError``, ``KeyError``), so
``except ValueError`` keeps working for code that does not know about occfeat.
"""

from __future__ import annotations


class OccfeatError(Exception):
    """Base class of every error raised on purpose by occfeat."""


class InputError(OccfeatError, ValueError):
    """A tensor handed to a model or a function has the wrong shape, rank, size or values."""


class ConfigError(OccfeatError, ValueError):
    """A configuration (dataclass, JSON file, override) is invalid."""


class UnknownNameError(OccfeatError, KeyError):
    """A name (architecture, weight id, ...) is not registered. The message suggests the closest known names."""

    def __str__(self) -> str:  # KeyError would wrap the message in quotes
        return str(self.args[0]) if self.args else ""


class IntegrityError(OccfeatError, OSError):
    """A file's bytes do not match the sha256 (or size) it was registered with."""


class MissingDependencyError(OccfeatError, ImportError):
    """An optional package that a feature needs is not installed. The message gives the install command."""


class HubError(OccfeatError, OSError):
    """The Hub could not give a file: unknown repository, file or revision, gated repository, an error answer (5xx,
    401), a broken connection, a timeout, too many redirects."""


class WeightsNotCachedError(HubError):
    """The weights are not in the cache or a bundle, and the Hub is off (offline mode) or could not be reached."""


class WeightsNotPublishedError(OccfeatError, LookupError):
    """The registry knows these weights but they are not on the Hub yet."""


class LoadError(OccfeatError, RuntimeError):
    """The weights do not fit the network in a way nobody declared (missing, unexpected or mis-shaped keys, tensors
    of an unusable dtype or with non-finite values), or the weights file cannot be read as safetensors."""


class UnsafeWeightsError(OccfeatError, ValueError):
    """A pickle-based checkpoint was offered: occfeat never unpickles weights."""


class TeacherWeightsError(OccfeatError):
    """The teacher's pretrained weights could not be obtained."""


class RunMismatchError(ConfigError):
    """A run folder holds another run than the one asked for: resuming it would relabel its weights. The message
    names each changed field, a new ``--out`` and ``--overwrite``."""


class WorkerError(OccfeatError, RuntimeError):
    """A worker process of a comparison (``occfeat demo``, ``bench/lowdata.py --workers``) stopped without a result:
    killed (out of memory), or started the comparison again itself (a script without ``if __name__ == "__main__":``)."""
