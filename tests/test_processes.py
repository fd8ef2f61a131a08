"""Process managers: exactly-once steps, refusals and compensation, failures, deadlines, leases.

The test domain is small: stock that can be reserved, orders that reserve it,
and a process that reserves, then confirms or gives the stock back. Waits on
the runner's progress use ``wait_for``/``catch_up``; waits on timers
(deadlines) poll with a generous deadline.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from eventvault import (
    ANY,
    NO_STREAM,
    Aggregate,
    DomainError,
    InvalidInput,
    RecordedEvent,
    Repository,
    StoreUnavailable,
    applies,
    event,
    open_store,
)
from eventvault.processes import (
    DeadlineScheduled,
    Process,
    ProcessEnded,
    ProcessManager,
    ProcessRunner,
    Step,
    StepDone,
    fire_deadline,
    on_deadline,
    react,
    reacts_to,
    step_event_id,
)
from eventvault.testing.processes import given_process


class OutOfStock(DomainError):
    """Fewer units left than wanted."""


@event("TestPmStockAdded")
@dataclass(frozen=True)
class StockAdded:
    units: int


@event("TestPmReserved")
@dataclass(frozen=True)
class Reserved:
    order: str
    units: int


@event("TestPmReleased")
@dataclass(frozen=True)
class Released:
    order: str
    units: int


class Shelf(Aggregate):
    available: int = 0

    def add(self, units: int) -> None:
        self.record(StockAdded(units))

    def reserve(self, order: str, units: int) -> None:
        if units > self.available:
            raise OutOfStock(f"{units} wanted, {self.available} left")
        self.record(Reserved(order, units))

    def release(self, order: str, units: int) -> None:
        self.record(Released(order, units))

    @applies(StockAdded, Released)
    def _more(self, e: StockAdded | Released) -> None:
        self.available += e.units

    @applies(Reserved)
    def _less(self, e: Reserved) -> None:
        self.available -= e.units


@event("TestPmOrdered")
@dataclass(frozen=True)
class Ordered:
    order: str
    shelf: str
    units: int


@event("TestPmCancelled")
@dataclass(frozen=True)
class Cancelled:
    order: str


@event("TestPmHeld")
@dataclass(frozen=True)
class Held:
    shelf: str
    units: int


@event("TestPmRefused")
@dataclass(frozen=True)
class Refused:
    reason: str


@event("TestPmGaveBack")
@dataclass(frozen=True)
class GaveBack:
    why: str


class Reservation(Process):
    shelf: str = ""
    units: int = 0

    @applies(Held)
    def _held(self, e: Held) -> None:
        self.shelf, self.units = e.shelf, e.units

    @applies(Refused, GaveBack)
    def _over(self, e: object) -> None:
        pass


class Reserving(ProcessManager[Reservation]):
    name = "reserving"
    process = Reservation
    retry_delay = 0.01
    hold_for: timedelta | None = None
    broken: frozenset[str] = frozenset()

    @reacts_to(Ordered, instance=lambda e: e.data.order, starts=True)
    async def ordered(self, step: Step[Reservation], e: RecordedEvent) -> None:
        o = e.data
        if o.shelf in self.broken:
            raise RuntimeError(f"shelf {o.shelf} is unreadable")
        outcome = await step.command(Shelf, o.shelf, lambda s: s.reserve(o.order, o.units))
        if outcome.refused:
            step.process.record(Refused(str(outcome.error)))
            step.end()
            return
        step.process.record(Held(o.shelf, o.units))
        if self.hold_for is not None:
            step.schedule("hold", after=self.hold_for)

    @reacts_to(Cancelled, instance=lambda e: e.data.order)
    async def cancelled(self, step: Step[Reservation], _e: RecordedEvent) -> None:
        p = step.process
        await step.command(Shelf, p.shelf, lambda s: s.release(p.id, p.units))
        p.record(GaveBack("cancelled"))
        step.end()

    @on_deadline("hold")
    async def expired(self, step: Step[Reservation]) -> None:
        p = step.process
        await step.command(Shelf, p.shelf, lambda s: s.release(p.id, p.units))
        p.record(GaveBack("expired"))
        step.end()


async def _shelf(repo: Repository, name: str, units: int) -> None:
    shelf = Shelf(name)
    shelf.add(units)
    await repo.save(shelf)


async def _events_of(store: Any, stream_id: str) -> list[object]:
    return [e.data for e in await store.read_stream(stream_id)]


async def _until(check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await check():
        assert loop.time() < end, "the condition did not come true in time"
        await asyncio.sleep(0.02)


class _FailingSaves(Repository):
    """A repository whose saves to streams of ``category`` fail (as a crash would) ``times`` times."""

    def __init__(self, store: Any, category: str, times: int) -> None:
        super().__init__(store)
        self.category = category
        self.times = times

    async def save(self, aggregate: Aggregate, **kw: Any) -> Any:
        if aggregate.stream_id.startswith(self.category + "-") and self.times > 0:
            self.times -= 1
            raise StoreUnavailable("the machine died here")
        return await super().save(aggregate, **kw)


async def _ordered(store: Any, order: str, shelf: str, units: int) -> RecordedEvent:
    result = await store.append(f"order-{order}", [Ordered(order, shelf, units)], expected_version=NO_STREAM)
    [recorded] = await store.read_stream(f"order-{order}", from_version=result.stream_version)
    assert isinstance(recorded, RecordedEvent)
    return recorded


async def test_a_step_run_again_after_its_command_landed_appends_nothing_new() -> None:
    """A crash between a step's command and its instance's events: the re-run finds the command landed.

    The re-run's command refuses (the shelf holds its own reservation and has
    no units left), and the step still ends as the first run would have.
    """
    async with open_store("memory://") as store:
        repo = Repository(store)
        await _shelf(repo, "s1", 2)
        e = await _ordered(store, "o1", "s1", 2)
        with pytest.raises(StoreUnavailable):
            await react(Reserving(), _FailingSaves(store, "reservation", 1), e)
        assert await _events_of(store, "shelf-s1") == [StockAdded(2), Reserved("o1", 2)]
        assert await store.stream_version("reservation-o1") == 0  # the instance's events were lost

        outcome = await react(Reserving(), repo, e)
        assert outcome is not None
        assert outcome.state == "done"
        assert await _events_of(store, "shelf-s1") == [StockAdded(2), Reserved("o1", 2)]
        held = await _events_of(store, "reservation-o1")
        assert held == [Held("s1", 2), StepDone(f"event:{e.event_id}")]

        again = await react(Reserving(), repo, e)  # after the instance's events landed too
        assert again is not None
        assert again.state == "skipped"
        assert await store.stream_version("reservation-o1") == 2
        assert await store.stream_version("shelf-s1") == 2


async def test_the_ids_a_step_appends_are_derived_from_the_instance_and_the_step() -> None:
    """The command's and the instance's events carry step_event_id ids: the same for every run."""
    async with open_store("memory://") as store:
        repo = Repository(store)
        await _shelf(repo, "s1", 5)
        e = await _ordered(store, "o1", "s1", 1)
        await react(Reserving(), repo, e)
        key = f"event:{e.event_id}"
        [_, reserved] = await store.read_stream("shelf-s1")
        assert reserved.event_id == step_event_id("reservation-o1", key, "command-0-0")
        ids = [x.event_id for x in await store.read_stream("reservation-o1")]
        assert ids == [step_event_id("reservation-o1", key, f"process-{i}") for i in range(2)]
        [meta] = {x.metadata.causation_id for x in await store.read_stream("reservation-o1")}
        assert meta == str(e.event_id)


async def test_an_event_for_no_instance_does_nothing() -> None:
    """A reaction without starts= ignores an event for an instance that does not exist."""
    async with open_store("memory://") as store:
        await store.append("order-x", [Cancelled("x")], expected_version=NO_STREAM)
        [e] = await store.read_stream("order-x")
        outcome = await react(Reserving(), Repository(store), e)
        assert outcome is not None
        assert outcome.state == "skipped"
        assert await store.stream_version("reservation-x") == 0


async def test_the_runner_runs_steps_and_their_checkpoint_follows(tmp_path: Path) -> None:
    """Refusals end their instance, accepted ones hold stock; past wait_for, an event's step is stored."""
    async with open_store(f"sqlite:///{tmp_path}/pm.db") as store:
        repo = Repository(store)
        await _shelf(repo, "s1", 3)
        async with ProcessRunner(store, [Reserving()]) as runner:
            for i in range(5):
                await store.append(f"order-o{i}", [Ordered(f"o{i}", "s1", 1)], expected_version=NO_STREAM)
            last = await store.append("order-o0", [Cancelled("o0")], expected_version=1)
            assert await runner.wait_for(last.checkpoint, timeout=60)
            assert (await repo.load(Shelf, "s1")).available == 1  # o0, o1, o2 held; o0 gave back
            assert await runner.catch_up(timeout=60)
            states = {i.process_id: i.state for i in await runner.instances("reserving")}
            assert states == {"o0": "ended", "o1": "running", "o2": "running", "o3": "ended", "o4": "ended"}
            [status] = await runner.status()
            assert status.last_error is None
            assert status.lag_events == 0


