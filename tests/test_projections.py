"""Projections on SQLite: the runner's promises, one test each.

Catch-up and live, wake-ups, atomic checkpoints, batching, failures, status,
read-your-writes, rebuild, partitions shared by leases, fencing.

Test projections keep an ``applied`` table keyed by event id where it matters,
so an event applied twice fails its handler loudly instead of passing unseen.
Waits on the projection's own progress use ``wait_for``; the few waits on
state that timers move (leases, a worker going idle) poll with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import sqlite3
import sys
import threading
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from eventvault import (
    ANY,
    NO_STREAM,
    Checkpoint,
    EventRegistry,
    EventStore,
    EventTypeError,
    InvalidCheckpoint,
    InvalidEvent,
    InvalidInput,
    InvalidStoreURL,
    StoreUnavailable,
    event,
    open_store,
)
from eventvault.projections import (
    Projection,
    ProjectionRunner,
    ProjectionStatus,
    Session,
    handles,
    open_read_models,
    partition_of,
    read_models_for,
)
from eventvault.projections._db import PostgresReadModels
from eventvault.store.memory import MemoryEventStore
from eventvault.store.records import START, RecordedEvent
from eventvault.testing import eventually_async

T = TypeVar("T")
reg = EventRegistry()
# How long a wait may take before the test gives up: generous, so a machine busy
# with other work slows these tests down without failing them. Every wait ends as
# soon as its condition holds.
WAIT = 60.0


@event("proj.Added", registry=reg)
@dataclass(frozen=True, slots=True)
class Added:
    n: int


@event("proj.Noted", registry=reg)
@dataclass(frozen=True, slots=True)
class Noted:
    text: str


@dataclass(frozen=True, slots=True)
class Unregistered:
    n: int


class Totals(Projection):
    """Totals per stream; idempotent: an event at or below the stored version changes nothing."""

    name = "totals"
    tables = ("totals",)
    schema = (
        "CREATE TABLE {totals} (stream TEXT PRIMARY KEY, total INTEGER NOT NULL, version INTEGER NOT NULL)",
    )

    def __init__(self) -> None:
        self.calls = 0

    @handles(Added)
    def _added(self, db: Session, e: RecordedEvent) -> None:
        self.calls += 1
        db.execute(
            "INSERT INTO {totals} (stream, total, version) VALUES (?, ?, ?) ON CONFLICT (stream) DO UPDATE "
            "SET total = {totals}.total + excluded.total, version = excluded.version "
            "WHERE {totals}.version < excluded.version",
            (e.stream_id, e.data.n, e.stream_version),
        )


class Sums(Projection):
    """Totals with no guard, and ``applied`` keyed by event id: a double apply fails loudly."""

    name = "sums"
    tables = ("sums", "applied")
    schema = (
        "CREATE TABLE {sums} (stream TEXT PRIMARY KEY, total INTEGER NOT NULL)",
        (
            "CREATE TABLE {applied} (event_id TEXT PRIMARY KEY, position INTEGER NOT NULL, "
            "part INTEGER NOT NULL, worker TEXT NOT NULL)"
        ),
    )

    def __init__(self, worker: str = "w") -> None:
        self.worker = worker
        self.calls = 0

    @handles(Added)
    def _added(self, db: Session, e: RecordedEvent) -> None:
        self.calls += 1
        db.execute(
            "INSERT INTO {applied} (event_id, position, part, worker) VALUES (?, ?, ?, ?)",
            (str(e.event_id), e.position, partition_of(e.stream_id, self.partitions), self.worker),
        )
        db.execute(
            "INSERT INTO {sums} (stream, total) VALUES (?, ?) "
            "ON CONFLICT (stream) DO UPDATE SET total = {sums}.total + excluded.total",
            (e.stream_id, e.data.n),
        )


class Sums4(Sums):
    """Sums over four partitions."""

    name = "sums4"
    partitions = 4


class Batched(Sums):
    """Sums in batches of ten."""

    name = "batched"
    batch_size = 10


class Fragile(Projection):
    """Fails on the event whose amount is ``poison``, until fixed; writes its row before failing."""

    name = "fragile"
    tables = ("seen",)
    schema = ("CREATE TABLE {seen} (event_id TEXT PRIMARY KEY, position INTEGER NOT NULL)",)

    def __init__(self, poison: int) -> None:
        self.poison = poison
        self.fixed = False
        self.attempts: list[float] = []

    @handles(Added)
    def _added(self, db: Session, e: RecordedEvent) -> None:
        db.execute("INSERT INTO {seen} (event_id, position) VALUES (?, ?)", (str(e.event_id), e.position))
        if e.data.n == self.poison and not self.fixed:
            self.attempts.append(time.monotonic())
            raise ValueError(f"cannot apply {e.data.n}")


class Gated(Totals):
    """Totals whose handler stops at one position until the test opens the gate."""

    name = "gated"
    batch_size = 50

    def __init__(self) -> None:
        super().__init__()
        self.gate_at = 0
        self.gate = threading.Event()
        self.reached = threading.Event()

    @handles(Added)
    def _added(self, db: Session, e: RecordedEvent) -> None:
        if e.position == self.gate_at:
            self.reached.set()
            assert self.gate.wait(30), "the test never opened the gate"
        super()._added(db, e)


class Buffered(Projection):
    """Keeps a batch's sums in Session.batch and writes them in end_batch, one row per batch in ``batches``.

    ``begin_batch`` reads, in one query, the totals of the streams its events
    touch. A batch whose events include ``poison`` fails in end_batch, which
    names no event.
    """

    name = "buffered"
    tables = ("bsums", "batches")
    schema = (
        "CREATE TABLE {bsums} (stream TEXT PRIMARY KEY, total INTEGER NOT NULL, version INTEGER NOT NULL)",
        "CREATE TABLE {batches} (first_pos INTEGER PRIMARY KEY, events INTEGER NOT NULL)",
    )
    batch_size = 10

    def __init__(self, poison: int | None = None) -> None:
        self.poison = poison
        self.fixed = False

    def begin_batch(self, db: Session, events: Sequence[RecordedEvent]) -> None:
        assert db.batch == {}, "a batch starts with an empty memory"
        streams = sorted({e.stream_id for e in events})
        marks = ", ".join("?" * len(streams))
        found = db.fetchall(
            f"SELECT stream, total, version FROM {{bsums}} WHERE stream IN ({marks})",  # noqa: S608 - marks only
            streams,
        )
        db.batch["sums"] = {r[0]: [int(r[1]), int(r[2])] for r in found}
        db.batch["events"] = [e.position for e in events]
        db.batch["seen"] = []

    @handles(Added)
    def _added(self, db: Session, e: RecordedEvent) -> None:
        total = db.batch["sums"].setdefault(e.stream_id, [0, 0])
        if total[1] < e.stream_version:
            total[0] += e.data.n
            total[1] = e.stream_version
        db.batch["seen"].append(e.data.n)

    def end_batch(self, db: Session) -> None:
        assert len(db.batch["seen"]) == len(db.batch["events"]), "every handler ran between begin and end"
        if self.poison in db.batch["seen"] and not self.fixed:
            raise ValueError(f"cannot write a batch holding {self.poison}")
        changed = db.executemany(
            "INSERT INTO {bsums} (stream, total, version) VALUES (?, ?, ?) ON CONFLICT (stream) DO UPDATE "
            "SET total = excluded.total, version = excluded.version",
            [(stream, t, v) for stream, (t, v) in db.batch["sums"].items()],
        )
        assert changed == len(db.batch["sums"])
        db.execute(
            "INSERT INTO {batches} (first_pos, events) VALUES (?, ?)",
            (db.batch["events"][0], len(db.batch["events"])),
        )


# -- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'p.db'}"


@pytest.fixture(params=["one file", "read models apart"])
def layout_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The log and its read models in one SQLite file, or each in a file of its own (?read_models=)."""
    apart = "?read_models=p-read.db" if request.param == "read models apart" else ""
    return f"sqlite:///{tmp_path / 'p.db'}{apart}"


