"""The subjects' keys of personal fields, in the schema's ``subject_keys`` table (beside the log).

Each call is one autocommit statement, safe to run twice (the pool retries
one on a lost connection): making a key inserts it unless the subject has a
row, forgetting sets the key to NULL.
"""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import Any, Final

from psycopg import sql

from eventvault.errors import StoreError, SubjectForgotten
from eventvault.store.personal import KeyRecord, SubjectKey, check_subject, new_key
from eventvault.store.postgres._connections import Conn, Connections

__all__ = ["PostgresKeyStore"]

_KEYS_OF: Final = (
    "SELECT subject, key_id, key FROM {s}.subject_keys WHERE subject = ANY(%s) AND key IS NOT NULL"
)
_KEY_FOR: Final = """
    WITH made AS (
        INSERT INTO {s}.subject_keys (subject, key_id, key, created_us)
        VALUES (%(subject)s, %(key_id)s, %(key)s, %(now)s)
        ON CONFLICT (subject) DO NOTHING
        RETURNING key_id, key
    )
    SELECT key_id, key FROM made
    UNION ALL
    SELECT key_id, key FROM {s}.subject_keys WHERE subject = %(subject)s AND NOT EXISTS (SELECT FROM made)
"""
_FORGET: Final = """
    WITH before AS (
        SELECT key IS NOT NULL AS had FROM {s}.subject_keys WHERE subject = %(subject)s
    ), gone AS (
        INSERT INTO {s}.subject_keys AS k (subject, key_id, key, created_us, forgotten_us)
        VALUES (%(subject)s, NULL, NULL, %(now)s, %(now)s)
        ON CONFLICT (subject) DO UPDATE SET key_id = NULL, key = NULL,
            forgotten_us = coalesce(k.forgotten_us, excluded.forgotten_us)
    )
    SELECT coalesce((SELECT had FROM before), false)
"""
_RECORDS: Final = (
    "SELECT subject, key_id, key, created_us, forgotten_us FROM {s}.subject_keys "
    'WHERE subject COLLATE "C" > %s ORDER BY subject COLLATE "C" LIMIT %s'
)
_RESTORE: Final = """
    INSERT INTO {s}.subject_keys AS k (subject, key_id, key, created_us, forgotten_us)
    SELECT * FROM unnest(%s::text[], %s::text[], %s::bytea[], %s::int8[], %s::int8[])
    ON CONFLICT (subject) DO UPDATE SET
        key_id = CASE WHEN excluded.key IS NULL THEN NULL ELSE k.key_id END,
        key = CASE WHEN excluded.key IS NULL THEN NULL ELSE k.key END,
        forgotten_us = coalesce(k.forgotten_us, excluded.forgotten_us)
"""
_KEY_FOR_TRIES: Final = 3
_IS_FORGOTTEN: Final = "SELECT forgotten_us IS NOT NULL FROM {s}.subject_keys WHERE subject = %s"


class PostgresKeyStore:
    """The KeyStore of a PostgreSQL event store: its schema's ``subject_keys`` table."""

    def __init__(self, db: Connections, schema: str) -> None:
        self._db = db
        s = sql.Identifier(schema)
        self._keys_of = sql.SQL(_KEYS_OF).format(s=s)
        self._key_for = sql.SQL(_KEY_FOR).format(s=s)
        self._forget = sql.SQL(_FORGET).format(s=s)
        self._is_forgotten = sql.SQL(_IS_FORGOTTEN).format(s=s)
        self._records = sql.SQL(_RECORDS).format(s=s)
        self._restore = sql.SQL(_RESTORE).format(s=s)

    async def keys_of(self, subjects: Collection[str]) -> dict[str, SubjectKey]:
        """The keys of those ``subjects`` that have one."""
        if not subjects:
            return {}
        wanted = list(subjects)

        async def op(conn: Conn) -> list[Any]:
            cur = await conn.execute(self._keys_of, [wanted])
            return await cur.fetchall()

        rows = await self._db.run("keys_of", op)
        return {str(s): SubjectKey(str(k), bytes(key)) for s, k, key in rows}

    async def key_for(self, subject: str) -> SubjectKey:
        """The subject's key, made first if it has none; SubjectForgotten if forgotten."""
        check_subject(subject)
        fresh = new_key()
        params = {"subject": subject, "key_id": fresh.key_id, "key": fresh.key, "now": time.time_ns() // 1000}

        async def op(conn: Conn) -> Any:
            cur = await conn.execute(self._key_for, params)
            return await cur.fetchone()

        # No row at all: another store inserted the subject's key after this
        # statement's snapshot was taken (so the insert did nothing and the select
        # could not see it); the next statement sees it.
        for _ in range(_KEY_FOR_TRIES):
            row = await self._db.run(f"key_for({subject!r})", op, writes=True)
            if row is not None:
                break
        else:  # pragma: no cover - a committed row is visible to the next statement
            raise StoreError(f"key_for({subject!r}): the subject's key row did not become visible")
        if row[1] is None:
            raise SubjectForgotten(subject)
        return SubjectKey(str(row[0]), bytes(row[1]))

    async def forget(self, subject: str) -> bool:
        """Destroy the subject's key (its row keeps the subject and when it was forgotten)."""
        check_subject(subject)
        params = {"subject": subject, "now": time.time_ns() // 1000}

        async def op(conn: Conn) -> bool:
            cur = await conn.execute(self._forget, params)
            row = await cur.fetchone()
            return bool(row and row[0])

        return await self._db.run(f"forget({subject!r})", op, writes=True)

    async def is_forgotten(self, subject: str) -> bool:
        """Whether ``subject`` was forgotten."""

        async def op(conn: Conn) -> bool:
            cur = await conn.execute(self._is_forgotten, [subject])
            row = await cur.fetchone()
            return bool(row and row[0])

        return await self._db.run("is_forgotten", op)

    async def records(self, after: str, limit: int) -> list[KeyRecord]:
        """Up to ``limit`` rows with subjects after ``after``, in subject order (bytewise)."""

        async def op(conn: Conn) -> list[Any]:
            cur = await conn.execute(self._records, [after, limit])
            return await cur.fetchall()

        rows = await self._db.run("key records", op)
        return [
            KeyRecord(str(s), None if k is None else str(k), None if key is None else bytes(key), int(c), f)
            for s, k, key, c, f in rows
        ]

    async def restore(self, records: Collection[KeyRecord]) -> None:
        """Take rows from another store (a forgotten subject on either side ends forgotten)."""
        columns: list[list[Any]] = [[], [], [], [], []]
        for r in records:
            check_subject(r.subject)
            forgotten = r.key is None or r.key_id is None
            row = (
                r.subject,
                None if forgotten else r.key_id,
                None if forgotten else r.key,
                r.created_us,
                (r.forgotten_us or r.created_us) if forgotten else None,
            )
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        if not columns[0]:
            return

        async def op(conn: Conn) -> None:
            await conn.execute(self._restore, columns)

        await self._db.run("restore keys", op, writes=True)
