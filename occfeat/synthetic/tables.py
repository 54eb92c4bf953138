"""The nuScenes tables of a synthetic world: deterministic tokens, the fixed taxonomy records, and the writer of
``<dataroot>/<version>/*.json``.

Tokens are 32 hex digits, like nuScenes', taken from a SHA-256 of a record's identity: the taxonomy and sensor
tokens depend on names only (the same in every synthetic world), every other token also on the world's seed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalog import NUSCENES_ATTRIBUTES, NUSCENES_CATEGORIES, NUSCENES_VISIBILITY

TABLE_NAMES = ("category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
               "scene", "sample", "sample_data", "sample_annotation", "map")

Record = dict[str, Any]


def token(*parts: object) -> str:
    """A nuScenes-like token (32 hex digits) for a record identified by ``parts``."""
    return hashlib.sha256("/".join(str(p) for p in parts).encode()).hexdigest()[:32]


def category_token(name: str) -> str:
    return token("category", name)


def attribute_token(name: str) -> str:
    return token("attribute", name)


def sensor_token(channel: str) -> str:
    return token("sensor", channel)


@dataclass
class Tables:
    """All 13 tables as lists of records, filled scene by scene."""

    rows: dict[str, list[Record]] = field(default_factory=lambda: {name: [] for name in TABLE_NAMES})

    @classmethod
    def with_taxonomy(cls, channels: list[tuple[str, str]]) -> Tables:
        """Tables holding the nuScenes categories, attributes, visibility levels and the sensors (channel, modality)."""
        tables = cls()
        tables.add("category", *({"token": category_token(n), "name": n, "description": d}
                                 for n, d in NUSCENES_CATEGORIES))
        tables.add("attribute", *({"token": attribute_token(n), "name": n, "description": d}
                                  for n, d in NUSCENES_ATTRIBUTES))
        tables.add("visibility", *({"token": t, "level": level, "description": f"visibility of whole object is "
                                    f"between {level[1:].replace('-', ' and ')} %"}
                                   for t, level, _ in NUSCENES_VISIBILITY))
        tables.add("sensor", *({"token": sensor_token(c), "channel": c, "modality": m} for c, m in channels))
        return tables

    def add(self, table: str, *records: Record) -> None:
        self.rows[table].extend(records)

    def count(self, table: str) -> int:
        return len(self.rows[table])

    def write(self, directory: Path) -> None:
        """One ``<table>.json`` per table in ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, records in self.rows.items():
            with open(directory / f"{name}.json", "w") as f:
                json.dump(records, f, indent=0)


def link(records: list[Record]) -> None:
    """Chain records in order through their ``prev`` / ``next`` tokens ('' at the ends)."""
    for i, record in enumerate(records):
        record["prev"] = records[i - 1]["token"] if i > 0 else ""
        record["next"] = records[i + 1]["token"] if i + 1 < len(records) else ""
