"""The README runs top to bottom: its shell and Python blocks, in order, on the small world its own blocks generate,
with reduced step counts (``tests/readme_runner.py``). A block that cannot run on a test machine says why in a
``<!-- readme-test: skip: REASON -->`` line above its fence. The runner's own tests show that a broken block fails
and names its line."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from .readme_runner import REWRITES, ReadmeError, read_blocks, rewrite, run_blocks

README = Path(__file__).resolve().parents[1] / "README.md"


def _env(tmp_path: Path) -> dict[str, str]:
    # Offline, a private cache: the README's commands must work without the network.
    return {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "OCCFEAT_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1", "OCCFEAT_TEACHER_CACHE": str(tmp_path / "teacher-cache")}


def test_readme_directives_are_well_formed_and_every_rewrite_applies():
    blocks = read_blocks(README.read_text())
    runnable = [b for b in blocks if b.skip_reason is None and b.lang in ("shell", "python")]
    skipped = [b for b in blocks if b.skip_reason is not None]
    assert len(runnable) >= 8, [b.line for b in runnable]  # the README is mostly runnable, not mostly skipped
    assert all(len(b.skip_reason) > 15 for b in skipped), [(b.line, b.skip_reason) for b in skipped]
    _, used = rewrite(blocks)
    assert all(used.values()), f"a rewrite no longer applies (update REWRITES with the README): {used}"


@pytest.mark.slow
def test_readme_runs_top_to_bottom(tmp_path, one_thread):
    blocks, _ = rewrite(read_blocks(README.read_text()))
    work = tmp_path / "reader"
    work.mkdir()
    ran = run_blocks(blocks, work, _env(tmp_path))
    assert {b.lang for b in ran} == {"shell", "python"}
    # What the blocks say they write is there: the world, the runs, the exports.
    for written in ("data/world", "runs/tiny/run.json", "exports/tiny/model.safetensors", "runs/pt-tiny/run.json",
                    "weights/pt-tiny/config.json", "runs/ft-tiny-py/run.json"):
        assert (work / written).exists(), written


# The runner itself, on small documents: it must fail on a broken block and say where.

DOC = textwrap.dedent("""\
    # A document

    ```bash
    echo first > first.txt
    ```

    <!-- readme-test: skip: needs a GPU cluster that no test machine has -->
    ```bash
    exit 3
    ```

    ```python
    text = open("first.txt").read()
    ```

    - a list item with an indented block:

      ```python
      assert text == "first\\n", text
      ```
    """)


def test_the_runner_runs_blocks_in_order_in_one_folder_and_namespace(tmp_path):
    ran = run_blocks(read_blocks(DOC), tmp_path, _env(tmp_path))
    assert [b.line for b in ran] == [3, 12, 18]


@pytest.mark.parametrize("broken, line, message", [
    ("echo first > first.txt", 3, "exited 127"),  # a renamed command
    ('text = open("first.txt").read()', 12, "NameError"),  # a renamed name
    ('assert text == "first\\n", text', 18, "AssertionError"),  # a changed result
])
def test_a_broken_block_fails_and_names_its_line(tmp_path, broken, line, message):
    replacement = {"echo first > first.txt": "ecoh first > first.txt",
                   'text = open("first.txt").read()': 'text = opn("first.txt").read()',
                   'assert text == "first\\n", text': 'assert text == "second\\n", text'}[broken]
    with pytest.raises(ReadmeError, match=rf"README.md:{line} .*{message}") as raised:
        run_blocks(read_blocks(DOC.replace(broken, replacement)), tmp_path, _env(tmp_path))
    assert replacement in str(raised.value)  # the failing block is shown


def test_a_block_that_needs_a_later_block_fails(tmp_path):
    later_first = DOC.replace('text = open("first.txt").read()', 'text = open("second.txt").read()')
    with pytest.raises(ReadmeError, match="README.md:12 .*FileNotFoundError"):
        run_blocks(read_blocks(later_first), tmp_path, _env(tmp_path))


@pytest.mark.parametrize("directive, message", [
    ("<!-- readme-test: skipp: typo -->", "expected 'skip: REASON'"),
    ("<!-- readme-test: skip -->", "expected 'skip: REASON'"),
])
def test_a_malformed_directive_is_refused(directive, message):
    with pytest.raises(ReadmeError, match=message):
        read_blocks(DOC.replace("<!-- readme-test: skip: needs a GPU cluster that no test machine has -->", directive))


def test_a_directive_away_from_a_fence_and_an_unclosed_fence_are_refused():
    with pytest.raises(ReadmeError, match="just above a code fence"):
        read_blocks("<!-- readme-test: skip: needs real nuScenes data -->\nsome prose\n```bash\nexit 1\n```\n")
    with pytest.raises(ReadmeError, match="README.md:1: this code fence is never closed"):
        read_blocks("```bash\necho unclosed\n")


def test_rewrites_change_only_runnable_blocks_of_their_language():
    blocks = read_blocks("```bash\nocc --recipe cpu-tiny\n```\n<!-- readme-test: skip: shown for the real data set -->"
                         "\n```bash\nocc --recipe cpu-tiny\n```\n```python\nf(recipe=\"cpu-tiny\")\n```\n")
    out, used = rewrite(blocks)
    assert [b.code for b in out] == ["occ --recipe cpu-tiny --steps 2\n", "occ --recipe cpu-tiny\n",
                                     'f(recipe="cpu-tiny", max_steps=2)\n']
    assert set(used) == {(lang, old) for lang, old, _ in REWRITES}
    assert used[("shell", "--recipe cpu-tiny")] == 1 and used[("python", 'recipe="cpu-tiny"')] == 1
