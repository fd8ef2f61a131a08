"""The event store contract: one suite that every backend must pass.

It pins what DESIGN.md §4 promises of an :class:`~eventvault.store.EventStore`:
atomic appends, every expected-version variant, idempotent retries, races between
appenders, one gap-free global order for every reader, stream and temporal reads,
snapshots, upcasting, the envelope, and refusal of bad input with nothing written.

Backends that support dynamic consistency boundaries (tags, query reads and
conditional appends, ``supports_dcb``) also subclass :class:`DCBContract`, with the
same fixture.

A backend runs it by subclassing :class:`EventStoreContract` in a module pytest
collects, with one fixture, ``store_factory``: an async callable
``factory(*, registry)`` that returns a new, opened store on the *same* database
each time it is called, and closes them all at teardown. :func:`opened_stores`
builds one from a function that makes an unopened store::

    import pytest_asyncio
    from eventvault.testing.contract import EventStoreContract, opened_stores
    from mybackend import MyEventStore

    class TestMyEventStore(EventStoreContract):
        @pytest_asyncio.fixture
        async def store_factory(self, tmp_path):
            path = tmp_path / "contract.db"  # a fresh database per test
            async with opened_stores(lambda registry: MyEventStore(path, registry=registry)) as factory:
                yield factory

Each test gets a fresh, empty database. Closing a store must be idempotent (some
tests close one themselves before teardown does). It needs pytest and
pytest-asyncio (either asyncio mode); put
``pytest.register_assert_rewrite("eventvault.testing.contract")`` in your
``conftest.py`` so failures show the values compared, not a bare AssertionError.

The suite brings its own event types in its own
:class:`~eventvault.domain.EventRegistry`, so it never touches the default
registry, and it never sleeps: concurrency is arranged with barriers and
conditions, so a test either proves the behaviour or fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, ClassVar, Protocol

import msgspec
import pytest
import pytest_asyncio

from eventvault.domain import (
    REDACTED,
    STREAM_DELETED,
    Aggregate,
    EventRegistry,
    StreamDeletedEvent,
    applies,
    event,
    personal,
    upcaster,
)
from eventvault.errors import (
    AggregateNotFound,
    AppendConditionFailed,
    ConcurrencyError,
    DecodeError,
    DuplicateEventId,
    EventTypeError,
    InvalidCheckpoint,
    InvalidEvent,
    InvalidExpectedVersion,
    InvalidInput,
    InvalidStreamId,
    StoreClosed,
    StreamDeleted,
    SubjectForgotten,
    WrongExpectedVersion,
)
from eventvault.repository import Repository
from eventvault.store.base import MAX_PAGE, MAX_STREAM_ID_LENGTH, EventStore
from eventvault.store.memory import MemoryEventStore
from eventvault.store.personal import KeyRecord, SubjectKey
from eventvault.store.records import (
    ANY,
    MAX_TAGS,
    NO_STREAM,
    START,
    STREAM_EXISTS,
    AppendCondition,
    AppendResult,
    Checkpoint,
    ExpectedVersion,
    Metadata,
    NewEvent,
    Query,
    QueryItem,
    RecordedEvent,
    Snapshot,
)
from eventvault.testing.waiting import eventually_async
from eventvault.verify import verify_store

__all__ = [
    "CONTRACT_REGISTRY",
    "DCBContract",
    "EventStoreContract",
    "LifecycleContract",
    "PersonalDataContract",
    "StoreFactory",
    "opened_stores",
]


class StoreFactory(Protocol):
    """Opens another store on the test's one database (the fixture a backend provides)."""

    def __call__(self, *, registry: EventRegistry) -> Awaitable[EventStore]:
        """A new, opened store on the database, decoding events with ``registry``."""
        ...


@contextlib.asynccontextmanager
async def opened_stores(make: Callable[[EventRegistry], EventStore]) -> AsyncIterator[StoreFactory]:
    """A ``store_factory`` that opens ``make(registry)`` per call and closes them all on exit.

    ``make`` returns a new, unopened store on the database of the current test.
    """
    async with contextlib.AsyncExitStack() as stack:

        async def factory(*, registry: EventRegistry) -> EventStore:
            store = await make(registry).open()
            stack.push_async_callback(store.close)
            return store

        yield factory


# -- the suite's own event types -------------------------------------------------------

CONTRACT_REGISTRY = EventRegistry()
"""The registry of the events the suite appends (never the default registry)."""


@event("contract.ItemAdded", registry=CONTRACT_REGISTRY)
@dataclass(frozen=True, slots=True)
class ItemAdded:
    """A plain event with one text field."""

    name: str


@event("contract.Deposited", registry=CONTRACT_REGISTRY)
@dataclass(frozen=True, slots=True)
class Deposited:
    """Money: a Decimal that must come back exactly as written."""

    amount: Decimal
    note: str = ""


@event("contract.Tagged", registry=CONTRACT_REGISTRY)
class Tagged(msgspec.Struct, frozen=True):
    """A msgspec.Struct event, the other kind of event class."""

    tags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Unregistered:
    """An event class no registry knows: appending it must fail."""

    name: str


# Two generations of one event type, each in the registry of the code that knows it:
# version 1 has only the text; version 2 adds the author, and knows the upcaster.
OLD_CODE = EventRegistry()
NEW_CODE = EventRegistry()


@event("contract.NoteTaken", version=1, registry=OLD_CODE)
@dataclass(frozen=True, slots=True)
class NoteTakenV1:
    """Version 1 of contract.NoteTaken."""

    text: str


@event("contract.NoteTaken", version=2, registry=NEW_CODE)
@dataclass(frozen=True, slots=True)
class NoteTakenV2:
    """Version 2 of contract.NoteTaken: notes now have an author."""

    text: str
    author: str


@upcaster("contract.NoteTaken", from_version=1, registry=NEW_CODE)
def _note_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "author": "unknown"}


class Tally(Aggregate):
    """A running total of deposits: the aggregate the Repository tests load."""

    category = "tally"
    total: Decimal = Decimal(0)
    count: int = 0

    def deposit(self, amount: Decimal) -> None:
        """Record a deposit."""
        self.record(Deposited(amount))

    @applies(Deposited)
    def _deposited(self, e: Deposited) -> None:
        self.total += e.amount
        self.count += 1


class TallyV2(Tally):
    """The same aggregate after a change to its state's meaning: snapshot schema 2."""

    category = "tally"
    snapshot_schema = 2


# -- helpers ---------------------------------------------------------------------------

STREAM = "order-1"
OTHER = "order-2"


def items(*names: str) -> list[NewEvent]:
    """One ItemAdded per name, each with its own (known) event id."""
    return [NewEvent(ItemAdded(n)) for n in names]


async def settled(store: EventStore, within: float = 60.0) -> None:
    """Wait until every committed event is readable.

    On PostgreSQL a read may trail the commits for a moment (a transaction that
    ended while the read was being made holds its horizon; see docs/postgres.md):
    delayed, never wrong. Tests that compare the whole log with what they wrote
    wait for it first; the other backends never trail.
    """
    # Polling the database, not ordering our own tasks.
    await eventually_async(
        store.read_horizon_lag,
        lambda lag: not lag.pending_events,
        within=within,
        what="every committed event readable",
    )


async def full_log(store: EventStore) -> list[RecordedEvent]:
    """The whole global log, read in pages from the start, once every committed event is readable."""
    await settled(store)
    return [e async for e in store.iter_all()]


async def census(store: EventStore, *stream_ids: str) -> tuple[list[uuid.UUID], list[int]]:
    """What is stored: every event id in log order and the version of each stream given."""
    return [e.event_id for e in await full_log(store)], [await store.stream_version(s) for s in stream_ids]


def ids(events: Sequence[RecordedEvent | NewEvent]) -> list[uuid.UUID]:
    """The event ids, in order."""
    return [e.event_id for e in events]


def strictly_increasing(values: Sequence[Any]) -> bool:
    """True if every value is greater than the one before it."""
    return all(a < b for a, b in itertools.pairwise(values))


def tick_past(moment: datetime) -> datetime:
    """The first time this process's clock reads after ``moment``.

    Busy-waits on the clock (microseconds, in practice): recorded_at has microsecond
    resolution, so two events can share a timestamp unless the clock moves between.
    """
    deadline = time.monotonic() + 5
    while (now := datetime.now(UTC)) <= moment:
        if time.monotonic() > deadline:
            raise AssertionError(f"the store's clock is ahead of this process's: {moment} > {now}")
    return now


class WriterProgress:
    """What the writers of a test have done, for readers to wait on instead of polling."""

    def __init__(self) -> None:
        self.appends = 0
        self.done = False
        self._changed = asyncio.Condition()

    async def appended(self) -> None:
        """A writer's append returned."""
        async with self._changed:
            self.appends += 1
            self._changed.notify_all()

    async def finish(self) -> None:
        """Every writer has returned."""
        async with self._changed:
            self.done = True
            self._changed.notify_all()

    async def wait_past(self, appends: int) -> None:
        """Wait until there were more than ``appends`` appends, or the writers are done."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.appends > appends or self.done)


def _closed_operations() -> dict[str, Callable[[EventStore], Awaitable[object]]]:
    async def iterate(store: EventStore) -> object:
        return [e async for e in store.iter_all()]

    snapshot = Snapshot(STREAM, 1, 1, b"{}", datetime.now(UTC))
    return {
        "append": lambda s: s.append(STREAM, items("x"), expected_version=ANY),
        "read_stream": lambda s: s.read_stream(STREAM),
        "stream_version": lambda s: s.stream_version(STREAM),
        "read_all": lambda s: s.read_all(),
        "iter_all": iterate,
        "head": lambda s: s.head(),
        "save_snapshot": lambda s: s.save_snapshot(snapshot),
        "load_snapshot": lambda s: s.load_snapshot(STREAM, schema_version=1),
    }


def _any(value: object) -> Any:
    """``value``, typed as Any: the suite passes wrong types on purpose."""
    return value


ID = uuid.UUID("01890a5d-ac96-774b-bcce-b302099a8057")
_AWARE = datetime(2024, 2, 29, 13, 45, 30, 123456, tzinfo=timezone(timedelta(hours=2)))
_NOT_A_DECIMAL: Any = 0.1

_BAD_EVENTS: list[Any] = [
    pytest.param(lambda: [Unregistered("x")], "not a registered event type", id="unregistered class"),
    pytest.param(lambda: [Deposited(_NOT_A_DECIMAL)], "does not match its own field types", id="float"),
    pytest.param(list, "at least one event", id="empty list"),
    pytest.param(lambda: ItemAdded("x"), "list of events", id="single event"),
    pytest.param(lambda: NewEvent(ItemAdded("x")), "list of events", id="single NewEvent"),
    pytest.param(lambda: "ItemAdded", "list of events", id="str"),
    pytest.param(
        lambda: [NewEvent(ItemAdded("a"), event_id=ID), NewEvent(ItemAdded("b"), event_id=ID)],
        "appears twice",
        id="duplicate ids in one append",
    ),
    pytest.param(
        lambda: [NewEvent(ItemAdded("x"), occurred_at=datetime(2024, 1, 1))],  # noqa: DTZ001 - on purpose
        "timezone-aware",
        id="naive occurred_at",
    ),
    pytest.param(
        lambda: [NewEvent(ItemAdded("x"), metadata=_any({"actor": "ada"}))], "metadata", id="dict metadata"
    ),
    pytest.param(lambda: [NewEvent(ItemAdded("x"), event_id=_any(str(ID)))], "uuid.UUID", id="str event_id"),
]


class _Suite:
    """What every suite here shares: asyncio tests, the backend's ``store_factory``, a ``store``."""

    pytestmark = pytest.mark.asyncio
    registry: ClassVar[EventRegistry] = CONTRACT_REGISTRY
    """The event types the suite's ``store`` knows."""

    @pytest.fixture
    def store_factory(self) -> StoreFactory:
        """Each backend's subclass overrides this fixture (see the module docstring)."""
        pytest.fail(f"{type(self).__name__} must define a store_factory fixture: see {__name__}")

    @pytest_asyncio.fixture
    async def store(self, store_factory: StoreFactory) -> EventStore:
        """A store on a fresh database, knowing the suite's event types."""
        return await store_factory(registry=self.registry)


