"""What the zoo tests share: a saved simplebev-tiny and a registry entry that pins its files at a Hub commit."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import occfeat
from occfeat.zoo.hub import sha256_file

REPO = Path(__file__).resolve().parents[1]
FILES = ("config.json", "model.safetensors")  # what save_pretrained writes and a registry entry pins


def save_tiny(folder: Path, weight_id: str) -> occfeat.BEVModel:
    """A seeded simplebev-tiny, saved to ``folder`` under ``weight_id``; returns the model (in eval mode)."""
    torch.manual_seed(0)
    model = occfeat.create_model("simplebev-tiny").eval()
    occfeat.save_pretrained(model, folder, weight_id=weight_id)
    return model


def registry_entry(folder: Path, repo: str | None, commit: str | None, **changes) -> dict:
    """A registry entry for the simplebev-tiny saved in ``folder``, pinned at ``commit`` of ``repo``: the shipped
    BEVFormer entry's fields, with the tiny network's architecture, input, files and sha256s."""
    entry = json.loads((REPO / "occfeat" / "zoo" / "weights.json").read_text())["weights"]["bevformer-enb0.occfeat-nuscenes"]
    return {
        **entry, "architecture": "simplebev-tiny", "aliases": [],
        "input": json.loads((folder / "config.json").read_text())["input"],  # the tiny network's, not enb0's
        "hub": {"repo": repo, "commit": commit},
        "files": {name: {"sha256": sha256_file(folder / name), "size": (folder / name).stat().st_size} for name in FILES},
        **changes,
    }
