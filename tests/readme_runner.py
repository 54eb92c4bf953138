"""Run a markdown file's shell and Python blocks in order, as a reader would paste them (used by test_readme.py).

A block runs unless the line just above its fence (blank lines allowed between) is a directive
``<!-- readme-test: skip: REASON -->``: the blocks that need what a test machine cannot have (real nuScenes, GPUs, a
released checkpoint, a package index). Shell blocks run in ``bash -euo pipefail``; Python blocks run one after another
in one namespace, like cells of a notebook. Everything runs in one working folder, so a block may use what an earlier
block wrote, and a block that uses what only a *later* block writes fails, as it would for the reader.

``REWRITES`` shorten the schedules and shrink the generated world (nothing else) so the whole file runs in minutes on
a CPU: each is a plain-text substitution, and the test checks each one still applies, so the README cannot drift past
them.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")
DIRECTIVE = re.compile(r"^\s*<!--\s*readme-test:\s*(?P<body>.*?)\s*-->\s*$")
SKIP = re.compile(r"^skip:\s*(?P<reason>\S.*)$")
RUNNABLE = {"bash": "shell", "sh": "shell", "shell": "shell", "python": "python"}

# (language, text, replacement): a smaller world and reduced step counts; nothing else in a block is changed.
REWRITES = (
    ("shell", "--scenes 4 --samples-per-scene 10", "--scenes 4 --samples-per-scene 3 --image-size 144x256"),
    ("shell", "--recipe cpu-tiny", "--recipe cpu-tiny --steps 2"),
    ("python", 'recipe="cpu-tiny"', 'recipe="cpu-tiny", max_steps=2'),
)


class ReadmeError(AssertionError):
    """A block failed, or the file's directives are malformed; the message names the line."""


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence
    lang: str  # "shell" | "python" | another fence language (never run)
    code: str
    skip_reason: str | None = None


def read_blocks(text: str, source: str = "README.md") -> list[Block]:
    """Every fenced block in order, with its skip directive; a malformed or dangling directive is a ``ReadmeError``."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending: tuple[int, str] | None = None  # (line, reason) of a skip directive waiting for its block
    i = 0
    while i < len(lines):
        directive = DIRECTIVE.match(lines[i])
        fence = FENCE.match(lines[i])
        if directive:
            skip = SKIP.match(directive.group("body"))
            if not skip:
                raise ReadmeError(f"{source}:{i + 1}: readme-test directive {directive.group('body')!r}; expected "
                                  "'skip: REASON' (say why the block cannot run on a test machine).")
            pending = (i + 1, skip.group("reason"))
        elif fence:
            start, indent, lang = i, len(fence.group("indent")), fence.group("lang")
            body = []
            i += 1
            while i < len(lines) and not _closes(lines[i]):
                body.append(lines[i][indent:] if not lines[i][:indent].strip() else lines[i])  # an indented block
                i += 1
            if i == len(lines):
                raise ReadmeError(f"{source}:{start + 1}: this code fence is never closed.")
            blocks.append(Block(line=start + 1, lang=RUNNABLE.get(lang, lang), code="\n".join(body) + "\n",
                                skip_reason=pending[1] if pending else None))
            pending = None
        elif pending and lines[i].strip():
            raise ReadmeError(f"{source}:{pending[0]}: a readme-test directive must sit just above a code fence.")
        i += 1
    if pending:
        raise ReadmeError(f"{source}:{pending[0]}: a readme-test directive with no block after it.")
    return blocks


def _closes(line: str) -> bool:
    fence = FENCE.match(line)
    return bool(fence) and not fence.group("lang")


def rewrite(blocks: list[Block]) -> tuple[list[Block], dict[tuple[str, str], int]]:
    """The blocks with ``REWRITES`` applied to the runnable ones, and how often each rewrite applied."""
    used = {(lang, old): 0 for lang, old, _ in REWRITES}
    out = []
    for block in blocks:
        code = block.code
        if block.skip_reason is None:
            for lang, old, new in REWRITES:
                if block.lang == lang:
                    used[(lang, old)] += code.count(old)
                    code = code.replace(old, new)
        out.append(Block(block.line, block.lang, code, block.skip_reason))
    return out, used


def run_blocks(blocks: list[Block], workdir: Path, env: dict[str, str], source: str = "README.md",
               timeout: float = 900) -> list[Block]:
    """Run the runnable blocks in order in ``workdir``; returns those run. The first failure is a ``ReadmeError``
    naming the block's line, with the end of its output."""
    namespace: dict[str, object] = {"__name__": "__readme__"}
    ran = []
    path = [str(Path(sys.executable).parent), env.get("PATH", os.environ.get("PATH", ""))]
    env = {**env, "PATH": os.pathsep.join(path)}  # `occfeat` and `python` are this environment's
    for block in blocks:
        if block.skip_reason is not None or block.lang not in ("shell", "python"):
            continue
        where = f"{source}:{block.line} ({block.lang} block)"
        if block.lang == "shell":
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=workdir, env=env,
                                    capture_output=True, text=True, timeout=timeout)
            if result.returncode:
                tail = (result.stdout + result.stderr)[-3000:]
                raise ReadmeError(f"{where} exited {result.returncode}:\n{block.code}\n--- output (end) ---\n{tail}")
        else:
            previous = Path.cwd()
            saved_env = dict(os.environ)
            os.chdir(workdir)
            os.environ.update(env)
            try:
                exec(compile(block.code, where, "exec"), namespace)  # noqa: S102 (the README's own code)
            except Exception as error:  # noqa: BLE001 (any failure of the block is the README's)
                raise ReadmeError(f"{where} raised {type(error).__name__}: {error}\n{block.code}") from error
            finally:
                os.chdir(previous)
                os.environ.clear()
                os.environ.update(saved_env)
        ran.append(block)
    return ran