class EventStoreContract(_Suite):
    """The event store contract. Subclass it as ``Test<Backend>`` with a ``store_factory``.

    See the module docstring for the fixture a backend provides.
    """

    dense_versions: ClassVar[bool] = False
    """True for a backend whose streams cannot start past version 1 (write_recorded refuses it)."""

    @staticmethod
    async def open_several(store_factory: StoreFactory, n: int) -> list[EventStore]:
        """``n`` more stores on the same database, as separate processes would have."""
        return [await store_factory(registry=CONTRACT_REGISTRY) for _ in range(n)]

    # -- the factory: every store it opens sees one database ---------------------------

    async def test_stores_from_the_factory_share_one_database(self, store_factory: StoreFactory) -> None:
        """What one store appends, another store on the same database reads."""
        writer, reader = await self.open_several(store_factory, 2)
        await writer.append(STREAM, items("a"), expected_version=NO_STREAM)
        assert [e.data for e in await reader.read_stream(STREAM)] == [ItemAdded("a")]
        assert await reader.stream_version(STREAM) == 1

    # -- atomic appends ----------------------------------------------------------------

    async def test_append_lands_all_events_at_consecutive_versions(self, store: EventStore) -> None:
        """The events of one append get versions 1..n and increasing positions, in order."""
        sent = items("a", "b", "c")
        await store.append(STREAM, sent, expected_version=NO_STREAM)
        read = await store.read_stream(STREAM)
        assert ids(read) == ids(sent)
        assert [e.stream_version for e in read] == [1, 2, 3]
        assert strictly_increasing([e.position for e in read])

    async def test_append_result_says_where_the_events_landed(self, store: EventStore) -> None:
        """The result holds the new version, each event's position and the last event's checkpoint."""
        await store.append(STREAM, items("a"), expected_version=NO_STREAM)
        result = await store.append(STREAM, items("b", "c"), expected_version=1)
        read = await store.read_stream(STREAM, from_version=2)
        assert result.stream_id == STREAM
        assert (result.first_version, result.stream_version) == (2, 3)
        assert result.positions == tuple(e.position for e in read)
        assert result.checkpoint == read[-1].checkpoint

    async def test_later_appends_come_later_in_the_log(self, store: EventStore) -> None:
        """Appends made one after another sit in the global log in that order, across streams."""
        first = await store.append(STREAM, items("a", "b"), expected_version=NO_STREAM)
        second = await store.append(OTHER, items("c"), expected_version=NO_STREAM)
        third = await store.append(STREAM, items("d"), expected_version=2)
        assert first.checkpoint < second.checkpoint < third.checkpoint
        assert [e.stream_id for e in await full_log(store)] == [STREAM, STREAM, OTHER, STREAM]

    async def test_a_bad_event_in_the_middle_writes_none_of_the_append(self, store: EventStore) -> None:
        """An append with one unencodable event fails whole: its good events are not written."""
        await store.append(STREAM, items("first"), expected_version=NO_STREAM)
        before = await census(store, STREAM)
        with pytest.raises(InvalidEvent, match="does not match its own field types"):
            await store.append(
                STREAM,
                [ItemAdded("good"), Deposited(_NOT_A_DECIMAL), ItemAdded("also good")],
                expected_version=1,
            )
        assert await census(store, STREAM) == before

    async def test_a_conflicting_append_writes_none_of_its_events(self, store: EventStore) -> None:
        """A multi-event append at the wrong version writes nothing."""
        await store.append(STREAM, items("a", "b"), expected_version=NO_STREAM)
        before = await census(store, STREAM)
        with pytest.raises(WrongExpectedVersion):
            await store.append(STREAM, items("c", "d", "e"), expected_version=1)
        assert await census(store, STREAM) == before

    # -- expected versions -------------------------------------------------------------

    @pytest.mark.parametrize(
        ("existing", "expected"),
        [
            pytest.param(2, 2, id="int matching the version"),
            pytest.param(0, 0, id="0 on a new stream"),
            pytest.param(0, NO_STREAM, id="NO_STREAM on a new stream"),
            pytest.param(2, STREAM_EXISTS, id="STREAM_EXISTS on an existing stream"),
            pytest.param(0, ANY, id="ANY on a new stream"),
            pytest.param(2, ANY, id="ANY on an existing stream"),
        ],
    )
    async def test_expected_version_that_holds_lets_the_append_land(
        self, store: EventStore, existing: int, expected: ExpectedVersion
    ) -> None:
        """An append whose expected version the stream satisfies lands after the existing events."""
        if existing:
            await store.append(STREAM, items(*"ab"[:existing]), expected_version=NO_STREAM)
        result = await store.append(STREAM, items("new"), expected_version=expected)
        assert result.stream_version == existing + 1
        assert [e.data for e in await store.read_stream(STREAM)][-1] == ItemAdded("new")

    @pytest.mark.parametrize(
        ("existing", "expected"),
        [
            pytest.param(2, 1, id="int behind the version"),
            pytest.param(2, 3, id="int ahead of the version"),
            pytest.param(0, 1, id="int on a new stream"),
            pytest.param(2, 0, id="0 on an existing stream"),
            pytest.param(2, NO_STREAM, id="NO_STREAM on an existing stream"),
            pytest.param(0, STREAM_EXISTS, id="STREAM_EXISTS on a new stream"),
        ],
    )
    async def test_expected_version_that_fails_raises_and_writes_nothing(
        self, store: EventStore, existing: int, expected: ExpectedVersion
    ) -> None:
        """A mismatch raises WrongExpectedVersion naming stream, expected and actual; nothing is written."""
        if existing:
            await store.append(STREAM, items(*"ab"[:existing]), expected_version=NO_STREAM)
        before = await census(store, STREAM)
        with pytest.raises(WrongExpectedVersion) as caught:
            await store.append(STREAM, items("new"), expected_version=expected)
        error = caught.value
        assert isinstance(error, ConcurrencyError)
        assert (error.stream_id, error.expected, error.actual) == (STREAM, expected, existing)
        message = str(error)
        assert STREAM in message
        assert str(expected) in message
        assert (f"version {existing}" if existing else "no stream") in message
        assert await census(store, STREAM) == before

    # -- idempotent retries ------------------------------------------------------------

    async def test_a_retry_with_the_original_expected_version_returns_the_first_result(
        self, store: EventStore
    ) -> None:
        """Re-sending an append's events as they were returns its result and writes nothing."""
        sent = items("a", "b")
        first = await store.append(STREAM, sent, expected_version=NO_STREAM)
        before = await census(store, STREAM)
        assert await store.append(STREAM, sent, expected_version=NO_STREAM) == first
        assert await census(store, STREAM) == before

    async def test_a_retry_with_any_returns_the_first_result(self, store: EventStore) -> None:
        """Re-sending an append's events with ANY returns its result and writes nothing."""
        await store.append(STREAM, items("a"), expected_version=NO_STREAM)
        sent = items("b", "c")
        first = await store.append(STREAM, sent, expected_version=1)
        before = await census(store, STREAM)
        assert await store.append(STREAM, sent, expected_version=ANY) == first
        assert await census(store, STREAM) == before

    async def test_a_retry_after_the_stream_moved_on_returns_the_first_result(
        self, store: EventStore
    ) -> None:
        """A late retry (the stream has grown since) still returns the first result, not a conflict."""
        sent = items("a")
        first = await store.append(STREAM, sent, expected_version=NO_STREAM)
        await store.append(STREAM, items("b"), expected_version=1)
        before = await census(store, STREAM)
        assert await store.append(STREAM, sent, expected_version=NO_STREAM) == first
        assert await census(store, STREAM) == before

    async def test_the_same_ids_in_another_stream_are_refused(self, store: EventStore) -> None:
        """Event ids already stored in one stream cannot be appended to another."""
        sent = items("a")
        await store.append(STREAM, sent, expected_version=NO_STREAM)
        before = await census(store, STREAM, OTHER)
        with pytest.raises(DuplicateEventId) as caught:
            await store.append(OTHER, sent, expected_version=NO_STREAM)
        assert caught.value.event_id == sent[0].event_id
        assert str(sent[0].event_id) in str(caught.value)
        assert await census(store, STREAM, OTHER) == before

    async def test_partly_overlapping_ids_are_refused(self, store: EventStore) -> None:
        """An append mixing a stored event id with new ones is not a retry: refused, nothing written."""
        sent = items("a", "b")
        await store.append(STREAM, sent, expected_version=NO_STREAM)
        before = await census(store, STREAM)
        with pytest.raises(DuplicateEventId):
            await store.append(STREAM, [sent[1], *items("c")], expected_version=ANY)
        assert await census(store, STREAM) == before

    async def test_the_same_ids_in_another_order_are_refused(self, store: EventStore) -> None:
        """Re-sending an append's events in another order is not a retry: refused, nothing written."""
        sent = items("a", "b")
        await store.append(STREAM, sent, expected_version=NO_STREAM)
        before = await census(store, STREAM)
        with pytest.raises(DuplicateEventId):
            await store.append(STREAM, sent[::-1], expected_version=NO_STREAM)
        assert await census(store, STREAM) == before

    # -- concurrent appenders ----------------------------------------------------------

    async def test_racing_appenders_exactly_one_wins_each_version(self, store_factory: StoreFactory) -> None:
        """16 appenders that read the same version race: one wins, 15 get WrongExpectedVersion."""
        stores = await self.open_several(store_factory, 4)
        racers, rounds = 16, 3
        winners: list[uuid.UUID] = []
        all_sent: set[uuid.UUID] = set()

        async def race(i: int, barrier: asyncio.Barrier) -> tuple[NewEvent, AppendResult | Exception]:
            store = stores[i % len(stores)]
            mine = NewEvent(ItemAdded(f"racer {i}"))
            seen = await store.stream_version(STREAM)
            # Nobody appends until everyone has read, so all race for the same version.
            await barrier.wait()
            try:
                return mine, await store.append(STREAM, [mine], expected_version=seen)
            except WrongExpectedVersion as lost:
                return mine, lost

        for version in range(1, rounds + 1):
            barrier = asyncio.Barrier(racers)
            outcomes = await asyncio.gather(*(race(i, barrier) for i in range(racers)))
            all_sent.update(sent.event_id for sent, _ in outcomes)
            won = [(sent, r) for sent, r in outcomes if isinstance(r, AppendResult)]
            lost = [r for _, r in outcomes if not isinstance(r, AppendResult)]
            assert len(won) == 1, f"round {version}: {len(won)} appenders won the same version"
            assert won[0][1].stream_version == version
            winners.append(won[0][0].event_id)
            assert len(lost) == racers - 1
            for error in lost:
                assert isinstance(error, WrongExpectedVersion)
                assert (error.stream_id, error.expected, error.actual) == (STREAM, version - 1, version)

        stream = await stores[0].read_stream(STREAM)
        assert ids(stream) == winners
        assert [e.stream_version for e in stream] == list(range(1, rounds + 1))
        # The losers' events are nowhere: a failed append leaves no trace.
        assert set(ids(await full_log(stores[0]))) == set(winners) <= all_sent

    async def test_appenders_that_retry_all_land_once_at_contiguous_versions(
        self, store_factory: StoreFactory
    ) -> None:
        """16 appenders that reload and retry on conflict all land, each once, at versions 1..16."""
        stores = await self.open_several(store_factory, 4)
        appenders = 16
        barrier = asyncio.Barrier(appenders)
        conflicts = 0

        async def append_until_landed(i: int) -> tuple[uuid.UUID, int]:
            nonlocal conflicts
            store = stores[i % len(stores)]
            mine = NewEvent(ItemAdded(f"appender {i}"))
            seen = await store.stream_version(STREAM)
            await barrier.wait()  # the first attempts all race for version 1
            # Each conflict means another appender landed, so nobody can lose more than 15 times.
            for _ in range(appenders):
                try:
                    result = await store.append(STREAM, [mine], expected_version=seen)
                except WrongExpectedVersion:
                    conflicts += 1
                    seen = await store.stream_version(STREAM)
                    continue
                return mine.event_id, result.stream_version
            raise AssertionError(f"appender {i} lost more races than there are other appenders")

        landed = await asyncio.gather(*(append_until_landed(i) for i in range(appenders)))
        assert conflicts >= appenders - 1  # the first round alone has 15 losers
        assert sorted(version for _, version in landed) == list(range(1, appenders + 1))
        stream = await stores[-1].read_stream(STREAM)
        assert [e.stream_version for e in stream] == list(range(1, appenders + 1))
        assert {e.event_id: e.stream_version for e in stream} == dict(landed)

    async def test_concurrent_appends_to_different_streams_all_land(
        self, store_factory: StoreFactory
    ) -> None:
        """Appenders on different streams do not conflict: every event of every append lands."""
        stores = await self.open_several(store_factory, 4)
        writers = 16
        barrier = asyncio.Barrier(writers)

        async def write(i: int) -> list[NewEvent]:
            sent = items(f"{i}-a", f"{i}-b", f"{i}-c")
            await barrier.wait()
            result = await stores[i % len(stores)].append(f"stream-{i}", sent, expected_version=NO_STREAM)
            assert result.stream_version == 3
            return sent

        sent = await asyncio.gather(*(write(i) for i in range(writers)))
        for i, events in enumerate(sent):
            assert ids(await stores[0].read_stream(f"stream-{i}")) == ids(events)
        log = await full_log(stores[0])
        assert sorted(ids(log)) == sorted(e.event_id for events in sent for e in events)
        assert len({e.position for e in log}) == len(log) == writers * 3

    # -- the global log ----------------------------------------------------------------

    async def test_readers_following_the_log_all_see_one_order_without_gaps(
        self, store_factory: StoreFactory
    ) -> None:
        """Readers paging from checkpoints while writers append each see every event once, in one order."""
        stores = await self.open_several(store_factory, 4)
        writers, rounds, page_size = 4, 10, 7
        progress = WriterProgress()
        barrier = asyncio.Barrier(writers)

        async def write(w: int) -> None:
            store = stores[w % len(stores)]
            for r in range(rounds):
                # One- and three-event appends, so that pages end inside multi-event appends.
                batch = items(*(f"w{w} r{r} #{k}" for k in range(1 + 2 * (r % 2))))
                await store.append(f"writer-{w}", batch, expected_version=ANY)
                await progress.appended()
                # Writers go in rounds, so readers see the log grow between their pages on
                # every backend (memory:// never suspends by itself).
                await barrier.wait()

        async def write_all() -> None:
            await asyncio.gather(*(write(w) for w in range(writers)))
            await progress.finish()

        async def follow(reader: int) -> list[RecordedEvent]:
            store = stores[reader % len(stores)]
            seen: list[RecordedEvent] = []
            token: str | None = None  # kept as text, as a projection would store it
            while True:
                done, appends = progress.done, progress.appends
                page = await store.read_all(token, limit=page_size)
                assert len(page) <= page_size
                seen.extend(page)
                token = str(page.checkpoint)
                if page.events:
                    continue
                if done:  # the writers had finished before this empty read began
                    return seen
                await progress.wait_past(appends)

        _, reads = await asyncio.gather(write_all(), asyncio.gather(*(follow(r) for r in range(3))))
        final = await full_log(stores[0])
        assert len(final) == writers * rounds * 2
        assert len(set(ids(final))) == len({e.position for e in final}) == len(final)
        # The order is that of checkpoints; a backend may order by (transaction, position)
        # rather than by position alone (PostgreSQL does, to never skip a late commit).
        assert strictly_increasing([e.checkpoint for e in final])
        for seen in reads:
            assert ids(seen) == ids(final)
            assert seen == final

    async def test_read_all_pages_respect_the_limit_and_continue_where_they_ended(
        self, store: EventStore
    ) -> None:
        """Pages of a quiet log hold at most ``limit`` events and, chained, give the whole log."""
        await store.append(STREAM, items("a", "b", "c"), expected_version=NO_STREAM)
        await store.append(OTHER, items("d", "e", "f", "g"), expected_version=NO_STREAM)
        await store.append(STREAM, items("h", "i", "j"), expected_version=3)
        pages = []
        checkpoint: Checkpoint | None = None
        while True:
            page = await store.read_all(checkpoint, limit=4)
            assert checkpoint is None or page.checkpoint >= checkpoint
            checkpoint = page.checkpoint
            if not page.events:
                break
            pages.append(list(page))
        assert [len(p) for p in pages] == [4, 4, 2]
        everything = [e for p in pages for e in p]
        assert [e.data.name for e in everything] == list("abcdefghij")
        assert strictly_increasing([e.checkpoint for e in everything])

    async def test_read_all_continues_right_after_a_given_checkpoint(self, store: EventStore) -> None:
        """Reading after an event's checkpoint starts with the next event of the log."""
        await store.append(STREAM, items("a", "b", "c"), expected_version=NO_STREAM)
        await store.append(OTHER, items("d", "e"), expected_version=NO_STREAM)
        log = await full_log(store)
        for i, e in enumerate(log):
            assert list(await store.read_all(e.checkpoint)) == log[i + 1 :]

    async def test_checkpoints_survive_a_round_trip_through_text(self, store: EventStore) -> None:
        """``Checkpoint.parse(str(c))`` is ``c``, and reading after either gives the same page."""
        await store.append(STREAM, items("a", "b", "c"), expected_version=NO_STREAM)
        page = await store.read_all(limit=2)
        for checkpoint in [page.checkpoint, *(e.checkpoint for e in page)]:
            token = str(checkpoint)
            assert Checkpoint.parse(token) == checkpoint
            assert list(await store.read_all(token)) == list(await store.read_all(checkpoint))

    async def test_an_empty_log_reads_as_empty(self, store: EventStore) -> None:
        """A new store has no events, head START, and a read from its checkpoint stays empty."""
        assert await store.head() == START
        page = await store.read_all()
        assert list(page) == []
        assert list(await store.read_all(page.checkpoint)) == []

    async def test_event_types_filter_returns_only_those_types(self, store: EventStore) -> None:
        """``event_types`` keeps the named types, in log order, across pages."""
        await store.append(
            STREAM,
            [ItemAdded("a"), Deposited(Decimal(1)), Tagged(("x",)), Deposited(Decimal(2)), ItemAdded("b")],
            expected_version=NO_STREAM,
        )
        wanted = {"contract.Deposited", "contract.Tagged"}
        expected = [e for e in await full_log(store) if e.event_type in wanted]
        page = await store.read_all(event_types=sorted(wanted))
        assert list(page) == expected
        first = await store.read_all(event_types=sorted(wanted), limit=2)
        rest = await store.read_all(first.checkpoint, event_types=sorted(wanted), limit=2)
        assert [*first, *rest] == expected
        assert [type(e.data) for e in expected] == [Deposited, Tagged, Deposited]

    async def test_a_filtered_read_moves_its_checkpoint_past_skipped_events(self, store: EventStore) -> None:
        """A filtered page's checkpoint passes the filtered-out events, so they are not scanned again."""
        await store.append(
            STREAM,
            [ItemAdded("a"), Deposited(Decimal(1)), ItemAdded("b"), ItemAdded("c")],
            expected_version=NO_STREAM,
        )
        log = await full_log(store)
        page = await store.read_all(event_types=["contract.Deposited"])
        assert [e.data for e in page] == [Deposited(Decimal(1))]
        assert page.checkpoint >= log[-1].checkpoint
        assert list(await store.read_all(page.checkpoint)) == []
        await store.append(STREAM, [ItemAdded("d"), Deposited(Decimal(2))], expected_version=4)
        later = await store.read_all(page.checkpoint, event_types=["contract.Deposited"])
        assert [e.data for e in later] == [Deposited(Decimal(2))]

    # -- looking inside: streams, categories, one event, counts ------------------------------

    async def test_list_streams_gives_each_stream_its_version_in_id_order(self, store: EventStore) -> None:
        """``list_streams`` lists streams by id, with their version, last position and time; pages go on."""
        await store.append("b-2", items("a", "b"), expected_version=NO_STREAM)
        await store.append("a-1", items("c"), expected_version=NO_STREAM)
        await store.append("b-1", items("d"), expected_version=NO_STREAM)
        await store.append("b-2", items("e"), expected_version=2)
        log = await full_log(store)
        listed = await store.list_streams()
        assert [(s.stream_id, s.version) for s in listed] == [("a-1", 1), ("b-1", 1), ("b-2", 3)]
        assert listed[2].last_position == log[-1].position
        assert listed[2].last_recorded_at == log[-1].recorded_at
        assert [s.stream_id for s in await store.list_streams(prefix="b-")] == ["b-1", "b-2"]
        assert [s.stream_id for s in await store.list_streams(limit=1, after="a-1")] == ["b-1"]
        assert await store.list_streams(prefix="c-") == []

    async def test_read_category_keeps_the_streams_of_a_prefix_in_log_order(self, store: EventStore) -> None:
        """``read_category`` is the global log of the streams with that prefix, paged like read_all."""
        await store.append("acct-1", items("a"), expected_version=NO_STREAM)
        await store.append("other-1", items("b"), expected_version=NO_STREAM)
        await store.append("acct-2", items("c", "d"), expected_version=NO_STREAM)
        log = await full_log(store)
        wanted = [e for e in log if e.stream_id.startswith("acct-")]
        assert list(await store.read_category("acct-")) == wanted
        first = await store.read_category("acct-", limit=2)
        rest = await store.read_category("acct-", first.checkpoint)
        assert [*first, *rest] == wanted
        quiet = await store.read_category("none-")
        assert list(quiet) == []
        assert quiet.checkpoint >= log[-1].checkpoint

    async def test_a_prefix_is_a_prefix_at_its_edges(self, store: EventStore) -> None:
        """Category reads and stream listings match ids by their characters: no pattern, no collation."""
        ids = ["a%-1", "a_-1", "ab-1", "a%", "a&", "é-1", "é\U0010ffff", "f\U0010ffff-1", "f\U0010ffff"]
        for stream_id in ids:
            await store.append(stream_id, items("x"), expected_version=NO_STREAM)
        for prefix in ["a%", "a_", "é", "f\U0010ffff", "\U0010ffff"]:
            wanted = sorted(i for i in ids if i.startswith(prefix))
            page = await store.read_category(prefix)
            assert sorted(e.stream_id for e in page) == wanted, prefix
            assert [s.stream_id for s in await store.list_streams(prefix=prefix)] == wanted, prefix

    async def test_get_event_finds_an_event_by_its_id(self, store: EventStore) -> None:
        """``get_event`` returns the stored event with that id, or None."""
        new = items("a", "b")
        await store.append(STREAM, new, expected_version=NO_STREAM)
        found = await store.get_event(new[1].event_id)
        assert found is not None
        assert (found.stream_id, found.stream_version, found.data) == (STREAM, 2, ItemAdded("b"))
        assert await store.get_event(str(new[0].event_id)) == (await store.read_stream(STREAM))[0]
        assert await store.get_event(uuid.uuid4()) is None
        with pytest.raises(InvalidInput):
            await store.get_event("not-a-uuid")

    async def test_counts_give_the_events_streams_and_head(self, store: EventStore) -> None:
        """``counts`` says how many events and streams the store holds, and its head."""
        empty = await store.counts()
        assert (empty.events, empty.streams, empty.head) == (0, 0, START)
        await store.append(STREAM, items("a", "b"), expected_version=NO_STREAM)
        await store.append(OTHER, items("c"), expected_version=NO_STREAM)
        counts = await store.counts()
        assert (counts.events, counts.streams, counts.head) == (3, 2, await store.head())

    async def test_iter_all_yields_the_whole_log_in_order(self, store: EventStore) -> None:
        """``iter_all`` walks the log page by page, from the start or a checkpoint, filtered or not."""
        await store.append(STREAM, items("a", "b", "c", "d"), expected_version=NO_STREAM)
        await store.append(OTHER, [Deposited(Decimal(1)), *items("e", "f")], expected_version=NO_STREAM)
        log = list(await store.read_all(limit=MAX_PAGE))
        assert [e async for e in store.iter_all(batch=2)] == log
        assert [e async for e in store.iter_all(str(log[2].checkpoint), batch=3)] == log[3:]
        deposits = [e async for e in store.iter_all(batch=1, event_types=["contract.Deposited"])]
        assert [e.data for e in deposits] == [Deposited(Decimal(1))]

    async def test_iter_all_left_early_leaves_no_read_behind(self, store: EventStore) -> None:
        """Leaving ``iter_all`` mid-page ends the read it started ahead; the store serves on."""
        await store.append(STREAM, items("a", "b", "c", "d", "e"), expected_version=NO_STREAM)
        walk = store.iter_all(batch=2)
        first = [await anext(walk) for _ in range(3)]  # into the second page; the third is being read
        await walk.aclose()
        assert [e.position for e in first] == [e.position for e in (await store.read_all(limit=3)).events]
        assert [e async for e in store.iter_all(batch=2)] == list(await store.read_all(limit=MAX_PAGE))

    async def test_head_is_the_checkpoint_of_the_last_event(self, store: EventStore) -> None:
        """``head`` is START on an empty store and then the last event's checkpoint."""
        assert await store.head() == START
        await store.append(STREAM, items("a"), expected_version=NO_STREAM)
        result = await store.append(OTHER, items("b", "c"), expected_version=NO_STREAM)
        await settled(store)
        assert await store.head() == result.checkpoint == (await full_log(store))[-1].checkpoint

    # -- streams -----------------------------------------------------------------------

    @pytest_asyncio.fixture
    async def stream_of_five(self, store: EventStore) -> EventStore:
        """The store with events a..e at versions 1..5 of STREAM, and one event in OTHER."""
        await store.append(STREAM, items("a", "b"), expected_version=NO_STREAM)
        await store.append(OTHER, items("other"), expected_version=NO_STREAM)
        await store.append(STREAM, items("c", "d", "e"), expected_version=2)
        return store

    @staticmethod
    def names(events: Sequence[RecordedEvent]) -> str:
        """The ItemAdded names of ``events``, joined."""
        return "".join(e.data.name for e in events)

    async def test_read_stream_reads_one_stream_oldest_first(self, stream_of_five: EventStore) -> None:
        """``read_stream`` returns that stream's events only, by version."""
        read = await stream_of_five.read_stream(STREAM)
        assert self.names(read) == "abcde"
        assert [e.stream_version for e in read] == [1, 2, 3, 4, 5]
        assert {e.stream_id for e in read} == {STREAM}

    async def test_read_stream_backwards_reads_newest_first(self, stream_of_five: EventStore) -> None:
        """``backwards=True`` returns the same events newest first."""
        assert self.names(await stream_of_five.read_stream(STREAM, backwards=True)) == "edcba"

    @pytest.mark.parametrize(
        ("options", "expected"),
        [
            pytest.param({"from_version": 2}, "bcde", id="from"),
            pytest.param({"to_version": 3}, "abc", id="to"),
            pytest.param({"from_version": 2, "to_version": 4}, "bcd", id="from-to"),
            pytest.param({"from_version": 3, "to_version": 3}, "c", id="one version"),
            pytest.param({"from_version": 4, "to_version": 2}, "", id="empty range"),
            pytest.param({"from_version": 6}, "", id="past the end"),
            pytest.param({"to_version": 99}, "abcde", id="to past the end"),
            pytest.param({"limit": 2}, "ab", id="limit keeps the oldest"),
            pytest.param({"limit": 0}, "", id="limit 0"),
            pytest.param({"backwards": True, "limit": 2}, "ed", id="backwards limit keeps the newest"),
            pytest.param({"backwards": True, "to_version": 4, "limit": 2}, "dc", id="backwards to-limit"),
            pytest.param(
                {"from_version": 2, "to_version": 4, "backwards": True}, "dcb", id="backwards range"
            ),
        ],
    )
    async def test_read_stream_options(
        self, stream_of_five: EventStore, options: dict[str, Any], expected: str
    ) -> None:
        """Version range, direction and limit select exactly the expected events."""
        assert self.names(await stream_of_five.read_stream(STREAM, **options)) == expected

    async def test_an_unknown_stream_reads_as_empty(self, stream_of_five: EventStore) -> None:
        """A stream with no events reads as [] and is at version 0."""
        assert await stream_of_five.read_stream("never-written") == []
        assert await stream_of_five.read_stream("never-written", backwards=True, limit=1) == []
        assert await stream_of_five.stream_version("never-written") == 0

    async def test_stream_version_is_the_last_events_version(self, stream_of_five: EventStore) -> None:
        """``stream_version`` counts the stream's own events only."""
        assert await stream_of_five.stream_version(STREAM) == 5
        assert await stream_of_five.stream_version(OTHER) == 1

    # -- temporal reads ----------------------------------------------------------------

    async def test_read_stream_as_of_a_time_between_two_appends(self, store: EventStore) -> None:
        """``as_of`` gives the stream as it was: events recorded at or before that time."""
        await store.append(STREAM, items("before"), expected_version=NO_STREAM)
        [first] = await store.read_stream(STREAM)
        between = tick_past(first.recorded_at)
        tick_past(between)
        await store.append(STREAM, items("after"), expected_version=1)
        [_, second] = await store.read_stream(STREAM)
        assert first.recorded_at <= between < second.recorded_at
        assert self.names(await store.read_stream(STREAM, as_of=between)) == "before"
        assert self.names(await store.read_stream(STREAM, as_of=first.recorded_at)) == "before"
        assert self.names(await store.read_stream(STREAM, as_of=second.recorded_at)) == "beforeafter"
        before_all = first.recorded_at - timedelta(microseconds=1)
        assert await store.read_stream(STREAM, as_of=before_all) == []

    async def test_repository_loads_an_aggregate_at_a_past_version(self, store: EventStore) -> None:
        """``Repository.load(version=n)`` replays exactly the first n events."""
        stream = Tally.stream_id_for("t1")
        amounts = [Decimal("1.10"), Decimal("2.20"), Decimal("3.30")]
        await store.append(stream, [Deposited(a) for a in amounts], expected_version=NO_STREAM)
        repo = Repository(store)
        past = await repo.load(Tally, "t1", version=2)
        assert (past.version, past.total, past.count) == (2, Decimal("3.30"), 2)
        with pytest.raises(AggregateNotFound):
            await repo.load(Tally, "t1", version=4)

    async def test_repository_loads_an_aggregate_as_of_a_time(self, store: EventStore) -> None:
        """``Repository.load(as_of=t)`` replays the events recorded up to t."""
        stream = Tally.stream_id_for("t1")
        await store.append(stream, [Deposited(Decimal("1.10"))], expected_version=NO_STREAM)
        [first] = await store.read_stream(stream)
        between = tick_past(first.recorded_at)
        tick_past(between)
        await store.append(stream, [Deposited(Decimal("2.20"))], expected_version=1)
        repo = Repository(store)
        then = await repo.load(Tally, "t1", as_of=between)
        assert (then.version, then.total) == (1, Decimal("1.10"))
        assert (await repo.load(Tally, "t1")).total == Decimal("3.30")
        with pytest.raises(AggregateNotFound):
            await repo.load(Tally, "t1", as_of=first.recorded_at - timedelta(microseconds=1))

    # -- snapshots ---------------------------------------------------------------------

    @staticmethod
    def snapshot(
        stream_id: str = STREAM, version: int = 3, schema: int = 1, state: bytes = b"{}"
    ) -> Snapshot:
        """A snapshot to save."""
        return Snapshot(stream_id, version, schema, state, datetime.now(UTC))

    async def test_a_saved_snapshot_loads_back(self, store_factory: StoreFactory) -> None:
        """A snapshot saved by one store loads back, byte for byte, from another."""
        writer, reader = await self.open_several(store_factory, 2)
        state = b'{"total":"0.10","name":"\xe6\x97\xa5\xe6\x9c\xac"}'
        await writer.save_snapshot(self.snapshot(state=state))
        loaded = await reader.load_snapshot(STREAM, schema_version=1)
        assert loaded is not None
        assert (loaded.stream_id, loaded.stream_version, loaded.schema_version) == (STREAM, 3, 1)
        assert loaded.state == state
        assert loaded.created_at.utcoffset() == timedelta(0)

    async def test_snapshots_are_keyed_by_stream_and_schema_version(self, store: EventStore) -> None:
        """A snapshot is found only under its own stream and snapshot schema version."""
        await store.save_snapshot(self.snapshot(schema=1, state=b'"one"'))
        await store.save_snapshot(self.snapshot(schema=2, version=2, state=b'"two"'))
        one = await store.load_snapshot(STREAM, schema_version=1)
        two = await store.load_snapshot(STREAM, schema_version=2)
        assert one is not None
        assert two is not None
        assert (one.state, two.state) == (b'"one"', b'"two"')
        assert await store.load_snapshot(STREAM, schema_version=3) is None
        assert await store.load_snapshot(OTHER, schema_version=1) is None

    async def test_a_snapshot_past_max_version_is_not_returned(self, store: EventStore) -> None:
        """``max_version`` hides a snapshot taken after that version."""
        await store.save_snapshot(self.snapshot(version=5))
        assert await store.load_snapshot(STREAM, schema_version=1, max_version=4) is None
        at_five = await store.load_snapshot(STREAM, schema_version=1, max_version=5)
        assert at_five is not None
        assert at_five.stream_version == 5

    async def test_an_older_snapshot_never_replaces_a_newer_one(self, store: EventStore) -> None:
        """Saving a snapshot of a lower version keeps the newer one; a higher version replaces it."""
        await store.save_snapshot(self.snapshot(version=5, state=b"5"))
        await store.save_snapshot(self.snapshot(version=3, state=b"3"))
        kept = await store.load_snapshot(STREAM, schema_version=1)
        assert kept is not None
        assert (kept.stream_version, kept.state) == (5, b"5")
        await store.save_snapshot(self.snapshot(version=7, state=b"7"))
        newer = await store.load_snapshot(STREAM, schema_version=1)
        assert newer is not None
        assert (newer.stream_version, newer.state) == (7, b"7")

    async def test_list_snapshots_by_type_or_stream(self, store_factory: StoreFactory) -> None:
        """``list_snapshots`` lists all snapshots (or a type's, a stream's) by stream and schema version."""
        writer, reader = await self.open_several(store_factory, 2)
        await writer.save_snapshot(self.snapshot("tally-2", version=4, state=b"1234"))
        await writer.save_snapshot(self.snapshot("tally-1", schema=2, version=3, state=b"12"))
        await writer.save_snapshot(self.snapshot("tally-1", schema=1, version=2, state=b"1"))
        await writer.save_snapshot(self.snapshot("tallyho-1", state=b""))
        await writer.save_snapshot(self.snapshot("other-1", state=b"x"))
        listed = await reader.list_snapshots()
        assert [(i.stream_id, i.schema_version, i.stream_version, i.size) for i in listed] == [
            ("other-1", 1, 3, 1),
            ("tally-1", 1, 2, 1),
            ("tally-1", 2, 3, 2),
            ("tally-2", 1, 4, 4),
            ("tallyho-1", 1, 3, 0),
        ]
        assert all(i.created_at.utcoffset() == timedelta(0) for i in listed)
        tallies = await reader.list_snapshots(category="tally")
        assert [i.stream_id for i in tallies] == ["tally-1", "tally-1", "tally-2"]
        assert [i.schema_version for i in await reader.list_snapshots(stream_id="tally-1")] == [1, 2]
        assert len(await reader.list_snapshots(limit=2)) == 2
        assert await reader.list_snapshots(category="none") == []

    async def test_drop_snapshots_by_type_stream_or_all(self, store: EventStore) -> None:
        """``drop_snapshots`` deletes one stream's, one type's or every snapshot, and says how many."""
        for stream_id in ("tally-1", "tally-2", "tallyho-1", "other-1"):
            await store.save_snapshot(self.snapshot(stream_id))
        assert await store.drop_snapshots(stream_id="tally-2") == 1
        assert await store.load_snapshot("tally-2", schema_version=1) is None
        assert await store.drop_snapshots(category="tally") == 1
        assert [i.stream_id for i in await store.list_snapshots()] == ["other-1", "tallyho-1"]
        assert await store.drop_snapshots(category="tally") == 0
        assert await store.drop_snapshots() == 2
        assert await store.list_snapshots() == []

    async def test_snapshot_listings_check_their_arguments(self, store: EventStore) -> None:
        """Both a type and a stream, an empty type or a bad limit are refused with InvalidInput."""
        for call in (
            store.list_snapshots(category="tally", stream_id="tally-1"),
            store.list_snapshots(category=""),
            store.list_snapshots(limit=0),
            store.list_snapshots(limit=MAX_PAGE + 1),
            store.drop_snapshots(category="tally", stream_id="tally-1"),
            store.drop_snapshots(category=""),
            store.drop_snapshots(stream_id=""),
        ):
            with pytest.raises(InvalidInput):
                await call

    async def test_snapshots_are_not_part_of_the_log(self, store: EventStore) -> None:
        """Saving a snapshot adds no event to the global log or to its stream."""
        await store.append(STREAM, items("a"), expected_version=NO_STREAM)
        before = await census(store, STREAM)
        head = await store.head()
        await store.save_snapshot(self.snapshot(version=1))
        assert await census(store, STREAM) == before
        assert await store.head() == head

    async def test_repository_snapshot_plus_later_events_equals_a_full_replay(
        self, store: EventStore
    ) -> None:
        """An aggregate loaded from a snapshot and the events after it equals one replayed from scratch."""
        snapshots = Repository(store, snapshot_every={Tally: 4})
        tally = Tally("t1")
        tally.deposit(Decimal("0.10"))
        await snapshots.save(tally)
        for _ in range(9):
            await snapshots.update(Tally, "t1", lambda t: t.deposit(Decimal("0.10")))
        taken = await store.load_snapshot(Tally.stream_id_for("t1"), schema_version=1)
        assert taken is not None
        assert taken.stream_version == 8
        replays = Repository(store, snapshot_every={Tally: None})
        for version in (None, 6, 8, 3):
            from_snapshot = await snapshots.load(Tally, "t1", version=version)
            replayed = await replays.load(Tally, "t1", version=version)
            assert from_snapshot.version == replayed.version == (version or 10)
            assert from_snapshot.state() == replayed.state()
        assert (await snapshots.load(Tally, "t1")).total == Decimal("1.00")

    async def test_repository_ignores_a_snapshot_of_another_schema(self, store: EventStore) -> None:
        """A snapshot saved under an older ``snapshot_schema`` is not used by code of a newer one."""
        stream = Tally.stream_id_for("t1")
        await store.append(stream, [Deposited(Decimal("0.10"))] * 3, expected_version=NO_STREAM)
        # A schema-1 snapshot that does not match the events: whoever uses it shows 99.
        wrong = store.codec.encode_value({"total": Decimal(99), "count": 99})
        await store.save_snapshot(self.snapshot(stream, version=3, schema=1, state=wrong))
        repo = Repository(store, snapshot_every={Tally: 100, TallyV2: 100})
        assert (await repo.load(Tally, "t1")).count == 99  # schema-1 code trusts its own snapshots
        current = await repo.load(TallyV2, "t1")
        assert current.state() == {"total": Decimal("0.30"), "count": 3}
        assert current.version == 3

    # -- schema evolution --------------------------------------------------------------

    async def test_an_old_event_is_read_through_its_upcaster(self, store_factory: StoreFactory) -> None:
        """A v1 event read by code at v2 arrives upcast, while its stored form stays v1."""
        old_code = await store_factory(registry=OLD_CODE)
        await old_code.append(STREAM, [NoteTakenV1("hello")], expected_version=NO_STREAM)
        new_code = await store_factory(registry=NEW_CODE)
        [read] = await new_code.read_stream(STREAM)
        assert read.event_type == "contract.NoteTaken"
        assert read.schema_version == 1
        assert read.data == NoteTakenV2("hello", author="unknown")
        assert [e.data for e in await new_code.read_all()] == [NoteTakenV2("hello", author="unknown")]
        # Old events are never rewritten: the old code still reads what it wrote.
        assert msgspec.json.decode(read.payload) == {"text": "hello"}
        assert [e.data for e in await old_code.read_stream(STREAM)] == [NoteTakenV1("hello")]

    async def test_an_event_newer_than_the_code_is_a_clear_error(self, store_factory: StoreFactory) -> None:
        """Code at v1 reading a v2 event gets its envelope, and an EventTypeError on ``.data``."""
        new_code = await store_factory(registry=NEW_CODE)
        await new_code.append(STREAM, [NoteTakenV2("hi", "ada")], expected_version=NO_STREAM)
        old_code = await store_factory(registry=OLD_CODE)
        [read] = await old_code.read_stream(STREAM)
        assert (read.event_type, read.schema_version, read.stream_version) == ("contract.NoteTaken", 2, 1)
        with pytest.raises(EventTypeError, match="newer than this code"):
            _ = read.data

    # -- the envelope ------------------------------------------------------------------

    async def test_the_envelope_round_trips(self, store_factory: StoreFactory) -> None:
        """Event id, occurred_at, metadata and data written by one store read back equal from another."""
        writer, reader = await self.open_several(store_factory, 2)
        meta = Metadata(
            correlation_id="corr-1", causation_id="cmd-9", actor="ada", request_id="req-7", extra={"k": "v"}
        )
        sent = NewEvent(Deposited(Decimal("0.10"), "fee"), metadata=meta, event_id=ID, occurred_at=_AWARE)
        await writer.append(STREAM, [sent], expected_version=NO_STREAM)
        [read] = await reader.read_stream(STREAM)
        assert (read.event_id, read.stream_id, read.stream_version) == (ID, STREAM, 1)
        assert read.event_type == "contract.Deposited"
        assert read.schema_version == 1
        assert read.occurred_at == _AWARE
        assert read.occurred_at.utcoffset() == timedelta(0)
        assert read.metadata == meta
        assert read.data == Deposited(Decimal("0.10"), "fee")

    async def test_recorded_at_is_the_stores_time_in_utc(self, store: EventStore) -> None:
        """recorded_at is timezone-aware UTC and near now (not, say, in the wrong unit)."""
        await store.append(STREAM, items("a"), expected_version=NO_STREAM)
        [read] = await store.read_stream(STREAM)
        assert read.recorded_at.utcoffset() == timedelta(0)
        assert abs(read.recorded_at - datetime.now(UTC)) < timedelta(minutes=5)

    async def test_default_event_ids_are_time_ordered_uuid7(self, store: EventStore) -> None:
        """Bare events get UUIDv7 ids that increase from one append to the next."""
        await store.append(STREAM, [ItemAdded("a"), ItemAdded("b")], expected_version=NO_STREAM)
        await store.append(STREAM, [ItemAdded("c")], expected_version=2)
        read = await store.read_stream(STREAM)
        assert {e.event_id.version for e in read} == {7}
        assert strictly_increasing(ids(read))

    async def test_empty_metadata_reads_back_empty(self, store: EventStore) -> None:
        """An event appended without metadata reads back with empty Metadata."""
        await store.append(STREAM, [ItemAdded("a")], expected_version=NO_STREAM)
        [read] = await store.read_stream(STREAM)
        assert read.metadata == Metadata()

    async def test_decimals_keep_their_exact_digits(self, store_factory: StoreFactory) -> None:
        """Decimal amounts come back digit for digit: 0.10 stays 0.10, never a float."""
        writer, reader = await self.open_several(store_factory, 2)
        amounts = ["0.10", "1.00", "0.1", "12345678901234567890.123456789", "-0.01", "0E-8"]
        await writer.append(STREAM, [Deposited(Decimal(a)) for a in amounts], expected_version=NO_STREAM)
        read = await reader.read_stream(STREAM)
        assert [str(e.data.amount) for e in read] == amounts
        assert all(type(e.data.amount) is Decimal for e in read)

    @pytest.mark.parametrize(
        "text",
        [
            pytest.param("😀🏦💶", id="emoji"),
            pytest.param("日本語の口座", id="CJK"),
            pytest.param("حساب שלום \u200f", id="RTL"),
            pytest.param("cafe\u0301 n\u0303", id="combining marks"),
        ],
    )
    async def test_unicode_round_trips_in_stream_ids_and_data(
        self, store_factory: StoreFactory, text: str
    ) -> None:
        """Stream ids and data in any script come back exactly, code point for code point."""
        writer, reader = await self.open_several(store_factory, 2)
        stream = f"konto-{text}"
        await writer.append(stream, [ItemAdded(text), Tagged((text, text[::-1]))], expected_version=NO_STREAM)
        read = await reader.read_stream(stream)
        assert [e.stream_id for e in read] == [stream, stream]
        assert [e.data for e in read] == [ItemAdded(text), Tagged((text, text[::-1]))]
        assert [e.stream_id for e in await reader.read_all()] == [stream, stream]
        assert await reader.stream_version(stream) == 2

    async def test_differently_normalized_stream_ids_are_different_streams(self, store: EventStore) -> None:
        """Stream ids are not Unicode-normalized: 'e' + combining acute and 'é' are two streams."""
        decomposed, composed = "cafe\u0301", "caf\u00e9"
        await store.append(decomposed, items("decomposed"), expected_version=NO_STREAM)
        await store.append(composed, items("composed"), expected_version=NO_STREAM)
        assert self.names(await store.read_stream(decomposed)) == "decomposed"
        assert self.names(await store.read_stream(composed)) == "composed"

    async def test_the_longest_stream_id_round_trips(self, store: EventStore) -> None:
        """A stream id of the maximum length, in four-byte characters, is accepted and kept whole."""
        stream = "😀" * MAX_STREAM_ID_LENGTH
        await store.append(stream, items("a"), expected_version=NO_STREAM)
        [read] = await store.read_stream(stream)
        assert read.stream_id == stream
        assert await store.stream_version(stream) == 1

    async def test_a_large_payload_round_trips(self, store_factory: StoreFactory) -> None:
        """An event holding a 1 MB string is stored and read back whole."""
        writer, reader = await self.open_several(store_factory, 2)
        big = ("ledger €😀 " * 80_000)[:1_000_000]
        await writer.append(STREAM, [ItemAdded(big), ItemAdded("small")], expected_version=NO_STREAM)
        read = await reader.read_stream(STREAM)
        assert read[0].data == ItemAdded(big)
        assert read[1].data == ItemAdded("small")
        assert [e.data for e in await reader.read_all()] == [ItemAdded(big), ItemAdded("small")]

    # -- bad input: a specific error, and nothing written ------------------------------

    @pytest_asyncio.fixture
    async def populated(self, store: EventStore) -> EventStore:
        """The store with one event in STREAM, so that any stray write would show."""
        await store.append(STREAM, items("existing"), expected_version=NO_STREAM)
        return store

    @pytest.mark.parametrize(
        "stream_id",
        [
            pytest.param("", id="empty"),
            pytest.param(42, id="int"),
            pytest.param(None, id="None"),
            pytest.param(b"order-1", id="bytes"),
            pytest.param(" order-1", id="leading space"),
            pytest.param("order-1\t", id="trailing tab"),
            pytest.param("order\n1", id="newline"),
            pytest.param("order\x001", id="NUL"),
            pytest.param("order\x7f", id="DEL"),
            pytest.param("x" * (MAX_STREAM_ID_LENGTH + 1), id="too long"),
        ],
    )
    async def test_a_bad_stream_id_is_refused_everywhere(self, populated: EventStore, stream_id: Any) -> None:
        """A bad stream id raises InvalidStreamId from every method that takes one; nothing is written."""
        before = await census(populated, STREAM)
        with pytest.raises(InvalidStreamId, match="stream id"):
            await populated.append(stream_id, items("x"), expected_version=ANY)
        with pytest.raises(InvalidStreamId, match="stream id"):
            await populated.read_stream(stream_id)
        with pytest.raises(InvalidStreamId, match="stream id"):
            await populated.stream_version(stream_id)
        with pytest.raises(InvalidStreamId, match="stream id"):
            await populated.save_snapshot(self.snapshot(stream_id))
        with pytest.raises(InvalidStreamId, match="stream id"):
            await populated.load_snapshot(stream_id, schema_version=1)
        assert await census(populated, STREAM) == before

    @pytest.mark.parametrize(
        "expected",
        [
            pytest.param(-1, id="negative"),
            pytest.param(True, id="bool"),
            pytest.param(False, id="False"),
            pytest.param("1", id="str"),
            pytest.param(1.0, id="float"),
            pytest.param(None, id="None"),
            pytest.param("ANY", id="name of a state"),
        ],
    )
    async def test_a_bad_expected_version_is_refused(self, populated: EventStore, expected: Any) -> None:
        """An expected version that is not an int >= 0 or a StreamState raises InvalidExpectedVersion."""
        before = await census(populated, STREAM)
        with pytest.raises(InvalidExpectedVersion, match="expected_version"):
            await populated.append(STREAM, items("x"), expected_version=expected)
        assert await census(populated, STREAM) == before

    @pytest.mark.parametrize(("make_events", "message"), _BAD_EVENTS)
    async def test_bad_events_are_refused(
        self, populated: EventStore, make_events: Callable[[], Any], message: str
    ) -> None:
        """Events that cannot be appended as given raise InvalidEvent; nothing is written."""
        before = await census(populated, STREAM)
        with pytest.raises(InvalidEvent, match=message):
            await populated.append(STREAM, make_events(), expected_version=1)
        assert await census(populated, STREAM) == before

    @pytest.mark.parametrize(
        "options",
        [
            pytest.param({"from_version": 0}, id="from_version 0"),
            pytest.param({"from_version": -1}, id="negative from_version"),
            pytest.param({"from_version": "1"}, id="str from_version"),
            pytest.param({"from_version": None}, id="None from_version"),
            pytest.param({"to_version": -1}, id="negative to_version"),
            pytest.param({"to_version": 2.0}, id="float to_version"),
            pytest.param({"limit": -1}, id="negative limit"),
            pytest.param({"limit": True}, id="bool limit"),
            pytest.param({"backwards": "yes"}, id="str backwards"),
            pytest.param({"as_of": datetime(2024, 1, 1)}, id="naive as_of"),  # noqa: DTZ001 - on purpose
            pytest.param({"as_of": "2024-01-01T00:00:00Z"}, id="str as_of"),
        ],
    )
    async def test_bad_read_stream_options_are_refused(
        self, populated: EventStore, options: dict[str, Any]
    ) -> None:
        """A bad read_stream option raises InvalidInput naming the option."""
        with pytest.raises(InvalidInput, match=next(iter(options))):
            await populated.read_stream(STREAM, **options)

    @pytest.mark.parametrize(
        ("options", "error", "message"),
        [
            pytest.param({"limit": 0}, InvalidInput, "limit", id="limit 0"),
            pytest.param({"limit": -1}, InvalidInput, "limit", id="negative limit"),
            pytest.param({"limit": MAX_PAGE + 1}, InvalidInput, "limit", id="limit over the max"),
            pytest.param({"limit": "10"}, InvalidInput, "limit", id="str limit"),
            pytest.param({"after": "nonsense"}, InvalidCheckpoint, "checkpoint", id="bad token"),
            pytest.param({"after": "1.2.3"}, InvalidCheckpoint, "checkpoint", id="three-part token"),
            pytest.param({"after": "-1.0"}, InvalidCheckpoint, "checkpoint", id="negative token"),
            pytest.param({"after": 5}, InvalidCheckpoint, "checkpoint", id="int checkpoint"),
            pytest.param({"event_types": "contract.ItemAdded"}, InvalidInput, "event_types", id="str types"),
            pytest.param({"event_types": []}, InvalidInput, "event_types", id="no types"),
            pytest.param({"event_types": [""]}, InvalidInput, "event_types", id="empty type name"),
            pytest.param({"event_types": [1]}, InvalidInput, "event_types", id="int type name"),
        ],
    )
    async def test_bad_read_all_options_are_refused(
        self, populated: EventStore, options: dict[str, Any], error: type[Exception], message: str
    ) -> None:
        """A bad read_all option raises its specific error (a bad checkpoint: InvalidCheckpoint)."""
        with pytest.raises(error, match=message):
            await populated.read_all(**options)

    @pytest.mark.parametrize(
        ("changes", "message"),
        [
            pytest.param({"stream_version": 0}, "stream_version", id="version 0"),
            pytest.param({"schema_version": 0}, "schema_version", id="schema 0"),
            pytest.param({"stream_version": "3"}, "stream_version", id="str version"),
            pytest.param({"state": "{}"}, "state", id="str state"),
        ],
    )
    async def test_a_bad_snapshot_is_refused(
        self, populated: EventStore, changes: dict[str, Any], message: str
    ) -> None:
        """A snapshot with a bad field raises InvalidInput naming it, and is not saved."""
        bad = dataclasses.replace(self.snapshot(version=1), **changes)
        with pytest.raises(InvalidInput, match=message):
            await populated.save_snapshot(bad)
        assert await populated.load_snapshot(STREAM, schema_version=1) is None

    async def test_save_snapshot_takes_only_a_snapshot(self, populated: EventStore) -> None:
        """Anything but a Snapshot raises InvalidInput and saves nothing."""
        with pytest.raises(InvalidInput, match="Snapshot"):
            await populated.save_snapshot(_any({"stream_id": STREAM, "stream_version": 1}))
        assert await populated.load_snapshot(STREAM, schema_version=1) is None

    # -- lifecycle ---------------------------------------------------------------------

    @pytest.mark.parametrize("operation", list(_closed_operations()))
    async def test_a_closed_store_raises_store_closed(
        self, store_factory: StoreFactory, operation: str
    ) -> None:
        """Every operation on a closed store raises StoreClosed."""
        store = await store_factory(registry=CONTRACT_REGISTRY)
        await store.close()
        with pytest.raises(StoreClosed):
            await _closed_operations()[operation](store)

    async def test_closing_is_idempotent_and_leaves_other_stores_open(
        self, store_factory: StoreFactory
    ) -> None:
        """Closing a store twice is fine, and other stores on the same database keep working."""
        closing, other = await self.open_several(store_factory, 2)
        await closing.append(STREAM, items("a"), expected_version=NO_STREAM)
        await closing.close()
        await closing.close()
        await other.append(STREAM, items("b"), expected_version=1)
        assert self.names(await other.read_stream(STREAM)) == "ab"

    # -- writing recorded events as given (moving a log) --------------------------------

    @staticmethod
    def recorded(  # noqa: PLR0913 - one argument per envelope field the tests vary
        store: EventStore,
        stream_id: str,
        version: int,
        position: int,
        name: str,
        *,
        occurred_us: int = 1_700_000_000_123_456,
        recorded_us: int = 1_700_000_001_654_321,
        metadata: bytes = b'{"actor":"ann"}',
        tags: tuple[str, ...] = (),
    ) -> RecordedEvent:
        """A recorded ItemAdded with every envelope field chosen by the test."""
        payload = msgspec.json.encode({"name": name})
        return RecordedEvent(
            store.codec,
            uuid.uuid4(),
            stream_id,
            version,
            position,
            "contract.ItemAdded",
            1,
            occurred_us + position,
            recorded_us + position,
            payload,
            metadata,
            tags=tags,
        )

    async def test_write_recorded_keeps_every_envelope_field(self, store: EventStore) -> None:
        """Ids, versions, positions, both times to the microsecond, metadata and data bytes stay as given."""
        sent = [
            self.recorded(store, STREAM, 1, 1, "a"),
            self.recorded(store, OTHER, 1, 2, "b", metadata=b"{}"),
            self.recorded(store, STREAM, 2, 3, "c"),
        ]
        await store.write_recorded(sent)
        read = (await store.read_all()).events
        assert [(e.event_id, e.stream_id, e.stream_version, e.position) for e in read] == [
            (e.event_id, e.stream_id, e.stream_version, e.position) for e in sent
        ]
        assert [(e.occurred_us, e.recorded_us, e.payload, e.metadata_json) for e in read] == [
            (e.occurred_us, e.recorded_us, e.payload, e.metadata_json) for e in sent
        ]
        assert [e.data for e in await store.read_stream(STREAM)] == [ItemAdded("a"), ItemAdded("c")]
        assert read[0].metadata == Metadata(actor="ann")
        assert await store.stream_version(STREAM) == 2

    async def test_appends_after_written_events_continue_above_them(self, store: EventStore) -> None:
        """A stream continues at its written version, the log above the written positions."""
        await store.write_recorded(
            [self.recorded(store, STREAM, 1, 1, "a"), self.recorded(store, STREAM, 2, 2, "b")]
        )
        result = await store.append(STREAM, items("c"), expected_version=2)
        assert result.stream_version == 3
        assert result.position > 2
        assert (await store.head()).position == result.position
        with pytest.raises(WrongExpectedVersion):
            await store.append(STREAM, items("d"), expected_version=NO_STREAM)

    async def test_write_recorded_refuses_positions_that_do_not_rise(self, store: EventStore) -> None:
        """A position at or below the head, or out of order, is refused and nothing is written."""
        await store.append(STREAM, items("a"), expected_version=NO_STREAM)
        with pytest.raises(InvalidInput, match="position"):
            await store.write_recorded([self.recorded(store, OTHER, 1, 1, "x")])
        with pytest.raises(InvalidInput, match="position"):
            await store.write_recorded(
                [self.recorded(store, OTHER, 1, 3, "x"), self.recorded(store, OTHER, 2, 2, "y")]
            )
        assert [e.stream_id for e in (await store.read_all()).events] == [STREAM]

    async def test_write_recorded_checks_again_where_it_writes(self, store: EventStore) -> None:
        """An append landing between the checks and the write: the write refuses, nothing of it stored.

        The race is made deterministic by calling the backend's write as the
        checks would have, after the append.
        """
        head_was_empty = [self.recorded(store, OTHER, 1, 1, "x")]
        await store.append(STREAM, items("a"), expected_version=NO_STREAM)
        with pytest.raises(InvalidInput, match=r"meanwhile|position"):
            await store._write_recorded(head_was_empty)  # noqa: SLF001 - the backend's write itself
        stream_was_empty = [self.recorded(store, STREAM, 1, 2, "y")]
        with pytest.raises(InvalidInput, match="meanwhile"):
            await store._write_recorded(stream_was_empty)  # noqa: SLF001
        assert [e.stream_id for e in (await store.read_all()).events] == [STREAM]
        assert await store.stream_version(STREAM) == 1

    async def test_write_recorded_refuses_a_version_gap(self, store: EventStore) -> None:
        """A stream must continue at its stored version + 1; nothing of a bad batch is written."""
        with pytest.raises(InvalidInput, match="version"):
            await store.write_recorded(
                [self.recorded(store, STREAM, 1, 1, "a"), self.recorded(store, STREAM, 3, 2, "b")]
            )
        assert (await store.read_all()).events == []

    async def test_write_recorded_starts_a_stream_where_a_scavenge_left_it(self, store: EventStore) -> None:
        """``first_versions``: a stream with no events here starts at the version named; appends go on."""
        sent = [self.recorded(store, STREAM, 7, 1, "g"), self.recorded(store, STREAM, 8, 2, "h")]
        if self.dense_versions:
            with pytest.raises(InvalidInput, match="dense"):
                await store.write_recorded(sent, first_versions={STREAM: 7})
            assert (await store.read_all()).events == []
            return
        await store.write_recorded(sent, first_versions={STREAM: 7})
        assert [(e.stream_version, e.data) for e in await store.read_stream(STREAM)] == [
            (7, ItemAdded("g")),
            (8, ItemAdded("h")),
        ]
        assert await store.stream_version(STREAM) == 8
        assert (await store.append(STREAM, items("i"), expected_version=8)).stream_version == 9

    async def test_write_recorded_takes_a_first_version_only_as_named(self, store: EventStore) -> None:
        """Not named, another version, or a stream with events already: refused, nothing written."""
        await store.append(OTHER, items("a"), expected_version=NO_STREAM)
        refused = [
            ([self.recorded(store, STREAM, 7, 2, "g")], None),
            ([self.recorded(store, STREAM, 7, 2, "g")], {STREAM: 6}),
            ([self.recorded(store, OTHER, 7, 2, "g")], {OTHER: 7}),
        ]
        for events, starts in refused:
            with pytest.raises(InvalidInput, match="version"):
                await store.write_recorded(events, first_versions=starts)
        assert [e.stream_id for e in (await store.read_all()).events] == [OTHER]

    async def test_write_recorded_refuses_a_stored_event_id(self, store: EventStore) -> None:
        """An event id already stored raises DuplicateEventId and writes nothing."""
        await store.append(STREAM, items("a"), expected_version=NO_STREAM)
        stored = (await store.read_all()).events[0]
        again = self.recorded(store, OTHER, 1, 2, "b")
        clash = RecordedEvent(
            store.codec, stored.event_id, OTHER, 1, 2, again.event_type, 1, 1, 1, again.payload, b"{}"
        )
        with pytest.raises(DuplicateEventId):
            await store.write_recorded([clash])
        assert len((await store.read_all()).events) == 1

    async def test_written_events_are_read_by_other_stores(self, store_factory: StoreFactory) -> None:
        """Another store on the database reads the written events, in position order."""
        writer, reader = await self.open_several(store_factory, 2)
        await writer.write_recorded([self.recorded(writer, STREAM, v, v, str(v)) for v in range(1, 6)])
        assert [e.stream_version for e in await reader.read_stream(STREAM)] == [1, 2, 3, 4, 5]
        assert (await reader.head()).position == 5


