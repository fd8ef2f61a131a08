"""The import contracts of pyproject.toml hold, and each of them can break.

The contracts themselves are in ``[tool.importlinter]``; ``lint-imports`` checks them by
hand, these tests in the suite. Each contract is also shown to fail: a copy of the source
tree with one offending import added must break exactly the contract that forbids it.
"""

from __future__ import annotations

import os
import pkgutil
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import eventvault

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(cwd: Path, *contracts: str, src: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``lint-imports`` in ``cwd`` (its pyproject.toml), on the packages under ``src``."""
    env = {**os.environ, "PYTHONPATH": str(src or ROOT / "src")}
    args = [str(LINT_IMPORTS), "--no-cache", "--no-logo"]
    for contract in contracts:
        args += ["--contract", contract]
    return subprocess.run(  # noqa: S603 - our own tool, our own arguments
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def contracts() -> list[dict[str, object]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    found: list[dict[str, object]] = config["tool"]["importlinter"]["contracts"]
    return found


def test_every_import_contract_is_kept() -> None:
    """The source tree keeps every contract in pyproject.toml."""
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"Contracts: {len(contracts())} kept, 0 broken." in run.stdout


def test_the_domain_contract_names_every_other_toolkit_module() -> None:
    """eventvault.domain may import only eventvault.errors: a new toolkit module is forbidden to it too."""
    (domain,) = (c for c in contracts() if c["id"] == "domain-only-errors")
    forbidden = set(domain["forbidden_modules"])  # type: ignore[call-overload]
    siblings = {f"eventvault.{m.name}" for m in pkgutil.iter_modules(eventvault.__path__)}
    assert siblings - {"eventvault.domain", "eventvault.errors"} <= forbidden


# One offending import per contract: (contract id, file under src/, the line added to it).
VIOLATIONS = [
    ("toolkit-knows-no-service", "eventvault/repository.py", "import eventvault_ledger.domain"),
    ("toolkit-layers", "eventvault/store/base.py", "import eventvault.projections"),
    ("service-layers", "eventvault_ledger/domain.py", "import eventvault_ledger.api.services"),
    ("domain-only-errors", "eventvault/domain.py", "import eventvault._ids"),
    ("domain-only-errors", "eventvault/domain.py", "import sqlite3"),
    ("backends-independent", "eventvault/store/memory.py", "import eventvault.store.sqlite"),
    ("backends-below-the-store", "eventvault/store/memory.py", "import eventvault.repository"),
    ("private-modules", "eventvault_ledger/seed.py", "import eventvault.projections._db"),
    ("service-uses-public-names", "eventvault_ledger/seed.py", "import eventvault.store.base"),
]


@pytest.fixture(scope="module")
def pristine_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the two packages and pyproject.toml, kept unchanged."""
    root = tmp_path_factory.mktemp("layers")
    for package in ("eventvault", "eventvault_ledger"):
        shutil.copytree(
            ROOT / "src" / package,
            root / "src" / package,
            ignore=shutil.ignore_patterns("__pycache__", "web"),
        )
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize(
    ("contract", "file", "line"), VIOLATIONS, ids=[f"{c}:{line}" for c, _, line in VIOLATIONS]
)
def test_an_offending_import_breaks_its_contract(
    pristine_copy: Path, tmp_path: Path, contract: str, file: str, line: str
) -> None:
    """Adding one forbidden import breaks the contract that forbids it."""
    root = tmp_path / "tree"
    shutil.copytree(pristine_copy, root)
    kept = lint_imports(root, contract, src=root / "src")
    assert kept.returncode == 0, kept.stdout + kept.stderr  # the copy keeps it before the change
    target = root / "src" / file
    target.write_text(target.read_text(encoding="utf-8") + f"\n{line}  # offending\n", encoding="utf-8")
    broken = lint_imports(root, contract, src=root / "src")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "BROKEN" in broken.stdout
    assert line.rsplit(maxsplit=1)[-1] in broken.stdout  # the report names the offending import
