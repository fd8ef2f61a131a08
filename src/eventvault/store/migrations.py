"""Schema migrations: one mechanism for every table eventvault (or a service on it) keeps.

A :class:`Component` is a name and an ordered list of :class:`Migration` s,
numbered 1, 2, 3 ...: the event store (``"store"``), the projections'
bookkeeping (``"projections"``), a service's own tables. A database records the
version each component is at in one table, ``eventvault_schema(component,
version)``: in a SQLite file, or in each PostgreSQL schema that holds tables of
a component. :func:`migrate` brings components up to date on a connection:

* A database where every component is current is seen without a lock: one read.
* Otherwise, under the database's migration lock (SQLite: ``BEGIN IMMEDIATE``,
  the file's write lock; PostgreSQL: a transaction-level advisory lock on
  :func:`lock_key` of the schema), the versions are read again (another process
  may have migrated meanwhile), each component's missing migrations are applied
  in order, and each new version is recorded, in one transaction: a failure
  leaves the database as it was.
* A component recorded at a version newer than its list raises
  :class:`~eventvault.errors.SchemaVersionError` (the database was migrated by
  newer code), before anything changes.

A migration's steps are SQL strings, run as they are (no parameters), or
callables given the :class:`Target`, for what SQL cannot say on both databases
(a column added only where it is missing). Released migrations are never edited:
a change is a new migration appended to its component's list.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from eventvault.errors import SchemaVersionError

__all__ = [
    "VERSION_TABLE",
    "Component",
    "Migration",
    "Step",
    "Target",
    "lock_key",
    "migrate",
    "stored_versions",
]

log = logging.getLogger("eventvault.store.migrations")

VERSION_TABLE: Final = "eventvault_schema"
"""The table of component versions, one row per component."""

Dialect = Literal["sqlite", "postgresql"]


@dataclass(frozen=True, slots=True)
class Target:
    """A database to migrate: a DB-API connection in autocommit mode, and how to speak to it.

    The migrator begins and ends its own transaction on ``conn``. On PostgreSQL
    ``schema`` is the schema that holds the version table (and, by convention,
    the components' tables).
    """

    conn: Any
    dialect: Dialect
    where: str
    """How messages name the database ("SQLite database /srv/ledger.db")."""
    schema: str = ""

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        """Run ``sql`` on the connection; with ``params``, its placeholders are ``?`` on both databases."""
        if params is None:
            return self.conn.execute(sql)
        if self.dialect == "postgresql":
            sql = sql.replace("%", "%%").replace("?", "%s")
        return self.conn.execute(sql, tuple(params))

    def table(self, name: str) -> str:
        """``name`` as SQL: qualified by the schema on PostgreSQL."""
        return f'"{self.schema}".{name}' if self.dialect == "postgresql" else name

    def exists(self, table: str) -> bool:
        """Whether ``table`` exists (in the schema, on PostgreSQL)."""
        if self.dialect == "postgresql":
            row = self.execute("SELECT to_regclass(?) IS NOT NULL", (self.table(table),)).fetchone()
        else:
            row = self.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
        return bool(row[0])

    def columns(self, table: str) -> set[str]:
        """The column names of ``table`` (empty if it does not exist)."""
        if self.dialect == "postgresql":
            rows = self.execute(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = ? AND table_name = ?",
                (self.schema, table),
            ).fetchall()
        else:
            rows = self.execute("SELECT name FROM pragma_table_info(?)", (table,)).fetchall()
        return {str(row[0]) for row in rows}


Step = str | Callable[[Target], None]
"""One step of a migration: SQL run as it is, or a callable given the database."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One version of a component: its number, what it does, and the steps that make it."""

    version: int
    description: str
    steps: Sequence[Step]


@dataclass(frozen=True, slots=True)
class Component:
    """A named part of a database's schema: its migrations, oldest first, numbered from 1.

    ``adopt``, if given, tells the version of a database whose component has
    no row yet but was made before this mechanism kept one (it runs under the
    lock; 0: nothing there). ``what`` names the component in messages.
    """

    name: str
    migrations: Sequence[Migration]
    what: str = ""
    adopt: Callable[[Target], int] | None = None

    def __post_init__(self) -> None:
        numbers = [m.version for m in self.migrations]
        if numbers != list(range(1, len(numbers) + 1)):
            raise ValueError(
                f"the migrations of {self.name!r} must be numbered 1, 2, 3 ... in order: {numbers}"
            )

    @property
    def version(self) -> int:
        """The version this code brings the component to."""
        return len(self.migrations)

    @property
    def label(self) -> str:
        """How messages name the component."""
        return self.what or f"{self.name!r} schema"


def lock_key(schema: str) -> int:
    """The PostgreSQL advisory lock that migrations of ``schema`` hold (one migrator at a time)."""
    digest = hashlib.blake2b(f"eventvault migrate {schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def stored_versions(target: Target) -> dict[str, int]:
    """The version of every component the database records (none: an empty dict). Takes no lock."""
    if not target.exists(VERSION_TABLE):
        return {}
    rows = target.execute(f"SELECT component, version FROM {target.table(VERSION_TABLE)}").fetchall()  # noqa: S608
    return {str(name): int(version) for name, version in rows}


def migrate(target: Target, components: Sequence[Component]) -> dict[str, int]:
    """Bring ``components`` up to date in ``target``'s database; their versions now.

    Raises SchemaVersionError, changing nothing, if one is recorded at a version
    newer than this code's. Safe to run from many processes at once: they take
    turns on the lock, and the later ones find the work done.
    """
    # Look first without the lock: an up-to-date database (every open but the
    # first) must not wait for another process's writers.
    stored = stored_versions(target)
    if all(stored.get(c.name) == c.version for c in components):
        return {c.name: c.version for c in components}
    for c in components:
        _check(target, c, stored.get(c.name, 0))
    _begin_locked(target)
    try:
        _create_version_table(target)
        stored = stored_versions(target)  # again, under the lock
        versions = {}
        for c in components:
            version = stored.get(c.name)
            if version is None and c.adopt is not None:
                version = c.adopt(target)
            versions[c.name] = _check(target, c, version or 0)
        for c in components:
            _apply(target, c, versions[c.name], recorded=stored.get(c.name))
        target.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(Exception):
            target.execute("ROLLBACK")
        raise
    return {c.name: c.version for c in components}


def _check(target: Target, component: Component, version: int) -> int:
    if version > component.version:
        raise SchemaVersionError(
            f"{target.where} has {component.label} version {version}, newer than the "
            f"{component.version} this code knows: upgrade eventvault to open it"
        )
    return version


def _begin_locked(target: Target) -> None:
    if target.dialect == "sqlite":
        # The write lock now, for the whole transaction: other migrators wait
        # here (busy_timeout), then read the versions this one left.
        target.execute("BEGIN IMMEDIATE")
        return
    target.execute("BEGIN")
    try:
        target.execute("SELECT pg_advisory_xact_lock(?)", (lock_key(target.schema),))
    except BaseException:
        with contextlib.suppress(Exception):
            target.execute("ROLLBACK")
        raise


def _create_version_table(target: Target) -> None:
    if target.dialect == "postgresql":
        target.execute(f'CREATE SCHEMA IF NOT EXISTS "{target.schema}"')
        target.execute(
            f"CREATE TABLE IF NOT EXISTS {target.table(VERSION_TABLE)} "
            "(component text PRIMARY KEY, version integer NOT NULL)"
        )
    else:
        # A table of its own rather than PRAGMA user_version: other code may use
        # user_version, and several components share the file.
        target.execute(
            f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} "
            "(component TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID"
        )


def _apply(target: Target, component: Component, version: int, *, recorded: int | None) -> None:
    for migration in component.migrations[version:]:
        for step in migration.steps:
            if isinstance(step, str):
                target.execute(step)
            else:
                step(target)
        log.info(
            "%s: %s migration %d applied (%s)",
            target.where,
            component.name,
            migration.version,
            migration.description,
        )
    if recorded != component.version:  # also an adopted database with nothing to apply
        target.execute(
            f"INSERT INTO {target.table(VERSION_TABLE)} (component, version) VALUES (?, ?) "  # noqa: S608
            "ON CONFLICT (component) DO UPDATE SET version = excluded.version",
            (component.name, component.version),
        )