# -- dynamic consistency boundaries (dcb.events) ---------------------------------------


@event("contract.UserRegistered", registry=CONTRACT_REGISTRY)
@dataclass(frozen=True, slots=True)
class UserRegistered:
    """The unique-username example: a name may be taken once."""

    username: str


@event("contract.CourseDefined", registry=CONTRACT_REGISTRY)
@dataclass(frozen=True, slots=True)
class CourseDefined:
    """The course-subscription example: a course with a number of seats."""

    course_id: str
    capacity: int


@event("contract.StudentSubscribed", registry=CONTRACT_REGISTRY)
@dataclass(frozen=True, slots=True)
class StudentSubscribed:
    """A student took a seat in a course (tagged with both)."""

    student_id: str
    course_id: str


ITEM = "contract.ItemAdded"
DEPOSIT = "contract.Deposited"


def tagged(data: object, *tags: str) -> NewEvent:
    """A NewEvent of ``data`` carrying ``tags``."""
    return NewEvent(data, tags=tags)


class UsernameTaken(Exception):
    """The unique-username example's refusal."""


class CourseFull(Exception):
    """The course has no free seat."""


class TooManyCourses(Exception):
    """The student already holds the most courses allowed."""


async def register_user(store: EventStore, username: str) -> AppendResult:
    """The spec's unique-username example: decide on the name's events, append under that query."""
    query = Query.of(types=["contract.UserRegistered"], tags=[f"username:{username}"])
    seen = await store.read(query)
    if seen.events:
        raise UsernameTaken(username)
    return await store.append_events(
        [tagged(UserRegistered(username), f"username:{username}")],
        condition=AppendCondition(query, after=seen.head),
    )