@pytest.fixture
async def layout_store(layout_url: str) -> AsyncIterator[EventStore]:
    async with open_store(layout_url, registry=reg) as s:
        yield s


@pytest.fixture
async def store(url: str) -> AsyncIterator[EventStore]:
    async with open_store(url, registry=reg) as s:
        yield s


async def status_of(runner: ProjectionRunner, name: str) -> ProjectionStatus:
    return next(s for s in await runner.status() if s.name == name)


async def until_state(runner: ProjectionRunner, name: str, state: str) -> ProjectionStatus:
    return await eventually_async(lambda: status_of(runner, name), lambda s: s.state == state)


async def fill(store: EventStore, streams: int, per_stream: int, *, prefix: str = "s") -> Checkpoint:
    """Append ``per_stream`` Added(1..) to each of ``streams`` streams; return the head."""
    for s in range(streams):
        await store.append(
            f"{prefix}-{s}", [Added(i) for i in range(1, per_stream + 1)], expected_version=ANY
        )
    return await store.head()


def rows(runner: ProjectionRunner, sql: str) -> list[tuple[Any, ...]]:
    return runner.query(sql)


def sqlite_path(url: str) -> str:
    return url.removeprefix("sqlite:///")


def ev_tables(url: str) -> set[str]:
    with sqlite3.connect(sqlite_path(url)) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    conn.close()
    return {n for n in names if n.startswith("ev_")}


CHILD = """
import asyncio, sys
from dataclasses import dataclass
from eventvault import ANY, EventRegistry, event, open_store

reg = EventRegistry()

@event("proj.Added", registry=reg)
@dataclass(frozen=True)
class Added:
    n: int

async def main():
    async with open_store(sys.argv[1], registry=reg) as store:
        result = await store.append(sys.argv[2], [Added(int(sys.argv[3]))], expected_version=ANY)
        print(result.checkpoint)

asyncio.run(main())
"""


