"""Where a run reports on rank 0: ``metrics.jsonl``, TensorBoard scalars and a tqdm progress bar."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from ..progress import progress_bar

from ..errors import ConfigError
from ..io import atomic_write

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


class RunLog:
    """One JSON object per line in ``out_dir/metrics.jsonl`` (``{"step": ..., "loss": ..., ...}``), the same values
    as TensorBoard scalars under ``out_dir/tensorboard``, and a progress bar counted in steps.

    A resumed run starts at ``start_step``: the lines and events a killed run wrote after its last checkpoint are
    dropped, so that the log reads as one uninterrupted run. On processes other than rank 0 (``enabled=False``)
    every method does nothing.
    """

    def __init__(
        self,
        out_dir: Path,
        *,
        total_steps: int,
        start_step: int,
        enabled: bool,
        progress: bool,
        tensorboard: bool | None,
    ):
        self.path = out_dir / METRICS_FILE
        self._enabled = enabled
        installed = importlib.util.find_spec("tensorboard") is not None
        if tensorboard and not installed:  # checked on every rank, so that all of them stop, not only rank 0
            raise ConfigError(
                "TrainConfig.tensorboard=True: the tensorboard package is not installed. Install it "
                "(`pip install tensorboard`), or set tensorboard=None (only when installed) or False."
            )
        if not enabled:
            return
        if self.path.exists():
            kept = "".join(f"{line}\n" for line in self.path.read_text().splitlines() if _step(line) <= start_step)
            atomic_write(self.path, lambda tmp: tmp.write_text(kept))
        self._file = self.path.open("a")
        self._writer = None
        if installed and tensorboard is not False:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step: drop the events a killed run wrote after the checkpoint this run resumes from
            purge_step = start_step + 1 if start_step else None
            self._writer = SummaryWriter(str(out_dir / TENSORBOARD_DIR), purge_step=purge_step)
        self._bar = progress_bar(total=total_steps, initial=start_step, desc="train", unit="step", disable=not progress)

    def write(self, step: int, values: dict[str, Any]) -> None:
        """One line of ``metrics.jsonl``; numeric values also go to TensorBoard."""
        if not self._enabled:
            return
        self._file.write(json.dumps({"step": step, **values}) + "\n")
        self._file.flush()
        if self._writer is not None:
            for name, value in values.items():
                if isinstance(value, (int, float)) and name != "time":
                    self._writer.add_scalar(name, value, step)

    def advance(self, postfix: dict[str, float] | None = None) -> None:
        """One more step on the progress bar, showing ``postfix`` when given."""
        if not self._enabled:
            return
        self._bar.update(1)
        if postfix:
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in postfix.items()}, refresh=False)

    def close(self) -> None:
        if not self._enabled:
            return
        self._bar.close()
        self._file.close()
        if self._writer is not None:
            self._writer.close()


def _step(line: str) -> float:
    """The step of a metrics.jsonl line; infinite for a line cut short by a killed process, so that it is dropped."""
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return float("inf")
