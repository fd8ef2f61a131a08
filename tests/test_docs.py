"""The code examples in README.md and docs/ run as written, and again: a reader runs them twice."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from eventvault.testing.postgres import find_bindir

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _script(text: str) -> str:
    """The document's python blocks as one script, each line where it is in the document.

    Every other line becomes blank, so a traceback's line numbers are the document's.
    """
    lines = ["" for _ in text.splitlines()]
    for block in BLOCK.finditer(text):
        first = text.count("\n", 0, block.start(1))
        for n, line in enumerate(block[1].splitlines()):
            lines[first + n] = line
    return "\n".join(lines) + "\n"


def _examples() -> list[tuple[Path, str]]:
    out = []
    for doc in DOCS:
        text = doc.read_text(encoding="utf-8")
        if BLOCK.search(text):
            out.append((doc, _script(text)))
    return out


@pytest.mark.parametrize(("doc", "code"), _examples(), ids=lambda v: v.name if isinstance(v, Path) else "")
def test_examples_run_twice_in_a_row(doc: Path, code: str, tmp_path: Path) -> None:
    """A document's python blocks run in order as one script, and pass again when run once more."""
    if "PostgresCluster" in code and find_bindir() is None:
        message = f"{doc.name}'s examples need the PostgreSQL server binaries (apt-get install postgresql)"
        if os.environ.get("EVENTVAULT_REQUIRE_POSTGRES") == "1":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    script = tmp_path / f"{doc.stem}.py"  # named after the document: tracebacks point at its lines
    script.write_text(code, encoding="utf-8")
    work, temp = tmp_path / "work", tmp_path / "temp"
    work.mkdir()
    temp.mkdir()
    # Files an example makes go to its folder or to the system's temporary one: both are this test's.
    env = {**os.environ, "TMPDIR": str(temp), "PYTHONDONTWRITEBYTECODE": "1"}
    for run in ("first", "second"):
        done = subprocess.run(  # noqa: S603 - our interpreter, the documents' own code
            [sys.executable, str(script)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, f"the {run} run of {doc.name}'s examples failed:\n{done.stderr[-6000:]}"


def test_every_document_with_examples_is_found() -> None:
    """The README's example is among those run (guards the block pattern)."""
    assert any(doc.name == "README.md" for doc, _ in _examples())


def test_scripts_keep_the_documents_line_numbers() -> None:
    """Line n of an example script is line n of its document (blank outside the python blocks)."""
    text = "# Title\n\n```python\nx = 1\n```\n\ntext\n\n```python\ny = 2\nz = 3\n```\n"
    lines = _script(text).splitlines()
    assert lines[3] == "x = 1"
    assert lines[9:11] == ["y = 2", "z = 3"]
    assert [n for n, line in enumerate(lines) if line] == [3, 9, 10]
