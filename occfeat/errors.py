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
