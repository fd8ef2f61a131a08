"""SIGSTOP of a projection worker inside its batch transaction, past its lease, then SIGCONT.

The worker (tests/projection_worker.py) stops itself with ``--stop-at``: in the
handler of one event, after its batch fenced (and, on PostgreSQL, locked) its
partition, so the moment is exact and no timing picks it. The test sees it
stopped in ``/proc`` and, on PostgreSQL, its batch ``idle in transaction`` in
``pg_stat_activity``.

PostgreSQL: a second worker takes the lease over once it has expired and
finishes the catch-up while the first is still stopped; when the first runs
again its batch is refused (the server ended that transaction), and it commits
nothing. SQLite: the stopped batch holds the file's write lock, so nobody can
take over (the second worker keeps retrying, visibly) until the first runs
again and commits that batch under the lease nobody took. Either way every
event is applied exactly once and the read model equals a replay of the log.
"""

from __future__ import annotations

import contextlib
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

import projection_worker as pw
from eventvault import NO_STREAM, open_store
from eventvault.projections import ReadModels, open_read_models

EVENTS = 400
BATCH = 50
STOP_AT = 175  # inside the fourth batch (151-200)
LEASE = 4.0  # long enough that a busy machine never lets the first lease lapse before the stop
DEADLINE = 60.0  # generous for a busy machine; every wait ends as soon as its condition holds


def _until(what: str, check: Callable[[], Any], *workers: pw.Worker) -> Any:
    """Poll ``check()`` (other processes' progress) until it is true; fails if a worker dies."""
    end = time.monotonic() + DEADLINE
    while not (value := check()):
        for w in workers:
            w.assert_alive()
        logs = "\n".join(w.log.read_text() for w in workers)
        assert time.monotonic() < end, f"{what}: not within {DEADLINE}s\n{logs}"
        time.sleep(0.02)
    return value


def _stopped(pid: int) -> bool:
    """Whether process ``pid`` is stopped by a signal (state T in /proc)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0] == "T"


def _lease(db: ReadModels) -> tuple[str | None, int]:
    with contextlib.suppress(Exception):
        [(owner, token)] = db.query("SELECT owner, token FROM ev_partition WHERE name = 'sums'")
        return owner, int(token)
    return None, 0


def _applied(db: ReadModels) -> list[tuple[int, str, int]]:
    return [(int(p), str(w), int(t)) for p, w, t in db.query("SELECT position, worker, token FROM applied")]


@contextlib.contextmanager
def _workers() -> Iterator[list[pw.Worker]]:
    started: list[pw.Worker] = []
    try:
        yield started
    finally:
        for w in started:
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGCONT)
            w.kill()


async def _log(url: str) -> int:
    """The events to project, in one append (one transaction, which a stopped batch cannot hold up)."""
    async with open_store(url, registry=pw.REGISTRY) as store:
        await store.append("acct", [pw.Added(i) for i in range(EVENTS)], expected_version=NO_STREAM)
        return (await store.head()).position


def _start_both(
    tmp_path: Path, started: list[pw.Worker], db: ReadModels, url_for: Callable[[str], str]
) -> None:
    """The first worker (with --stop-at) holding the partition, then the second one announced, idle."""
    first = pw.Worker(tmp_path / "first.log", *_args(url_for("first"), "first", "--stop-at", str(STOP_AT)))
    started.append(first)
    _until("the first worker to hold the partition", lambda: _lease(db)[0] == "first", first)
    second = pw.Worker(tmp_path / "second.log", *_args(url_for("second"), "second"))
    started.append(second)
    _until("the second worker announced", lambda: _announced(db) == {"first", "second"}, first, second)


def _announced(db: ReadModels) -> set[str]:
    with contextlib.suppress(Exception):
        return {str(r[0]) for r in db.query("SELECT worker FROM ev_worker WHERE name = 'sums'")}
    return set()


async def _assert_replayed(url: str, db: ReadModels) -> None:
    assert pw.recorded_errors(db) == []
    async with open_store(url, registry=pw.REGISTRY) as store:
        assert pw.read_model(db) == await pw.expected_from_log(store)


def _args(url: str, worker: str, *extra: str) -> list[str]:
    return [
        url,
        "--worker-id",
        worker,
        "--lease",
        str(LEASE),
        "--partitions",
        "1",
        "--batch",
        str(BATCH),
        *extra,
    ]


@pytest.fixture
def pg_schema(postgres_server) -> Iterator[tuple[str, Callable[[str], str]]]:
    """The run's server and ``url(application_name)``: a schema of this test's own (dropped after it)."""
    schema = f"evt_stop_{uuid.uuid4().hex[:10]}"
    base = str(postgres_server.url)
    joiner = "&" if "?" in base else "?"
    yield base, lambda app: f"{base}{joiner}schema={schema}&application_name={app}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _backend(url: str, app: str) -> tuple[int, str] | None:
    """(pid, state) of the read-model connection of worker ``app`` that holds a transaction open."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pid, state FROM pg_stat_activity WHERE application_name = %s AND backend_xid IS NOT NULL",
            [app],
        ).fetchone()
    return None if row is None else (int(row[0]), str(row[1]))