async def append_in_another_process(url: str, stream: str, n: int) -> str:
    """Append Added(n) from a separate Python process; return the checkpoint it printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        url,
        stream,
        str(n),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode().strip()


# -- catch-up, live, wake-ups --------------------------------------------------------------------


async def test_catches_up_on_the_log_then_applies_new_events_live(store: EventStore) -> None:
    """Events already in the log are applied at start; each later append is applied as it comes."""
    head = await fill(store, 5, 6)
    async with ProjectionRunner(store, [Totals()]) as runner:
        assert await runner.catch_up(timeout=WAIT)
        assert sorted(rows(runner, "SELECT stream, total, version FROM totals")) == [
            (f"s-{s}", 21, 6) for s in range(5)
        ]
        assert (await status_of(runner, "totals")).checkpoint == str(head)
        result = await store.append("s-0", [Added(100)], expected_version=6)
        assert await runner.wait_for(result.checkpoint, timeout=WAIT)
        assert rows(runner, "SELECT total, version FROM totals WHERE stream = 's-0'") == [(121, 7)]


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_an_append_through_the_store_wakes_an_idle_worker(backend: str, tmp_path: Path) -> None:
    """With every timed poll at an hour, an append through the same store is applied at once."""
    url = "memory://" if backend == "memory" else f"sqlite:///{tmp_path / 'w.db'}"
    async with open_store(url, registry=reg) as store:
        store.poll_interval = 3600
        db = open_read_models(f"sqlite:///{tmp_path / 'rm.db'}")
        runner = ProjectionRunner(
            store, [Totals()], read_models=db, idle_wait=3600, lease_seconds=3600, watch_interval=None
        )
        async with runner:
            first = await store.append("s-1", [Added(1)], expected_version=NO_STREAM)
            assert await runner.wait_for(first.checkpoint, timeout=WAIT)
            await until_state(runner, "totals", "live")  # waiting: only a wake-up can end it now
            second = await store.append("s-1", [Added(2)], expected_version=1)
            assert await runner.wait_for(second.checkpoint, timeout=WAIT)
            assert rows(runner, "SELECT total FROM totals") == [(3,)]


def count_reads(store: EventStore) -> tuple[list[Checkpoint], asyncio.Event]:
    """Have ``store`` note where each page of the log it reads ends; the event is set at the first."""
    reads: list[Checkpoint] = []
    read = asyncio.Event()
    read_all = store.read_all

    async def counted(after: Any = None, **kwargs: Any) -> Any:
        page = await read_all(after, **kwargs)
        reads.append(page.checkpoint)
        read.set()
        return page

    store.read_all = counted  # type: ignore[method-assign]
    return reads, read


def counted_runner(
    store: EventStore, tmp_path: Path, **options: Any
) -> tuple[ProjectionRunner, list[Checkpoint], asyncio.Event]:
    """A runner of Totals on ``store`` whose reads are counted, with every timed wait an hour long.

    Only a wake-up (or a wait_for) moves its worker.
    """
    store.poll_interval = 3600
    reads, read = count_reads(store)
    db = open_read_models(f"sqlite:///{tmp_path / 'rm.db'}")
    hour: dict[str, Any] = {"idle_wait": 3600, "lease_seconds": 3600, "watch_interval": None}
    return ProjectionRunner(store, [Totals()], read_models=db, **(hour | options)), reads, read


async def test_a_short_page_applied_is_followed_by_a_wait_not_by_an_empty_read(tmp_path: Path) -> None:
    """Each live append costs the worker one read of the log: the page it applies, none after it."""
    async with open_store("memory://", registry=reg) as store:
        runner, reads, read = counted_runner(store, tmp_path)
        async with runner:
            await asyncio.wait_for(read.wait(), WAIT)
            assert reads == [START]  # the empty log, read once
            appended = []
            for n in range(1, 4):
                result = await store.append("s-1", [Added(n)], expected_version=n - 1)
                assert await runner.wait_for(result.checkpoint, timeout=WAIT)
                appended.append(result.checkpoint)
            assert rows(runner, "SELECT total, version FROM totals") == [(6, 3)]
        # Stopped: every read the worker made is in. One per append, each the page of that append.
        assert reads == [START, *appended]


async def test_an_idle_worker_sleeps_through_events_it_does_not_handle_until_a_reader_waits(
    tmp_path: Path,
) -> None:
    """Appends of other types wake no worker; wait_for wakes the idle one it waits for, which passes them."""
    async with open_store("memory://", registry=reg) as store:
        runner, reads, read = counted_runner(store, tmp_path)
        async with runner:
            await asyncio.wait_for(read.wait(), WAIT)
            await until_state(runner, "totals", "live")
            assert reads == [START]
            noted = [await store.append("n-1", [Noted("a")], expected_version=NO_STREAM)]
            noted.append(await store.append("n-1", [Noted("b")], expected_version=1))
            for _ in range(20):  # turns enough for a woken worker to read (ordering only, not timing)
                await asyncio.sleep(0)
            assert reads == [START]
            assert await runner.wait_for(noted[-1].checkpoint, timeout=WAIT)
            assert reads == [START, noted[-1].checkpoint]  # one read passed both
            added = await store.append("s-1", [Added(4)], expected_version=NO_STREAM)
            assert await runner.wait_for(added.checkpoint, timeout=WAIT)
            assert rows(runner, "SELECT total FROM totals") == [(4,)]
            assert reads == [START, noted[-1].checkpoint, added.checkpoint]


async def test_a_woken_worker_lingers_for_more_events_until_a_reader_waits(tmp_path: Path) -> None:
    """Woken by new events, the worker waits ``linger`` for more; a wait_for ends that wait at once."""
    async with open_store("memory://", registry=reg) as store:
        runner, reads, read = counted_runner(store, tmp_path, linger=3600)
        async with runner:
            await asyncio.wait_for(read.wait(), WAIT)
            await until_state(runner, "totals", "live")
            await store.append("s-1", [Added(1)], expected_version=NO_STREAM)
            for _ in range(20):  # turns enough for the worker to wake and read (ordering only)
                await asyncio.sleep(0)
            second = await store.append("s-1", [Added(2)], expected_version=1)
            for _ in range(20):
                await asyncio.sleep(0)
            assert reads == [START]  # woken by the first, lingering
            assert await runner.wait_for(second.checkpoint, timeout=WAIT)
            assert reads == [START, second.checkpoint]  # both in one page
            assert rows(runner, "SELECT total, version FROM totals") == [(3, 2)]


@pytest.mark.parametrize("linger", [-0.1, math.inf, "0.1", True])
def test_a_bad_linger_is_refused(linger: object) -> None:
    """The linger is a finite number of seconds >= 0 (0: no lingering)."""
    store = MemoryEventStore(registry=reg)
    with pytest.raises(InvalidInput, match="linger"):
        ProjectionRunner(store, [Totals()], linger=linger)  # type: ignore[arg-type]


async def test_an_append_by_another_process_wakes_an_idle_worker_through_data_version(
    layout_url: str, layout_store: EventStore
) -> None:
    """On SQLite another process's append wakes the runner (PRAGMA data_version); nothing else would."""
    url, store = layout_url, layout_store
    store.poll_interval = 3600
    hour: dict[str, Any] = {"idle_wait": 3600, "lease_seconds": 3600}
    # Control: with the watcher off, nothing ends the hour-long waits. (A wait_for
    # here would: it wakes the idle workers it waits for.)
    async with ProjectionRunner(store, [Totals()], watch_interval=None, **hour) as runner:
        await until_state(runner, "totals", "live")
        changed = runner.changed.waiter()
        cp = await append_in_another_process(url, "x-1", 5)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), 0.5)
        assert not changed.is_set()
        assert rows(runner, "SELECT total FROM totals") == []
    async with ProjectionRunner(store, [Totals()], **hour) as runner:
        assert await runner.wait_for(cp, timeout=WAIT)  # the catch-up at start
        await until_state(runner, "totals", "live")
        changed = runner.changed.waiter()
        cp = await append_in_another_process(url, "x-1", 7)
        await asyncio.wait_for(changed.wait(), WAIT)  # the watcher saw the other process's commit
        assert await runner.wait_for(cp, timeout=WAIT)
        assert rows(runner, "SELECT total FROM totals") == [(12,)]


