"""The code examples in README.md and docs/ run as written."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def _examples() -> list[tuple[Path, str]]:
    out = []
    for doc in DOCS:
        blocks = BLOCK.findall(doc.read_text(encoding="utf-8"))
        if blocks:
            out.append((doc, "\n".join(blocks)))
    return out


@pytest.mark.parametrize(("doc", "code"), _examples(), ids=lambda v: v.name if isinstance(v, Path) else "")
def test_examples_run(doc: Path, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every python block of a document runs, in order, in one module of its own."""
    # A real module, so dataclasses and the event registry see a proper home.
    # Documents share the default registry: each uses event names of its own.
    module = types.ModuleType(f"doc_{doc.stem}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(doc), "exec"), module.__dict__)  # noqa: S102


def test_every_document_with_examples_is_found() -> None:
    """The README's example is among those run (guards the block pattern)."""
    assert any(doc.name == "README.md" for doc, _ in _examples())