async def test_a_process_manager_acts_at_once_whatever_the_runner_lingers(tmp_path: Path) -> None:
    """Projections linger for more events; a process manager's worker runs each step when woken."""
    async with open_store(f"sqlite:///{tmp_path}/pm.db") as store:
        repo = Repository(store)
        await _shelf(repo, "s1", 3)
        runner = ProcessRunner(
            store, [Reserving()], watch_interval=None, idle_wait=3600, lease_seconds=3600, linger=3600
        )
        async with runner:
            assert await runner.catch_up(timeout=60)
            ordered = await store.append("order-o1", [Ordered("o1", "s1", 1)], expected_version=NO_STREAM)
            # No wait_for (it would end a linger): the step's own event is what is awaited.
            assert await store.wait_for_events(ordered.checkpoint, timeout=60, event_types=["TestPmReserved"])
            assert (await repo.load(Shelf, "s1")).available == 2


async def test_a_failing_step_stops_its_instance_only(tmp_path: Path) -> None:
    """A step that keeps raising stops that instance, with its error; later instances go on."""
    manager = Reserving()
    manager.broken = frozenset({"bad"})
    async with open_store(f"sqlite:///{tmp_path}/pm.db") as store:
        repo = Repository(store)
        await _shelf(repo, "s1", 3)
        async with ProcessRunner(store, [manager]) as runner:
            await store.append("order-a", [Ordered("a", "bad", 1)], expected_version=NO_STREAM)
            await store.append("order-b", [Ordered("b", "s1", 1)], expected_version=NO_STREAM)
            # An event for a stopped instance does nothing.
            last = await store.append("order-a", [Cancelled("a")], expected_version=1)
            assert await runner.wait_for(last.checkpoint, timeout=60)
            assert await runner.catch_up(timeout=60)
            [stopped] = await runner.instances("reserving", state="stopped")
            assert stopped.process_id == "a"
            assert stopped.error is not None
            assert "shelf bad is unreadable" in stopped.error
            assert [i.process_id for i in await runner.instances("reserving", state="running")] == ["b"]
            [status] = await runner.status()
            assert status.state in ("live", "catching_up")
            assert status.last_error is None
        process = await repo.load(Reservation, "a")
        assert process.stopped is not None
        assert process.steps_done == set()