async def test_a_prepared_runner_hears_of_progress_made_elsewhere_through_data_version(
    layout_url: str, layout_store: EventStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Workers elsewhere, queries here: wait_for wakes on their commit, with its timed re-read at an hour."""
    monkeypatch.setattr("eventvault.projections._runner._WAIT_FOR_POLL", 3600.0)
    url, store = layout_url, layout_store
    hour: dict[str, Any] = {"idle_wait": 3600, "lease_seconds": 3600}
    async with open_store(url, registry=reg) as elsewhere:  # another connection to the file
        queries = ProjectionRunner(store, [Totals()], **hour)
        await queries.prepare()
        try:
            async with ProjectionRunner(elsewhere, [Totals()], **hour) as workers:
                first = await elsewhere.append("p-1", [Added(2)], expected_version=NO_STREAM)
                assert await workers.wait_for(first.checkpoint, timeout=WAIT)
            assert await queries.wait_for(first.checkpoint, timeout=WAIT)  # applied: no wait
            # With the workers stopped, an append that nobody applies: the wait begins before they do.
            second = await elsewhere.append("p-1", [Added(3)], expected_version=1)
            waiting = asyncio.ensure_future(queries.wait_for(second.checkpoint, timeout=WAIT))
            done, _ = await asyncio.wait([waiting], timeout=0.5)
            assert not done
            changed = queries.changed.waiter()
            async with ProjectionRunner(elsewhere, [Totals()], **hour):
                await asyncio.wait_for(changed.wait(), WAIT)  # their commit, seen through the file
                assert await waiting
            assert rows(queries, "SELECT total FROM totals") == [(5,)]
        finally:
            await queries.stop()


async def test_read_models_in_a_file_of_their_own_keep_rows_and_checkpoints_there(tmp_path: Path) -> None:
    """?read_models=FILE: the projections' tables and checkpoints live in FILE; the log's file has none."""
    url = f"sqlite:///{tmp_path / 'log.db'}?read_models=views.db"
    async with open_store(url, registry=reg) as store:
        head = await fill(store, 2, 3)
        async with ProjectionRunner(store, [Totals()]) as runner:
            assert await runner.wait_for(head, timeout=WAIT)
            assert sorted(rows(runner, "SELECT stream, total FROM totals")) == [("s-0", 6), ("s-1", 6)]

    def tables(name: str) -> set[str]:
        with contextlib.closing(sqlite3.connect(tmp_path / name)) as conn:
            return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}

    views, log = tables("views.db"), tables("log.db")
    assert {"ev_partition", "totals__g1"} <= views
    assert not [t for t in log if t.startswith(("ev_", "totals"))]
    assert "events" in log
    assert "events" not in views


# -- transactions and batches ------------------------------------------------------------------


async def test_rows_and_checkpoint_commit_together_when_the_checkpoint_write_fails(
    url: str, store: EventStore
) -> None:
    """If the checkpoint write fails after the handlers ran, no row is left; a retry applies each once."""
    await fill(store, 2, 5)
    db = open_read_models(url)
    db.setup()
    trigger = (
        "CREATE TRIGGER fail_checkpoint BEFORE UPDATE OF cp_pos ON ev_partition WHEN NEW.cp_pos > 0 "
        "BEGIN SELECT RAISE(ABORT, 'disk full (test)'); END"
    )
    with db.transaction() as conn:
        conn.execute(trigger)
    projection = Sums()
    async with ProjectionRunner(store, [projection], retry_delay=0.01) as runner:
        status = await eventually_async(
            lambda: status_of(runner, "sums"),
            lambda s: s.state == "retrying" and s.last_error is not None and projection.calls >= 10,
        )
        assert status.last_error is not None
        assert "disk full (test)" in status.last_error.message
        assert status.last_error.position is None  # the database failed, not an event
        assert status.checkpoint == str(START)
        assert rows(runner, "SELECT count(*) FROM sums") == [(0,)]
        assert rows(runner, "SELECT count(*) FROM applied") == [(0,)]
        with db.transaction() as conn:
            conn.execute("DROP TRIGGER fail_checkpoint")
        assert await runner.catch_up(timeout=WAIT)
        assert sorted(rows(runner, "SELECT stream, total FROM sums")) == [("s-0", 15), ("s-1", 15)]
        assert rows(runner, "SELECT count(*) FROM applied") == [(10,)]
        assert (await status_of(runner, "sums")).last_error is None
    db.close()


async def test_events_are_applied_in_batches_with_one_checkpoint_write_each(
    url: str, store: EventStore
) -> None:
    """95 events with batch_size 10 take 10 transactions, each moving the checkpoint once: 10, 20, ... 95."""
    await fill(store, 1, 95)
    db = open_read_models(url)
    db.setup()
    with db.transaction() as conn:
        conn.execute("CREATE TABLE cp_log (name TEXT, pos INTEGER)")
        conn.execute(
            "CREATE TRIGGER log_checkpoint AFTER UPDATE OF cp_pos ON ev_partition "
            "BEGIN INSERT INTO cp_log VALUES (NEW.name, NEW.cp_pos); END"
        )
    async with ProjectionRunner(store, [Batched()]) as runner:
        assert await runner.catch_up(timeout=WAIT)
        logged = [r[0] for r in rows(runner, "SELECT pos FROM cp_log WHERE name = 'batched' ORDER BY rowid")]
        assert logged == [*range(10, 100, 10), 95]
        assert rows(runner, "SELECT total FROM sums") == [(95 * 96 // 2,)]
        # Events no handler wants still move the checkpoint past them.
        noted = await store.append("n-1", [Noted("x")], expected_version=NO_STREAM)
        assert await runner.wait_for(noted.checkpoint, timeout=WAIT)
    db.close()


async def test_begin_batch_and_end_batch_run_once_per_batch_in_its_transaction(
    url: str, store: EventStore
) -> None:
    """begin_batch gets the batch's events, handlers keep rows in Session.batch, end_batch writes them."""
    await fill(store, 3, 8)  # 24 events, batches of 10: 10, 10, 4
    projection = Buffered()
    async with ProjectionRunner(store, [projection]) as runner:
        assert await runner.catch_up(timeout=WAIT)
        assert sorted(rows(runner, "SELECT stream, total, version FROM bsums")) == [
            (f"s-{s}", 36, 8) for s in range(3)
        ]
        assert rows(runner, "SELECT first_pos, events FROM batches ORDER BY first_pos") == [
            (1, 10),
            (11, 10),
            (21, 4),
        ]
        # Live appends: the next batch reads the totals the earlier ones wrote.
        result = await store.append("s-0", [Added(100)], expected_version=8)
        assert await runner.wait_for(result.checkpoint, timeout=WAIT)
        assert rows(runner, "SELECT total, version FROM bsums WHERE stream = 's-0'") == [(136, 9)]
        assert (await status_of(runner, "buffered")).applied == 25


async def test_a_failing_end_batch_is_narrowed_to_its_event_one_transaction_each(store: EventStore) -> None:
    """A batch whose end fails is applied again one event per transaction: the culprit is the one named."""
    for n in range(20):
        await store.append("p-1", [Added(n)], expected_version=ANY)
    poison = (await store.read_stream("p-1", from_version=14, to_version=14))[0]
    projection = Buffered(poison=13)
    runner = ProjectionRunner(store, [projection], retries=1, retry_delay=0.01)
    async with runner:
        task = runner.workers["buffered"].task
        assert task is not None
        await asyncio.wait({task}, timeout=WAIT)
        assert task.done(), "the failed projection's worker should have stopped"
        status = await status_of(runner, "buffered")
        assert status.state == "failed"
        error = status.last_error
        assert error is not None
        assert (error.position, error.event_id) == (poison.position, str(poison.event_id))
        assert "ValueError: cannot write a batch holding 13" in error.message
        # Everything before the poison is applied (the first batch whole, then one by one).
        assert status.checkpoint == str(Checkpoint(0, poison.position - 1))
        assert rows(runner, "SELECT total, version FROM bsums") == [(sum(range(13)), 13)]
        assert rows(runner, "SELECT first_pos, events FROM batches ORDER BY first_pos") == [
            (1, 10),
            *[(p, 1) for p in range(11, poison.position)],
        ]

        projection.fixed = True
        await runner.resume("buffered")
        assert await runner.catch_up(timeout=WAIT)
        assert rows(runner, "SELECT total, version FROM bsums") == [(sum(range(20)), 20)]


async def test_session_executemany_counts_every_row_it_changed(url: str) -> None:
    """Session.executemany runs a statement per tuple and adds up the rows changed; no tuples, no run."""
    db = open_read_models(url)
    try:
        with db.transaction() as conn:
            session = Session(db, conn, {"t": "t_plain"})
            session.execute("CREATE TABLE {t} (k INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
            assert (
                session.executemany("INSERT INTO {t} (k, v) VALUES (?, ?)", [(k, 0) for k in range(5)]) == 5
            )
            assert session.executemany("UPDATE {t} SET v = 1 WHERE k = ?", [(1,), (3,), (99,)]) == 2
            assert session.executemany("UPDATE {t} SET v = 2", []) == 0
            assert session.fetchall("SELECT k, v FROM {t} ORDER BY k") == [
                (0, 0),
                (1, 1),
                (2, 0),
                (3, 1),
                (4, 0),
            ]
    finally:
        db.close()


async def test_replaying_events_through_an_idempotent_handler_changes_nothing(
    url: str, store: EventStore
) -> None:
    """Handlers guarded by the stream version make a replay harmless: the rows stay the same."""
    await fill(store, 3, 4)
    async with ProjectionRunner(store, [Totals()]) as runner:
        assert await runner.catch_up(timeout=WAIT)
        before = sorted(rows(runner, "SELECT * FROM totals"))
    db = open_read_models(url)
    with db.transaction() as conn:
        conn.execute("UPDATE ev_partition SET cp_tx = 0, cp_pos = 0 WHERE name = 'totals'")
    db.close()
    async with ProjectionRunner(store, [Totals()]) as runner:
        assert await runner.catch_up(timeout=WAIT)
        assert sorted(rows(runner, "SELECT * FROM totals")) == before
        assert (await status_of(runner, "totals")).applied == 24  # every event went through twice


# -- failures ------------------------------------------------------------------------------------


async def test_a_poison_event_stops_only_its_projection_visibly_and_resume_continues_from_it(
    store: EventStore,
) -> None:
    """Retried with backoff, then failed with the event in status; others go on; nothing skipped; resume."""
    for n in range(20):
        await store.append("p-1", [Added(n)], expected_version=ANY)
    poison = (await store.read_stream("p-1", from_version=14, to_version=14))[0]
    assert poison.data.n == 13
    fragile = Fragile(poison=13)
    runner = ProjectionRunner(store, [fragile, Totals()], retries=3, retry_delay=0.02)
    async with runner:
        task = runner.workers["fragile"].task
        assert task is not None
        await asyncio.wait({task}, timeout=WAIT)
        assert task.done(), "the failed projection's worker should have stopped"
        head = await store.head()
        assert await runner.wait_for(head, timeout=WAIT, names=["totals"])  # the other one goes on

        status = await status_of(runner, "fragile")
        assert status.state == "failed"
        error = status.last_error
        assert error is not None
        assert (error.position, error.event_id, error.event_type, error.stream_id) == (
            poison.position,
            str(poison.event_id),
            "proj.Added",
            "p-1",
        )
        assert error.checkpoint == str(poison.checkpoint)
        assert "ValueError: cannot apply 13" in error.message
        # Everything before the poison is applied, the poison and what follows are not.
        assert status.checkpoint == str(Checkpoint(0, poison.position - 1))
        assert status.lag_events == head.position - poison.position + 1
        assert rows(runner, "SELECT max(position), count(*) FROM seen") == [(poison.position - 1, 13)]

        # Retried `retries` times after failing alone, each wait twice the one before.
        assert 4 <= len(fragile.attempts) <= 5
        gaps = [b - a for a, b in itertools.pairwise(fragile.attempts[-4:])]
        for k, gap in enumerate(gaps):
            assert gap >= 0.02 * 2**k * 0.9

        # Never a silent skip: later events do not move it past the poison.
        later = await store.append("p-2", [Added(1)], expected_version=NO_STREAM)
        assert await runner.wait_for(later.checkpoint, timeout=WAIT, names=["totals"])
        assert not await runner.wait_for(later.checkpoint, timeout=0.3, names=["fragile"])

        fragile.fixed = True
        await runner.resume("fragile")
        assert await runner.wait_for(later.checkpoint, timeout=WAIT, names=["fragile"])
        assert rows(runner, "SELECT count(*), count(DISTINCT position) FROM seen") == [(21, 21)]
        status = await status_of(runner, "fragile")
        assert status.state != "failed"
        assert status.last_error is None


async def test_prepare_makes_tables_runs_nothing_and_keeps_recorded_failures(store: EventStore) -> None:
    """prepare() (for query-only processes) creates the tables, applies nothing, clears no failure."""
    await store.append("p-1", [Added(13)], expected_version=NO_STREAM)
    async with ProjectionRunner(store, [Fragile(poison=13)], retries=0) as runner:
        task = runner.workers["fragile"].task
        assert task is not None
        await asyncio.wait({task}, timeout=WAIT)
    monitor = ProjectionRunner(store, [Fragile(poison=13), Totals()])
    await monitor.prepare()
    try:
        assert monitor.query("SELECT count(*) FROM totals") == [(0,)]
        assert not await monitor.wait_for(await store.head(), timeout=0.2, names=["totals"])
        statuses = {s.name: s for s in await monitor.status()}
        assert statuses["totals"].state == "stopped"
        assert statuses["fragile"].state == "failed"
        assert statuses["fragile"].last_error is not None
        assert "cannot apply 13" in statuses["fragile"].last_error.message
    finally:
        await monitor.stop()


async def test_a_worker_crash_is_shown_as_failed_never_silent(store: EventStore, monkeypatch) -> None:
    """An unexpected exception in the worker (a bug, not a handler) shows as state failed with the error."""
    read_all = store.read_all

    async def broken(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("event_types"):  # the worker's reads, not status()'s
            raise RuntimeError("boom")
        return await read_all(*args, **kwargs)

    await fill(store, 1, 1)
    monkeypatch.setattr(store, "read_all", broken)
    async with ProjectionRunner(store, [Totals()]) as runner:
        task = runner.workers["totals"].task
        assert task is not None
        await asyncio.wait({task}, timeout=WAIT)
        status = await status_of(runner, "totals")
        assert status.state == "failed"
        assert status.last_error is not None
        assert "RuntimeError: boom" in status.last_error.message


async def test_a_store_error_is_retried_without_limit_and_shown_meanwhile(
    store: EventStore, monkeypatch
) -> None:
    """A failing store (not an event) shows as state retrying with the error, retried until it recovers."""
    head = await fill(store, 1, 3)
    read_all = store.read_all
    calls = 0
    second_call = asyncio.Event()
    release = asyncio.Event()

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise StoreUnavailable("the database is away (test)")
        if calls == 2:
            second_call.set()
            await release.wait()
        return await read_all(*args, **kwargs)

    monkeypatch.setattr(store, "read_all", flaky)
    async with ProjectionRunner(store, [Totals()]) as runner:
        await asyncio.wait_for(second_call.wait(), timeout=WAIT)
        status = await status_of(runner, "totals")
        assert status.state == "retrying"
        assert status.last_error is not None
        assert "the database is away (test)" in status.last_error.message
        release.set()
        assert await runner.wait_for(head, timeout=WAIT)
        status = await until_state(runner, "totals", "live")
        assert status.last_error is None


async def test_status_is_live_without_the_old_error_as_soon_as_catch_up_returns(
    store: EventStore, monkeypatch
) -> None:
    """After a store error, catch_up returning means status says live, error cleared: no window between."""
    head = await fill(store, 1, 3)
    read_all = store.read_all
    failed = False

    async def fails_once(*args: Any, **kwargs: Any) -> Any:
        nonlocal failed
        if not failed:
            failed = True
            raise StoreUnavailable("the database is away (test)")
        return await read_all(*args, **kwargs)

    monkeypatch.setattr(store, "read_all", fails_once)
    runner = ProjectionRunner(store, [Totals()], retry_delay=0.01)
    # Hold the worker's thread right after its batch committed: the worker
    # itself has not seen its success yet when the database already shows it.
    committed, release = threading.Event(), threading.Event()
    notify = runner.notify_progress

    def hold_after_commit() -> None:
        committed.set()  # before anyone is told: the loop may look at once
        notify()
        release.wait(60)

    monkeypatch.setattr(runner, "notify_progress", hold_after_commit)
    async with runner:
        try:
            assert await runner.catch_up(timeout=30)
            assert committed.is_set()
            status = await status_of(runner, "totals")
            assert (status.state, status.last_error, status.checkpoint) == ("live", None, str(head))
        finally:
            release.set()


async def test_a_batch_the_database_lost_is_applied_again_not_built_upon(url: str, store: EventStore) -> None:
    """Read models lose their last commits in a crash of the database: the worker resumes from what it kept.

    The loss is made by hand (rows and checkpoint back to before the batch, as a
    crash rolls back a commit that never reached the disk) while the worker idles
    with the later checkpoint in memory; the next batch must not build on it.
    """
    await fill(store, 2, 5)
    db = open_read_models(url)
    async with ProjectionRunner(store, [Totals()]) as runner:
        assert await runner.catch_up(timeout=WAIT)
        with db.transaction() as conn:
            conn.execute("DELETE FROM totals__g1")  # the serving generation's table (totals is its view)
            conn.execute("UPDATE ev_partition SET cp_tx = 0, cp_pos = 0 WHERE name = 'totals'")
        later = await store.append("s-0", [Added(100)], expected_version=5)
        assert await runner.wait_for(later.checkpoint, timeout=WAIT)
        assert sorted(rows(runner, "SELECT stream, total FROM totals")) == [("s-0", 115), ("s-1", 15)]
    db.close()


# -- status and read-your-writes ----------------------------------------------------------------


async def test_status_reports_checkpoint_head_lag_rate_state_and_error(store: EventStore) -> None:
    """Status gives checkpoint, head, lag in events and seconds, events/s, state and error, running or not."""
    head = await fill(store, 4, 10)
    async with ProjectionRunner(store, [Totals()]) as runner:
        assert await runner.catch_up(timeout=WAIT)
        status = await until_state(runner, "totals", "live")
        assert (status.checkpoint, status.head, status.lag_events, status.lag_seconds) == (
            str(head),
            str(head),
            0,
            0.0,
        )
        assert status.applied == 40
        assert status.events_per_second is not None
        assert status.events_per_second > 0
        assert (status.generation, status.version, status.partitions, status.owned_partitions) == (
            1,
            1,
            1,
            (0,),
        )
        assert status.workers == (runner.worker_id,)
        assert status.last_error is None
        assert status.rebuild is None
        worker_id = runner.worker_id

    newer = await fill(store, 1, 5, prefix="late")
    monitor = ProjectionRunner(store, [Totals()])  # not started: how a CLI or a dashboard sees it
    status = await status_of(monitor, "totals")
    first_unapplied = (await store.read_all(head, limit=1)).events[0]
    assert status.state == "stopped"
    assert (status.checkpoint, status.head, status.lag_events) == (str(head), str(newer), 5)
    assert status.lag_seconds == pytest.approx(time.time() - first_unapplied.recorded_at.timestamp(), abs=0.5)
    assert status.events_per_second is None
    assert status.workers == ()
    assert worker_id not in status.workers  # a clean stop gives the leases back
    await monitor.stop()


async def test_status_before_anything_ran_says_starting(store: EventStore) -> None:
    """A projection no runner has set up yet is 'starting' at START, with the whole log as lag."""
    head = await fill(store, 1, 3)
    monitor = ProjectionRunner(store, [Totals()])
    status = await status_of(monitor, "totals")
    assert (status.state, status.checkpoint, status.lag_events) == ("starting", str(START), head.position)
    await monitor.stop()


async def test_wait_for_is_true_once_passed_false_when_time_is_up(store: EventStore) -> None:
    """wait_for answers True once the projection passed the checkpoint, False when the bounded time is up."""
    result = await store.append("s-1", [Added(1)], expected_version=NO_STREAM)
    async with ProjectionRunner(store, [Totals()]) as runner:
        assert await runner.wait_for(result.checkpoint, timeout=WAIT)
        assert await runner.wait_for(str(result.checkpoint), timeout=0)
        ahead = Checkpoint(0, result.checkpoint.position + 1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert not await runner.wait_for(ahead, timeout=0.2)
        assert 0.2 <= loop.time() - started < 5


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"timeout": -1}, InvalidInput, "timeout"),
        ({"timeout": "1"}, InvalidInput, "timeout"),
        ({"timeout": math.inf}, InvalidInput, "timeout"),
        ({"timeout": True}, InvalidInput, "timeout"),
        ({"timeout": 1, "names": ["nope"]}, InvalidInput, "unknown projections"),
        ({"timeout": 1, "names": "totals"}, InvalidInput, "not a str"),
        ({"timeout": 1, "checkpoint": "not-a-checkpoint"}, InvalidCheckpoint, "not-a-checkpoint"),
    ],
)
async def test_wait_for_refuses_bad_input(
    store: EventStore, kwargs: dict[str, Any], error: type, match: str
) -> None:
    """Bad timeouts, names or checkpoints raise a specific error."""
    runner = ProjectionRunner(store, [Totals()])
    checkpoint = kwargs.pop("checkpoint", START)
    with pytest.raises(error, match=match):
        await runner.wait_for(checkpoint, **kwargs)
    await runner.stop()


