"""What only the SQLite backend promises: pragmas, schema, group commit, processes, errors.

The generic behaviour of a store is pinned by the contract suite (test_contract.py).
Tests that need appends to queue up hold the writer thread on a gate job, so
the batch a transaction carries is decided by the test, not by timing.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import multiprocessing
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from eventvault import (
    ANY,
    NO_STREAM,
    REDACTED,
    AppendCondition,
    AppendConditionFailed,
    Checkpoint,
    DuplicateEventId,
    EventRegistry,
    EventStore,
    InvalidInput,
    InvalidStoreURL,
    InvalidStreamId,
    NewEvent,
    Query,
    QueryItem,
    SchemaVersionError,
    Snapshot,
    StoreClosed,
    StoreError,
    StoreUnavailable,
    StreamDeleted,
    WrongExpectedVersion,
    create_store,
    event,
    personal,
)
from eventvault.store.records import START, AppendResult, RecordedEvent
from eventvault.store.sqlite import SCHEMA_VERSION, SQLiteEventStore
from eventvault.store.sqlite import reads as sqlite_reads
from eventvault.store.sqlite import schema as sqlite_schema
from eventvault.store.sqlite import writer as sqlite_writer
from eventvault.store.sqlite.writes import Append

reg = EventRegistry()


@event("sqlite_test.Noted", registry=reg)
@dataclass(frozen=True, slots=True)
class Noted:
    text: str


def sqlite_url(path: Path, query: str = "") -> str:
    return f"sqlite:///{path}" + (f"?{query}" if query else "")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "events.db"


@pytest.fixture
async def store(db: Path) -> AsyncIterator[SQLiteEventStore]:
    s = create_store(sqlite_url(db), registry=reg)
    assert isinstance(s, SQLiteEventStore)
    async with s:
        yield s


@pytest.fixture
def fast_commits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every commit counts as quick for writer=auto, however loaded the machine is."""
    monkeypatch.setattr(sqlite_writer, "_INLINE_COMMIT_US", math.inf)


def raw(db: Path) -> sqlite3.Connection:
    """A plain sqlite3 connection to the store's file, playing another program."""
    return sqlite3.connect(db, isolation_level=None)


def on_writer(store: EventStore, fn: Any) -> Any:
    """Run ``fn(cursor)`` on the writer's connection and return its result."""
    assert isinstance(store, SQLiteEventStore)
    return store._on_writer(fn)


def pragma(name: str) -> Any:
    return lambda cur: cur.execute(f"PRAGMA {name}").fetchone()[0]


@contextlib.asynccontextmanager
async def writer_held(store: SQLiteEventStore) -> AsyncIterator[threading.Event]:
    """Keep the writer thread busy inside a job until the block ends (or release is set)."""
    started, release = threading.Event(), threading.Event()

    def gate(cur: sqlite3.Cursor) -> None:
        started.set()
        release.wait(30)

    held = store._submit(store._wq, gate, (), write=False)
    assert await asyncio.to_thread(started.wait, 30), "the writer never took the gate job"
    try:
        yield release
    finally:
        release.set()
        await held


def queue_append(
    store: SQLiteEventStore, stream_id: str, events: Iterable[object], expected: Any
) -> asyncio.Future[AppendResult]:
    """Put an append on the writer's queue now (append() would only do so when awaited)."""
    return store._submit_append(Append(stream_id, store.prepare(events), expected))


async def poison_commits(store: SQLiteEventStore, db: Path) -> None:
    """Make every COMMIT of a transaction that appended to stream "poison" fail.

    A deferred foreign key is checked only at COMMIT, so the whole transaction fails there.
    """
    with contextlib.closing(raw(db)) as c:
        c.executescript(
            """
            CREATE TABLE poison_parent (id INTEGER PRIMARY KEY);
            CREATE TABLE poison_child (
                parent INTEGER REFERENCES poison_parent (id) DEFERRABLE INITIALLY DEFERRED
            );
            CREATE TRIGGER poison AFTER INSERT ON events WHEN NEW.stream_id = 'poison'
            BEGIN INSERT INTO poison_child VALUES (42); END;
            """
        )
    await on_writer(store, lambda cur: cur.execute("PRAGMA foreign_keys = ON"))


async def outcomes(futures: Iterable[asyncio.Future[Any]]) -> list[Any]:
    return await asyncio.gather(*futures, return_exceptions=True)


# -- options and pragmas ------------------------------------------------------------


async def test_wal_full_and_busy_timeout_by_default(store, db):
    """A default store is in WAL mode, syncs FULL and waits 5 s for other writers."""
    assert await on_writer(store, pragma("journal_mode")) == "wal"
    assert await on_writer(store, pragma("synchronous")) == 2  # FULL
    assert await on_writer(store, pragma("busy_timeout")) == 5000
    with contextlib.closing(raw(db)) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # stored in the file


@pytest.mark.parametrize(("query", "level"), [("synchronous=NORMAL", 1), ("synchronous=extra", 3)])
async def test_synchronous_only_when_asked(db, query, level):
    """synchronous=NORMAL (or EXTRA) from the URL is what the writer connection uses."""
    async with create_store(sqlite_url(db, query), registry=reg) as s:
        assert await on_writer(s, pragma("synchronous")) == level


async def test_busy_timeout_option_in_seconds(db):
    """busy_timeout is given in seconds and may be a fraction."""
    async with create_store(sqlite_url(db, "busy_timeout=0.25"), registry=reg) as s:
        assert await on_writer(s, pragma("busy_timeout")) == 250


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ("synchronous=OFF", ["synchronous", "FULL", "NORMAL", "'OFF'"]),
        ("synchronous=", ["synchronous", "FULL"]),
        ("busy_timeout=soon", ["busy_timeout", "seconds", "'soon'"]),
        ("busy_timeout=-1", ["busy_timeout", "'-1'"]),
        ("busy_timeout=nan", ["busy_timeout"]),
        ("readers=many", ["readers", "0 to 64", "'many'"]),
        ("readers=65", ["readers", "'65'"]),
        ("writer=fast", ["writer", "auto, thread", "'fast'"]),
        ("frobnicate=1", ["'frobnicate'", "busy_timeout, read_models, readers, synchronous, writer"]),
        ("read_models=", ["read_models", "path of a SQLite file"]),
        ("read_models=:memory:", ["read_models", "':memory:'"]),
    ],
)
def test_bad_option_rejected_before_touching_the_file(db, query, words):
    """A bad or unknown option raises InvalidStoreURL naming it and the allowed values; no file appears."""
    with pytest.raises(InvalidStoreURL) as info:
        create_store(sqlite_url(db, query), registry=reg)
    for word in words:
        assert word in str(info.value)
    assert not db.exists()


@pytest.mark.parametrize(
    ("options", "word"),
    [
        ({"busy_timeout": True}, "busy_timeout"),
        ({"readers": 2.0}, "readers"),
        ({"synchronous": 1}, "synchronous"),
    ],
)
def test_bad_keyword_option_rejected(db, options, word):
    """Options given as keyword arguments are checked like the URL's."""
    with pytest.raises(InvalidStoreURL, match=word):
        create_store(sqlite_url(db), registry=reg, **options)