STUDENT_COURSE_LIMIT = 3


async def subscribe(store: EventStore, student_id: str, course_id: str) -> AppendResult:
    """The spec's course-subscription example: a course's seats and a student's courses, one boundary."""
    course = Query(
        [
            QueryItem(types=["contract.CourseDefined"], tags=[f"course:{course_id}"]),
            QueryItem(types=["contract.StudentSubscribed"], tags=[f"course:{course_id}"]),
        ]
    )
    student = Query.of(types=["contract.StudentSubscribed"], tags=[f"student:{student_id}"])
    query = course | student
    seen = await store.read(query)
    capacity, taken, courses = 0, 0, 0
    for e in seen.events:
        if isinstance(e.data, CourseDefined):
            capacity = e.data.capacity
        elif isinstance(e.data, StudentSubscribed):
            taken += e.data.course_id == course_id
            courses += e.data.student_id == student_id
    if taken >= capacity:
        raise CourseFull(course_id)
    if courses >= STUDENT_COURSE_LIMIT:
        raise TooManyCourses(student_id)
    return await store.append_events(
        [tagged(StudentSubscribed(student_id, course_id), f"student:{student_id}", f"course:{course_id}")],
        condition=AppendCondition(query, after=seen.head),
    )


class DCBContract(_Suite):
    """Dynamic consistency boundaries: tags, query reads and conditional appends (dcb.events).

    Subclass it as ``Test<Backend>DCB`` with the same ``store_factory`` fixture as
    :class:`EventStoreContract`.
    """

    @staticmethod
    def names(events: Sequence[RecordedEvent]) -> list[str]:
        """The name of each ItemAdded, the amount of each Deposited, in order."""
        return [e.data.name if isinstance(e.data, ItemAdded) else str(e.data.amount) for e in events]

    async def test_written_tags_are_queried(self, store: EventStore) -> None:
        """Events written as recorded keep their tags, and query reads find them."""
        sent = [
            EventStoreContract.recorded(store, STREAM, 1, 1, "a", tags=("a",)),
            EventStoreContract.recorded(store, STREAM, 2, 2, "b", tags=("a", "b")),
            EventStoreContract.recorded(store, OTHER, 1, 3, "c"),
        ]
        await store.write_recorded(sent)
        found = await store.read(Query.of(tags=["a"]))
        assert self.names(found.events) == ["a", "b"]
        assert [e.tags for e in found.events] == [("a",), ("a", "b")]

    @pytest_asyncio.fixture
    async def tagged_log(self, store: EventStore) -> EventStore:
        """Six events, positions 1-6, of two types and tags ``a``, ``b``, ``c``."""
        await store.append_events([tagged(ItemAdded("1"), "a")])
        await store.append_events([tagged(ItemAdded("2"), "a", "b"), tagged(Deposited(Decimal(3)), "b")])
        await store.append_events([tagged(ItemAdded("4"), "c")])
        await store.append_events([tagged(Deposited(Decimal(5)), "a", "b", "c"), tagged(ItemAdded("6"))])
        return store

    # -- tags and query reads ----------------------------------------------------------

    async def test_tags_round_trip_in_order_without_repeats(self, store: EventStore) -> None:
        """An event's tags read back as given, a repeated tag once."""
        await store.append_events([tagged(ItemAdded("x"), "b", "a", "b")])
        [e] = (await store.read(Query.all())).events
        assert e.tags == ("b", "a")

    async def test_every_read_returns_an_events_tags(self, store: EventStore) -> None:
        """Stream, log, category, id and query reads all give an event's tags as stored."""
        sent = [tagged(ItemAdded("x"), "b", "a"), NewEvent(ItemAdded("y"))]
        await store.append(STREAM, sent, expected_version=NO_STREAM)
        stream = await store.read_stream(STREAM)
        found = await store.get_event(stream[0].event_id)
        assert found is not None
        assert found.tags == ("b", "a")
        reads = {
            "read_stream": stream,
            "read_all": (await store.read_all()).events,
            "read_category": (await store.read_category("order-")).events,
            "read": (await store.read(Query.all())).events,
        }
        assert {name: [e.tags for e in events] for name, events in reads.items()} == {
            name: [("b", "a"), ()] for name in reads
        }

    async def test_a_read_by_tags_needs_every_tag_of_the_item(self, tagged_log: EventStore) -> None:
        """An item with tags matches the events that carry all of them, of any type."""
        assert self.names((await tagged_log.read(Query.of(tags=["a"]))).events) == ["1", "2", "5"]
        assert self.names((await tagged_log.read(Query.of(tags=["a", "b"]))).events) == ["2", "5"]
        assert self.names((await tagged_log.read(Query.of(tags=["a", "zzz"]))).events) == []

    async def test_a_read_by_types(self, tagged_log: EventStore) -> None:
        """An item with types only matches every event of those types."""
        assert self.names((await tagged_log.read(Query.of(types=[DEPOSIT]))).events) == ["3", "5"]
        both = Query.of(types=[DEPOSIT, ITEM])
        assert self.names((await tagged_log.read(both)).events) == ["1", "2", "3", "4", "5", "6"]

    async def test_a_read_by_types_and_tags(self, tagged_log: EventStore) -> None:
        """An item with both matches events of one of its types carrying all its tags."""
        query = Query.of(types=[ITEM], tags=["b"])
        assert self.names((await tagged_log.read(query)).events) == ["2"]

    async def test_the_items_of_a_query_are_ored(self, tagged_log: EventStore) -> None:
        """A query matches what any of its items matches, each event once, in log order."""
        query = Query([QueryItem(tags=["c"]), QueryItem(types=[DEPOSIT]), QueryItem(tags=["a", "b"])])
        assert self.names((await tagged_log.read(query)).events) == ["2", "3", "4", "5"]

    async def test_query_all_reads_the_whole_log_with_positions_and_head(
        self, tagged_log: EventStore
    ) -> None:
        """Query.all() reads every event, positions ascending, and the head is the last position."""
        got = await tagged_log.read(Query.all())
        assert self.names(got.events) == ["1", "2", "3", "4", "5", "6"]
        assert strictly_increasing([e.position for e in got.events])
        assert got.head == got.events[-1].position

    async def test_after_backwards_and_limit(self, tagged_log: EventStore) -> None:
        """``after`` skips positions up to it; ``backwards`` reads newest first; ``limit`` keeps n."""
        positions = [e.position for e in (await tagged_log.read(Query.all())).events]
        query = Query.of(tags=["a"])
        assert self.names((await tagged_log.read(query, after=positions[1])).events) == ["5"]
        assert self.names((await tagged_log.read(query, after=positions[0])).events) == ["2", "5"]
        assert self.names((await tagged_log.read(query, backwards=True)).events) == ["5", "2", "1"]
        assert self.names((await tagged_log.read(query, backwards=True, limit=2)).events) == ["5", "2"]
        assert self.names((await tagged_log.read(query, limit=2)).events) == ["1", "2"]
        assert self.names((await tagged_log.read(query, limit=0)).events) == []
        assert (await tagged_log.read(query, limit=0)).head == positions[-1]

    async def test_an_empty_store_reads_as_empty_at_head_zero(self, store: EventStore) -> None:
        """A read of an empty store finds nothing, at head 0."""
        got = await store.read(Query.all())
        assert (list(got.events), got.head) == ([], 0)

    async def test_stream_events_with_tags_are_seen_by_query_reads(self, store: EventStore) -> None:
        """Tags given to a stream append are read back by queries, with the stream and version."""
        await store.append(STREAM, [tagged(ItemAdded("s1"), "order:1")], expected_version=NO_STREAM)
        await store.append(STREAM, [NewEvent(ItemAdded("s2"))], expected_version=1)
        got = (await store.read(Query.of(tags=["order:1"]))).events
        assert [(e.stream_id, e.stream_version, e.tags) for e in got] == [(STREAM, 1, ("order:1",))]
        assert [e.tags for e in await store.read_stream(STREAM)] == [("order:1",), ()]

    async def test_a_conditional_append_without_a_stream_gets_its_own(self, store: EventStore) -> None:
        """Events appended with no stream form one stream of their own, named after the first event's id."""
        sent = [tagged(ItemAdded("x"), "t"), tagged(ItemAdded("y"), "t")]
        result = await store.append_events(sent)
        assert result.stream_id == f"dcb-{sent[0].event_id}"
        assert ids(await store.read_stream(result.stream_id)) == ids(sent)
        assert result.position == result.positions[-1]

    # -- conditional appends -----------------------------------------------------------

    async def test_a_matching_event_after_the_position_fails_the_append(self, tagged_log: EventStore) -> None:
        """AppendConditionFailed names the first matching event's position; nothing is written."""
        before = await tagged_log.read(Query.all())
        query = Query.of(tags=["c"])
        with pytest.raises(AppendConditionFailed, match="position") as failed:
            await tagged_log.append_events(
                [tagged(ItemAdded("late"), "c")],
                condition=AppendCondition(query, after=before.events[1].position),
            )
        assert failed.value.position == before.events[3].position
        assert failed.value.after == before.events[1].position
        assert ids((await tagged_log.read(Query.all())).events) == ids(before.events)

    async def test_after_is_honoured_exactly(self, tagged_log: EventStore) -> None:
        """A condition fails at one position before the last match, and holds at the last match itself."""
        query = Query.of(types=[DEPOSIT], tags=["c"])
        [last] = (await tagged_log.read(query)).events
        with pytest.raises(AppendConditionFailed):
            await tagged_log.append_events(
                [ItemAdded("no")], condition=AppendCondition(query, after=last.position - 1)
            )
        result = await tagged_log.append_events(
            [ItemAdded("yes")], condition=AppendCondition(query, after=last.position)
        )
        assert result.position > last.position

    async def test_no_after_means_the_event_must_not_exist_at_all(self, tagged_log: EventStore) -> None:
        """Without ``after`` a condition fails on a match anywhere in the log, and holds if there is none."""
        with pytest.raises(AppendConditionFailed, match="in the log"):
            await tagged_log.append_events([ItemAdded("no")], condition=AppendCondition(Query.of(tags=["a"])))
        await tagged_log.append_events([ItemAdded("yes")], condition=AppendCondition(Query.of(tags=["d"])))

    async def test_events_after_the_position_that_do_not_match_never_fail_it(
        self, tagged_log: EventStore
    ) -> None:
        """Events of other types, or missing one of the item's tags, after ``after`` never fail it."""
        query = Query.of(types=[ITEM], tags=["a", "c"])  # only Deposited 5 has both tags
        result = await tagged_log.append_events([ItemAdded("ok")], condition=AppendCondition(query, after=0))
        assert result.position == (await tagged_log.read(Query.all())).head

    async def test_racing_appenders_on_one_condition_exactly_one_wins(
        self, store_factory: StoreFactory
    ) -> None:
        """16 appenders that read the same state race with the same condition: one lands, 15 fail."""
        stores = [await store_factory(registry=CONTRACT_REGISTRY) for _ in range(4)]
        query = Query.of(tags=["seat:1"])
        barrier = asyncio.Barrier(16)

        async def race(i: int) -> AppendResult | Exception:
            store = stores[i % len(stores)]
            seen = await store.read(query)
            await barrier.wait()  # nobody appends until everyone has read
            try:
                return await store.append_events(
                    [tagged(ItemAdded(f"racer {i}"), "seat:1")],
                    condition=AppendCondition(query, after=seen.head),
                )
            except AppendConditionFailed as lost:
                return lost

        outcomes = await asyncio.gather(*(race(i) for i in range(16)))
        won = [r for r in outcomes if isinstance(r, AppendResult)]
        assert len(won) == 1, f"{len(won)} appenders won one condition"
        assert all(isinstance(r, AppendConditionFailed) for r in outcomes if r not in won)
        await settled(stores[0])
        assert [e.position for e in (await stores[0].read(query)).events] == [won[0].position]

    async def test_conditions_on_disjoint_tags_never_conflict(self, store_factory: StoreFactory) -> None:
        """16 concurrent appenders, each conditioned on its own tag, all land."""
        stores = [await store_factory(registry=CONTRACT_REGISTRY) for _ in range(4)]
        barrier = asyncio.Barrier(16)

        async def append(i: int) -> AppendResult:
            store = stores[i % len(stores)]
            query = Query.of(tags=[f"seat:{i}"])
            seen = await store.read(query)
            await barrier.wait()
            return await store.append_events(
                [tagged(ItemAdded(f"writer {i}"), f"seat:{i}")],
                condition=AppendCondition(query, after=seen.head),
            )

        results = await asyncio.gather(*(append(i) for i in range(16)))
        assert len({r.position for r in results}) == 16
        await settled(stores[0])
        assert len((await stores[0].read(Query.of(types=[ITEM]))).events) == 16

    async def test_a_retry_of_a_landed_append_returns_its_first_result(self, store: EventStore) -> None:
        """Re-sending the same events returns the first result, though the condition would now fail."""
        query = Query.of(tags=["once"])
        sent = [tagged(ItemAdded("x"), "once")]
        first = await store.append_events(sent, condition=AppendCondition(query))
        again = await store.append_events(sent, condition=AppendCondition(query))
        assert again == first
        assert len((await store.read(query)).events) == 1

    # -- both models in one log --------------------------------------------------------

    async def test_a_conditional_append_to_a_stream_respects_its_version(self, store: EventStore) -> None:
        """Naming a stream checks its expected version and the condition; each failure writes nothing."""
        await store.append(STREAM, [tagged(ItemAdded("first"), "order:1")], expected_version=NO_STREAM)
        query = Query.of(tags=["order:1"])
        seen = await store.read(query)
        with pytest.raises(WrongExpectedVersion):
            await store.append_events(
                [tagged(ItemAdded("stale"), "order:1")],
                condition=AppendCondition(query, after=seen.head),
                stream_id=STREAM,
                expected_version=NO_STREAM,
            )
        with pytest.raises(AppendConditionFailed):
            await store.append_events(
                [tagged(ItemAdded("blind"), "order:1")],
                condition=AppendCondition(query, after=0),
                stream_id=STREAM,
                expected_version=1,
            )
        result = await store.append_events(
            [tagged(ItemAdded("second"), "order:1")],
            condition=AppendCondition(query, after=seen.head),
            stream_id=STREAM,
            expected_version=1,
        )
        assert (result.stream_id, result.stream_version) == (STREAM, 2)
        assert [e.data.name for e in await store.read_stream(STREAM)] == ["first", "second"]

    async def test_a_stream_append_moves_a_conditions_boundary(self, store: EventStore) -> None:
        """A plain stream append of a tagged event fails a condition read before it."""
        query = Query.of(tags=["account:1"])
        seen = await store.read(query)
        await store.append(
            "account-1", [tagged(Deposited(Decimal(1)), "account:1")], expected_version=NO_STREAM
        )
        with pytest.raises(AppendConditionFailed):
            await store.append_events([ItemAdded("late")], condition=AppendCondition(query, after=seen.head))

    # -- the specification's examples --------------------------------------------------

    async def test_unique_username(self, store: EventStore) -> None:
        """A username is registered once; another name is free; racing registrations of one name land once."""
        await register_user(store, "ada")
        with pytest.raises(UsernameTaken):
            await register_user(store, "ada")
        await register_user(store, "grace")
        outcomes = await asyncio.gather(
            *(register_user(store, "linus") for _ in range(8)), return_exceptions=True
        )
        assert sum(isinstance(o, AppendResult) for o in outcomes) == 1
        assert all(isinstance(o, AppendResult | AppendConditionFailed | UsernameTaken) for o in outcomes)
        names = [
            e.data.username for e in (await store.read(Query.of(types=["contract.UserRegistered"]))).events
        ]
        assert names == ["ada", "grace", "linus"]

    async def test_course_subscription(self, store: EventStore) -> None:
        """A course takes no more students than its seats, a student no more than three courses."""
        for course, seats in (("c1", 2), ("c2", 5), ("c3", 5), ("c4", 5)):
            await store.append_events([tagged(CourseDefined(course, seats), f"course:{course}")])
        await subscribe(store, "s1", "c1")
        await subscribe(store, "s2", "c1")
        with pytest.raises(CourseFull):
            await subscribe(store, "s3", "c1")
        await subscribe(store, "s1", "c2")
        await subscribe(store, "s1", "c3")
        with pytest.raises(TooManyCourses):
            await subscribe(store, "s1", "c4")
        # A decision made before another subscription to the same course is refused.
        taken = Query.of(types=["contract.StudentSubscribed"], tags=["course:c2"])
        stale = await store.read(taken)
        await subscribe(store, "s9", "c2")
        with pytest.raises(AppendConditionFailed):
            await store.append_events(
                [tagged(StudentSubscribed("s8", "c2"), "student:s8", "course:c2")],
                condition=AppendCondition(taken, after=stale.head),
            )
        # Racing for the last seat: one student gets it.
        await store.append_events([tagged(CourseDefined("c5", 1), "course:c5")])
        outcomes = await asyncio.gather(
            *(subscribe(store, f"r{i}", "c5") for i in range(8)), return_exceptions=True
        )
        assert sum(isinstance(o, AppendResult) for o in outcomes) == 1
        assert all(isinstance(o, AppendResult | AppendConditionFailed | CourseFull) for o in outcomes)

    # -- bad input ---------------------------------------------------------------------

    @pytest.mark.parametrize(
        "tags",
        [
            pytest.param(["", "x"], id="empty"),
            pytest.param([" x"], id="leading space"),
            pytest.param(["a\nb"], id="newline"),
            pytest.param([42], id="int"),
            pytest.param("abc", id="a str"),
            pytest.param(["x" * 201], id="too long"),
        ],
    )
    async def test_bad_tags_are_refused(self, store: EventStore, tags: Any) -> None:
        """A bad tag on an event raises InvalidInput from both appends; nothing is written."""
        with pytest.raises(InvalidInput, match="tag"):
            await store.append_events([NewEvent(ItemAdded("x"), tags=tags)])
        with pytest.raises(InvalidInput, match="tag"):
            await store.append(STREAM, [NewEvent(ItemAdded("x"), tags=tags)], expected_version=ANY)
        assert (await store.read(Query.all())).head == 0

    async def test_bad_reads_and_conditions_are_refused(self, store: EventStore) -> None:
        """A read or an append given something else than the model's values raises InvalidInput."""
        with pytest.raises(InvalidInput, match="at least one item"):
            Query([])
        with pytest.raises(InvalidInput, match="Query"):
            await store.read("tags=a")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="after"):
            await store.read(Query.all(), after=-1)
        with pytest.raises(InvalidInput, match="limit"):
            await store.read(Query.all(), limit=-1)
        with pytest.raises(InvalidInput, match="after"):
            AppendCondition(Query.all(), after=-1)
        with pytest.raises(InvalidInput, match="AppendCondition"):
            await store.append_events([ItemAdded("x")], condition=Query.all())  # type: ignore[arg-type]
        with pytest.raises(InvalidInput, match="stream_id"):
            await store.append_events([ItemAdded("x")], expected_version=NO_STREAM)
        with pytest.raises(InvalidExpectedVersion, match="expected_version"):
            await store.append_events([ItemAdded("x")], stream_id=STREAM)
        assert (await store.read(Query.all())).head == 0


