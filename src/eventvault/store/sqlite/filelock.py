"""One write turn per SQLite file in this process, for every connection here that writes to it.

SQLite lets one connection at a time write to a file. A connection that finds
the file locked waits in SQLite's busy handler, which sleeps and tries again
(1, 2, 5, 10 ms and on, up to 100 ms between tries), so a writer may sleep
several milliseconds after the lock it waited for was released. Between the
store's writer and the projections' connections of one process that turned
the lock into dead time: under a steady load of deposits the store's writer
slept 1.2 s of every 10 s, the projection workers half of theirs, and every
request waited with them (docs/benchmarks.md, decision 0037).

The connections of this process that write to a file (the store's writer, the
read models) take the file's :func:`write_turn` before ``BEGIN IMMEDIATE`` and
give it back after ``COMMIT`` or ``ROLLBACK``: a waiter here gets the file the
moment its holder is done. Writers in other processes still meet SQLite's own
lock and its busy handler.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from typing import Final

__all__ = ["LOCKED", "take", "write_turn"]

_turns: dict[str, threading.Lock] = {}
_guard: Final = threading.Lock()

LOCKED: Final = "database is locked by another writer of this process"
"""The message of the ``sqlite3.OperationalError`` raised for a turn not given in time.

It maps, like SQLite's own "database is locked", to ``StoreUnavailable``.
"""


def write_turn(path: str) -> threading.Lock:
    """The lock that orders this process's writers of the SQLite file ``path``.

    One per file, whatever path names it; ``:memory:`` (a database per
    connection) gets a lock of its own each time.
    """
    if path == ":memory:" or path.startswith("file:"):
        return threading.Lock()
    key = os.path.realpath(path)
    with _guard:
        turn = _turns.get(key)
        if turn is None:
            turn = _turns[key] = threading.Lock()
        return turn


def take(turn: threading.Lock, timeout: float) -> None:
    """Take ``turn``, waiting up to ``timeout`` seconds, or raise the error SQLite gives when busy."""
    if not turn.acquire(timeout=max(timeout, 0.0)):
        raise sqlite3.OperationalError(LOCKED)