async def test_a_deadline_fires_after_a_restart(tmp_path: Path) -> None:
    """A deadline that came due while no runner ran fires when one starts, once."""
    url = f"sqlite:///{tmp_path}/pm.db"
    async with open_store(url) as store:
        repo = Repository(store)
        await _shelf(repo, "s1", 2)
        far = Reserving()
        far.hold_for = timedelta(days=1)
        async with ProcessRunner(store, [far]) as runner:
            e = await store.append("order-o1", [Ordered("o1", "s1", 1)], expected_version=NO_STREAM)
            assert await runner.wait_for(e.checkpoint, timeout=60)
        # Move the deadline to the past, as time passing with no runner would.
        past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        process = await repo.load(Reservation, "o1")
        process.record(DeadlineScheduled("hold", past))
        await repo.save(process)
    async with open_store(url) as store:
        repo = Repository(store)
        async with ProcessRunner(store, [Reserving()]):

            async def released() -> bool:
                return (await repo.load(Reservation, "o1")).ended

            await _until(released)
        assert (await repo.load(Shelf, "s1")).available == 2
        assert (await _events_of(store, "shelf-s1"))[1:] == [Reserved("o1", 1), Released("o1", 1)]


async def test_a_cancelled_deadline_never_fires() -> None:
    """Cancel, then the due time passes: the step of the deadline does nothing."""
    async with open_store("memory://") as store:
        repo = Repository(store)
        await _shelf(repo, "s1", 2)
        e = await _ordered(store, "o1", "s1", 1)
        m = Reserving()
        m.hold_for = timedelta(days=1)
        await react(m, repo, e)
        due = (await repo.load(Reservation, "o1")).deadlines["hold"]
        await store.append("order-o1", [Cancelled("o1")], expected_version=ANY)
        [_, c] = await store.read_stream("order-o1")
        await react(m, repo, c)
        outcome = await fire_deadline(m, repo, "o1", "hold", due)
        assert outcome.state == "skipped"
        assert (await _events_of(store, "shelf-s1"))[1:] == [Reserved("o1", 1), Released("o1", 1)]