def test_read_models_option_names_a_file_beside_the_store(tmp_path):
    """?read_models=FILE: relative to the store's folder, absolute as given; never the store's own file."""

    def read_models_path(query: str = "") -> str:
        store = create_store(sqlite_url(tmp_path / "log.db", query), registry=reg)
        assert isinstance(store, SQLiteEventStore)
        return store.read_models_path

    assert read_models_path("read_models=views.db") == str(tmp_path / "views.db")
    elsewhere = tmp_path / "other" / "views.db"
    with pytest.raises(InvalidStoreURL, match=f"the folder {elsewhere.parent} does not exist"):
        read_models_path(f"read_models={elsewhere}")
    elsewhere.parent.mkdir()
    assert read_models_path(f"read_models={elsewhere}") == str(elsewhere)
    as_path = create_store(sqlite_url(tmp_path / "log.db"), registry=reg, read_models=elsewhere)
    assert isinstance(as_path, SQLiteEventStore)
    assert as_path.read_models_path == str(elsewhere)  # a keyword argument may be a Path
    assert read_models_path() == str(tmp_path / "log.db")
    with pytest.raises(InvalidStoreURL, match="store's own file"):
        read_models_path("read_models=log.db")
    with pytest.raises(InvalidStoreURL, match="needs a store in a file"):
        create_store("sqlite:///:memory:?read_models=views.db", registry=reg)
    assert not (tmp_path / "log.db").exists()


def test_memory_database_refuses_reader_connections():
    """A :memory: store refuses reader connections: each would be a database of its own."""
    with pytest.raises(InvalidStoreURL, match="readers must be 0"):
        create_store("sqlite:///:memory:?readers=2", registry=reg)


def test_relative_path_is_resolved_when_the_store_is_made(tmp_path, monkeypatch):
    """sqlite:///rel.db means rel.db in the working directory of the moment the store is made."""
    monkeypatch.chdir(tmp_path)
    s = create_store("sqlite:///rel.db", registry=reg)
    assert isinstance(s, SQLiteEventStore)
    assert s.path == str(tmp_path.resolve() / "rel.db")
    absolute = create_store(f"sqlite:///{tmp_path / 'abs.db'}", registry=reg)
    assert isinstance(absolute, SQLiteEventStore)
    assert absolute.path == str((tmp_path / "abs.db").resolve())


# -- schema ---------------------------------------------------------------------------


