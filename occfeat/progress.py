"""Progress bars that read well in a terminal and in a log file.

In a terminal, tqdm draws nested bars on lines of their own (training, and the evaluation inside it). Written to a
file (``occfeat pretrain ... > log``, a SLURM output, a CI log) every redraw of a nested bar adds cursor-up escapes
(``ESC[A``) and a line, hundreds per run. So where the output is not a terminal, only the outermost bar is drawn, and
it redraws at most every ``FILE_INTERVAL`` seconds; the summary line each job prints at its end says the rest.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

FILE_INTERVAL = 30.0  # seconds between redraws when the output is a file


def _to_terminal(file: Any) -> bool:
    isatty = getattr(file if file is not None else sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def progress_bar(iterable: Any = None, *, disable: bool = False, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)``; to a file, a bar opened inside another is not drawn and redraws are sparse."""
    if not _to_terminal(kwargs.get("file")):
        disable = disable or any(not bar.disable for bar in list(tqdm._instances))  # another bar is drawn: nested
        kwargs.setdefault("mininterval", FILE_INTERVAL)
    return tqdm(iterable, disable=disable, **kwargs)
