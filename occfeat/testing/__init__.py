"""Test helpers shipped with occfeat, for our tests and for users testing their own pipelines.

- :class:`HubServer`: a Hugging Face Hub look-alike on 127.0.0.1 that the real ``huggingface_hub`` client downloads
  from and uploads to (``hub_server``; endpoints in ``hub_routes``).
- ``occfeat.testing.pytest_plugin``: the ``hub_server`` fixture. Enable it with
  ``pytest_plugins = ["occfeat.testing.pytest_plugin"]`` in a top-level ``conftest.py``.

Importing this package imports neither torch nor ``huggingface_hub``.
"""

from __future__ import annotations

from occfeat.testing.hub_server import HubServer

__all__ = ["HubServer"]
