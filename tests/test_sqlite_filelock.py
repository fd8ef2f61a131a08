"""SQLite: the writers of one file in one process take turns (filelock), not SQLite's busy handler.

The store's writer and the read models beside it take the file's write turn
before ``BEGIN IMMEDIATE``, so each waits for the other on a lock that is
handed over at the other's commit; a turn not given within ``busy_timeout``
is the same ``StoreUnavailable`` as a file locked by another process.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import pytest

from eventvault import NO_STREAM, EventRegistry, NewEvent, StoreUnavailable, create_store, event
from eventvault.projections import ReadModels, read_models_for
from eventvault.projections._db import SQLiteReadModels
from eventvault.store.sqlite import SQLiteEventStore, filelock

WAIT = 60.0
reg = EventRegistry()


@event("filelock_test.Noted", registry=reg)
@dataclass(frozen=True, slots=True)
class Noted:
    text: str


def note(text: str) -> list[NewEvent]:
    return [NewEvent(Noted(text))]


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SQLiteEventStore]:
    s = create_store(f"sqlite:///{tmp_path / 'events.db'}?busy_timeout=30", registry=reg)
    assert isinstance(s, SQLiteEventStore)
    async with s:
        yield s


@pytest.fixture
def models(store: SQLiteEventStore) -> Iterator[ReadModels]:
    db = read_models_for(store)
    yield db
    db.close()


class Held:
    """A read-model write transaction kept open on a thread of its own until ``release`` is set."""

    def __init__(self, db: ReadModels) -> None:
        self.db = db
        self.inside = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        with self.db.transaction() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS held (n INTEGER)")
            self.inside.set()
            self.release.wait(WAIT)

    def __enter__(self) -> Self:
        self.thread.start()
        assert self.inside.wait(WAIT), "the read-model transaction never began"
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(WAIT)


def test_one_turn_per_file_however_its_path_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "one.db"
    link = tmp_path / "link.db"
    link.symlink_to(path)
    monkeypatch.chdir(tmp_path)
    turn = filelock.write_turn(str(path))
    assert filelock.write_turn("one.db") is turn
    assert filelock.write_turn(str(link)) is turn
    assert filelock.write_turn(f"{tmp_path}/./one.db") is turn
    assert filelock.write_turn(str(tmp_path / "other.db")) is not turn
    assert filelock.write_turn(":memory:") is not filelock.write_turn(":memory:")


async def test_an_append_waits_for_the_read_models_turn_and_goes_in_when_it_ends(
    store: SQLiteEventStore, models: ReadModels, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The append meets the held turn (not SQLite's lock), waits there, and commits right after."""
    waiting = threading.Event()
    take = filelock.take

    def watched(turn: threading.Lock, timeout: float) -> None:
        waiting.set()
        take(turn, timeout)

    with Held(models):
        monkeypatch.setattr(filelock, "take", watched)  # the store's take, from now on
        appending = asyncio.ensure_future(store.append("s-1", note("a"), expected_version=NO_STREAM))
        # The loop's own try (never waiting) found the turn taken and handed the append to the writer thread.
        assert await asyncio.to_thread(waiting.wait, WAIT), "the writer thread never asked for the turn"
        assert not appending.done()
    result = await asyncio.wait_for(appending, WAIT)
    assert result.stream_version == 1
    assert await store.stream_version("s-1") == 1


async def test_a_turn_not_given_within_busy_timeout_is_store_unavailable_and_writes_nothing(
    tmp_path: Path,
) -> None:
    s = create_store(f"sqlite:///{tmp_path / 'short.db'}?busy_timeout=0.05", registry=reg)
    assert isinstance(s, SQLiteEventStore)
    async with s:
        db = read_models_for(s)
        try:
            with Held(db), pytest.raises(StoreUnavailable, match="another writer of this process"):
                await s.append("s-1", note("a"), expected_version=NO_STREAM)
            assert await s.stream_version("s-1") == 0
            # The turn is free again: the same append goes in.
            await s.append("s-1", note("a"), expected_version=NO_STREAM)
            assert await s.stream_version("s-1") == 1
        finally:
            db.close()


async def test_a_read_model_transaction_waits_for_the_turn_and_maps_a_timeout(
    store: SQLiteEventStore,
) -> None:
    """Held by the store's side, the read models' transaction waits, then gets StoreUnavailable."""
    db = SQLiteReadModels(store.path, busy_timeout=0.05)
    turn = filelock.write_turn(store.path)
    try:
        with turn, pytest.raises(StoreUnavailable, match="another writer of this process"):
            await asyncio.to_thread(_write_once, db)
        await asyncio.to_thread(_write_once, db)  # given back: it writes
        assert db.query("SELECT count(*) FROM written") == [(1,)]
    finally:
        db.close()


def _write_once(db: ReadModels) -> None:
    with db.transaction() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS written (n INTEGER)")
        conn.execute("INSERT INTO written VALUES (1)")
