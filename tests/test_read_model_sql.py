"""Read-model SQL is written with ``?`` placeholders; PostgreSQL gets ``%s`` only where they stand.

A ``?`` inside a string literal, a quoted identifier or a comment is text, not a
placeholder; ``??`` is PostgreSQL's jsonb ``?`` operator (``??|``, ``??&`` its siblings).
"""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg import sql

from eventvault.projections import open_read_models

# Never connects: sql() only rewrites the text.
PG = open_read_models("postgresql://nobody@127.0.0.1:1/none?schema=rewrite_only")


@pytest.mark.parametrize(
    ("written", "sent"),
    [
        ("SELECT a FROM t WHERE a = ? AND b IN (?, ?)", "SELECT a FROM t WHERE a = %s AND b IN (%s, %s)"),
        ("SELECT '?' || ?", "SELECT '?' || %s"),
        ("SELECT 'it''s ?', ?", "SELECT 'it''s ?', %s"),
        ("SELECT E'a\\' ?', ?", "SELECT E'a\\' ?', %s"),
        ("SELECT $$ ? $$, $q$ it's ? $q$, ?", "SELECT $$ ? $$, $q$ it's ? $q$, %s"),
        ('SELECT "odd?name" FROM t WHERE x = ?', 'SELECT "odd?name" FROM t WHERE x = %s'),
        ("SELECT 1 -- is it?\n + ?", "SELECT 1 -- is it?\n + %s"),
        ("SELECT /* one /* two? */ still ? */ ?", "SELECT /* one /* two? */ still ? */ %s"),
        ("SELECT doc ?? 'k' FROM t WHERE id = ?", "SELECT doc ? 'k' FROM t WHERE id = %s"),
        ("SELECT doc ??| array['a'], doc ??& array[?]", "SELECT doc ?| array['a'], doc ?& array[%s]"),
        ("SELECT ?||'x'", "SELECT %s||'x'"),  # a placeholder, then concatenation
        ("SELECT '50%' LIKE ? || '%'", "SELECT '50%%' LIKE %s || '%%'"),  # psycopg's own escape
        ("SELECT a$1 FROM t WHERE b = ?", "SELECT a$1 FROM t WHERE b = %s"),  # $ in a name is no quote
    ],
    ids=[
        "bare",
        "literal",
        "doubled-quote",
        "escape-string",
        "dollar-quoted",
        "quoted-identifier",
        "line-comment",
        "nested-block-comment",
        "jsonb-exists",
        "jsonb-any-all",
        "concatenation",
        "percent",
        "dollar-in-name",
    ],
)
def test_only_bare_question_marks_become_placeholders_on_postgresql(written: str, sent: str) -> None:
    """A ``?`` in a literal, identifier or comment stays; ``??`` is a ``?``; every other ``?`` is ``%s``."""
    assert PG.sql(written) == sent


def test_an_unterminated_literal_is_left_for_the_server_to_refuse() -> None:
    """A literal that never ends runs to the end of the text: no ``?`` in it becomes a placeholder."""
    assert PG.sql("SELECT ? || 'never ends ?") == "SELECT %s || 'never ends ?"


@pytest.mark.postgres
def test_jsonb_operators_and_quoted_question_marks_run_on_postgresql(postgres_server) -> None:
    """On a real server: ``??``/``??|``/``??&`` test keys, literal ``?``s come back as written."""
    schema = f"evt_sql_{uuid.uuid4().hex[:12]}"
    db = open_read_models(f"{postgres_server.url}?schema={schema}")
    try:
        with db.transaction() as conn:
            db.execute(conn, 'CREATE TABLE docs (id INTEGER PRIMARY KEY, "what?" TEXT, doc JSONB)')
            db.execute(conn, """INSERT INTO docs VALUES (?, 'why?', ?::jsonb)""", (1, '{"a": 1, "b": 2}'))
            db.execute(
                conn, """INSERT INTO docs VALUES (?, ? /* or? */, ?::jsonb)""", (2, "how?", '{"c": 3}')
            )
        rows = db.query(
            """SELECT id, "what?", doc ?? ?, doc ??| array['b', 'c'], doc ??& array['a', ?], '?' -- ?
            FROM docs ORDER BY id""",
            ("a", "b"),
        )
        assert rows == [(1, "why?", True, True, True, "?"), (2, "how?", False, True, False, "?")]
    finally:
        db.close()
        with psycopg.connect(postgres_server.url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def test_sqlite_takes_the_sql_as_written(tmp_path) -> None:
    """SQLite's own placeholders are ``?``: the text reaches it unchanged, quoted ``?``s included."""
    db = open_read_models(f"sqlite:///{tmp_path / 'rm.db'}")
    try:
        assert db.sql("SELECT '?', ?") == "SELECT '?', ?"
        assert db.query("""SELECT '?', "?" FROM (SELECT ? AS "?") -- ?""", ("x",)) == [("?", "x")]
    finally:
        db.close()