class LifecycleContract(_Suite):
    """Deleting streams (soft and tombstone), truncation, retention rules and scavenging.

    Subclass it as ``Test<Backend>Lifecycle`` with the same ``store_factory``
    fixture as :class:`EventStoreContract`.
    """

    @staticmethod
    async def names(store: EventStore, stream_id: str = STREAM, **options: Any) -> list[str]:
        """The names of the stream's ItemAdded events, as read_stream with ``options`` gives them."""
        return [e.data.name for e in await store.read_stream(stream_id, **options)]

    # -- soft delete ---------------------------------------------------------------

    async def test_a_soft_delete_hides_the_stream(self, store: EventStore) -> None:
        """A soft delete: stream reads find nothing, the version reads 0, other streams stay."""
        await store.append(STREAM, items("a", "b"), expected_version=NO_STREAM)
        await store.append(OTHER, items("x"), expected_version=NO_STREAM)
        result = await store.delete_stream(STREAM, expected_version=2)
        assert result is not None
        assert result.stream_version == 3  # the $StreamDeleted event is the stream's next version
        assert await store.read_stream(STREAM) == []
        assert await store.read_stream(STREAM, backwards=True, limit=1) == []
        assert await store.stream_version(STREAM) == 0
        assert await self.names(store, OTHER) == ["x"]  # other streams are untouched
        life = await store.stream_lifecycle(STREAM)
        assert (life.deleted, life.tombstoned, life.version, life.visible_version) == (True, False, 3, 0)
        with pytest.raises(WrongExpectedVersion):
            await store.append(STREAM, items("c"), expected_version=2)
        with pytest.raises(WrongExpectedVersion):
            await store.append(STREAM, items("c"), expected_version=STREAM_EXISTS)

    async def test_a_soft_deleted_stream_is_written_again_with_versions_continuing(
        self, store: EventStore
    ) -> None:
        """NO_STREAM writes a soft-deleted stream again, its versions after the delete's event."""
        await store.append(STREAM, items("a", "b"), expected_version=NO_STREAM)
        await store.delete_stream(STREAM, expected_version=ANY)
        again = await store.append(STREAM, items("c", "d"), expected_version=NO_STREAM)
        assert again.stream_version == 5  # after the old events (1, 2) and the delete's event (3)
        assert await self.names(store) == ["c", "d"]
        assert [e.stream_version for e in await store.read_stream(STREAM)] == [4, 5]
        assert await self.names(store, from_version=1, to_version=4) == ["c"]
        assert await store.stream_version(STREAM) == 5
        await store.append(STREAM, items("e"), expected_version=5)
        assert await self.names(store) == ["c", "d", "e"]

    async def test_a_recreated_aggregate_loads_and_saves(self, store: EventStore) -> None:
        """An aggregate whose stream was deleted and written again loads at the stream's version."""
        repo = Repository(store)
        tally = Tally("t1")
        tally.deposit(Decimal(5))
        await repo.save(tally)
        await store.delete_stream("tally-t1", expected_version=1)
        with pytest.raises(AggregateNotFound):
            await repo.load(Tally, "t1")
        await store.append("tally-t1", [Deposited(Decimal(7))], expected_version=NO_STREAM)
        loaded = await repo.load(Tally, "t1")
        assert (loaded.total, loaded.count, loaded.version) == (Decimal(7), 1, 3)
        loaded.deposit(Decimal(1))
        await repo.save(loaded)  # expects version 3: the stream's, not a count of events
        assert (await repo.load(Tally, "t1")).total == Decimal(8)

    async def test_delete_honours_the_expected_version(self, store: EventStore) -> None:
        """A delete expecting another version is refused with WrongExpectedVersion, deleting nothing."""
        await store.append(STREAM, items("a", "b"), expected_version=NO_STREAM)
        for wrong in (1, 3, NO_STREAM):
            with pytest.raises(WrongExpectedVersion) as caught:
                await store.delete_stream(STREAM, expected_version=wrong)
            assert caught.value.actual == 2
        assert await self.names(store) == ["a", "b"]
        assert await store.delete_stream(STREAM, expected_version=STREAM_EXISTS) is not None

    async def test_a_soft_delete_of_no_stream_writes_nothing(self, store: EventStore) -> None:
        """Deleting a stream that is at no stream (never written, or deleted) writes nothing."""
        assert await store.delete_stream(STREAM, expected_version=ANY) is None
        await store.append(STREAM, items("a"), expected_version=NO_STREAM)
        await store.delete_stream(STREAM, expected_version=1)
        head = await store.head()
        assert await store.delete_stream(STREAM, expected_version=NO_STREAM) is None  # deleted already
        assert await store.head() == head
        with pytest.raises(WrongExpectedVersion):
            await store.delete_stream(STREAM, expected_version=1)

    async def test_a_snapshot_and_the_stream_load_together_as_apart_under_every_rule(
        self, store: EventStore
    ) -> None:
        """load_snapshot_and_stream gives what the reference store gives, whatever rules the stream has.

        The same steps on this store and on the in-memory one (which takes the
        general way: the lifecycle, the snapshot, then the read); after each, the
        snapshot and the events after it match at every ``to_version``.
        """
        memory = MemoryEventStore(registry=CONTRACT_REGISTRY)

        async def both(step: Callable[[EventStore], Awaitable[Any]]) -> None:
            for s in (store, memory):
                await step(s)

        async def same(when: str) -> None:
            for to_version in (None, 12, 9, 8, 6, 5, 4, 0):
                got = [
                    await s.load_snapshot_and_stream(STREAM, schema_version=1, to_version=to_version)
                    for s in (store, memory)
                ]
                shown = [
                    (None if sn is None else (sn.stream_version, sn.state), [e.stream_version for e in ev])
                    for sn, ev in got
                ]
                assert shown[0] == shown[1], (when, to_version, shown)

        try:
            await both(lambda s: s.append(STREAM, items(*"abcdefgh"), expected_version=NO_STREAM))
            await both(lambda s: s.save_snapshot(Snapshot(STREAM, 5, 1, b"at5", datetime.now(UTC))))
            await same("plain")
            await both(lambda s: s.set_retention(STREAM, max_count=2))
            await same("max_count")
            await both(lambda s: s.truncate_before(STREAM, 7))
            await same("truncated past the snapshot")
            await both(lambda s: s.delete_stream(STREAM, expected_version=8))
            await same("deleted")
            await both(lambda s: s.append(STREAM, items(*"xyz"), expected_version=ANY))
            await same("written again")
            await both(lambda s: s.save_snapshot(Snapshot(STREAM, 10, 1, b"at10", datetime.now(UTC))))
            await same("a snapshot since the delete")
        finally:
            await memory.close()

    async def test_a_delete_drops_the_streams_snapshots(self, store: EventStore) -> None:
        """A delete drops the stream's snapshots: a load then finds neither them nor events."""
        await store.append(STREAM, items("a"), expected_version=NO_STREAM)
        await store.save_snapshot(Snapshot(STREAM, 1, 1, b"state", datetime.now(UTC)))
        await store.delete_stream(STREAM, expected_version=1)
        assert await store.load_snapshot(STREAM, schema_version=1) is None
        assert await store.load_snapshot_and_stream(STREAM, schema_version=1) == (None, [])

    # -- the $StreamDeleted event ----------------------------------------------------

    async def test_the_delete_event_is_in_the_global_log(self, store: EventStore) -> None:
        """The $StreamDeleted event is in read_all, read_category and a read of its type."""
        await store.append(STREAM, items("a", "b"), expected_version=NO_STREAM)
        result = await store.delete_stream(STREAM, expected_version=2)
        assert result is not None
        log = await full_log(store)
        last = log[-1]
        assert (last.event_type, last.stream_id, last.stream_version) == (STREAM_DELETED, STREAM, 3)
        assert last.position == result.positions[0]
        assert last.data == StreamDeletedEvent(STREAM, 2, tombstone=False)
        # A reader of one category sees it too, and one that filters types can ask for it.
        category = await store.read_category("order-")
        assert category.events[-1].event_type == STREAM_DELETED
        filtered = await store.read_all(event_types=[STREAM_DELETED])
        assert [e.stream_id for e in filtered.events] == [STREAM]

    async def test_a_registry_that_never_heard_of_it_decodes_the_delete_event(
        self, store_factory: StoreFactory
    ) -> None:
        """Every registry decodes $StreamDeleted: it is the store's own type."""
        store = await store_factory(registry=EventRegistry())
        other = await store_factory(registry=CONTRACT_REGISTRY)
        await other.append(STREAM, items("a"), expected_version=NO_STREAM)
        await other.delete_stream(STREAM, expected_version=1, tombstone=True)
        marker = (await full_log(store))[-1]
        assert marker.data == StreamDeletedEvent(STREAM, 1, tombstone=True)

    async def test_users_cannot_append_the_delete_event(self, store: EventStore) -> None:
        """Appending a StreamDeletedEvent is refused: only delete_stream writes it."""
        for given in (StreamDeletedEvent(STREAM, 1), NewEvent(StreamDeletedEvent(STREAM, 1))):
            with pytest.raises(InvalidEvent):
                await store.append(STREAM, [given], expected_version=ANY)
        assert await store.head() == START

    # -- tombstones ----------------------------------------------------------------

    async def test_a_tombstone_refuses_every_later_append(self, store: EventStore) -> None:
        """A tombstone refuses every append, even a re-send of events stored before, and every delete."""
        first = items("a", "b")
        await store.append(STREAM, first, expected_version=NO_STREAM)
        await store.delete_stream(STREAM, expected_version=2, tombstone=True)
        assert await store.read_stream(STREAM) == []
        assert await store.stream_version(STREAM) == 0
        head = await store.head()
        for expected in (NO_STREAM, ANY, STREAM_EXISTS, 2, 3):
            with pytest.raises(StreamDeleted) as caught:
                await store.append(STREAM, items("c"), expected_version=expected)
            assert caught.value.stream_id == STREAM
            assert STREAM in str(caught.value)
        # Not even a re-send of the events stored before the tombstone is answered.
        with pytest.raises(StreamDeleted):
            await store.append(STREAM, first, expected_version=NO_STREAM)
        with pytest.raises(StreamDeleted):
            await store.append_events(items("c"), stream_id=STREAM, expected_version=ANY)
        with pytest.raises(StreamDeleted):
            await store.delete_stream(STREAM, expected_version=ANY)
        with pytest.raises(StreamDeleted):
            await store.delete_stream(STREAM, expected_version=ANY, tombstone=True)
        assert await store.head() == head
        assert (await store.stream_lifecycle(STREAM)).tombstoned

    async def test_a_soft_deleted_stream_can_be_tombstoned(self, store: EventStore) -> None:
        """A soft-deleted stream (at no stream) can then be deleted for ever."""
        await store.append(STREAM, items("a"), expected_version=NO_STREAM)
        await store.delete_stream(STREAM, expected_version=1)
        result = await store.delete_stream(STREAM, expected_version=NO_STREAM, tombstone=True)
        assert result is not None
        assert result.stream_version == 3
        with pytest.raises(StreamDeleted):
            await store.append(STREAM, items("b"), expected_version=NO_STREAM)

    async def test_a_stream_id_never_used_can_be_tombstoned(self, store: EventStore) -> None:
        """Tombstoning an unused stream id reserves it: no append is ever taken."""
        result = await store.delete_stream(STREAM, expected_version=NO_STREAM, tombstone=True)
        assert result is not None
        assert result.stream_version == 1
        with pytest.raises(StreamDeleted):
            await store.append(STREAM, items("a"), expected_version=NO_STREAM)

    async def test_a_stream_with_rules_and_no_events_can_be_tombstoned(self, store: EventStore) -> None:
        """Rules given before a stream's first event; then a tombstone still closes it for ever."""
        await store.set_retention(STREAM, max_count=5)
        assert await store.delete_stream(STREAM, expected_version=ANY) is None  # nothing to delete
        result = await store.delete_stream(STREAM, expected_version=NO_STREAM, tombstone=True)
        assert result is not None
        assert result.stream_version == 1
        with pytest.raises(StreamDeleted):
            await store.append(STREAM, items("a"), expected_version=ANY)
        assert (await store.stream_lifecycle(STREAM)).max_count == 5

    async def test_rules_given_before_the_first_event_apply_to_it(self, store: EventStore) -> None:
        """A stream's rules may come before its events: appends then start it as usual."""
        await store.set_retention(STREAM, max_count=1)
        await store.append(STREAM, items("a", "b"), expected_version=NO_STREAM)
        assert await self.names(store) == ["b"]
        assert await store.stream_version(STREAM) == 2

    async def test_another_store_on_the_database_sees_the_tombstone(
        self, store_factory: StoreFactory
    ) -> None:
        """A tombstone is in the database: another store refuses appends too."""
        one = await store_factory(registry=CONTRACT_REGISTRY)
        two = await store_factory(registry=CONTRACT_REGISTRY)
        await one.append(STREAM, items("a"), expected_version=NO_STREAM)
        await one.delete_stream(STREAM, expected_version=1, tombstone=True)
        with pytest.raises(StreamDeleted):
            await two.append(STREAM, items("b"), expected_version=ANY)
        assert await two.read_stream(STREAM) == []

    async def test_racing_appends_and_a_delete_leave_one_consistent_story(
        self, store_factory: StoreFactory
    ) -> None:
        """An append and a delete at the same expected version: exactly one wins."""
        store = await store_factory(registry=CONTRACT_REGISTRY)
        await store.append(STREAM, items("a"), expected_version=NO_STREAM)
        other = await store_factory(registry=CONTRACT_REGISTRY)
        outcomes = await asyncio.gather(
            store.delete_stream(STREAM, expected_version=1, tombstone=True),
            other.append(STREAM, items("b"), expected_version=1),
            return_exceptions=True,
        )
        wins = [o for o in outcomes if isinstance(o, AppendResult)]
        assert len(wins) == 1, outcomes
        assert all(isinstance(o, WrongExpectedVersion | StreamDeleted) for o in outcomes if o not in wins)
        log = await full_log(store)
        assert [e.stream_version for e in log] == [1, 2]

    async def test_a_copied_log_deletes_its_streams_where_it_lands(self, store: EventStore) -> None:
        """write_recorded (an import) of a log with $StreamDeleted events deletes those streams there too."""
        source = MemoryEventStore(registry=CONTRACT_REGISTRY)
        await source.append(STREAM, items("a"), expected_version=NO_STREAM)
        await source.delete_stream(STREAM, expected_version=1, tombstone=True)
        await source.append(OTHER, items("x"), expected_version=NO_STREAM)
        await source.delete_stream(OTHER, expected_version=1)
        await store.write_recorded(await full_log(source))
        assert await store.read_stream(STREAM) == []
        assert await store.read_stream(OTHER) == []
        with pytest.raises(StreamDeleted):
            await store.append(STREAM, items("b"), expected_version=ANY)
        again = await store.append(OTHER, items("y"), expected_version=NO_STREAM)
        assert again.stream_version == 3

    async def test_dcb_reads_see_the_log_as_stored(self, store: EventStore) -> None:
        """Query reads see the log as stored: a deleted stream's events until a scavenge, and its delete."""
        if not store.supports_dcb:
            pytest.skip("no query reads on this backend")
        await store.append(STREAM, items("a"), expected_version=NO_STREAM)
        await store.delete_stream(STREAM, expected_version=1)
        read = await store.read(Query.all())
        assert [e.event_type for e in read.events] == ["contract.ItemAdded", STREAM_DELETED]

    # -- what query reads see of a delete (decision 35) -------------------------------------

    async def test_a_delete_carries_the_tags_of_its_streams_events(self, store: EventStore) -> None:
        """The $StreamDeleted event carries the union of the stream's events' tags, as they first appear."""
        if not store.supports_dcb:
            pytest.skip("no tags on this backend")
        await store.append(
            STREAM,
            [tagged(ItemAdded("a"), "t:1", "shared"), NewEvent(ItemAdded("b"))],
            expected_version=NO_STREAM,
        )
        await store.append(STREAM, [tagged(ItemAdded("c"), "shared", "t:2")], expected_version=2)
        await store.append(OTHER, [tagged(ItemAdded("x"), "shared")], expected_version=NO_STREAM)
        deleted = await store.delete_stream(STREAM, expected_version=3)
        assert deleted is not None
        marker = await store.get_event((await full_log(store))[-1].event_id)
        assert marker is not None
        assert (marker.event_type, marker.position, marker.tags) == (
            STREAM_DELETED,
            deleted.positions[0],
            ("t:1", "shared", "t:2"),
        )
        # A query on a tag of the stream finds the delete, by its type too.
        only = await store.read(Query.of(types=[STREAM_DELETED], tags=["t:2"]))
        assert [e.position for e in only.events] == [deleted.positions[0]]
        shared = await store.read(Query.of(tags=["shared"]))
        assert [e.event_type for e in shared.events] == [ITEM, ITEM, ITEM, STREAM_DELETED]  # a, c, x
        # Streams without tags, and ids never used, give deletes without tags.
        await store.append("order-3", items("p"), expected_version=NO_STREAM)
        plain = await store.delete_stream("order-3", expected_version=1)
        unused = await store.delete_stream("order-4", expected_version=NO_STREAM, tombstone=True)
        assert plain is not None
        assert unused is not None
        for result in (plain, unused):
            found = await store.read(Query.of(types=[STREAM_DELETED]), after=result.positions[0] - 1, limit=1)
            assert [(e.position, e.tags) for e in found.events] == [(result.positions[0], ())]

    async def test_a_delete_written_again_and_deleted_again_carries_every_stored_tag(
        self, store: EventStore
    ) -> None:
        """A second delete carries the tags of the stream's stored events, before and after the first."""
        if not store.supports_dcb:
            pytest.skip("no tags on this backend")
        await store.append(STREAM, [tagged(ItemAdded("a"), "life:1")], expected_version=NO_STREAM)
        await store.delete_stream(STREAM, expected_version=1)
        await store.append(STREAM, [tagged(ItemAdded("b"), "life:2")], expected_version=NO_STREAM)
        second = await store.delete_stream(STREAM, expected_version=3, tombstone=True)
        assert second is not None
        found = await store.read(Query.of(types=[STREAM_DELETED]))
        assert [e.tags for e in found.events] == [("life:1",), ("life:1", "life:2")]

    async def test_a_condition_on_a_deleted_streams_tags_fails_after_the_delete(
        self, store: EventStore
    ) -> None:
        """A decision read before a delete is refused by its condition: the delete matches its query."""
        if not store.supports_dcb:
            pytest.skip("no query reads on this backend")
        await store.append(STREAM, [tagged(ItemAdded("a"), "course:1")], expected_version=NO_STREAM)
        query = Query.of(types=[ITEM, STREAM_DELETED], tags=["course:1"])
        seen = await store.read(query)
        deleted = await store.delete_stream(STREAM, expected_version=1)
        assert deleted is not None
        with pytest.raises(AppendConditionFailed) as failed:
            await store.append_events(
                [tagged(ItemAdded("b"), "course:1")], condition=AppendCondition(query, after=seen.head)
            )
        assert failed.value.position == deleted.positions[0]
        again = await store.read(query)  # decided again, on a state that holds the delete
        landed = await store.append_events(
            [tagged(ItemAdded("b"), "course:1")], condition=AppendCondition(query, after=again.head)
        )
        assert landed.position > deleted.positions[0]

    async def test_a_delete_racing_a_condition_on_its_tags_is_seen_by_it_or_comes_after(
        self, store_factory: StoreFactory
    ) -> None:
        """A conditional append racing a delete of a stream it read: refused by it, or before it."""
        one = await store_factory(registry=CONTRACT_REGISTRY)
        if not one.supports_dcb:
            pytest.skip("no query reads on this backend")
        other = await store_factory(registry=CONTRACT_REGISTRY)
        for i in range(8):
            tag = f"seat:{i}"
            await one.append(f"seat-{i}", [tagged(ItemAdded("held"), tag)], expected_version=NO_STREAM)
            query = Query.of(types=[ITEM, STREAM_DELETED], tags=[tag])
            seen = await other.read(query)
            deleted, appended = await asyncio.gather(
                one.delete_stream(f"seat-{i}", expected_version=1),
                other.append_events(
                    [tagged(ItemAdded("taken"), tag)], condition=AppendCondition(query, after=seen.head)
                ),
                return_exceptions=True,
            )
            assert isinstance(deleted, AppendResult), deleted
            if isinstance(appended, AppendConditionFailed):
                assert appended.position == deleted.positions[0]
            else:
                assert isinstance(appended, AppendResult), appended
                assert appended.checkpoint < deleted.checkpoint, "the condition missed a delete before it"

    async def test_a_copied_delete_keeps_its_tags_however_many(self, store: EventStore) -> None:
        """write_recorded keeps a $StreamDeleted event's tags as recorded, past the limit of one event's."""
        if not store.supports_dcb:
            pytest.skip("no tags on this backend")
        source = MemoryEventStore(registry=CONTRACT_REGISTRY)
        many = [f"n:{i}" for i in range(MAX_TAGS + 20)]  # more than one event may carry
        await source.append(
            STREAM,
            [tagged(ItemAdded("a"), *many[:MAX_TAGS]), tagged(ItemAdded("b"), *many[MAX_TAGS:])],
            expected_version=NO_STREAM,
        )
        await source.delete_stream(STREAM, expected_version=2)
        log = await full_log(source)
        assert log[-1].tags == tuple(many)
        await store.write_recorded(log)
        copied = await full_log(store)
        assert [e.tags for e in copied] == [e.tags for e in log]
        found = await store.read(Query.of(types=[STREAM_DELETED], tags=[many[-1]]))
        assert [e.event_id for e in found.events] == [log[-1].event_id]

    # -- listings and counts ---------------------------------------------------------------

    @staticmethod
    async def listed(store: EventStore, **options: Any) -> list[tuple[str, int]]:
        """(stream id, version) of each stream ``list_streams`` with ``options`` lists."""
        return [(s.stream_id, s.version) for s in await store.list_streams(**options)]

    async def test_deleted_streams_are_neither_listed_nor_counted(self, store: EventStore) -> None:
        """Soft-deleted and tombstoned streams leave list_streams and counts().streams, not .events."""
        await store.append(STREAM, items("a", "b"), expected_version=NO_STREAM)
        await store.append(OTHER, items("x"), expected_version=NO_STREAM)
        await store.append("order-3", items("p"), expected_version=NO_STREAM)
        await store.delete_stream(STREAM, expected_version=2)
        await store.delete_stream(OTHER, expected_version=1, tombstone=True)
        await store.delete_stream("order-4", expected_version=NO_STREAM, tombstone=True)  # never used
        await settled(store)
        assert await self.listed(store) == [("order-3", 1)]
        assert await self.listed(store, prefix="order-") == [("order-3", 1)]
        assert await self.listed(store, after=STREAM) == [("order-3", 1)]
        counts = await store.counts()
        # Events stored: a, b, x, p, and the three deletes' own events, until a scavenge.
        assert (counts.events, counts.streams) == (7, 1)
        await store.scavenge()
        assert await self.listed(store) == [("order-3", 1)]
        assert (await store.counts()).streams == 1

    async def test_a_stream_written_again_after_a_delete_is_listed_at_its_new_version(
        self, store: EventStore
    ) -> None:
        """A soft-deleted stream written again is listed and counted again, at its new version."""
        await store.append(STREAM, items("a", "b"), expected_version=NO_STREAM)
        await store.delete_stream(STREAM, expected_version=2)
        await settled(store)
        assert await self.listed(store) == []
        assert (await store.counts()).streams == 0
        again = await store.append(STREAM, items("c"), expected_version=NO_STREAM)
        await settled(store)
        [info] = await store.list_streams()
        assert (info.stream_id, info.version, info.last_position) == (STREAM, 4, again.positions[0])
        assert (await store.counts()).streams == 1
        await store.delete_stream(STREAM, expected_version=4)  # and deleted again: gone again
        await settled(store)
        assert await self.listed(store) == []
        assert (await store.counts()).streams == 0

    async def test_listing_pages_pass_over_deleted_streams(self, store: EventStore) -> None:
        """Pages of list_streams stay full and continue past runs of deleted streams."""
        for i in range(8):
            await store.append(f"page-{i}", items(f"e{i}"), expected_version=NO_STREAM)
        for i in (1, 2, 3, 5, 7):
            await store.delete_stream(f"page-{i}", expected_version=1, tombstone=i == 5)
        await settled(store)
        assert await self.listed(store, limit=2) == [("page-0", 1), ("page-4", 1)]
        assert await self.listed(store, limit=1, after="page-0") == [("page-4", 1)]
        assert await self.listed(store, limit=2, after="page-4") == [("page-6", 1)]
        assert await self.listed(store, prefix="page-", after="page-6") == []
        assert (await store.counts()).streams == 3

    # -- truncation and retention -------------------------------------------------------

    async def test_truncate_before_hides_the_older_versions(self, store: EventStore) -> None:
        """truncate_before hides older versions from stream reads; lowering it shows them again."""
        await store.append(STREAM, items("a", "b", "c", "d"), expected_version=NO_STREAM)
        await store.truncate_before(STREAM, 3)
        assert await self.names(store) == ["c", "d"]
        assert await self.names(store, from_version=1, to_version=3) == ["c"]
        assert await self.names(store, to_version=2) == []
        assert await self.names(store, backwards=True) == ["d", "c"]
        assert await store.stream_version(STREAM) == 4  # the stream is not deleted: appends go on
        await store.append(STREAM, items("e"), expected_version=4)
        assert await self.names(store) == ["c", "d", "e"]
        await store.truncate_before(STREAM, 0)  # before a scavenge, hidden events come back
        assert await self.names(store) == ["a", "b", "c", "d", "e"]

    async def test_max_count_keeps_the_latest_events(self, store: EventStore) -> None:
        """max_count shows only the latest events, moving on with appends; no rule shows all."""
        await store.append(STREAM, items("a", "b", "c"), expected_version=NO_STREAM)
        await store.set_retention(STREAM, max_count=2)
        assert await self.names(store) == ["b", "c"]
        await store.append(STREAM, items("d"), expected_version=3)
        assert await self.names(store) == ["c", "d"]
        life = await store.stream_lifecycle(STREAM)
        assert (life.max_count, life.max_age, life.first_version) == (2, None, 3)
        await store.set_retention(STREAM)
        assert await self.names(store) == ["a", "b", "c", "d"]

    async def test_max_age_hides_what_was_recorded_too_long_ago(self, store: EventStore) -> None:
        """max_age hides events recorded longer ago than it."""
        await store.append(STREAM, items("a", "b"), expected_version=NO_STREAM)
        await store.set_retention(STREAM, max_age=timedelta(days=1))
        assert await self.names(store) == ["a", "b"]
        recorded = (await store.read_stream(STREAM))[-1].recorded_at
        # An age shorter than the time since the last append hides it all (the
        # clock is asked, not waited on: recorded times are in the past).
        age = datetime.now(UTC) - recorded
        assert age > timedelta(0)
        await store.set_retention(STREAM, max_age=age / 2 if age > timedelta(microseconds=2) else age)
        await eventually_async(
            lambda: self.names(store), lambda names: names == [], within=60.0, what="every event too old"
        )
        await store.append(STREAM, items("c"), expected_version=2)
        await store.set_retention(STREAM, max_age=timedelta(days=1))
        assert await self.names(store) == ["a", "b", "c"]

    async def test_bad_lifecycle_arguments_are_refused(self, store: EventStore) -> None:
        """Bad arguments to deletes and retention raise InvalidInput and write nothing."""
        with pytest.raises(InvalidStreamId):
            await store.delete_stream("", expected_version=ANY)
        with pytest.raises(InvalidExpectedVersion):
            await store.delete_stream(STREAM, expected_version=-1)
        with pytest.raises(InvalidInput):
            await store.delete_stream(STREAM, expected_version=ANY, tombstone="yes")  # type: ignore[arg-type]
        with pytest.raises(InvalidInput):
            await store.truncate_before(STREAM, -1)
        with pytest.raises(InvalidInput):
            await store.set_retention(STREAM, max_count=0)
        with pytest.raises(InvalidInput):
            await store.set_retention(STREAM, max_age=timedelta(0))
        assert await store.head() == START

    # -- scavenge ------------------------------------------------------------------------

    async def test_scavenge_removes_what_is_hidden_and_keeps_each_streams_last_event(
        self, store: EventStore
    ) -> None:
        """A scavenge removes what deletes and rules hide, keeping each stream's last event."""
        await store.append(STREAM, items("a", "b", "c"), expected_version=NO_STREAM)
        await store.append(OTHER, items("x", "y"), expected_version=NO_STREAM)
        await store.append("order-3", items("p", "q"), expected_version=NO_STREAM)
        await store.truncate_before(STREAM, 3)
        await store.delete_stream(OTHER, expected_version=2)
        seen: list[Any] = []
        done = await store.scavenge(progress=seen.append)
        assert done.events_removed == 4  # a, b; x, y (the delete's event stays: it is OTHER's last)
        assert [p.streams_done for p in seen] == [1, 2]
        assert {p.streams_total for p in seen} == {2}
        log = await full_log(store)
        assert [(e.stream_id, e.stream_version) for e in log] == [
            (STREAM, 3),
            ("order-3", 1),
            ("order-3", 2),
            (OTHER, 3),
        ]
        assert await self.names(store) == ["c"]
        await store.truncate_before(STREAM, 0)
        assert await self.names(store) == ["c"]  # removed for good now
        counts = await store.counts()
        assert counts.events == 4
        again = await store.scavenge()
        assert again.events_removed == 0
        assert await store.get_event(log[0].event_id) is not None

    async def test_checkpoints_past_removed_events_still_read_on(self, store: EventStore) -> None:
        """read_all goes on from a checkpoint whose event a scavenge removed."""
        await store.append(STREAM, items("a", "b", "c"), expected_version=NO_STREAM)
        middle = (await full_log(store))[0].checkpoint  # after "a", which is removed
        await store.append(OTHER, items("x"), expected_version=NO_STREAM)
        await store.truncate_before(STREAM, 3)
        await store.scavenge()
        page = await store.read_all(middle)
        assert [e.data.name for e in page.events] == ["c", "x"]
        assert await store.read_all(page.checkpoint) == type(page)([], page.checkpoint)
        await store.append(OTHER, items("y"), expected_version=1)
        newer = await store.read_all(page.checkpoint)
        assert [e.data.name for e in newer.events] == ["y"]
        first = await store.read_all(limit=1)
        assert [e.data.name for e in first.events] == ["c"]

    async def test_scavenge_keeps_what_a_snapshot_still_needs(self, store: EventStore) -> None:
        """A scavenge keeps the events after the stream's snapshot, so a load from it stays exact."""
        repo = Repository(store, snapshot_every={Tally: 4})
        tally = Tally("t2")
        for amount in (1, 2, 3, 4):
            tally.deposit(Decimal(amount))
        await repo.save(tally)  # and its snapshot, at version 4
        assert [s.stream_version for s in await store.list_snapshots(stream_id="tally-t2")] == [4]
        more = await repo.load(Tally, "t2")
        more.deposit(Decimal(10))
        more.deposit(Decimal(20))
        await repo.save(more)
        await store.set_retention("tally-t2", max_count=1)  # hides versions 1-5 from plain reads
        assert [e.stream_version for e in await store.read_stream("tally-t2")] == [6]
        removed = await store.scavenge()
        assert removed.events_removed == 4  # 1-4: version 5 comes after the snapshot, which needs it
        loaded = await Repository(store, snapshot_every={Tally: 4}).load(Tally, "t2")
        assert (loaded.total, loaded.version) == (Decimal(40), 6)

    async def test_a_scavenge_racing_appends_keeps_the_streams_last_event(
        self, store_factory: StoreFactory
    ) -> None:
        """Whatever the interleaving, appends land and a scavenge never takes the last event."""
        store = await store_factory(registry=CONTRACT_REGISTRY)
        other = await store_factory(registry=CONTRACT_REGISTRY)
        await store.append(STREAM, items(*"abcdef"), expected_version=NO_STREAM)
        await store.set_retention(STREAM, max_count=1)

        async def appends() -> None:
            for i in range(20):
                await other.append(STREAM, items(f"n{i}"), expected_version=ANY)

        await asyncio.gather(store.scavenge(), appends(), store.scavenge())
        await store.scavenge()
        log = await full_log(store)
        assert [(e.stream_id, e.stream_version) for e in log] == [(STREAM, 26)]
        assert await self.names(store) == ["n19"]
        assert await store.stream_version(STREAM) == 26

    async def test_scavenge_without_rules_removes_nothing(self, store: EventStore) -> None:
        """A store with no deletes or rules loses nothing to a scavenge."""
        await store.append(STREAM, items("a", "b"), expected_version=NO_STREAM)
        done = await store.scavenge()
        assert (done.streams_total, done.events_removed) == (0, 0)
        assert await self.names(store) == ["a", "b"]

    async def test_scavenge_does_not_change_the_versions_of_a_recreated_stream(
        self, store: EventStore
    ) -> None:
        """After a scavenge, a deleted stream written again still continues its versions."""
        await store.append(STREAM, items("a", "b"), expected_version=NO_STREAM)
        await store.delete_stream(STREAM, expected_version=2)
        await store.scavenge()
        again = await store.append(STREAM, items("c"), expected_version=NO_STREAM)
        assert again.stream_version == 4
        await store.scavenge()  # now the delete's event goes too
        assert [(e.stream_id, e.stream_version) for e in await full_log(store)] == [(STREAM, 4)]
        assert await self.names(store) == ["c"]