def tables(db: Path) -> set[str]:
    with contextlib.closing(raw(db)) as c:
        return {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def schema_rows(db: Path) -> list[tuple[str, int]]:
    with contextlib.closing(raw(db)) as c:
        return c.execute("SELECT component, version FROM eventvault_schema").fetchall()


async def test_schema_created_once_and_reopen_is_idempotent(db):
    """Opening creates the tables and the version row once; reopening changes nothing and keeps the data."""
    async with create_store(sqlite_url(db), registry=reg) as s:
        await s.append("s-1", [Noted("a")], expected_version=NO_STREAM)
    assert tables(db) == {
        "events",
        "event_tags",
        "snapshots",
        "eventvault_schema",
        "stream_rules",
        "subject_keys",
    }
    assert schema_rows(db) == [("store", SCHEMA_VERSION)]
    for _ in range(2):
        async with create_store(sqlite_url(db), registry=reg) as s:
            assert [e.data for e in await s.read_stream("s-1")] == [Noted("a")]
    assert schema_rows(db) == [("store", SCHEMA_VERSION)]


async def test_opening_an_up_to_date_file_does_not_wait_for_writers(db):
    """Reopening a migrated file takes no write lock, so another program's long write does not block it."""
    async with create_store(sqlite_url(db), registry=reg):
        pass
    with contextlib.closing(raw(db)) as other:
        other.execute("BEGIN IMMEDIATE")
        async with create_store(sqlite_url(db, "busy_timeout=0.05"), registry=reg) as s:
            assert await s.stream_version("s-1") == 0
        other.execute("ROLLBACK")


async def test_stores_opening_one_new_file_together(db):
    """Eight stores opening the same new file at once all succeed and the schema is made once."""
    stores = [create_store(sqlite_url(db), registry=reg) for _ in range(8)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        results = await asyncio.gather(
            *(s.append(f"s-{i}", [Noted(str(i))], expected_version=NO_STREAM) for i, s in enumerate(stores))
        )
        assert sorted(p for r in results for p in r.positions) == list(range(1, 9))
    finally:
        await asyncio.gather(*(s.close() for s in stores))
    assert schema_rows(db) == [("store", SCHEMA_VERSION)]


async def test_newer_schema_version_is_refused(db):
    """A file from newer code raises SchemaVersionError naming both versions; no thread is left."""
    async with create_store(sqlite_url(db), registry=reg):
        pass
    with contextlib.closing(raw(db)) as c:
        c.execute("UPDATE eventvault_schema SET version = 99 WHERE component = 'store'")
    s = create_store(sqlite_url(db), registry=reg)
    assert isinstance(s, SQLiteEventStore)
    with pytest.raises(SchemaVersionError) as info:
        await s.open()
    assert "99" in str(info.value)
    assert f"newer than the {SCHEMA_VERSION} this code knows" in str(info.value)
    assert str(db) in str(info.value)
    assert s._threads == []
    assert schema_rows(db) == [("store", 99)]
    await s.close()


# -- group commit ---------------------------------------------------------------------


async def test_waiting_appends_share_one_transaction(store):
    """All appends waiting while the writer is busy are committed by one transaction."""
    before = store.stats.transactions
    async with writer_held(store):
        futures = [queue_append(store, f"s-{i}", [Noted(str(i))], NO_STREAM) for i in range(20)]
    results = await asyncio.gather(*futures)
    assert store.stats.transactions == before + 1
    assert store.stats.appends == 20
    assert store.stats.largest_batch >= 20
    assert [r.positions for r in results] == [(i,) for i in range(1, 21)]
    assert (await store.head()).position == 20


async def test_concurrent_appends_land_in_fewer_transactions(store):
    """Many appends awaited concurrently through the public API are group-committed."""
    results = await asyncio.gather(
        *(store.append(f"s-{i}", [Noted(str(i))], expected_version=NO_STREAM) for i in range(100))
    )
    assert store.stats.appends == 100
    assert store.stats.transactions < 50
    assert sorted(r.positions[0] for r in results) == list(range(1, 101))


async def append_in_turn(store: SQLiteEventStore, stream_id: str, count: int) -> None:
    """One writer: ``count`` one-event appends to ``stream_id``, each awaited before the next."""
    for v in range(count):
        await store.append(stream_id, [Noted(str(v))], expected_version=NO_STREAM if v == 0 else v)


@contextlib.asynccontextmanager
async def loop_turns() -> AsyncIterator[Callable[[], int]]:
    """Count the turns other tasks get on this loop: a task ready at every turn, never appending."""
    turns = 0

    async def bystander() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    task = asyncio.create_task(bystander())
    await asyncio.sleep(0)  # it has started
    start = turns
    try:
        yield lambda: turns - start
    finally:
        task.cancel()


@pytest.fixture
def no_hold_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lone writer's yields are decided by its count of appends only, not by how long they take."""
    monkeypatch.setattr(sqlite_writer, "_ALONE_HOLD_S", math.inf)


async def test_a_lone_writer_stops_yielding_to_the_loop_but_still_looks_for_company(
    store, fast_commits, no_hold_limit
):
    """A writer nobody joins commits its appends at once, yielding only every so often to be joined."""
    async with loop_turns() as turns:
        await append_in_turn(store, "warm", sqlite_writer._ALONE_AFTER)
        assert turns() == sqlite_writer._ALONE_AFTER  # each led a group: one turn of the loop each
    alone = 4 * sqlite_writer._ALONE_LOOK_EVERY
    async with loop_turns() as turns:
        await append_in_turn(store, "alone", alone)
        assert 1 <= turns() <= alone // sqlite_writer._ALONE_LOOK_EVERY + 1
    assert store.stats.inline_transactions == store.stats.transactions == store.stats.appends
    assert store.stats.largest_batch == 1


async def test_a_lone_writer_that_held_the_loop_long_enough_gives_it_a_turn(store, fast_commits, monkeypatch):
    """However few its appends since the last turn, a lone writer yields once it held the loop that long."""
    await append_in_turn(store, "warm", 2 * sqlite_writer._ALONE_AFTER)
    monkeypatch.setattr(sqlite_writer, "_ALONE_HOLD_S", 0.0)  # every append has held it long enough
    async with loop_turns() as turns:
        await append_in_turn(store, "alone", 2 * sqlite_writer._ALONE_LOOK_EVERY)
        assert turns() == 2 * sqlite_writer._ALONE_LOOK_EVERY


async def test_concurrent_writers_after_a_lone_one_are_group_committed(store, fast_commits, no_hold_limit):
    """Writers that start while one has been alone for a while are noticed and share transactions again."""
    alone = 3 * sqlite_writer._ALONE_LOOK_EVERY + 1  # the next append is not one that looks
    await append_in_turn(store, "alone", alone)
    before = store.stats.transactions
    await asyncio.gather(*(append_in_turn(store, f"s-{i}", 10) for i in range(32)))
    assert store.stats.appends == alone + 320
    # At most one look's worth of appends commit alone before the others are seen.
    assert store.stats.transactions - before <= sqlite_writer._ALONE_LOOK_EVERY + 20
    assert store.stats.largest_batch >= 16
    before = store.stats.transactions
    await asyncio.gather(append_in_turn(store, "a", 100), append_in_turn(store, "b", 100))
    assert store.stats.transactions - before <= 100 + 2 * sqlite_writer._ALONE_LOOK_EVERY  # mostly pairs
    assert [await store.stream_version(s) for s in ("a", "b", "s-31")] == [100, 100, 10]


# -- where a commit runs (writer=auto | thread) ------------------------------------------


def committing_threads(store: SQLiteEventStore) -> list[str]:
    """The names of the threads that commit the store's next transactions, in order."""
    names: list[str] = []
    store.add_commit_listener(lambda _head: names.append(threading.current_thread().name))
    return names


async def test_with_fast_commits_appends_commit_on_the_loops_thread(store, fast_commits):
    """writer=auto: a lone append, and a group of concurrent ones, commit right on the event loop's thread."""
    here = threading.current_thread().name
    threads = committing_threads(store)
    first = await store.append("s-0", [Noted("0")], expected_version=NO_STREAM)
    results = await asyncio.gather(
        *(store.append(f"s-{i}", [Noted(str(i))], expected_version=NO_STREAM) for i in range(1, 11))
    )
    assert threads == [here, here]  # the ten concurrent appends are one group, one transaction
    assert store.stats.inline_transactions == store.stats.transactions == 2
    assert first.positions == (1,)
    assert sorted(r.positions[0] for r in results) == list(range(2, 12))
    assert [e.stream_id for e in await store.read_all()] == [f"s-{i}" for i in range(11)]


async def test_writer_thread_option_keeps_every_commit_off_the_loop(db):
    """writer=thread: every transaction commits on the writer thread."""
    async with create_store(sqlite_url(db, "writer=thread"), registry=reg) as s:
        assert isinstance(s, SQLiteEventStore)
        threads = committing_threads(s)
        await s.append("s-0", [Noted("0")], expected_version=NO_STREAM)
        await asyncio.gather(*(s.append(f"s-{i}", [Noted("x")], expected_version=NO_STREAM) for i in (1, 2)))
        assert threads
        assert all(name == "eventvault-sqlite-writer" for name in threads)
        assert s.stats.inline_transactions == 0
        assert (await s.head()).position == 3


async def test_slow_commits_go_to_the_writer_thread(store, monkeypatch):
    """While commits take longer than the inline limit, writer=auto hands them to the writer thread."""
    threads = committing_threads(store)
    await store.append("s-0", [Noted("0")], expected_version=NO_STREAM)
    monkeypatch.setattr(sqlite_writer, "_INLINE_COMMIT_US", 0.0)  # every commit counts as slow
    monkeypatch.setattr(sqlite_writer, "_RETRY_INLINE_S", math.inf)  # and none is tried on the loop again
    await store.append("s-0", [Noted("1")], expected_version=1)
    await asyncio.gather(*(store.append(f"s-{i}", [Noted("x")], expected_version=NO_STREAM) for i in (1, 2)))
    assert threads[0] == threading.current_thread().name
    assert len(threads) >= 2
    assert all(name == "eventvault-sqlite-writer" for name in threads[1:])
    assert store.stats.inline_transactions == 1


async def test_commits_on_the_writer_thread_try_the_loops_thread_again(store, monkeypatch):
    """Gone to the writer thread, commits come back to the loop's thread once a retry is due."""
    threads = committing_threads(store)
    timed_on: list[str] = []
    average = sqlite_writer.moved_average

    def recorded(average_us: float, sample_us: float) -> float:
        timed_on.append(threading.current_thread().name)
        return average(average_us, sample_us)

    monkeypatch.setattr(sqlite_writer, "moved_average", recorded)
    await store.append("s-0", [Noted("0")], expected_version=NO_STREAM)
    monkeypatch.setattr(sqlite_writer, "_INLINE_COMMIT_US", 0.0)  # every commit counts as slow
    monkeypatch.setattr(sqlite_writer, "_RETRY_INLINE_S", math.inf)
    await store.append("s-0", [Noted("1")], expected_version=1)
    monkeypatch.setattr(sqlite_writer, "_RETRY_INLINE_S", 0.0)  # a retry is due at once
    await store.append("s-0", [Noted("2")], expected_version=2)

    here = threading.current_thread().name
    assert threads == [here, "eventvault-sqlite-writer", here]
    # Only the loop's thread times its commits: the writer thread's time includes its wait for the GIL.
    assert timed_on == [here, here]
    assert store.stats.inline_transactions == 2


def test_one_slow_commit_keeps_commits_on_the_loop_and_a_run_of_them_does_not():
    """A lone slow COMMIT (a checkpoint) counts as twice the limit at most; three slow ones pass it."""
    limit = sqlite_writer._INLINE_COMMIT_US
    average = 400.0  # a fast disk's commits
    after_one = sqlite_writer.moved_average(average, 50_000.0)
    assert after_one < limit
    assert sqlite_writer.moved_average(after_one, 400.0) < after_one
    slow = average
    for _ in range(3):
        slow = sqlite_writer.moved_average(slow, 5_000.0)
    assert slow >= limit


async def test_the_loop_never_waits_for_another_process_lock(db, fast_commits):
    """With the write lock held elsewhere, an append waits on the writer thread; the loop runs on."""
    async with create_store(sqlite_url(db, "busy_timeout=30"), registry=reg) as s:
        assert isinstance(s, SQLiteEventStore)
        await s.append("s-0", [Noted("0")], expected_version=NO_STREAM)  # commits are fast: inline
        with contextlib.closing(raw(db)) as other:
            other.execute("BEGIN IMMEDIATE")
            appending = asyncio.create_task(s.append("s-1", [Noted("1")], expected_version=NO_STREAM))
            for _ in range(5):  # had the loop's thread waited for the lock, the task would be done or failed
                await asyncio.sleep(0)
            assert not appending.done()
            other.execute("COMMIT")
            result = await appending
        assert result.positions == (2,)
        assert s.stats.inline_transactions == 1
        # The next append is quick again, and the busy timeout is back for the writer thread.
        assert (await s.append("s-2", [Noted("2")], expected_version=NO_STREAM)).positions == (3,)
        assert await on_writer(s, pragma("busy_timeout")) == 30000


async def test_a_lone_append_whose_commit_fails_is_not_stored(store, db, fast_commits):
    """COMMIT failing on the loop's thread fails that append with a StoreError; the store goes on."""
    await poison_commits(store, db)
    with pytest.raises(StoreError, match="FOREIGN KEY") as info:
        await store.append("poison", [Noted("p")], expected_version=NO_STREAM)
    assert not isinstance(info.value, sqlite3.Error)
    assert await store.head() == START
    assert (await store.append("good", [Noted("g")], expected_version=NO_STREAM)).positions == (1,)
    assert store.stats.inline_transactions == 1


async def test_a_batch_with_deleted_streams_in_it_decides_each_append_by_its_rules(store):
    """In one transaction: a deleted stream is at no stream, a tombstoned one refuses, the others land."""
    await store.append("gone", [Noted("old")], expected_version=NO_STREAM)
    await store.delete_stream("gone", expected_version=1)
    await store.append("closed", [Noted("old")], expected_version=NO_STREAM)
    await store.delete_stream("closed", expected_version=1, tombstone=True)
    before = store.stats.transactions
    async with writer_held(store):
        futures = [
            queue_append(store, "fresh", [Noted("f")], NO_STREAM),
            queue_append(store, "closed", [Noted("no")], ANY),  # ANY holds at any version: not here
            queue_append(store, "gone", [Noted("again")], ANY),  # written again, after its delete
            queue_append(store, "gone-too", [Noted("g")], NO_STREAM),
        ]
    fresh, closed, gone, other = await outcomes(futures)
    assert store.stats.transactions == before + 1
    assert isinstance(closed, StreamDeleted)
    assert (fresh.stream_version, gone.stream_version, other.stream_version) == (1, 3, 1)
    assert [e.data for e in await store.read_stream("gone")] == [Noted("again")]


async def test_a_conflict_in_a_batch_fails_only_its_own_append(store):
    """Wrong versions and duplicate ids fail alone; the other appends of the transaction commit."""
    retried = NewEvent(Noted("c"))
    shared = NewEvent(Noted("shared"))
    before = store.stats.transactions
    async with writer_held(store):
        futures = [
            queue_append(store, "a", [shared], NO_STREAM),  # lands
            queue_append(store, "b", [Noted("b")], 5),  # wrong version
            queue_append(store, "c", [retried], NO_STREAM),  # lands
            queue_append(store, "d", [shared], NO_STREAM),  # id already in "a"
            queue_append(store, "a", [Noted("a2")], 1),  # sees "a" at 1 inside the batch
            queue_append(store, "c", [retried], NO_STREAM),  # a retry: the first result
            queue_append(store, "e", [Noted("e1"), Noted("e2")], ANY),  # lands
        ]
    a1, b, c, d, a2, c_again, e = await outcomes(futures)
    assert store.stats.transactions == before + 1
    assert isinstance(b, WrongExpectedVersion)
    assert (b.stream_id, b.expected, b.actual) == ("b", 5, 0)
    assert isinstance(d, DuplicateEventId)
    assert "'a'" in str(d)
    assert c_again == c
    assert (a1.positions, c.positions, a2.positions, e.positions) == ((1,), (2,), (3,), (4, 5))
    assert a2.stream_version == 2
    assert store.stats.appends == 4
    assert [await store.stream_version(s) for s in "abcde"] == [2, 0, 1, 0, 2]
    page = await store.read_all()
    assert [x.position for x in page] == [1, 2, 3, 4, 5]
    assert [x.data.text for x in page] == ["shared", "c", "a2", "e1", "e2"]


async def test_appends_to_one_stream_in_one_batch_follow_each_other(store):
    """Two appends to one stream in one transaction get consecutive versions and positions."""
    async with writer_held(store):
        futures = [
            queue_append(store, "s", [Noted("1")], ANY),
            queue_append(store, "t", [Noted("t")], NO_STREAM),
            queue_append(store, "s", [Noted("2"), Noted("3")], ANY),
        ]
    first, other, second = await asyncio.gather(*futures)
    assert (first.stream_version, first.positions) == (1, (1,))
    assert (other.stream_version, other.positions) == (1, (2,))
    assert (second.stream_version, second.positions) == (3, (3, 4))
    assert [e.data.text for e in await store.read_stream("s")] == ["1", "2", "3"]


async def test_an_id_stored_before_fails_only_its_append_in_a_batch_that_otherwise_holds(store):
    """An event id already in another stream fails its own append; the rest of the batch lands."""
    taken = NewEvent(Noted("taken"))
    await store.append("x", [taken], expected_version=NO_STREAM)
    before = store.stats.transactions
    async with writer_held(store):
        futures = [
            queue_append(store, "y", [Noted("y")], NO_STREAM),
            queue_append(store, "z", [taken], NO_STREAM),
            queue_append(store, "w", [Noted("w1"), Noted("w2")], NO_STREAM),
        ]
    y, z, w = await outcomes(futures)
    assert isinstance(z, DuplicateEventId)
    assert "'x'" in str(z)
    assert (y.positions, w.positions) == ((2,), (3, 4))
    assert store.stats.transactions == before + 1
    assert [await store.stream_version(s) for s in "xyzw"] == [1, 1, 0, 2]


async def test_a_failed_commit_fails_every_append_of_the_batch(store, db):
    """If COMMIT fails, every append of the batch fails with a StoreError and none of them is stored."""
    await poison_commits(store, db)
    before = store.stats.transactions
    async with writer_held(store):
        futures = [
            queue_append(store, "good-1", [Noted("1")], NO_STREAM),
            queue_append(store, "poison", [Noted("p")], NO_STREAM),
            queue_append(store, "good-2", [Noted("2")], NO_STREAM),
        ]
    results = await outcomes(futures)
    for r in results:
        assert type(r) is StoreError
        assert "FOREIGN KEY" in str(r)
    assert store.stats.transactions == before
    assert await store.head() == START
    assert [await store.stream_version(s) for s in ("good-1", "poison", "good-2")] == [0, 0, 0]
    # The writer goes on: the next transaction commits.
    result = await store.append("good-1", [Noted("1")], expected_version=NO_STREAM)
    assert result.positions == (1,)


async def test_commit_listeners_hear_each_commit_before_the_append_returns(store):
    """Listeners get the head of each commit before append returns; removed ones hear nothing."""
    heard: list[Checkpoint] = []
    remove = store.add_commit_listener(heard.append)
    first = await store.append("s-1", [Noted("a"), Noted("b")], expected_version=NO_STREAM)
    assert heard == [first.checkpoint]
    with pytest.raises(WrongExpectedVersion):
        await store.append("s-1", [Noted("c")], expected_version=NO_STREAM)
    assert heard == [first.checkpoint]  # a failed append commits nothing
    remove()
    await store.append("s-1", [Noted("c")], expected_version=2)
    assert heard == [first.checkpoint]


async def test_a_failing_listener_does_not_fail_the_append(store, caplog):
    """An exception in a commit listener is logged; the append still succeeds."""

    def broken(head: Checkpoint) -> None:
        raise RuntimeError("listener bug")

    store.add_commit_listener(broken)
    with caplog.at_level(logging.ERROR, logger="eventvault.store.sqlite"):
        result = await store.append("s-1", [Noted("a")], expected_version=NO_STREAM)
    assert result.stream_version == 1
    assert "listener" in caplog.text
    with pytest.raises(InvalidInput):
        store.add_commit_listener("not callable")


async def test_reads_do_not_wait_for_the_writer(store):
    """Reads use their own connections: they answer while the writer thread is busy."""
    await store.append("s-1", [Noted("a")], expected_version=NO_STREAM)
    async with writer_held(store):
        assert await asyncio.wait_for(store.stream_version("s-1"), 10) == 1
        assert len(await asyncio.wait_for(store.read_all(), 10)) == 1
        assert len(await asyncio.wait_for(store.read_stream("s-1"), 10)) == 1


async def test_memory_databases_are_private_and_complete():
    """Each sqlite:///:memory: store is a database of its own that reads and writes on one connection."""
    async with (
        create_store("sqlite:///:memory:", registry=reg) as one,
        create_store("sqlite:///:memory:", registry=reg) as two,
    ):
        await one.append("s-1", [Noted("a")], expected_version=NO_STREAM)
        assert await two.stream_version("s-1") == 0
        assert [e.data for e in await one.read_stream("s-1")] == [Noted("a")]
        assert (await one.head()).position == 1
        page = await one.read_all(event_types=["other"])
        assert (list(page), page.checkpoint) == ([], Checkpoint(0, 1))


# -- lifecycle -----------------------------------------------------------------------


async def test_data_survives_close_and_reopen(db):
    """Events, versions, the head and snapshots are all there after close and reopen."""
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    async with create_store(sqlite_url(db), registry=reg) as s:
        first = await s.append("s-1", [Noted("a"), Noted("b")], expected_version=NO_STREAM)
        await s.append("s-2", [Noted("c")], expected_version=NO_STREAM)
        await s.save_snapshot(Snapshot("s-1", 2, 1, b'{"n":2}', when))
    async with create_store(sqlite_url(db), registry=reg) as s:
        events = await s.read_stream("s-1")
        assert [(e.data, e.stream_version, e.position) for e in events] == [
            (Noted("a"), 1, 1),
            (Noted("b"), 2, 2),
        ]
        assert [e.event_id for e in events] == [
            e.event_id for e in (await s.read_all()).events if e.stream_id == "s-1"
        ]
        assert first.checkpoint == events[-1].checkpoint
        assert await s.stream_version("s-2") == 1
        assert await s.head() == Checkpoint(0, 3)
        assert await s.load_snapshot("s-1", schema_version=1) == Snapshot("s-1", 2, 1, b'{"n":2}', when)
        third = await s.append("s-1", [Noted("d")], expected_version=2)
        assert third.positions == (4,)


async def test_calls_after_close_raise_store_closed(store):
    """Every call on a closed store raises StoreClosed; closing again is fine."""
    await store.close()
    calls = [
        store.append("s-1", [Noted("a")], expected_version=NO_STREAM),
        store.read_stream("s-1"),
        store.read_all(),
        store.head(),
        store.stream_version("s-1"),
        store.save_snapshot(Snapshot("s-1", 1, 1, b"{}", datetime.now(UTC))),
        store.load_snapshot("s-1", schema_version=1),
        store.open(),
    ]
    for call in calls:
        with pytest.raises(StoreClosed):
            await call
    await store.close()
    assert not any(t.is_alive() for t in threading.enumerate() if t.name.startswith("eventvault-sqlite"))


async def test_appends_pending_at_close_raise_store_closed(store, db):
    """Appends still queued when close() begins fail with StoreClosed and are not stored."""
    async with writer_held(store) as release:
        futures = [queue_append(store, f"s-{i}", [Noted(str(i))], NO_STREAM) for i in range(3)]
        closing = asyncio.create_task(store.close())
        # Runs after the close task's first step (callbacks run in the order
        # they are scheduled), so the store is closed before the writer is free.
        asyncio.get_running_loop().call_soon(release.set)
        await closing
    for r in await outcomes(futures):
        assert isinstance(r, StoreClosed)
    async with create_store(sqlite_url(db), registry=reg) as again:
        assert await again.head() == START


async def test_the_store_opens_on_first_use(db):
    """A store that was made but not opened opens itself on the first call."""
    s = create_store(sqlite_url(db), registry=reg)
    try:
        assert (await s.append("s-1", [Noted("a")], expected_version=NO_STREAM)).positions == (1,)
    finally:
        await s.close()


# -- errors ----------------------------------------------------------------------------


async def test_unopenable_path_is_store_unavailable_naming_it(tmp_path):
    """A file that cannot be opened gives StoreUnavailable with the path in the message."""
    path = tmp_path / "no-such-directory" / "events.db"
    s = create_store(sqlite_url(path), registry=reg)
    with pytest.raises(StoreUnavailable) as info:
        await s.open()
    assert str(path) in str(info.value)
    assert not isinstance(info.value, sqlite3.Error)
    await s.close()


async def test_corrupt_file_is_store_error(db):
    """A file that is not a database gives a StoreError with SQLite's message, never a sqlite3 error."""
    db.write_bytes(b"this is not a database at all\n" * 200)
    s = create_store(sqlite_url(db), registry=reg)
    with pytest.raises(StoreError) as info:
        await s.open()
    assert type(info.value) is StoreError
    assert "not a database" in str(info.value)
    assert str(db) in str(info.value)
    await s.close()


async def test_locked_database_is_store_unavailable_and_writes_nothing(db):
    """When another program holds the write lock past busy_timeout, append raises StoreUnavailable."""
    async with create_store(sqlite_url(db, "busy_timeout=0.05"), registry=reg) as s:
        with contextlib.closing(raw(db)) as other:
            other.execute("BEGIN IMMEDIATE")
            with pytest.raises(StoreUnavailable, match="busy"):
                await s.append("s-1", [Noted("a")], expected_version=NO_STREAM)
            other.execute("ROLLBACK")
        assert await s.stream_version("s-1") == 0
        assert (await s.append("s-1", [Noted("a")], expected_version=NO_STREAM)).positions == (1,)


async def test_driver_errors_on_reads_and_writes_are_mapped(store, db):
    """A table removed behind the store's back gives StoreError on both paths, and the store goes on."""
    with contextlib.closing(raw(db)) as c:
        c.execute("DROP TABLE snapshots")
    with pytest.raises(StoreError, match="no such table: snapshots") as info:
        await store.load_snapshot("s-1", schema_version=1)
    assert not isinstance(info.value, sqlite3.Error)
    with pytest.raises(StoreError, match="no such table: snapshots") as info:
        await store.save_snapshot(Snapshot("s-1", 1, 1, b"{}", datetime.now(UTC)))
    assert not isinstance(info.value, sqlite3.Error)
    await store.append("s-1", [Noted("a")], expected_version=NO_STREAM)
    assert [e.data for e in await store.read_stream("s-1")] == [Noted("a")]


async def test_lone_surrogates_are_refused_as_input(store):
    """Text SQLite cannot store as UTF-8 is refused as invalid input, and nothing is written."""
    with pytest.raises(InvalidStreamId, match="Unicode"):
        await store.append("s-\udc80", [Noted("a")], expected_version=NO_STREAM)
    with pytest.raises(InvalidStreamId):
        await store.read_stream("s-\udc80")
    with pytest.raises(InvalidInput, match="event type"):
        await store.read_all(event_types=["\udc80"])
    assert await store.head() == START


# -- several processes ------------------------------------------------------------------

PROCESSES = 4
APPENDS = 50


def _write_from_process(path: str, stream_id: str | None, me: int, barrier: Any, results: Any) -> None:
    """Child process: open the (maybe new) file when all are ready, then append APPENDS events."""
    try:
        barrier.wait(60)
        results.put((me, asyncio.run(_appends(path, stream_id, me))))
    except BaseException as exc:
        results.put((me, repr(exc)))
        raise


async def _appends(path: str, stream_id: str | None, me: int) -> list[tuple[int, int]]:
    done: list[tuple[int, int]] = []
    async with create_store(f"sqlite:///{path}", registry=reg, busy_timeout=30) as s:
        stream = stream_id or f"proc-{me}"
        for i in range(APPENDS):
            while True:  # optimistic concurrency: reload the version and retry
                version = await s.stream_version(stream)
                try:
                    r = await s.append(stream, [Noted(f"{me}-{i}")], expected_version=version)
                except WrongExpectedVersion:
                    continue
                done.append((r.stream_version, r.positions[0]))
                break
    return done


def run_processes(path: Path, stream_id: str | None) -> dict[int, list[tuple[int, int]]]:
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [
        ctx.Process(target=_write_from_process, args=(str(path), stream_id, me, barrier, results))
        for me in range(PROCESSES)
    ]
    for p in procs:
        p.start()
    try:
        got = dict(results.get(timeout=180) for _ in procs)
    finally:
        for p in procs:
            p.join(60)
            if p.is_alive():
                p.kill()
                p.join()
    for me, result in got.items():
        assert isinstance(result, list), f"process {me} failed: {result}"
    assert [p.exitcode for p in procs] == [0] * PROCESSES
    return got


async def test_processes_racing_on_one_stream(db):
    """Processes appending to one stream with retries leave contiguous versions, nothing lost or doubled."""
    got = await asyncio.to_thread(run_processes, db, "shared")
    async with create_store(sqlite_url(db), registry=reg) as s:
        events = await s.read_stream("shared")
        total = PROCESSES * APPENDS
        assert [e.stream_version for e in events] == list(range(1, total + 1))
        assert sorted(e.data.text for e in events) == sorted(
            f"{me}-{i}" for me in range(PROCESSES) for i in range(APPENDS)
        )
        assert sorted(e.position for e in events) == list(range(1, total + 1))
        assert sorted((e.stream_version, e.position) for e in events) == sorted(
            x for done in got.values() for x in done
        )
        assert schema_rows(db) == [("store", SCHEMA_VERSION)]


async def test_processes_writing_their_own_streams(db):
    """Processes appending to their own streams all land, with unique, gap-free positions."""
    got = await asyncio.to_thread(run_processes, db, None)
    async with create_store(sqlite_url(db), registry=reg) as s:
        page = await s.read_all(limit=1000)
        assert [e.position for e in page] == list(range(1, PROCESSES * APPENDS + 1))
        for me in range(PROCESSES):
            events = await s.read_stream(f"proc-{me}")
            assert [e.data.text for e in events] == [f"{me}-{i}" for i in range(APPENDS)]
            assert [(e.stream_version, e.position) for e in events] == got[me]


# -- a snapshot and the events after it, in one read ---------------------------------------


@pytest.mark.parametrize(
    ("to_version", "expected"),
    [
        (None, (5, [6, 7, 8])),
        (8, (5, [6, 7, 8])),
        (6, (5, [6])),
        (5, (5, [])),
        (4, (None, [1, 2, 3, 4])),
    ],
)
async def test_snapshot_and_stream_read_together_as_they_would_apart(store, to_version, expected):
    """load_snapshot_and_stream gives the snapshot load_snapshot would, then the events read_stream would."""
    memory = create_store("memory://", registry=reg)
    for s in (store, memory):
        await s.append("s", [Noted(str(i)) for i in range(1, 9)], expected_version=NO_STREAM)
        await s.save_snapshot(Snapshot("s", 5, 1, b'{"n":5}', datetime.now(UTC)))
    for s in (store, memory):
        snap, events = await s.load_snapshot_and_stream("s", schema_version=1, to_version=to_version)
        assert (None if snap is None else snap.stream_version, [e.stream_version for e in events]) == expected
        if snap is not None:
            assert (snap.state, snap.schema_version) == (b'{"n":5}', 1)
    await memory.close()


async def test_snapshot_and_stream_without_a_usable_snapshot_reads_from_the_start(store):
    """A snapshot of another schema version is not used: every event of the stream is returned."""
    await store.append("s", [Noted("1"), Noted("2")], expected_version=NO_STREAM)
    await store.save_snapshot(Snapshot("s", 2, 1, b"{}", datetime.now(UTC)))
    snap, events = await store.load_snapshot_and_stream("s", schema_version=2)
    assert snap is None
    assert [e.data.text for e in events] == ["1", "2"]
    assert await store.load_snapshot_and_stream("nothing", schema_version=1) == (None, [])


@pytest.mark.parametrize(
    ("stream_id", "options", "error"),
    [
        ("", {"schema_version": 1}, InvalidStreamId),
        ("s", {"schema_version": 0}, InvalidInput),
        ("s", {"schema_version": 1, "to_version": -1}, InvalidInput),
    ],
)
async def test_snapshot_and_stream_refuses_bad_arguments(store, stream_id, options, error):
    """Bad arguments raise a specific InvalidInput before anything is read."""
    with pytest.raises(error):
        await store.load_snapshot_and_stream(stream_id, **options)


# -- small reads on the caller's thread --------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, list(range(1, 151))),
        ({"backwards": True}, list(range(150, 0, -1))),
        ({"from_version": 10, "limit": 100}, list(range(10, 110))),
        ({"to_version": 140, "backwards": True, "limit": 70}, list(range(140, 70, -1))),
        ({"from_version": 50, "to_version": 60}, list(range(50, 61))),
    ],
)
async def test_streams_longer_than_one_small_read_come_back_whole_and_in_order(store, options, expected):
    """A stream read past the rows read on the caller's thread continues on a reader thread, seamlessly."""
    await store.append("long", [Noted(str(i)) for i in range(1, 151)], expected_version=NO_STREAM)
    events = await store.read_stream("long", **options)
    assert [e.stream_version for e in events] == expected
    assert [e.data.text for e in events] == [str(v) for v in expected]


