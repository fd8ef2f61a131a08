"""Where each contender keeps its data: a SQLite file, or a schema of a PostgreSQL database.

Every workload run gets fresh places. A PostgreSQL run creates a database of its
own on the server it is given and drops it at the end, whatever happened.
"""

from __future__ import annotations

import abc
import itertools
import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

__all__ = ["Backend", "Place", "PostgresBackend", "SQLiteBackend", "commit_latency", "open_backend"]


@dataclass(frozen=True, slots=True)
class Place:
    """One contender's database for one run: a SQLite file or a PostgreSQL schema."""

    label: str
    path: Path | None = None
    """The SQLite file (None on PostgreSQL)."""
    schema: str | None = None
    """The PostgreSQL schema (None on SQLite)."""


class Backend(abc.ABC):
    """A database engine the benchmark runs on."""

    name: str = ""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def _label(self, label: str) -> str:
        return f"{label}_{next(self._counter)}"

    @abc.abstractmethod
    def new_place(self, label: str) -> Place:
        """A fresh, empty place."""

    @abc.abstractmethod
    def drop(self, place: Place) -> None:
        """Delete a place and its data."""

    @abc.abstractmethod
    def ev_url(self, place: Place, **options: object) -> str:
        """The eventvault store URL of ``place``."""

    @abc.abstractmethod
    def peer_env(self, place: Place) -> dict[str, str]:
        """The eventsourcing environment that persists to ``place``, as its docs configure it."""

    def close(self) -> None:  # noqa: B027 - most backends have nothing to release
        """Release what the backend holds (the PostgreSQL database)."""


class SQLiteBackend(Backend):
    """Files in a work directory; every contender at ``synchronous=FULL`` in WAL mode."""

    name = "sqlite"

    def __init__(self, workdir: Path) -> None:
        super().__init__()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)

    def new_place(self, label: str) -> Place:
        """A fresh, empty place: a new file, or a new schema."""
        place = Place(label, path=self.workdir / f"{self._label(label)}.db")
        self.drop(place)
        return place

    def drop(self, place: Place) -> None:
        """Delete the place and its data."""
        assert place.path is not None  # noqa: S101 - a SQLite place has a path
        for suffix in ("", "-wal", "-shm"):
            Path(f"{place.path}{suffix}").unlink(missing_ok=True)

    def ev_url(self, place: Place, **options: object) -> str:
        """The eventvault store URL of the place."""
        assert place.path is not None  # noqa: S101
        query = "&".join(f"{k}={v}" for k, v in options.items())
        return f"sqlite:///{place.path}" + (f"?{query}" if query else "")

    def peer_env(self, place: Place) -> dict[str, str]:
        """The eventsourcing environment for the place."""
        # The eventsourcing SQLite module switches files to WAL and leaves
        # synchronous at SQLite's default, FULL; check_synchronous() confirms it.
        return {"PERSISTENCE_MODULE": "eventsourcing.sqlite", "SQLITE_DBNAME": str(place.path)}

    def connect(self, place: Place) -> sqlite3.Connection:
        """A raw connection in the durability every contender uses: WAL, synchronous=FULL."""
        assert place.path is not None  # noqa: S101
        conn = sqlite3.connect(place.path, isolation_level=None, check_same_thread=False, timeout=60)
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        return conn


class PostgresBackend(Backend):
    """Schemas in a database created for this run on the given server, dropped at the end."""

    name = "postgresql"

    def __init__(self, server_url: str) -> None:
        super().__init__()
        self.server_url = server_url
        self.database = f"eventvault_bench_{os.getpid()}_{secrets.token_hex(3)}"
        with psycopg.connect(server_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
        parts = urlsplit(server_url)
        self.url = urlunsplit(parts._replace(path=f"/{self.database}", query=""))
        """The URL of this run's database."""
        parts_host = parts.hostname or "localhost"
        self.host = parts_host
        self.port = str(parts.port or 5432)
        self.user = parts.username or "postgres"
        self.password = parts.password or ""

    def new_place(self, label: str) -> Place:
        """A fresh, empty place: a new file, or a new schema."""
        schema = self._label(label).lower()
        with self.connect() as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        return Place(label, schema=schema)

    def drop(self, place: Place) -> None:
        """Delete the place and its data."""
        assert place.schema is not None  # noqa: S101
        with self.connect() as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(place.schema)))

    def ev_url(self, place: Place, **options: object) -> str:
        """The eventvault store URL of the place."""
        assert place.schema is not None  # noqa: S101
        query = "&".join(f"{k}={v}" for k, v in {"schema": place.schema, **options}.items())
        return f"{self.url}?{query}"

    def peer_env(self, place: Place) -> dict[str, str]:
        """The eventsourcing environment for the place."""
        assert place.schema is not None  # noqa: S101
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": self.database,
            "POSTGRES_HOST": self.host,
            "POSTGRES_PORT": self.port,
            "POSTGRES_USER": self.user,
            "POSTGRES_PASSWORD": self.password,
            "POSTGRES_SCHEMA": place.schema,
        }

    def connect(self, *, autocommit: bool = True) -> psycopg.Connection[tuple[Any, ...]]:
        """A raw connection to this run's database (the server's durability: fsync, synchronous_commit)."""
        return psycopg.connect(self.url, autocommit=autocommit, connect_timeout=5)

    def close(self) -> None:
        """Drop the database made for this run."""
        with psycopg.connect(self.server_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.database))
            )


def open_backend(name: str, workdir: Path, postgres_url: str | None) -> Backend:
    """The backend called ``name``."""
    if name == "sqlite":
        return SQLiteBackend(workdir / "sqlite")
    if name == "postgresql":
        if not postgres_url:
            raise ValueError("the postgresql backend needs --postgres URL")
        return PostgresBackend(postgres_url)
    raise ValueError(f"unknown backend {name!r}")


def commit_latency(backend: Backend, commits: int = 200) -> dict[str, float]:
    """The raw driver's commit latency right now: one small row per transaction, durably.

    Ratios against the limit depend on it: when a commit costs 5 ms, a store's own
    overhead vanishes in it; at 0.1 ms it is most of the time.
    """
    times: list[float] = []
    place = backend.new_place("probe")
    try:
        if isinstance(backend, SQLiteBackend):
            conn = backend.connect(place)
            try:
                conn.execute("CREATE TABLE probe (id INTEGER PRIMARY KEY, data BLOB NOT NULL)")
                for _ in range(commits):
                    started = time.perf_counter()
                    conn.execute("BEGIN IMMEDIATE")
                    conn.execute("INSERT INTO probe (data) VALUES (?)", (b"x" * 200,))
                    conn.execute("COMMIT")
                    times.append(time.perf_counter() - started)
            finally:
                conn.close()
        else:
            assert isinstance(backend, PostgresBackend)  # noqa: S101
            assert place.schema is not None  # noqa: S101
            table = sql.Identifier(place.schema, "probe")
            with backend.connect() as pg:
                pg.execute(
                    sql.SQL("CREATE TABLE {} (id bigserial PRIMARY KEY, data bytea NOT NULL)").format(table)
                )
                insert = sql.SQL("INSERT INTO {} (data) VALUES (%s)").format(table)
                for _ in range(commits):
                    started = time.perf_counter()
                    pg.execute(insert, (b"x" * 200,))
                    times.append(time.perf_counter() - started)
    finally:
        backend.drop(place)
    times.sort()
    return {
        "commits": commits,
        "p50_ms": round(times[len(times) // 2] * 1000, 3),
        "p90_ms": round(times[int(len(times) * 0.9)] * 1000, 3),
    }