# -- personal data (crypto-shredding) --------------------------------------------------

PERSONAL_REGISTRY = EventRegistry()
"""The personal-data suite's event types: other suites' reads never meet a sealed field."""


@event("personal.CustomerRegistered", registry=PERSONAL_REGISTRY)
@personal("name", "email")
@dataclass(frozen=True, slots=True)
class CustomerRegistered:
    """Two personal fields of the stream's subject, and a plain one."""

    name: str
    email: str
    plan: str


@event("personal.PlanChanged", registry=PERSONAL_REGISTRY)
@dataclass(frozen=True, slots=True)
class PlanChanged:
    """No personal field: stored as plain JSON, whatever else the registry declares."""

    plan: str


@event("personal.NoteWritten", registry=PERSONAL_REGISTRY)
@personal("text", subject="author")
class NoteWritten(msgspec.Struct, frozen=True):
    """A personal field whose subject is named by another field, not the stream."""

    author: str
    text: str


class Customer(Aggregate):
    """State that holds a personal field: it must replay once the field is redacted."""

    category = "customer"
    snapshot_every = 1
    name: str = ""
    plan: str = ""

    @applies(CustomerRegistered)
    def _registered(self, e: CustomerRegistered) -> None:
        self.name, self.plan = e.name, e.plan

    @applies(PlanChanged)
    def _changed(self, e: PlanChanged) -> None:
        self.plan = e.plan