async def test_reads_from_several_threads_each_see_every_commit(store):
    """Reads made from other threads (their own event loops) see appends committed before them."""
    await store.append("s", [Noted("1")], expected_version=NO_STREAM)

    def elsewhere() -> list[int]:
        async def read() -> list[int]:
            return [await store.stream_version("s"), len(await store.read_stream("s"))]

        return asyncio.run(read())

    assert await asyncio.to_thread(elsewhere) == [1, 1]
    await store.append("s", [Noted("2")], expected_version=1)
    assert await asyncio.to_thread(elsewhere) == [2, 2]
    assert [await store.stream_version("s"), (await store.head()).position] == [2, 2]


async def test_reads_after_close_raise_store_closed(store):
    """Every kind of read refuses to run once the store is closed."""
    await store.append("s", [Noted("a")], expected_version=NO_STREAM)
    await store.read_stream("s")  # this thread's read connection exists now
    await store.close()
    for read in (
        store.read_stream("s"),
        store.stream_version("s"),
        store.head(),
        store.load_snapshot("s", schema_version=1),
        store.load_snapshot_and_stream("s", schema_version=1),
    ):
        with pytest.raises(StoreClosed):
            await read


# -- other event loops ----------------------------------------------------------------


async def test_a_group_leader_cancelled_while_others_join_leaves_their_appends_to_commit(store):
    """The first append of a group is withdrawn when cancelled; the appends that joined it still land."""
    leader = asyncio.create_task(store.append("a", [Noted("a")], expected_version=NO_STREAM))
    joiner = asyncio.create_task(store.append("b", [Noted("b")], expected_version=NO_STREAM))
    await asyncio.sleep(0)  # one turn: the leader yields for its group, the other append joins it
    assert not leader.done()
    assert not joiner.done()
    leader.cancel()
    assert (await asyncio.wait_for(joiner, 60)).positions == (1,)
    with pytest.raises(asyncio.CancelledError):
        await leader
    assert [await store.stream_version(s) for s in "ab"] == [0, 1]