# -- rebuild -------------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def reading(url: str, sql: str) -> AsyncIterator[list[tuple[Any, ...]]]:
    """Run ``sql`` over and over in a thread of its own while the block runs; yields the results."""
    seen: list[tuple[Any, ...]] = []
    stop = threading.Event()

    def read_continuously() -> None:
        db = open_read_models(url)
        try:
            while not stop.is_set():
                seen.append(db.query(sql)[0])
        finally:
            db.close()

    reader = threading.Thread(target=read_continuously)
    reader.start()
    try:
        yield seen
    finally:
        stop.set()
        await asyncio.to_thread(reader.join)


async def test_rebuild_reports_progress_serves_old_tables_and_swaps_atomically(
    url: str, store: EventStore
) -> None:
    """A rebuild shows done/total/rate/ETA while old tables serve; no reader sees half a swap; equals live."""
    await fill(store, 100, 10)
    projection = Gated()
    async with ProjectionRunner(store, [projection]) as runner:
        assert await runner.catch_up(timeout=WAIT)
        before = sorted(rows(runner, "SELECT * FROM totals"))
        assert len(before) == 100

        projection.gate_at = 600  # the rebuild (not the live worker) stops there until the gate opens
        started = await runner.rebuild("gated")
        assert (started.generation, started.state, started.total) == (2, "running", 1000)
        assert await asyncio.to_thread(projection.reached.wait, 10)

        status = await status_of(runner, "gated")
        progress = status.rebuild
        assert progress is not None
        assert progress.state == "running"
        assert 0 < progress.done < progress.total == 1000
        assert progress.events_per_second > 0
        assert progress.eta_seconds is not None
        assert progress.eta_seconds > 0
        left = (progress.total - progress.done) / progress.events_per_second
        assert progress.eta_seconds == pytest.approx(left, rel=0.05, abs=0.002)
        assert status.generation == 1  # the old generation still serves, complete
        assert sorted(rows(runner, "SELECT * FROM totals")) == before
        assert (await runner.rebuild("gated")).generation == 2  # the running rebuild, not another

        # A reader hammers the table through the swap: each read sees all of one generation.
        async with reading(url, "SELECT count(*), sum(total), sum(version) FROM totals") as seen:
            projection.gate.set()
            assert await runner.wait_rebuilt("gated", timeout=30)
        assert seen
        assert set(seen) == {(100, 100 * 55, 100 * 10)}

        status = await status_of(runner, "gated")
        assert status.generation == 2
        assert status.rebuild is not None
        assert status.rebuild.state == "done"
        assert sorted(rows(runner, "SELECT * FROM totals")) == before  # rebuild equals live
        tables = {r[0] for r in rows(runner, "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "totals__g2" in tables
        assert "totals__g1" not in tables  # the old generation is dropped after the swap

        finished = status.rebuild
        assert (finished.done, finished.total, finished.eta_seconds) == (1000, 1000, None)

        # The live worker follows the new generation.
        result = await store.append("s-0", [Added(1000)], expected_version=10)
        assert await runner.wait_for(result.checkpoint, timeout=WAIT)
        assert rows(runner, "SELECT total FROM totals WHERE stream = 's-0'") == [(1055,)]
        # A finished rebuild stays as it finished: its total no longer follows the head, nor its rate time.
        assert (await status_of(runner, "gated")).rebuild == finished

        # A rebuild by another process (as `eventvault rebuild` does) replaces the one run here:
        # the status shows the generation that serves, not this runner's old rebuild.
        async with ProjectionRunner(store, [Gated()]) as elsewhere:
            assert (await elsewhere.rebuild("gated")).generation == 3
            assert await elsewhere.wait_rebuilt("gated", timeout=30)
        status = await eventually_async(lambda: status_of(runner, "gated"), lambda s: s.generation == 3)
        assert status.rebuild is None


async def test_a_runner_prepared_again_after_a_stop_rebuilds(store: EventStore) -> None:
    """A runner that only prepares rebuilds; a stop before its latest prepare() does not end the rebuild."""
    await store.append("s-1", [Added(1)], expected_version=NO_STREAM)
    runner = ProjectionRunner(store, [Totals()])
    await runner.prepare()
    await runner.stop()
    await runner.prepare()
    try:
        await runner.rebuild("totals")
        assert await runner.wait_rebuilt("totals", timeout=60)
    finally:
        await runner.stop()


async def test_rebuild_and_resume_refuse_unknown_projections_and_a_stopped_runner(store: EventStore) -> None:
    """rebuild() and resume() name a projection of this runner; rebuild() needs it prepared or started."""
    runner = ProjectionRunner(store, [Totals()])
    with pytest.raises(InvalidInput, match="prepare or start the runner"):
        await runner.rebuild("totals")
    async with runner:
        with pytest.raises(InvalidInput, match="unknown projection 'nope'"):
            await runner.rebuild("nope")
        with pytest.raises(InvalidInput, match="unknown projection 'nope'"):
            await runner.resume("nope")
    assert await runner.wait_rebuilt("totals", timeout=0) is False


# -- partitions, leases, fencing -----------------------------------------------------------------


def owners(url: str, name: str) -> dict[int, str | None]:
    with sqlite3.connect(sqlite_path(url)) as conn:
        found = dict(
            conn.execute(
                "SELECT p.part, p.owner FROM ev_partition p JOIN ev_projection j "
                "ON j.name = p.name AND j.generation = p.generation WHERE p.name = ?",
                (name,),
            ).fetchall()
        )
    conn.close()
    return found


async def test_two_runners_share_partitions_and_apply_every_event_exactly_once(
    url: str, store: EventStore
) -> None:
    """Two workers split four partitions; each event is applied once, by its partition's owner."""
    a = ProjectionRunner(store, [Sums4("a")], worker_id="a", lease_seconds=1.5)
    b = ProjectionRunner(store, [Sums4("b")], worker_id="b", lease_seconds=1.5)
    async with a:
        await b.start()
        try:
            split = await eventually_async(
                lambda: asyncio.to_thread(owners, url, "sums4"),
                lambda o: sorted(map(str, o.values())) == ["a", "a", "b", "b"],
            )
            head = await fill(store, 40, 5)
            assert await a.wait_for(head, timeout=WAIT)
            applied = rows(a, "SELECT event_id, part, worker FROM applied")
            assert len(applied) == 200
            assert {r[0] for r in applied} == {str(e.event_id) async for e in store.iter_all()}
            assert all(split[part] == worker for _, part, worker in applied)
            assert {w for _, _, w in applied} == {"a", "b"}
        finally:
            await b.stop()
        # b gave its partitions back and left the worker count: a takes them all.
        await eventually_async(
            lambda: asyncio.to_thread(owners, url, "sums4"), lambda o: set(o.values()) == {"a"}
        )
        head = await fill(store, 40, 1, prefix="more")
        assert await a.wait_for(head, timeout=WAIT)
        assert rows(a, "SELECT count(*), count(DISTINCT event_id) FROM applied") == [(240, 240)]
        assert rows(a, "SELECT DISTINCT worker FROM applied WHERE position > 200") == [("a",)]
        assert sorted(rows(a, "SELECT stream, total FROM sums")) == sorted(
            [(f"s-{s}", 15) for s in range(40)] + [(f"more-{s}", 1) for s in range(40)]
        )


async def test_a_worker_whose_partition_was_taken_over_cannot_commit(
    url: str, store: EventStore, caplog: pytest.LogCaptureFixture
) -> None:
    """Once another worker took the partition (token bumped), the old holder's batches roll back."""
    first = await store.append("f-1", [Added(1)], expected_version=NO_STREAM)
    a = ProjectionRunner(store, [Sums("a")], worker_id="a", lease_seconds=3600)
    b = ProjectionRunner(store, [Sums("b")], worker_id="b", lease_seconds=1.5)
    async with a:
        assert await a.wait_for(first.checkpoint, timeout=WAIT)
        token = a.workers["sums"].owned[0]
        # a is presumed dead (its lease ran out) though it runs on: b takes the partition.
        with sqlite3.connect(sqlite_path(url)) as conn:
            conn.execute("UPDATE ev_partition SET expires = 0 WHERE name = 'sums'")
        conn.close()
        async with b:
            await eventually_async(lambda: asyncio.to_thread(owners, url, "sums"), lambda o: o == {0: "b"})
            assert b.workers["sums"].owned == {0: token + 1}
            assert a.workers["sums"].owned == {0: token}  # a does not know yet
            with caplog.at_level("INFO", logger="eventvault.projections"):
                second = await store.append("f-1", [Added(2)], expected_version=1)
                assert await b.wait_for(second.checkpoint, timeout=WAIT)
                # a was woken by the same append and tried: its batch was fenced.
                await eventually_async(
                    lambda: asyncio.sleep(0, a.workers["sums"].owned), lambda owned: owned == {}
                )
            assert any("taken over" in r.getMessage() for r in caplog.records)
            assert rows(a, "SELECT position, worker FROM applied ORDER BY position") == [
                (first.checkpoint.position, "a"),
                (second.checkpoint.position, "b"),
            ]
            assert rows(a, "SELECT total FROM sums") == [(3,)]


async def test_a_stop_gives_leases_back_and_a_restart_under_the_same_id_reclaims_its_own(
    url: str, store: EventStore
) -> None:
    """Stopping frees partitions; a crash's leases hold off others until expiry, not the same worker id."""
    head = await fill(store, 2, 2)
    async with ProjectionRunner(store, [Sums4("w1")], worker_id="w1", lease_seconds=3600) as runner:
        assert await runner.catch_up(timeout=WAIT)
    assert set(owners(url, "sums4").values()) == {None}
    with sqlite3.connect(sqlite_path(url)) as conn:
        assert conn.execute("SELECT count(*) FROM ev_worker").fetchone() == (0,)
        # What a kill -9 leaves: leases held for the next hour by a worker that is gone.
        conn.execute("UPDATE ev_partition SET owner = 'w1', expires = 1e12 WHERE name = 'sums4'")
    conn.close()
    later = await fill(store, 2, 1, prefix="later")
    async with ProjectionRunner(store, [Sums4("w2")], worker_id="w2", lease_seconds=3600) as other:
        assert not await other.wait_for(later, timeout=0.3)
    async with ProjectionRunner(store, [Sums4("w1")], worker_id="w1", lease_seconds=3600) as runner:
        assert await runner.wait_for(later, timeout=WAIT)
        assert runner.workers["sums4"].checkpoint() >= later > head


# -- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lease_seconds": 0}, "lease_seconds"),
        ({"lease_seconds": "10"}, "lease_seconds"),
        ({"idle_wait": -1}, "idle_wait"),
        ({"idle_wait": math.nan}, "idle_wait"),
        ({"retries": -1}, "retries"),
        ({"retries": 1.5}, "retries"),
        ({"retry_delay": -0.1}, "retry_delay"),
        ({"watch_interval": 0}, "watch_interval"),
        ({"worker_id": ""}, "worker_id"),
    ],
)
async def test_bad_runner_options_are_refused_and_nothing_is_written(
    url: str, store: EventStore, kwargs: dict[str, Any], match: str
) -> None:
    """Each bad option raises InvalidInput naming it, before any table is made."""
    with pytest.raises(InvalidInput, match=match):
        ProjectionRunner(store, [Totals()], **kwargs)
    assert ev_tables(url) == set()