async def test_two_runners_share_the_instances_and_each_step_runs_once(tmp_path: Path) -> None:
    """Two runners on four partitions: every order is reserved exactly once."""

    class Sharded(Reserving):
        name = "sharded_reserving"
        partitions = 4

    url = f"sqlite:///{tmp_path}/pm.db"
    async with open_store(url) as store:
        repo = Repository(store)
        await _shelf(repo, "s1", 1000)
        a = ProcessRunner(store, [Sharded()], worker_id="a", lease_seconds=2)
        b = ProcessRunner(store, [Sharded()], worker_id="b", lease_seconds=2)
        async with a, b:
            for i in range(60):
                await store.append(f"order-o{i}", [Ordered(f"o{i}", "s1", 1)], expected_version=NO_STREAM)
            assert await a.catch_up(timeout=120)
            assert await b.catch_up(timeout=120)
        reserved = [e for e in await _events_of(store, "shelf-s1") if isinstance(e, Reserved)]
        assert sorted(r.order for r in reserved) == sorted(f"o{i}" for i in range(60))
        assert (await repo.load(Shelf, "s1")).available == 940


def test_given_when_then_for_a_step() -> None:
    """The helpers pass on the step's events, and fail on other ones."""
    (
        given_process(Reserving(), "o1", streams={"shelf-s1": [StockAdded(1)]})
        .when(Ordered("o1", "s1", 2), stream_id="order-o1")
        .then(Refused("2 wanted, 1 left"), ProcessEnded())
    )
    (
        given_process(
            Reserving(),
            "o1",
            streams={"shelf-s1": [StockAdded(1), Reserved("o1", 1)]},
            history=[Held("s1", 1)],
        )
        .when(Cancelled("o1"), stream_id="order-o1")
        .then(GaveBack("cancelled"), ProcessEnded(), appended={"shelf-s1": [Released("o1", 1)]})
    )
    with pytest.raises(AssertionError, match="other events to other streams"):
        (
            given_process(Reserving(), "o1", streams={"shelf-s1": [StockAdded(3)]})
            .when(Ordered("o1", "s1", 2), stream_id="order-o1")
            .then(Held("s1", 2))
        )
    with pytest.raises(AssertionError, match="other events on the instance"):
        (
            given_process(Reserving(), "o1", streams={"shelf-s1": [StockAdded(3)]})
            .when(Ordered("o1", "s1", 2), stream_id="order-o1")
            .then(Refused("no"), appended={"shelf-s1": [Reserved("o1", 2)]})
        )
    broken = Reserving()
    broken.broken = frozenset({"s1"})
    error = (
        given_process(broken, "o1")
        .when(Ordered("o1", "s1", 2), stream_id="order-o1")
        .then_stopped("unreadable")
    )
    assert error.startswith("RuntimeError")


def test_a_runner_refuses_what_is_not_a_process_manager() -> None:
    """Bad arguments get a clear InvalidInput, not a failure later in a task."""

    class Nothing(ProcessManager[Reservation]):
        name = "nothing"
        process = Reservation

    async def build(managers: Any) -> None:
        async with open_store("memory://") as store:
            ProcessRunner(store, managers)

    with pytest.raises(InvalidInput, match="list of ProcessManager"):
        asyncio.run(build([object()]))
    with pytest.raises(InvalidInput, match="no @reacts_to"):
        asyncio.run(build([Nothing()]))