@pytest.mark.parametrize("writer", ["auto", "thread"])
def test_the_store_works_on_uvloop(db, fast_commits, writer):
    """Append, a group of concurrent appends, reads and wait_for_events on uvloop's event loop."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        assert type(asyncio.get_running_loop()).__module__.startswith("uvloop")
        async with create_store(sqlite_url(db, f"writer={writer}"), registry=reg) as s:
            assert isinstance(s, SQLiteEventStore)
            first = await s.append("s-0", [Noted("0")], expected_version=NO_STREAM)
            assert first.positions == (1,)
            before = s.stats.transactions
            results = await asyncio.gather(
                *(s.append(f"s-{i}", [Noted(str(i))], expected_version=NO_STREAM) for i in range(1, 11))
            )
            assert sorted(r.positions[0] for r in results) == list(range(2, 12))
            assert s.stats.transactions < before + 10  # grouped
            if writer == "auto":
                assert s.stats.transactions == before + 1
                assert s.stats.inline_transactions == s.stats.transactions
            with pytest.raises(WrongExpectedVersion):
                await s.append("s-0", [Noted("x")], expected_version=NO_STREAM)
            assert [e.data.text for e in await s.read_stream("s-0")] == ["0"]
            assert [e.position for e in await s.read_all()] == list(range(1, 12))
            head = await s.head()
            waiting = asyncio.create_task(s.wait_for_events(head, timeout=60))
            await asyncio.sleep(0)
            assert not waiting.done()
            await s.append("s-0", [Noted("1")], expected_version=1)
            assert await waiting
            assert not await s.wait_for_events(await s.head(), timeout=0.01)

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


def test_the_event_columns_are_in_the_order_of_recorded_events_parameters():
    """A row of EVENT_COLUMNS becomes an event as RecordedEvent(codec, *row): the orders must agree."""
    stored_as = {
        "occurred_at": "occurred_us",
        "recorded_at": "recorded_us",
        "data": "payload",
        "metadata": "meta_raw",
    }
    # The envelope's private fields are its parameters too, with their underscore.
    parameters = [p.lstrip("_") for p in inspect.signature(RecordedEvent).parameters]
    assert parameters[0] == "codec"
    assert parameters[-2:] == ["data", "meta"]  # decoded on first access, never passed
    parameters = parameters[:-2]
    # SQLite's tx is always the constant 0; the tags column is split by reads.recorded().
    stored_as |= {"0": "tx"}
    columns = [stored_as.get(c, c) for c in sqlite_reads.EVENT_COLUMNS.split(", ")]
    assert columns == parameters[1:]


async def test_category_reads_and_event_lookups_use_an_index(store: SQLiteEventStore, db: Path) -> None:
    """EXPLAIN QUERY PLAN: a category read, a listing and get_event search an index, never scan events."""
    conn = sqlite3.connect(db)
    try:
        plans = {
            name: " | ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
            for name, sql, params in [
                ("category", sqlite_reads.SQL_CATEGORY, ("acct-", "acct.", 0, 100)),
                ("category, no end", sqlite_reads.SQL_CATEGORY, ("\U0010ffff", b"", 0, 100)),
                ("list", sqlite_reads.SQL_LIST_STREAMS, ("acct-", "acct.", "", 100)),
                ("get_event", sqlite_reads.SQL_GET_EVENT, (b"\0" * 16,)),
            ]
        }
    finally:
        conn.close()
    for name, plan in plans.items():
        assert "SCAN events" not in plan, f"{name}: {plan}"
        assert "rowid>?" not in plan, f"{name}: {plan}"
    for name in ("category", "category, no end", "list"):
        assert "USING INDEX sqlite_autoindex_events_2 (stream_id>? AND stream_id<?)" in plans[name] or (
            "USING COVERING INDEX sqlite_autoindex_events_2 (stream_id>? AND stream_id<?)" in plans[name]
        ), plans[name]
    assert "USING INDEX sqlite_autoindex_events_1 (event_id=?)" in plans["get_event"], plans["get_event"]


# -- dynamic consistency boundaries -----------------------------------------------------


def v1_file(db: Path) -> None:
    """A file as the first schema left it, with one event, written by hand."""
    with contextlib.closing(raw(db)) as c:
        for statement in sqlite_schema.MIGRATIONS[0].steps:
            assert isinstance(statement, str)
            c.execute(statement)
        c.execute("CREATE TABLE eventvault_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)")
        c.execute("INSERT INTO eventvault_schema VALUES ('store', 1)")
        c.execute(
            "INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version, "
            "occurred_at, recorded_at, data) VALUES (?, 's-1', 1, 'sqlite_test.Noted', 1, 1, 1, ?)",
            (NewEvent(Noted("old")).event_id.bytes, b'{"text":"old"}'),
        )


async def test_a_schema_1_file_migrates_in_place_keeping_its_events(db):
    """Opening a file of schema 1 adds the tags, keeps its events (untagged) and can tag new ones."""
    v1_file(db)
    assert SCHEMA_VERSION == 4
    async with create_store(sqlite_url(db), registry=reg) as s:
        [old] = await s.read_stream("s-1")
        assert (old.data, old.tags) == (Noted("old"), ())
        await s.append("s-1", [NewEvent(Noted("new"), tags=("t",))], expected_version=1)
        found = await s.read(Query([QueryItem(tags=["t"])]))
        assert [(e.data, e.tags, e.position) for e in found.events] == [(Noted("new"), ("t",), 2)]
        assert found.head == 2
        assert len(await s.read(Query([QueryItem(types=["sqlite_test.Noted"])]))) == 2
    assert schema_rows(db) == [("store", SCHEMA_VERSION)]
    assert tables(db) == {
        "events",
        "event_tags",
        "snapshots",
        "eventvault_schema",
        "stream_rules",
        "subject_keys",
    }


async def test_a_schema_2_file_migrates_and_its_streams_can_be_deleted(db):
    """Opening a file of schema 2 adds the table of stream rules: its old streams delete and truncate."""
    v1_file(db)
    with contextlib.closing(raw(db)) as c:
        for statement in sqlite_schema.MIGRATIONS[1].steps:
            assert isinstance(statement, str)
            c.execute(statement)
        c.execute("UPDATE eventvault_schema SET version = 2")
        c.execute(
            "INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version, "
            "occurred_at, recorded_at, data) VALUES (?, 's-1', 2, 'sqlite_test.Noted', 1, 1, 1, ?)",
            (NewEvent(Noted("older")).event_id.bytes, b'{"text":"older"}'),
        )
    assert "stream_rules" not in tables(db)
    async with create_store(sqlite_url(db), registry=reg) as s:
        await s.truncate_before("s-1", 2)
        assert [e.data for e in await s.read_stream("s-1")] == [Noted("older")]
        assert (await s.scavenge()).events_removed == 1
        await s.delete_stream("s-1", expected_version=2, tombstone=True)
        with pytest.raises(StreamDeleted):
            await s.append("s-1", [Noted("no")], expected_version=ANY)
    assert schema_rows(db) == [("store", SCHEMA_VERSION)]


@event("sqlite_test.Registered", registry=reg)
@personal("name")
@dataclass(frozen=True, slots=True)
class Registered:
    name: str


async def test_a_schema_2_file_migrates_to_keys_and_its_clear_events_still_read(db):
    """A file from before the key table: opening adds subject_keys; old events stay as written."""
    v1_file(db)
    with contextlib.closing(raw(db)) as c:
        for statement in sqlite_schema.MIGRATIONS[1].steps:
            assert isinstance(statement, str)
            c.execute(statement)
        c.execute("UPDATE eventvault_schema SET version = 2 WHERE component = 'store'")
        c.execute(
            "INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version, "
            "occurred_at, recorded_at, data) VALUES (?, 'p-old', 1, 'sqlite_test.Registered', 1, 1, 1, ?)",
            (NewEvent(Noted("x")).event_id.bytes, b'{"name":"Old Name"}'),
        )
    async with create_store(sqlite_url(db), registry=reg) as s:
        [old] = await s.read_stream("p-old")
        assert old.data == Registered("Old Name")  # written in the clear, read as written
        await s.append("p-new", [Registered("New Name")], expected_version=NO_STREAM)
        [new] = await s.read_stream("p-new")
        assert (new.data, b"New Name" in new.payload) == (Registered("New Name"), False)
        assert await s.forget("p-new")
        assert (await s.read_stream("p-new"))[0].data == Registered(REDACTED)
    assert "subject_keys" in tables(db)
    assert schema_rows(db) == [("store", SCHEMA_VERSION)]


async def test_a_forgotten_key_is_gone_from_the_file_once_the_wal_is_checkpointed(db):
    """Once the WAL is checkpointed, no page of the file holds a forgotten key (the others are there)."""
    async with create_store(sqlite_url(db), registry=reg) as s:
        assert s.keys is not None
        keys = [await s.keys.key_for(f"subject-{i}") for i in range(20)]
        await s.forget("subject-7")
        with contextlib.closing(raw(db)) as c:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        data = db.read_bytes()
    assert keys[7].key not in data
    assert all(k.key in data for i, k in enumerate(keys) if i != 7)  # the check can find a key


async def test_stream_appends_store_tags_and_every_read_returns_them(store):
    """Tags of a stream append come back from stream reads, the log and query reads alike."""
    await store.append(
        "s", [NewEvent(Noted("a"), tags=("b", "a")), Noted("plain")], expected_version=NO_STREAM
    )
    assert [e.tags for e in await store.read_stream("s")] == [("b", "a"), ()]
    assert [e.tags for e in (await store.read_all()).events] == [("b", "a"), ()]
    assert [e.tags for e in await store.read(Query.all())] == [("b", "a"), ()]
    assert [e.position for e in await store.read(Query([QueryItem(tags=["a", "b"])]))] == [1]


async def test_a_failing_condition_in_a_batch_fails_only_its_own_append(store):
    """In one group commit the condition is checked in order: it sees the batch's earlier appends."""
    await store.append_events([NewEvent(Noted("seed"), tags=("seen",))])
    before = store.stats.transactions

    def conditioned(tag: str, text: str) -> asyncio.Future[AppendResult]:
        condition = AppendCondition(Query([QueryItem(tags=[tag])]), after=1)
        events = store.prepare([NewEvent(Noted(text), tags=(tag,))])
        append = Append(f"dcb-{text}", events, NO_STREAM, condition, tagged=True)
        future: asyncio.Future[AppendResult] = store._submit_append(append)
        return future

    async with writer_held(store):
        futures = [
            queue_append(store, "plain", [Noted("p")], NO_STREAM),  # lands at 2
            conditioned("x", "x1"),  # nothing tagged x after 1: lands at 3
            conditioned("x", "x2"),  # x1 (position 3, same batch) is after 1: fails
            conditioned("seen", "s"),  # the seed is at 1, not after it: lands at 4
        ]
    plain, x1, x2, seen = await outcomes(futures)
    assert store.stats.transactions == before + 1
    assert (plain.positions, x1.positions, seen.positions) == ((2,), (3,), (4,))
    assert isinstance(x2, AppendConditionFailed)
    assert x2.position == 3
    assert [e.data.text for e in await store.read(Query([QueryItem(tags=["x"])]))] == ["x1"]