class NoHandlers(Projection):
    name = "nothing"


class HandlesUnregistered(Projection):
    name = "unregistered"

    @handles(Unregistered)
    def _x(self, db: Session, e: RecordedEvent) -> None: ...


@pytest.mark.parametrize(
    ("projections", "error", "match"),
    [
        ("totals", InvalidInput, "list of Projection"),
        ([object()], InvalidInput, "Projection instances"),
        ([Totals(), Totals()], InvalidInput, "unique"),
        ([NoHandlers()], InvalidInput, "no @handles"),
        ([HandlesUnregistered()], InvalidEvent, "not a registered event type"),
    ],
)
async def test_bad_projections_are_refused_and_nothing_is_written(
    url: str, store: EventStore, projections: Any, error: type, match: str
) -> None:
    """A runner refuses what it could not run, with a specific error, before any table is made."""
    with pytest.raises(error, match=match):
        ProjectionRunner(store, projections)
    assert ev_tables(url) == set()


@pytest.mark.parametrize(
    ("attrs", "match"),
    [
        ({"name": "Bad-Name"}, "projection name"),
        ({"name": "ok", "tables": ("No Spaces",)}, "table name"),
        ({"name": "ok", "partitions": 0}, "partitions"),
        ({"name": "ok", "batch_size": 0}, "batch_size"),
        ({"name": "ok", "batch_size": 10_001}, "batch_size"),
    ],
)
def test_bad_projection_classes_are_refused_at_definition(attrs: dict[str, Any], match: str) -> None:
    """Names, tables, partitions and batch sizes are checked when the class is defined."""
    with pytest.raises(EventTypeError, match=match):
        type("Bad", (Projection,), attrs)