ADA = "customer-ada"


class PersonalDataContract(_Suite):
    """Personal fields (``@personal``): sealed per subject on append, redacted everywhere once forgotten.

    Subclass it as ``Test<Backend>PersonalData`` with the same ``store_factory``
    fixture as :class:`EventStoreContract`.
    """

    registry = PERSONAL_REGISTRY

    @staticmethod
    async def every_read(store: EventStore, stream_id: str) -> list[Any]:
        """The first event of ``stream_id`` as each kind of read returns it (data decoded)."""
        stream = await store.read_stream(stream_id)
        first = stream[0]
        found = await store.get_event(first.event_id)
        assert found is not None
        log = [e for e in (await store.read_all()).events if e.event_id == first.event_id]
        category = [e for e in (await store.read_category(stream_id)).events if e.event_id == first.event_id]
        _, after_snapshot = await store.load_snapshot_and_stream(stream_id, schema_version=99)
        walked = [e async for e in store.iter_all() if e.event_id == first.event_id]
        return [e.data for e in (first, found, *log, *category, after_snapshot[0], *walked)]

    async def test_personal_fields_are_stored_sealed_and_read_back(self, store: EventStore) -> None:
        """Given a registration, the stored bytes hold neither name nor email; every read gives both."""
        registered = CustomerRegistered("Ada Lovelace", "ada@example.org", "gold")
        await store.append(ADA, [registered, PlanChanged("silver")], expected_version=NO_STREAM)
        first, second = await store.read_stream(ADA)
        assert b"Ada Lovelace" not in first.payload
        assert b"ada@example.org" not in first.payload
        assert b'"plan":"gold"' in first.payload  # the plain field stays plain
        assert second.payload == msgspec.json.encode(PlanChanged("silver"))  # no personal field: no seal
        assert await self.every_read(store, ADA) == [registered] * 6

    async def test_forget_redacts_every_read_and_keeps_the_events(self, store: EventStore) -> None:
        """When the subject is forgotten, its fields read as REDACTED; the bytes and the rest stay."""
        await store.append(
            ADA, [CustomerRegistered("Ada", "ada@example.org", "gold")], expected_version=NO_STREAM
        )
        before = (await store.read_stream(ADA))[0]
        assert await store.forget(ADA) is True
        after = (await store.read_stream(ADA))[0]
        assert (after.event_id, after.payload, after.position) == (
            before.event_id,
            before.payload,
            before.position,
        )
        assert await self.every_read(store, ADA) == [CustomerRegistered(REDACTED, REDACTED, "gold")] * 6
        assert await store.forget(ADA) is False  # again: harmless, nothing more to destroy
        assert await store.keys.is_forgotten(ADA) if store.keys else False

    async def test_another_store_on_the_database_sees_the_forget(self, store_factory: StoreFactory) -> None:
        """Keys are not cached per store: a forget by one is what every other one reads next."""
        one = await store_factory(registry=PERSONAL_REGISTRY)
        other = await store_factory(registry=PERSONAL_REGISTRY)
        await one.append(ADA, [CustomerRegistered("Ada", "a@x", "gold")], expected_version=NO_STREAM)
        assert (await other.read_stream(ADA))[0].data.name == "Ada"
        await one.forget(ADA)
        assert (await other.read_stream(ADA))[0].data.name == REDACTED

    async def test_a_forgotten_subject_takes_no_new_personal_data(self, store: EventStore) -> None:
        """When a forgotten subject's personal data is appended, SubjectForgotten; nothing is written."""
        await store.append(ADA, [CustomerRegistered("Ada", "a@x", "gold")], expected_version=NO_STREAM)
        await store.forget(ADA)
        with pytest.raises(SubjectForgotten):
            await store.append(ADA, [CustomerRegistered("Ada", "a@x", "gold")], expected_version=1)
        assert await store.stream_version(ADA) == 1
        # Events without personal data still append to the forgotten subject's stream.
        await store.append(ADA, [PlanChanged("bronze")], expected_version=1)
        assert await store.stream_version(ADA) == 2

    async def test_a_field_can_name_the_subject(self, store: EventStore) -> None:
        """Given notes of two authors in one stream, forgetting one author redacts only theirs."""
        notes = [NoteWritten("ann", "ann's secret"), NoteWritten("bob", "bob's secret")]
        await store.append("notes", notes, expected_version=NO_STREAM)
        await store.append_events(
            [NoteWritten("ann", "tagged")], stream_id="notes", expected_version=2
        )  # the conditional path seals too
        assert [e.data.text for e in await store.read_stream("notes")] == [
            "ann's secret",
            "bob's secret",
            "tagged",
        ]
        assert all(b"secret" not in e.payload for e in await store.read_stream("notes"))
        await store.forget("ann")
        assert [e.data for e in await store.read_stream("notes")] == [
            NoteWritten("ann", REDACTED),
            NoteWritten("bob", "bob's secret"),
            NoteWritten("ann", REDACTED),
        ]

    async def test_an_aggregate_replays_redacted_and_its_snapshots_go(self, store: EventStore) -> None:
        """An aggregate whose state holds a personal field loads after a forget, from its events."""
        repo = Repository(store)
        customer = Customer(ADA.removeprefix("customer-"))
        customer.record(CustomerRegistered("Ada", "a@x", "gold"))
        await repo.save(customer)
        assert await store.list_snapshots(stream_id=ADA)  # it holds "Ada" in the clear
        await store.forget(ADA)
        assert await store.list_snapshots(stream_id=ADA) == []
        loaded = await repo.load(Customer, "ada")
        assert (loaded.name, loaded.plan, loaded.version) == (REDACTED, "gold", 1)

    # -- personal data of deleted streams ----------------------------------------------

    @staticmethod
    async def stored(store: EventStore) -> list[tuple[str, Any]]:
        """(event type, data) of every stored event, as read_all decodes them."""
        return [(e.event_type, e.data) for e in await full_log(store)]

    @pytest.mark.parametrize("tombstone", [False, True], ids=["soft", "tombstone"])
    async def test_a_deleted_streams_subject_can_be_forgotten(
        self, store: EventStore, tombstone: bool
    ) -> None:
        """Delete, then forget: the events kept until a scavenge read redacted; no new life takes the name."""
        registered = CustomerRegistered("Ada", "a@x", "gold")
        await store.append(ADA, [registered, PlanChanged("silver")], expected_version=NO_STREAM)
        await store.delete_stream(ADA, expected_version=2, tombstone=tombstone)
        assert (await self.stored(store))[0] == ("personal.CustomerRegistered", registered)
        assert await store.forget(ADA) is True
        assert (await self.stored(store))[:2] == [
            ("personal.CustomerRegistered", CustomerRegistered(REDACTED, REDACTED, "gold")),
            ("personal.PlanChanged", PlanChanged("silver")),
        ]
        assert await store.read_stream(ADA) == []
        if tombstone:
            with pytest.raises(StreamDeleted):
                await store.append(ADA, [PlanChanged("bronze")], expected_version=ANY)
        else:  # written again: personal data of the forgotten subject is refused, the rest is not
            with pytest.raises(SubjectForgotten):
                await store.append(ADA, [registered], expected_version=NO_STREAM)
            await store.append(ADA, [PlanChanged("bronze")], expected_version=NO_STREAM)
            assert [e.data for e in await store.read_stream(ADA)] == [PlanChanged("bronze")]

    async def test_a_forgotten_subjects_stream_can_be_deleted(self, store: EventStore) -> None:
        """Forget, then delete: the delete lands, and the log holds the redacted events and the delete."""
        await store.append(ADA, [CustomerRegistered("Ada", "a@x", "gold")], expected_version=NO_STREAM)
        await store.forget(ADA)
        deleted = await store.delete_stream(ADA, expected_version=1, tombstone=True)
        assert deleted is not None
        assert await self.stored(store) == [
            ("personal.CustomerRegistered", CustomerRegistered(REDACTED, REDACTED, "gold")),
            (STREAM_DELETED, StreamDeletedEvent(ADA, 1, tombstone=True)),
        ]
        assert await store.forget(ADA) is False  # nothing more to destroy

    async def test_a_scavenge_removes_a_deleted_streams_sealed_events_and_keeps_its_key(
        self, store: EventStore
    ) -> None:
        """Scavenging a deleted stream removes its sealed events; its key stays until a forget destroys it."""
        repo = Repository(store)
        customer = Customer(ADA.removeprefix("customer-"))
        customer.record(CustomerRegistered("Ada", "a@x", "gold"))
        customer.record(PlanChanged("silver"))
        await repo.save(customer)  # and a snapshot (snapshot_every = 1), the name in the clear
        bob = CustomerRegistered("Bob", "b@x", "gold")
        await store.append("customer-bob", [bob], expected_version=NO_STREAM)
        await store.delete_stream(ADA, expected_version=2)
        done = await store.scavenge()
        assert done.events_removed == 2
        assert await self.stored(store) == [
            ("personal.CustomerRegistered", bob),
            (STREAM_DELETED, StreamDeletedEvent(ADA, 2, tombstone=False)),
        ]
        assert await store.list_snapshots(stream_id=ADA) == []
        report = await verify_store(store)
        assert (report.ok, report.events) == (True, 2), report.problems
        assert store.keys is not None
        assert ADA in await store.keys.keys_of([ADA])  # a scavenge erases no key: copies made before need it
        assert await store.forget(ADA) is True
        assert (await verify_store(store)).ok

    async def test_changed_sealed_bytes_are_damage_not_erasure(self, store: EventStore) -> None:
        """A sealed member its key does not open raises DecodeError (a forgotten key never does)."""
        await store.append(ADA, [CustomerRegistered("Ada", "a@x", "gold")], expected_version=NO_STREAM)
        stored = (await store.read_stream(ADA))[0]
        member = msgspec.json.decode(stored.payload)
        blob = member["$sealed"]["c"]
        member["$sealed"]["c"] = ("B" if blob[0] != "B" else "C") + blob[1:]
        head = (await store.head()).position
        copy = RecordedEvent(
            store.codec,
            uuid.uuid4(),
            "customer-copy",
            1,
            head + 1,
            stored.event_type,
            1,
            stored.occurred_us,
            stored.recorded_us,
            msgspec.json.encode(member),
            b"{}",
        )
        await store.write_recorded([copy])
        damaged = (await store.read_stream("customer-copy"))[0]
        with pytest.raises(DecodeError, match="does not open"):
            _ = damaged.data

    async def test_key_rows_list_in_subject_order_and_restore_forgetting_wins(
        self, store: EventStore
    ) -> None:
        """Rows page by subject; restored rows add new subjects, forget forgotten ones, keep present keys."""
        keys = store.keys
        assert keys is not None
        ann, bob = await keys.key_for("ann"), await keys.key_for("bob")
        await keys.forget("cid")
        rows = await keys.records("", 10)
        assert [(r.subject, r.key_id, r.key) for r in rows] == [
            ("ann", ann.key_id, ann.key),
            ("bob", bob.key_id, bob.key),
            ("cid", None, None),
        ]
        assert rows[2].forgotten_us is not None
        assert [r.subject for r in await keys.records("ann", 1)] == ["bob"]
        other = SubjectKey("0123456789abcdef", bytes(32))
        await keys.restore(
            [
                KeyRecord("ann", other.key_id, other.key, 1, None),  # has a key here: keeps it
                KeyRecord("bob", None, None, 1, 2),  # forgotten there: forgotten here
                KeyRecord("cid", other.key_id, other.key, 1, None),  # forgotten here: stays so
                KeyRecord("dan", other.key_id, other.key, 1, None),  # new: taken as it is
            ]
        )
        assert await keys.keys_of(["ann", "bob", "cid", "dan"]) == {"ann": ann, "dan": other}
        assert await keys.is_forgotten("bob")
        assert await keys.is_forgotten("cid")

    async def test_racing_first_keys_of_a_subject_are_one_key(self, store_factory: StoreFactory) -> None:
        """Stores racing to make a subject's first key all get the one that landed."""
        one = await store_factory(registry=PERSONAL_REGISTRY)
        other = await store_factory(registry=PERSONAL_REGISTRY)
        assert one.keys is not None
        assert other.keys is not None
        made = await asyncio.gather(
            *(keys.key_for("ann") for keys in (one.keys, other.keys) for _ in range(8))
        )
        assert len(set(made)) == 1
        assert await other.keys.keys_of(["ann"]) == {"ann": made[0]}