@pytest.mark.postgres
@pytest.mark.slow
async def test_postgres_a_stopped_lease_holder_is_taken_over_and_its_batch_is_refused(tmp_path, pg_schema):
    """The batch open under SIGSTOP is ended by the server; another finishes; SIGCONT commits nothing."""
    server, url_for = pg_schema
    url = url_for("evt-test-setup")
    db = open_read_models(url)
    try:
        with _workers() as started:
            _start_both(tmp_path, started, db, url_for)
            first, second = started
            head = await _log(url)
            _until("the first worker to stop itself in its batch", lambda: _stopped(first.proc.pid), first)
            stopped_at = time.monotonic()
            # The moment, as the database sees it: the batch's transaction is open and idle
            # (the server notes that just after sending its last answer: it may trail a moment).
            pid, _ = _until(
                "the stopped batch idle in transaction in pg_stat_activity",
                lambda: (b := _backend(server, "first")) is not None and b[1] == "idle in transaction" and b,
            )
            owner, first_token = _lease(db)
            assert owner == "first"
            before = pw.checkpoint(db).position
            assert before < STOP_AT

            _until(
                "the second worker to finish the catch-up", lambda: pw.checkpoint(db).position == head, second
            )
            taken_over = time.monotonic() - stopped_at
            owner, second_token = _lease(db)
            assert (owner, second_token > first_token) == ("second", True)
            assert _stopped(first.proc.pid)  # the first is still stopped: the second did not wait for it
            assert _backend(server, "first") is None  # its transaction is gone, and its locks with it

            first.proc.send_signal(signal.SIGCONT)
            _until(
                "the first worker to find its batch refused",
                lambda: "retrying" in first.log.read_text(),
                first,
            )
            first.assert_alive()
            # Its lost session is the database's fault, not its event's: no event is blamed.
            assert "retrying that event" not in first.log.read_text(), first.log.read_text()
            assert first.stop() == 0
            assert second.stop() == 0

        applied = _applied(db)
        assert len(applied) == head
        # The stopped batch and everything after it are the second worker's, under its newer lease.
        assert {w for p, w, _ in applied if p > before} == {"second"}
        assert {t for p, w, t in applied if w == "second"} == {second_token}
        assert {t for p, w, t in applied if w == "first"} == {first_token}
        await _assert_replayed(url, db)
    finally:
        db.close()
    print(  # noqa: T201 - the figures docs/reliability.md quotes (pytest -s)
        f"\nfigures: PostgreSQL, lease {LEASE:g}s: taken over, caught up {taken_over:.2f}s after the stop; "
        f"the stopped batch (backend {pid}) refused; {head} events applied once each"
    )


@pytest.mark.slow
async def test_sqlite_a_stopped_lease_holder_blocks_takeover_then_commits_its_batch_once(tmp_path):
    """The stopped batch holds the write lock: nobody takes over; after SIGCONT it commits, nothing twice."""
    url = f"sqlite:///{tmp_path / 'stop.db'}"
    db = open_read_models(url)
    try:
        with _workers() as started:
            _start_both(tmp_path, started, db, lambda _: url)
            first, second = started
            head = await _log(url)
            _until("the first worker to stop itself in its batch", lambda: _stopped(first.proc.pid), first)
            before = pw.checkpoint(db).position
            assert before < STOP_AT
            # It cannot take the expired lease over: the stopped batch holds the file's write lock.
            _until(
                "the second worker to retry on the lock", lambda: "retrying" in second.log.read_text(), second
            )
            assert pw.checkpoint(db).position == before
            assert "locked" in second.log.read_text()

            first.proc.send_signal(signal.SIGCONT)
            _until("the catch-up to finish", lambda: pw.checkpoint(db).position == head, first, second)
            assert first.stop() == 0
            assert second.stop() == 0

        applied = _applied(db)
        assert len(applied) == head
        # The stopped batch was committed by the first worker, under the lease nobody could take.
        assert {w for p, w, _ in applied if before < p <= before + BATCH} == {"first"}
        await _assert_replayed(url, db)
    finally:
        db.close()
