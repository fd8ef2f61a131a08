"""The subjects' keys of personal fields, in the ``subject_keys`` table beside the log.

Keys are made on the writer (in its transaction, before the event that needs
one), read on a reader thread, and destroyed on the writer with
``secure_delete`` on, so SQLite overwrites the freed bytes of the row instead of
leaving them in the page (the WAL keeps its copy until the next checkpoint:
docs/data-protection.md).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Collection
from typing import TYPE_CHECKING, Final

from eventvault.errors import SubjectForgotten
from eventvault.store.personal import KeyRecord, SubjectKey, check_subject, new_key

if TYPE_CHECKING:
    from eventvault.store.sqlite.core import _SQLiteCore

__all__ = ["SQLiteKeyStore"]

_SQL_KEYS_OF: Final = (
    "SELECT subject, key_id, key FROM subject_keys "
    "WHERE subject IN (SELECT value FROM json_each(?)) AND key IS NOT NULL"
)
_SQL_ADD: Final = (
    "INSERT INTO subject_keys (subject, key_id, key, created_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (subject) DO NOTHING"
)
_SQL_ONE: Final = "SELECT key_id, key FROM subject_keys WHERE subject = ?"
_SQL_FORGET: Final = (
    "INSERT INTO subject_keys (subject, key_id, key, created_at, forgotten_at) VALUES (?, NULL, NULL, ?, ?) "
    "ON CONFLICT (subject) DO UPDATE SET key_id = NULL, key = NULL, "
    "forgotten_at = coalesce(subject_keys.forgotten_at, excluded.forgotten_at)"
)


_SQL_RECORDS: Final = (
    "SELECT subject, key_id, key, created_at, forgotten_at FROM subject_keys "
    "WHERE subject > ? ORDER BY subject LIMIT ?"
)
_SQL_RESTORE: Final = (
    "INSERT INTO subject_keys AS k (subject, key_id, key, created_at, forgotten_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (subject) DO UPDATE SET "
    "key_id = CASE WHEN excluded.key IS NULL THEN NULL ELSE k.key_id END, "
    "key = CASE WHEN excluded.key IS NULL THEN NULL ELSE k.key END, "
    "forgotten_at = coalesce(k.forgotten_at, excluded.forgotten_at)"
)


def _records(cur: sqlite3.Cursor, after: str, limit: int) -> list[KeyRecord]:
    rows = cur.execute(_SQL_RECORDS, (after, limit)).fetchall()
    return [
        KeyRecord(str(s), None if k is None else str(k), None if key is None else bytes(key), int(c), f)
        for s, k, key, c, f in rows
    ]


def _restore(cur: sqlite3.Cursor, rows: list[tuple[object, ...]]) -> None:
    cur.execute("PRAGMA secure_delete = ON")
    cur.executemany(_SQL_RESTORE, rows)


def _keys_of(cur: sqlite3.Cursor, subjects: list[str]) -> dict[str, SubjectKey]:
    rows = cur.execute(_SQL_KEYS_OF, (json.dumps(subjects),)).fetchall()
    return {str(s): SubjectKey(str(k), bytes(key)) for s, k, key in rows}


def _key_for(cur: sqlite3.Cursor, subject: str, fresh: SubjectKey, now_us: int) -> SubjectKey | None:
    cur.execute(_SQL_ADD, (subject, fresh.key_id, fresh.key, now_us))
    key_id, key = cur.execute(_SQL_ONE, (subject,)).fetchone()
    return None if key is None else SubjectKey(str(key_id), bytes(key))


def _forget(cur: sqlite3.Cursor, subject: str, now_us: int) -> bool:
    cur.execute("PRAGMA secure_delete = ON")
    had = cur.execute("SELECT key IS NOT NULL FROM subject_keys WHERE subject = ?", (subject,)).fetchone()
    cur.execute(_SQL_FORGET, (subject, now_us, now_us))
    return bool(had and had[0])


def _is_forgotten(cur: sqlite3.Cursor, subject: str) -> bool:
    row = cur.execute("SELECT forgotten_at FROM subject_keys WHERE subject = ?", (subject,)).fetchone()
    return row is not None and row[0] is not None


class SQLiteKeyStore:
    """The KeyStore of a SQLite event store: its ``subject_keys`` table."""

    def __init__(self, store: _SQLiteCore) -> None:
        self._store = store

    async def keys_of(self, subjects: Collection[str]) -> dict[str, SubjectKey]:
        """The keys of those ``subjects`` that have one."""
        if not subjects:
            return {}
        found: dict[str, SubjectKey] = await self._store._read(_keys_of, list(subjects))  # noqa: SLF001
        return found

    async def key_for(self, subject: str) -> SubjectKey:
        """The subject's key, made first if it has none; SubjectForgotten if forgotten."""
        check_subject(subject)
        store = self._store
        if not store._opened:  # noqa: SLF001
            await store.open()
        key: SubjectKey | None = await store._submit(  # noqa: SLF001
            store._wq,  # noqa: SLF001
            _key_for,
            (subject, new_key(), time.time_ns() // 1000),
            write=True,
        )
        if key is None:
            raise SubjectForgotten(subject)
        return key

    async def forget(self, subject: str) -> bool:
        """Destroy the subject's key (its row keeps the subject and when it was forgotten)."""
        check_subject(subject)
        store = self._store
        if not store._opened:  # noqa: SLF001
            await store.open()
        destroyed: bool = await store._submit(  # noqa: SLF001
            store._wq,  # noqa: SLF001
            _forget,
            (subject, time.time_ns() // 1000),
            write=True,
        )
        return destroyed

    async def is_forgotten(self, subject: str) -> bool:
        """Whether ``subject`` was forgotten."""
        forgotten: bool = await self._store._read(_is_forgotten, subject)  # noqa: SLF001
        return forgotten

    async def records(self, after: str, limit: int) -> list[KeyRecord]:
        """Up to ``limit`` rows with subjects after ``after``, in subject order."""
        found: list[KeyRecord] = await self._store._read(_records, after, limit)  # noqa: SLF001
        return found

    async def restore(self, records: Collection[KeyRecord]) -> None:
        """Take rows from another store (a forgotten subject on either side ends forgotten)."""
        rows = []
        for r in records:
            check_subject(r.subject)
            forgotten = r.key is None or r.key_id is None
            rows.append(
                (
                    r.subject,
                    None if forgotten else r.key_id,
                    None if forgotten else r.key,
                    r.created_us,
                    (r.forgotten_us or r.created_us) if forgotten else None,
                )
            )
        if not rows:
            return
        store = self._store
        if not store._opened:  # noqa: SLF001
            await store.open()
        await store._submit(store._wq, _restore, (rows,), write=True)  # noqa: SLF001
