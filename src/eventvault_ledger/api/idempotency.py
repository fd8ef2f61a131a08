"""Idempotency keys and the first answer given to each, kept beside the read models."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

from fastapi.responses import JSONResponse

from eventvault import StoreError
from eventvault.projections import ReadModels
from eventvault.store import Component, Migration
from eventvault_ledger.api.problems import PROBLEM_BASE, Problem

__all__ = ["IDEMPOTENCY", "IdempotencyStore", "Stored"]

log = logging.getLogger("eventvault_ledger.api")

IDEMPOTENCY = Component(
    "idempotency",
    (
        # IF NOT EXISTS: databases made before versions were recorded have them
        # (docs/decisions/0034), and keep their keys. Next: append Migration(2, ...).
        Migration(
            1,
            "ev_idempotency: keys and their first answers",
            (
                (
                    "CREATE TABLE IF NOT EXISTS ev_idempotency ("
                    " key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, status INTEGER, body TEXT,"
                    " headers TEXT, media_type TEXT, created_at DOUBLE PRECISION NOT NULL)"
                ),
                "CREATE INDEX IF NOT EXISTS ev_idempotency_created ON ev_idempotency (created_at)",
            ),
        ),
    ),
    what="idempotency key schema",
)
"""The ledger's idempotency table, a component of the toolkit's migrations, beside the read models."""


@dataclass(frozen=True, slots=True)
class Stored:
    """What an Idempotency-Key has on record."""

    fingerprint: str
    status: int | None
    body: str | None
    headers: dict[str, str]
    media_type: str | None


class IdempotencyStore:
    """Idempotency keys and the first answer given to each, beside the read models.

    Its commits wait for the disk even though the read models' do not: an answer
    is kept before it is sent, and must outlive a crash as the events do.
    """

    def __init__(self, db: ReadModels) -> None:
        self.db = db

    def setup(self) -> None:
        """Create the table, or bring it up to date. Idempotent."""
        self.db.migrate(IDEMPOTENCY)

    def expire(self, before: float) -> int:
        """Forget the keys recorded before ``before`` (seconds since the epoch); how many there were."""
        with self.db.transaction() as conn:
            cur = self.db.execute(conn, "DELETE FROM ev_idempotency WHERE created_at < ?", (before,))
            return max(int(cur.rowcount), 0)

    def claim(self, key: str, fingerprint: str) -> Stored:
        """Record ``key`` for this request unless it is known; return what is on record."""
        with self.db.transaction(durable=True) as conn:
            self.db.execute(
                conn,
                "INSERT INTO ev_idempotency (key, fingerprint, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO NOTHING",
                (key, fingerprint, time.time()),
            )
            row = self.db.execute(
                conn,
                "SELECT fingerprint, status, body, headers, media_type FROM ev_idempotency WHERE key = ?",
                (key,),
            ).fetchone()
        return Stored(row[0], row[1], row[2], json.loads(row[3]) if row[3] else {}, row[4])

    def _store(self, key: str, status: int, body: str, headers: dict[str, str], media_type: str) -> None:
        # Durable before the answer is sent, as the event log is: a refusal given
        # once stays the answer to that key after a crash of the database.
        with self.db.transaction(durable=True) as conn:
            self.db.execute(
                conn,
                "UPDATE ev_idempotency SET status = ?, body = ?, headers = ?, media_type = ? "
                "WHERE key = ? AND status IS NULL",
                (status, body, json.dumps(headers), media_type, key),
            )

    def remember(self, key: str, response: JSONResponse) -> None:
        """Keep the answer to give again on a retry.

        The command's events are in the log by now, so failing to keep its answer
        (a full disk, the database gone) must not turn a success into an error:
        it is logged, and a retry of the key runs the command again, which
        lands on the same event ids (derived from the key) and appends nothing.
        """
        keep = {k: v for k, v in response.headers.items() if k.lower() in ("etag", "location")}
        try:
            self._store(key, response.status_code, bytes(response.body).decode(), keep, "application/json")
        except StoreError as exc:
            log.warning("the answer to a keyed command was not kept (a retry finds its events): %s", exc)

    def remember_problem(self, key: str, problem: Problem) -> None:
        """Keep a refusal (a domain error) to give again on a retry."""
        body = {
            "type": PROBLEM_BASE + problem.code,
            "title": problem.title,
            "status": problem.status,
            "detail": problem.detail,
            **problem.extra,
        }
        self._store(key, problem.status, json.dumps(body), {}, "application/problem+json")
