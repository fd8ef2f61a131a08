"""Stores for the ledger's command-line tests: each test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from store_urls import with_schema


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def new_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Makes URLs of new, empty stores of the test's backend: SQLite files or PostgreSQL schemas."""
    made: list[str] = []
    server_url = ""
    if request.param == "postgresql":
        server_url = str(request.getfixturevalue("postgres_server").url)  # skips, or fails in CI, without one

    def make() -> str:
        made.append(f"evt_cli_{uuid.uuid4().hex[:12]}")
        if not server_url:
            return f"sqlite:///{tmp_path / (made[-1] + '.db')}"
        url: str = with_schema(server_url, made[-1])
        return url

    yield make
    if server_url:
        with psycopg.connect(server_url, autocommit=True) as conn:
            for schema in made:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