async def test_condition_checks_and_query_reads_search_indexes_not_the_log(db):
    """EXPLAIN QUERY PLAN of the statements a condition check and a query read run: no table is scanned."""
    async with create_store(sqlite_url(db), registry=reg) as s:
        await s.append_events([NewEvent(Noted(str(i)), tags=(f"t{i % 7}", "all")) for i in range(200)])
    query = Query(
        [
            QueryItem(types=["sqlite_test.Noted"], tags=["t1", "all"]),
            QueryItem(types=["sqlite_test.Noted", "other"]),
            QueryItem(tags=["t3"]),
        ]
    )
    statements: list[str] = []
    with contextlib.closing(raw(db)) as c:
        c.set_trace_callback(statements.append)  # each statement as run, its parameters inlined
        cur = c.cursor()
        assert sqlite_reads.first_match(cur, query, 150) == 151
        page = sqlite_reads.query_page(cur, s.codec, query, 190, -1, backwards=False)
        assert [e.position for e in page.events] == list(range(191, 201))
        c.set_trace_callback(None)
        selects = [st for st in statements if st.startswith("SELECT") and "max(position)" not in st]
        assert len(selects) == 4  # the check: one per item; the read
        plans = {st: [row[3] for row in c.execute(f"EXPLAIN QUERY PLAN {st}")] for st in selects}
    tag_range = "USING PRIMARY KEY (tag=? AND position>?)"  # event_tags from `after` on
    log_range = "events USING INTEGER PRIMARY KEY (rowid>?)"  # the log from `after` on
    for st, plan in plans.items():
        assert plan, st
        assert not [step for step in plan if step.startswith("SCAN")], (st, plan)
        tagged = [step for step in plan if tag_range in step]
        typed = [step for step in plan if log_range in step]
        assert tagged or typed, (st, plan)
        if "event_tags" not in st:  # the type-only item walks the log from after, nothing else
            assert typed, (st, plan)
    read = list(plans.values())[-1]
    assert sum(tag_range in step for step in read) == 2  # the read: both tagged items by tag
