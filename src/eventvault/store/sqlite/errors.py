"""SQLite's errors as the store's: no ``sqlite3`` exception leaves the package."""

from __future__ import annotations

import sqlite3
from typing import Final

from eventvault.errors import StorageFull, StoreError, StoreUnavailable

SQLITE_BUSY: Final = 5
SQLITE_LOCKED: Final = 6
SQLITE_FULL: Final = 13
SQLITE_CANTOPEN: Final = 14


def primary_code(exc: sqlite3.Error) -> int | None:
    """SQLite's primary result code of ``exc`` (``SQLITE_BUSY``, ...), None if it has none."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether another connection holds what ``exc``'s statement needed (busy or locked)."""
    return primary_code(exc) in (SQLITE_BUSY, SQLITE_LOCKED)


def map_error(exc: sqlite3.Error, path: str, busy_timeout: float) -> StoreError:
    """``exc`` as StoreUnavailable (retry later), StorageFull (retry once space is freed) or StoreError."""
    primary = primary_code(exc)
    name = getattr(exc, "sqlite_errorname", None)
    message = f"{exc} [{name}]" if name else str(exc)
    err: StoreError
    if primary in (SQLITE_BUSY, SQLITE_LOCKED) or "is locked" in str(exc):
        err = StoreUnavailable(
            f"SQLite database {path} is busy ({message}): another connection held it "
            f"longer than busy_timeout={busy_timeout:g}s; retry later"
        )
    elif primary == SQLITE_CANTOPEN:
        err = StoreUnavailable(f"cannot open SQLite database file {path}: {message}")
    elif primary == SQLITE_FULL:
        # The transaction was rolled back whole: nothing of it is in the file, and
        # the same append succeeds once space is freed.
        err = StorageFull(f"the disk of SQLite database {path} is full ({message}); nothing was written")
    else:
        err = StoreError(f"SQLite failed on {path}: {message}")
    err.__cause__ = exc
    return err
