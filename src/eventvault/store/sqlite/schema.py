"""The SQLite store's tables, their migrations, and switching a file to WAL.

Both run on the writer's connection when the store opens (see the package
documentation, "Schema").
"""

from __future__ import annotations

import sqlite3
import time
from typing import Final

from eventvault.errors import StoreError
from eventvault.store import migrations
from eventvault.store.migrations import Component, Migration
from eventvault.store.sqlite.errors import SQLITE_BUSY, primary_code

SCHEMA_COMPONENT: Final = "store"
"""This module's row in ``eventvault_schema`` (projections may keep rows of their own)."""

# The store's component (see eventvault.store.migrations): each migration's
# statements run in order, in the one transaction that records the new version.
# Never edit a released one: append Migration(n + 1, ...).
MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        1,
        "events and snapshots",
        (
            # position is the rowid, so the log is clustered in global order and
            # read_all is a range scan of the table itself. SQLite gives a new row
            # max(rowid) + 1, and the writer inserts under the write lock, so new
            # positions are above every committed one (the gap-safety argument in
            # the package docstring). The log's newest event is never deleted (a
            # scavenge keeps every stream's last event: see migration 3), so a position
            # is never handed out twice; AUTOINCREMENT would only add a write to
            # sqlite_sequence on every commit. (Its one exception, a table holding rowid 2**63 - 1,
            # cannot happen at any real rate of appends.)
            # Times are integer microseconds since the epoch (compact, ordered, no
            # parsing); data is the JSON bytes as written (BLOB: no text decoding on
            # read). metadata is NULL when empty, which most events are.
            # A filtered read_all needs no index on event_type (it scans forward from
            # its checkpoint, which then moves past the scanned range, so a catch-up
            # reads the log once in total); DCB queries do: see migration 2.
            """
        CREATE TABLE events (
            position       INTEGER PRIMARY KEY,
            event_id       BLOB    NOT NULL UNIQUE,
            stream_id      TEXT    NOT NULL,
            stream_version INTEGER NOT NULL,
            event_type     TEXT    NOT NULL,
            schema_version INTEGER NOT NULL,
            occurred_at    INTEGER NOT NULL,
            recorded_at    INTEGER NOT NULL,
            data           BLOB    NOT NULL,
            metadata       BLOB,
            UNIQUE (stream_id, stream_version)
        )
        """,
            # No `streams` table of current versions: the UNIQUE (stream_id,
            # stream_version) index above already answers "the stream's version" with
            # one seek to its last entry, and with one writer there is no row to lock
            # (PostgreSQL needs one; SQLite does not). A streams table would cost a
            # statement and one more B-tree page in the WAL on every commit (about
            # 15 % of single-event append throughput at synchronous=FULL) and could
            # disagree with the log; this way the version IS the log.
            # Not WITHOUT ROWID: states can be large, and such rows belong in a rowid table.
            """
        CREATE TABLE snapshots (
            stream_id      TEXT    NOT NULL,
            schema_version INTEGER NOT NULL,
            stream_version INTEGER NOT NULL,
            state          BLOB    NOT NULL,
            created_at     INTEGER NOT NULL,
            PRIMARY KEY (stream_id, schema_version)
        )
        """,
        ),
    ),
    Migration(
        2,
        "tags: events.tags and the event_tags index",
        (
            # Dynamic consistency boundaries (docs/dcb.md). An event's tags are kept
            # twice: in events.tags, joined by TAG_SEPARATOR (NULL when it has none,
            # as most stream events do), so every read returns them with the row; and
            # one event_tags row per tag, clustered by (tag, position), so "events
            # tagged T after position P" (a query item, a condition check) is a range
            # scan of that key, however long the log. ADD COLUMN with no default
            # rewrites nothing: a file migrates in place, its old events untagged.
            "ALTER TABLE events ADD COLUMN tags TEXT",
            """
        CREATE TABLE event_tags (
            tag      TEXT    NOT NULL,
            position INTEGER NOT NULL,
            PRIMARY KEY (tag, position)
        ) WITHOUT ROWID
        """,
            # No index on event_type: it would cost every stream append one more
            # B-tree insert (measured: a fifth of single-event append throughput),
            # and an item of types only (no tags) is a range scan of the log from
            # ``after`` on; a condition's ``after`` is the head its decision read,
            # so its check reads only what was stored since (see reads.item_positions).
        ),
    ),
    Migration(
        3,
        "stream rules: deletes, tombstones, truncation and retention",
        (
            # Deletes and retention (docs/decisions/0032): a row only for a stream that
            # was deleted or given a rule, so the table stays small and an append's
            # look at it (by primary key, in the statement that reads the stream's
            # version) finds nothing for nearly every stream. deleted_version is the
            # version of the stream's latest $StreamDeleted event; max_age in us.
            # A scavenge deletes events, but never a stream's last one: the log's
            # newest event is always some stream's last, so max(rowid) never goes
            # back and a position is still never handed out twice.
            """
        CREATE TABLE stream_rules (
            stream_id       TEXT    PRIMARY KEY,
            deleted_version INTEGER NOT NULL DEFAULT 0,
            tombstoned      INTEGER NOT NULL DEFAULT 0,
            truncate_before INTEGER NOT NULL DEFAULT 0,
            max_count       INTEGER,
            max_age_us      INTEGER
        ) WITHOUT ROWID
        """,
        ),
    ),
    Migration(
        4,
        "subject_keys: the keys of the subjects of personal fields, beside the log",
        (
            # Keys of the subjects of personal fields (eventvault.store.personal), beside
            # the log and never in it: forgetting a subject sets key_id and key to NULL
            # (the row stays, so the subject is known as forgotten). A new table: a file
            # migrates in place, its events untouched.
            """
        CREATE TABLE subject_keys (
            subject      TEXT    PRIMARY KEY,
            key_id       TEXT,
            key          BLOB,
            created_at   INTEGER NOT NULL,
            forgotten_at INTEGER
        )
        """,
        ),
    ),
)
STORE: Final = Component(SCHEMA_COMPONENT, MIGRATIONS, what="event store schema")
SCHEMA_VERSION: Final = STORE.version
TAG_SEPARATOR: Final = "\n"
"""Joins an event's tags in events.tags (a tag holds no control characters)."""


def use_wal(conn: sqlite3.Connection, path: str, busy_timeout: float) -> None:
    """Switch the file to write-ahead logging (stored in the file), or raise StoreError."""
    # Switching needs a moment of exclusive access, and SQLite does not always
    # run the busy handler for it (processes opening one new file together see
    # "database is locked" at once), so retry here until busy_timeout is spent.
    deadline = time.monotonic() + busy_timeout
    delay = 0.001
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode.lower() != "wal":
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            break
        except sqlite3.OperationalError as exc:
            if primary_code(exc) != SQLITE_BUSY:
                raise
            if time.monotonic() + delay > deadline:
                raise
            time.sleep(delay)  # waiting on another process is inherent here
            delay = min(delay * 2, 0.05)
    if mode.lower() != "wal":
        raise StoreError(
            f"SQLite database {path} cannot use write-ahead logging (journal mode stays "
            f"{mode!r}); WAL needs a local file system with shared memory"
        )


def migrate(conn: sqlite3.Connection, path: str) -> None:
    """Create or migrate the schema; SchemaVersionError if the file's is newer than this code's."""
    migrations.migrate(migrations.Target(conn, "sqlite", f"SQLite database {path}"), [STORE])
