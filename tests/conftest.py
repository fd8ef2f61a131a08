"""Shared test setup. Backend-specific fixtures live beside their tests (tests/postgres/).

PostgreSQL: the suite starts a server of its own (:class:`~eventvault.testing.postgres.PostgresCluster`:
initdb in a temporary folder, on a free port) the first time a test needs one, and
never touches any other server on the machine. ``EVENTVAULT_TEST_POSTGRES_URL`` points
the suite at an external server instead (the tests that crash or restart a server then
skip). Without server binaries the PostgreSQL tests skip with one loud line, unless
``EVENTVAULT_REQUIRE_POSTGRES=1`` (CI), which makes that a failure.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from eventvault.projections import Session
from eventvault.store.records import RecordedEvent
from eventvault.testing.postgres import ClusterUnavailable, PostgresCluster
from eventvault_ledger.read_models import AccountsProjection

# The contract suite ships inside the package, where pytest does not rewrite asserts by
# default; without this its failures would show a bare AssertionError, not the values.
pytest.register_assert_rewrite("eventvault.testing.contract")


# -- PostgreSQL: a private server, an external one, or none -------------------------------

_EXTERNAL_URL = os.environ.get("EVENTVAULT_TEST_POSTGRES_URL")
_REQUIRED = os.environ.get("EVENTVAULT_REQUIRE_POSTGRES") == "1"
_MISSING = "PostgreSQL tests NOT RUN"


@dataclass(frozen=True)
class PostgresServer:
    """The server the PostgreSQL tests use: ``url`` (database ``test``), and ``cluster`` if it is ours."""

    url: str
    cluster: PostgresCluster | None
    problem: str | None = None


_server: list[PostgresServer] = []


def _start_server() -> PostgresServer:
    if _EXTERNAL_URL:
        try:
            with psycopg.connect(_EXTERNAL_URL, connect_timeout=5) as conn:
                version = conn.info.server_version
        except psycopg.Error as exc:
            return PostgresServer(
                _EXTERNAL_URL, None, f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
            )
        problem = None if version >= 130000 else f"PostgreSQL {version} is older than 13 (no xid8)"
        return PostgresServer(_EXTERNAL_URL, None, problem)
    try:
        cluster = PostgresCluster().start()
        url = cluster.create_database("test")
    except ClusterUnavailable as exc:
        return PostgresServer("", None, str(exc))
    # Helpers that read the URL from the environment, and the workers tests start, find it there.
    os.environ["EVENTVAULT_TEST_POSTGRES_URL"] = url
    return PostgresServer(url, cluster)


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer:
    """The PostgreSQL server of this run, started on first use; skips (or fails, in CI) without one."""
    if not _server:
        _server.append(_start_server())
    server = _server[0]
    if server.problem:
        where = f" at {server.url}" if server.url else ""
        if _REQUIRED:
            pytest.fail(
                f"EVENTVAULT_REQUIRE_POSTGRES=1 but no usable PostgreSQL{where}: {server.problem}",
                pytrace=False,
            )
        pytest.skip(f"NO POSTGRESQL{where} ({server.problem}): {_MISSING}")
    return server


@pytest.fixture
def private_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL server of this test's own, to stop, crash and restart; removed after the test."""
    try:
        cluster = PostgresCluster().start()
    except ClusterUnavailable as exc:
        if _REQUIRED:
            pytest.fail(
                f"EVENTVAULT_REQUIRE_POSTGRES=1 but no private server can be made: {exc}", pytrace=False
            )
        pytest.skip(f"NO POSTGRESQL SERVER BINARIES ({exc}): crash and restart tests NOT RUN")
    try:
        yield cluster
    finally:
        cluster.destroy()


def pytest_sessionfinish() -> None:
    """Stop and remove this run's own server."""
    for server in _server:
        if server.cluster is not None:
            server.cluster.destroy()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say it again at the very end of the run, where nobody can miss it."""
    problem = _server[0].problem if _server else None
    if problem and not _REQUIRED:
        terminalreporter.section("PostgreSQL tests skipped", sep="!", yellow=True, bold=True)
        terminalreporter.line(
            f"{problem}.\nThe postgresql:// store was NOT tested. CI sets EVENTVAULT_REQUIRE_POSTGRES=1 "
            "to make this an error.",
            yellow=True,
            bold=True,
        )


def _replay_as_one_batch(db: Any, names: dict[str, str], events: Sequence[RecordedEvent], times: int) -> None:
    """Apply every event ``times`` times in a row to the ledger's projection, as one runner batch does."""
    projection = AccountsProjection()
    with db.transaction() as conn:
        session = Session(db, conn, names)
        projection.begin_batch(session, [e for e in events for _ in range(times)])
        for e in events:
            handler = AccountsProjection.handler_for(type(e.data))
            assert handler is not None
            for _ in range(times):
                handler(projection, session, e)
        projection.end_batch(session)


@pytest.fixture
def replay_as_one_batch() -> Callable[[Any, dict[str, str], Sequence[RecordedEvent], int], None]:
    """``replay_as_one_batch(db, names, events, times)``: the ledger projection, one batch."""
    return _replay_as_one_batch
