"""Store URLs for the ledger's command-line tests, and SQL run on a store behind its back."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql


def with_schema(url: str, schema: str) -> str:
    """``url`` with ``schema=`` added to its query."""
    parts = urlsplit(url)
    query = f"{parts.query}&schema={schema}" if parts.query else f"schema={schema}"
    return urlunsplit(parts._replace(query=query))


def run_sql(url: str, statements: Sequence[tuple[str, Sequence[Any]]]) -> list[list[tuple[Any, ...]]]:
    """Run statements (``?`` placeholders) on a store's own tables, behind its back: each one's rows."""
    out: list[list[tuple[Any, ...]]] = []
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            for statement, params in statements:
                out.append(conn.execute(statement, tuple(params)).fetchall())
        finally:
            conn.close()
        return out
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    schema = dict(query)["schema"]
    server = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "schema"])))
    with psycopg.connect(server, autocommit=True) as pg:
        pg.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        for statement, params in statements:
            cur = pg.execute(statement.replace("?", "%s"), tuple(params))
            out.append(list(cur.fetchall()) if cur.description else [])
    return out