async def test_read_model_databases_refuse_what_they_cannot_serve() -> None:
    """A memory store has no SQL database, :memory: cannot be shared, schema names are plain identifiers."""
    async with open_store("memory://", registry=reg) as store:
        with pytest.raises(InvalidInput, match="no SQL database"):
            read_models_for(store)
    with pytest.raises(InvalidStoreURL, match="SQLite file"):
        open_read_models("sqlite:///:memory:")
    with pytest.raises(InvalidStoreURL, match="sqlite:/// or postgresql://"):
        open_read_models("mysql://db/x")
    with pytest.raises(InvalidInput, match="schema"):
        PostgresReadModels("postgresql://nowhere/db", schema='x"; DROP TABLE events; --')


@pytest.mark.parametrize(("durable", "synchronous"), [(False, 1), (True, 2)])
def test_sqlite_read_models_wait_for_the_disk_only_when_durable(tmp_path, durable, synchronous):
    """Derived data commits without a sync by default (NORMAL); durable=True syncs every commit (FULL)."""
    db = open_read_models(f"sqlite:///{tmp_path / 'rm.db'}", durable=durable)
    try:
        with db.transaction() as conn:
            assert db.execute(conn, "PRAGMA synchronous").fetchone()[0] == synchronous
            db.execute(conn, "CREATE TABLE t (x INTEGER)")
            db.execute(conn, "INSERT INTO t VALUES (1)")
        assert db.query("SELECT x FROM t") == [(1,)]  # committed and visible either way
    finally:
        db.close()
