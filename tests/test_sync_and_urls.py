"""The blocking facade, store URLs and checkpoints."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from eventvault import (
    NO_STREAM,
    AppendCondition,
    AppendConditionFailed,
    Checkpoint,
    EventRegistry,
    InvalidCheckpoint,
    InvalidStoreURL,
    NewEvent,
    Query,
    StoreClosed,
    WrongExpectedVersion,
    create_store,
    event,
)
from eventvault.store.memory import MemoryEventStore
from eventvault.sync import SyncRepository, open_store_sync

reg = EventRegistry()


@reg.register
@dataclass(frozen=True)
class Pinged:
    n: int


def test_sync_facade_appends_and_reads() -> None:
    """Scripts can use the store without writing async code."""
    with open_store_sync("memory://", registry=reg) as store:
        result = store.append("s-1", [Pinged(1), Pinged(2)], expected_version=NO_STREAM)
        assert result.stream_version == 2
        assert [e.data.n for e in store.read_stream("s-1")] == [1, 2]
        assert store.stream_version("s-1") == 2
        assert len(store.read_all()) == 2
        assert store.head() == result.checkpoint
        with pytest.raises(WrongExpectedVersion):
            store.append("s-1", [Pinged(3)], expected_version=NO_STREAM)


def test_sync_facade_works_inside_a_running_loop() -> None:
    """The facade runs its own loop in a thread, so it works from async code too."""

    async def main() -> int:
        with open_store_sync("memory://", registry=reg) as store:
            store.append("s-1", [Pinged(1)], expected_version=NO_STREAM)
            return store.stream_version("s-1")

    assert asyncio.run(main()) == 1


def test_sync_store_close_is_idempotent_and_final() -> None:
    """After close, calls raise StoreClosed; closing twice is harmless."""
    store = open_store_sync("memory://", registry=reg)
    store.close()
    store.close()
    assert callable(store.store.read_stream)  # the wrapped store is still inspectable
    with pytest.raises(StoreClosed):
        asyncio.run(store.store.stream_version("s-1"))


def test_sync_repository_round_trip() -> None:
    """SyncRepository loads what the async repository saved."""
    from eventvault import Aggregate, applies  # noqa: PLC0415

    class Pinger(Aggregate):
        count: int = 0

        @applies(Pinged)
        def _p(self, e: Pinged) -> None:
            self.count += e.n

    with open_store_sync("memory://", registry=reg) as store:
        repo = SyncRepository(store)
        p = Pinger("p")
        p.record(Pinged(4))
        repo.save(p)
        assert repo.load(Pinger, "p").count == 4


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("mysql://x", "unknown store scheme"),
        ("nonsense", "unknown store scheme"),
        ("memory://?x=1", "takes no options"),
        ("sqlite://host/file.db", "sqlite:///relative"),
        ("sqlite://", "names no database file"),
    ],
)
def test_bad_store_urls_are_refused(url: str, match: str) -> None:
    """A URL that names no usable store is refused with a clear message."""
    with pytest.raises(InvalidStoreURL, match=match):
        create_store(url)


def test_non_string_url_is_refused() -> None:
    """create_store takes a str."""
    with pytest.raises(InvalidStoreURL):
        create_store(None)  # type: ignore[arg-type]


def test_memory_url_makes_a_memory_store() -> None:
    """memory:// selects the in-memory backend."""
    assert isinstance(create_store("memory://"), MemoryEventStore)


def test_checkpoint_tokens_round_trip_and_order() -> None:
    """Checkpoints order by (tx, position) and survive str()/parse()."""
    a, b, c = Checkpoint(0, 9), Checkpoint(1, 2), Checkpoint(1, 10)
    assert a < b < c
    for cp in (a, b, c, Checkpoint.START):
        assert Checkpoint.parse(str(cp)) == cp
    assert Checkpoint.parse(None) == Checkpoint.START


@pytest.mark.parametrize("token", ["", "1", "1.", ".1", "-1.2", "1.2.3", "01.2", "a.b", 5, 1.5])
def test_bad_checkpoint_tokens_are_refused(token: object) -> None:
    """Anything but a token made by str(checkpoint) is refused."""
    with pytest.raises(InvalidCheckpoint):
        Checkpoint.parse(token)  # type: ignore[arg-type]


_DCB_REGISTRY = EventRegistry()


@event("sync.Noted", registry=_DCB_REGISTRY)
@dataclass(frozen=True)
class _Noted:
    text: str


def test_the_sync_facade_reads_queries_and_appends_under_a_condition() -> None:
    """Read and append_events work without async, the condition failing as on the async store."""
    with open_store_sync("memory://", registry=_DCB_REGISTRY) as store:
        query = Query.of(tags=["k:1"])
        seen = store.read(query)
        store.append_events(
            [NewEvent(_Noted("a"), tags=["k:1"])], condition=AppendCondition(query, after=seen.head)
        )
        with pytest.raises(AppendConditionFailed):
            store.append_events([_Noted("b")], condition=AppendCondition(query, after=seen.head))
        assert [e.data for e in store.read(query)] == [_Noted("a")]
