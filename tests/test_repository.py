"""Repository: load = snapshot + later events, save with the expected version, snapshots."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from decimal import Decimal

import pytest

from eventvault import (
    Aggregate,
    AggregateNotFound,
    EventRegistry,
    EventStore,
    InvalidInput,
    Metadata,
    Query,
    Repository,
    WrongExpectedVersion,
    applies,
    event,
    open_store,
)
from eventvault.store.records import Snapshot

reg = EventRegistry()


@event("Credited", registry=reg)
@dataclass(frozen=True)
class Credited:
    amount: Decimal


class Wallet(Aggregate):
    snapshot_every = 5
    balance: Decimal = Decimal(0)
    credits: int = 0

    def credit(self, amount: Decimal) -> None:
        self.record(Credited(amount))

    @applies(Credited)
    def _credited(self, e: Credited) -> None:
        self.balance += e.amount
        self.credits += 1


@pytest.fixture
async def store() -> AsyncIterator[EventStore]:
    async with open_store("memory://", registry=reg) as s:
        yield s


async def _wallet_with(repo: Repository, n: int, wallet_id: str = "w1") -> Wallet:
    w = Wallet(wallet_id)
    for _ in range(n):
        w.credit(Decimal("1.10"))
    await repo.save(w)
    return w


async def test_load_replays_saved_events(store: EventStore) -> None:
    """A saved aggregate loads back with the same state and version."""
    repo = Repository(store, snapshot_every={Wallet: None})
    live = await _wallet_with(repo, 3)
    loaded = await repo.load(Wallet, "w1")
    assert loaded.state() == live.state() == {"balance": Decimal("3.30"), "credits": 3}
    assert loaded.version == 3


async def test_missing_aggregate_is_not_found(store: EventStore) -> None:
    """Loading an aggregate with no events raises AggregateNotFound."""
    with pytest.raises(AggregateNotFound, match="wallet-nope has no events"):
        await Repository(store).load(Wallet, "nope")


async def test_save_expects_the_loaded_version(store: EventStore) -> None:
    """Two writers who loaded the same version: the second save is a conflict."""
    repo = Repository(store)
    await _wallet_with(repo, 1)
    a = await repo.load(Wallet, "w1")
    b = await repo.load(Wallet, "w1")
    a.credit(Decimal(1))
    b.credit(Decimal(2))
    await repo.save(a)
    with pytest.raises(WrongExpectedVersion) as err:
        await repo.save(b)
    assert (err.value.expected, err.value.actual) == (1, 2)
    assert b.pending_events == (Credited(Decimal(2)),)


async def test_save_without_pending_events_does_nothing(store: EventStore) -> None:
    """Saving an unchanged aggregate appends nothing and returns None."""
    repo = Repository(store)
    await _wallet_with(repo, 1)
    w = await repo.load(Wallet, "w1")
    assert await repo.save(w) is None
    assert await store.stream_version("wallet-w1") == 1


async def test_metadata_is_recorded_with_each_event(store: EventStore) -> None:
    """Metadata given to save is stored beside every event of that save."""
    repo = Repository(store)
    w = Wallet("w1")
    w.credit(Decimal(1))
    w.credit(Decimal(2))
    await repo.save(w, metadata=Metadata(actor="alice", request_id="r1"))
    events = await store.read_stream("wallet-w1")
    assert {(e.metadata.actor, e.metadata.request_id) for e in events} == {("alice", "r1")}


async def test_snapshot_every_n_events(store: EventStore) -> None:
    """A snapshot is taken when a save passes a multiple of snapshot_every."""
    repo = Repository(store)
    await _wallet_with(repo, 4)
    assert await store.load_snapshot("wallet-w1", schema_version=1) is None
    w = await repo.load(Wallet, "w1")
    w.credit(Decimal(1))
    w.credit(Decimal(1))
    await repo.save(w)
    snap = await store.load_snapshot("wallet-w1", schema_version=1)
    assert snap is not None
    assert snap.stream_version == 6


async def test_snapshot_interval_per_type_overrides_the_class(store: EventStore) -> None:
    """snapshot_every given to the repository wins over the class attribute."""
    repo = Repository(store, snapshot_every={Wallet: 2})
    await _wallet_with(repo, 2)
    snap = await store.load_snapshot("wallet-w1", schema_version=1)
    assert snap is not None
    assert snap.stream_version == 2
    off = Repository(store, snapshot_every={Wallet: None})
    await _wallet_with(off, 10, "w2")
    assert await store.load_snapshot("wallet-w2", schema_version=1) is None


async def test_load_uses_the_snapshot_then_later_events(store: EventStore) -> None:
    """Load = snapshot state + the events after it (proved with a doctored snapshot)."""
    repo = Repository(store)
    await _wallet_with(repo, 5)  # snapshot at 5
    # Make the snapshot say something no replay would, so using it is visible.
    await store.save_snapshot(
        Snapshot(
            "wallet-w1",
            5,
            1,
            b'{"balance":"100.00","credits":5}',
            (await store.read_stream("wallet-w1"))[0].recorded_at,
        )
    )
    w = await repo.load(Wallet, "w1")
    w.credit(Decimal(1))
    await repo.save(w)
    loaded = await repo.load(Wallet, "w1")
    assert (loaded.balance, loaded.version) == (Decimal("101.00"), 6)


async def test_snapshot_of_an_older_schema_is_ignored(store: EventStore) -> None:
    """After snapshot_schema changes, old snapshots are not read: state comes from the log."""
    repo = Repository(store)
    await _wallet_with(repo, 5)

    class WalletV2(Wallet):
        category = "wallet"
        snapshot_schema = 2

    loaded = await repo.load(WalletV2, "w1")
    assert loaded.balance == Decimal("5.50")
    assert await store.load_snapshot("wallet-w1", schema_version=2) is None


async def test_unreadable_snapshot_is_ignored(store: EventStore) -> None:
    """A snapshot that does not fit the state's shape is skipped, not misread."""
    repo = Repository(store)
    await _wallet_with(repo, 5)
    stamp = (await store.read_stream("wallet-w1"))[0].recorded_at
    await store.save_snapshot(Snapshot("wallet-w1", 5, 1, b'{"balance":"x"}', stamp))
    loaded = await repo.load(Wallet, "w1")
    assert loaded.balance == Decimal("5.50")


async def test_load_at_a_version(store: EventStore) -> None:
    """load(version=N) gives the state after the first N events, snapshot or not."""
    repo = Repository(store)
    await _wallet_with(repo, 7)
    for n in (1, 4, 5, 6, 7):
        w = await repo.load(Wallet, "w1", version=n)
        assert (w.version, w.credits) == (n, n)
    with pytest.raises(AggregateNotFound, match="no version 9"):
        await repo.load(Wallet, "w1", version=9)


async def test_load_takes_version_or_as_of_not_both(store: EventStore) -> None:
    """Asking for a version and a time at once is refused."""
    repo = Repository(store)
    await _wallet_with(repo, 1)
    stamp = (await store.read_stream("wallet-w1"))[0].recorded_at
    with pytest.raises(InvalidInput, match="not both"):
        await repo.load(Wallet, "w1", version=1, as_of=stamp)


async def test_update_retries_on_conflict(store: EventStore) -> None:
    """update() reloads and runs the command again when another writer got in first."""
    repo = Repository(store)
    await _wallet_with(repo, 1)
    loads = 0
    original_load = repo.load

    async def load_then_interfere(cls: type[Wallet], aggregate_id: str) -> Wallet:
        nonlocal loads
        loads += 1
        wallet = await original_load(cls, aggregate_id)
        if loads == 1:  # another writer lands between our load and our save
            await store.append(wallet.stream_id, [Credited(Decimal(5))], expected_version=wallet.version)
        return wallet

    repo.load = load_then_interfere  # type: ignore[assignment,method-assign]
    wallet, result = await repo.update(Wallet, "w1", lambda w: w.credit(Decimal(1)))
    assert loads == 2
    assert result is not None
    assert result.stream_version == 3
    assert wallet.balance == Decimal("7.10")


async def test_update_gives_up_after_retries(store: EventStore) -> None:
    """When every attempt conflicts, the last ConcurrencyError reaches the caller."""
    repo = Repository(store)
    await _wallet_with(repo, 1)
    original_load = repo.load

    async def always_interfere(cls: type[Wallet], aggregate_id: str) -> Wallet:
        wallet = await original_load(cls, aggregate_id)
        await store.append(wallet.stream_id, [Credited(Decimal(5))], expected_version=wallet.version)
        return wallet

    repo.load = always_interfere  # type: ignore[assignment,method-assign]
    with pytest.raises(WrongExpectedVersion):
        await repo.update(Wallet, "w1", lambda w: w.credit(Decimal(1)), retries=2)
    assert await store.stream_version("wallet-w1") == 4


async def test_snapshot_refuses_undeclared_state(store: EventStore) -> None:
    """State not declared as an annotation would be lost by a snapshot, so it is refused."""

    class Sloppy(Wallet):
        category = "sloppy"

        @applies(Credited)
        def _credited(self, e: Credited) -> None:
            self.hidden = e.amount

    repo = Repository(store)
    s = Sloppy("s")
    s.credit(Decimal(1))
    await repo.save(s)
    with pytest.raises(InvalidInput, match="hidden"):
        await repo.snapshot(s)


@pytest.mark.parametrize("bad", ["", 5, None])
async def test_bad_aggregate_ids_are_refused(store: EventStore, bad: object) -> None:
    """load() refuses ids that are not non-empty strings."""
    with pytest.raises(InvalidInput):
        await Repository(store).load(Wallet, bad)  # type: ignore[arg-type]


async def test_event_ids_make_a_retried_save_idempotent(store: EventStore) -> None:
    """Saving the same command twice with the same event ids appends it once."""
    import uuid  # noqa: PLC0415

    repo = Repository(store)
    await _wallet_with(repo, 1)
    ids = [uuid.uuid4()]
    first = await repo.update(Wallet, "w1", lambda w: w.credit(Decimal(1)), event_ids=ids)
    again = await repo.update(Wallet, "w1", lambda w: w.credit(Decimal(1)), event_ids=ids)
    assert first[1] == again[1]
    assert await store.stream_version("wallet-w1") == 2


async def test_event_ids_must_match_the_pending_events(store: EventStore) -> None:
    """One id per pending event, or a clear error and nothing written."""
    import uuid  # noqa: PLC0415

    repo = Repository(store)
    w = Wallet("w9")
    w.credit(Decimal(1))
    with pytest.raises(InvalidInput, match="1 pending"):
        await repo.save(w, event_ids=[uuid.uuid4(), uuid.uuid4()])
    assert await store.stream_version("wallet-w9") == 0


# -- the aggregate cache ---------------------------------------------------------------


class _ReadSpy:
    """Records the from_version of every read_stream of a store."""

    def __init__(self, store: EventStore) -> None:
        self.starts: list[int] = []
        self._read = store.read_stream

        async def read_stream(stream_id: str, **options: object) -> object:
            self.starts.append(int(options.get("from_version", 1)))  # type: ignore[call-overload]
            return await self._read(stream_id, **options)  # type: ignore[arg-type]

        store.read_stream = read_stream  # type: ignore[method-assign, assignment]


async def test_cached_load_reads_only_the_events_after_the_cached_version(store: EventStore) -> None:
    """With cache_size, a load after a save starts from the saved state and reads only what follows."""
    repo = Repository(store, snapshot_every={Wallet: None}, cache_size=10)
    live = await _wallet_with(repo, 3)
    spy = _ReadSpy(store)
    loaded = await repo.load(Wallet, "w1")
    assert spy.starts == [4]
    assert (loaded.state(), loaded.version) == (live.state(), 3)
    assert loaded is not live


async def test_cached_aggregate_catches_up_with_other_writers(store: EventStore) -> None:
    """Events appended by another writer after the cached state are applied on the next load."""
    repo = Repository(store, snapshot_every={Wallet: None}, cache_size=10)
    await _wallet_with(repo, 2)
    other = Repository(store, snapshot_every={Wallet: None})
    w = await other.load(Wallet, "w1")
    w.credit(Decimal(5))
    await other.save(w)
    loaded = await repo.load(Wallet, "w1")
    assert (loaded.balance, loaded.credits, loaded.version) == (Decimal("7.20"), 3, 3)
    w2 = await repo.load(Wallet, "w1")
    assert w2.state() == loaded.state()


async def test_changes_never_saved_do_not_reach_the_cache(store: EventStore) -> None:
    """A command run on a cached aggregate whose save fails leaves the next load unchanged."""
    repo = Repository(store, snapshot_every={Wallet: None}, cache_size=10)
    await _wallet_with(repo, 1)
    w = await repo.load(Wallet, "w1")
    w.credit(Decimal(100))
    w.balance += Decimal(1000)  # even a stray change of state in place
    await store.append("wallet-w1", [Credited(Decimal(1))], expected_version=1)
    with pytest.raises(WrongExpectedVersion):
        await repo.save(w)
    loaded = await repo.load(Wallet, "w1")
    assert (loaded.balance, loaded.version) == (Decimal("2.10"), 2)


async def test_cached_update_reads_nothing_before_its_save(store: EventStore) -> None:
    """update() on a cached aggregate runs the command on the cached state; the store checks the version."""
    repo = Repository(store, snapshot_every={Wallet: None}, cache_size=10)
    await _wallet_with(repo, 2)
    spy = _ReadSpy(store)
    wallet, result = await repo.update(Wallet, "w1", lambda w: w.credit(Decimal(1)))
    assert spy.starts == []
    assert result is not None
    assert (result.stream_version, wallet.balance) == (3, Decimal("3.20"))
    assert (await repo.load(Wallet, "w1")).balance == Decimal("3.20")


async def _credit_elsewhere(store: EventStore, amount: Decimal) -> None:
    """Another writer (its own repository, no cache) moves wallet w1 on."""
    other = Repository(store, snapshot_every={Wallet: None})
    await other.update(Wallet, "w1", lambda w: w.credit(amount))


async def test_cached_update_behind_another_writer_reloads_without_spending_a_retry(
    store: EventStore,
) -> None:
    """A stale cached state conflicts at the save; the command runs again on the loaded one (retries=0)."""
    repo = Repository(store, snapshot_every={Wallet: None}, cache_size=10)
    await _wallet_with(repo, 1)
    await _credit_elsewhere(store, Decimal(5))
    wallet, result = await repo.update(Wallet, "w1", lambda w: w.credit(Decimal(1)), retries=0)
    assert result is not None
    assert (result.stream_version, wallet.balance, wallet.credits) == (3, Decimal("7.10"), 3)
    assert [e.data.amount for e in await store.read_stream("wallet-w1")] == [Decimal("1.10"), 5, 1]


@pytest.mark.parametrize("retries", [0, 5])
async def test_cached_update_of_a_stream_deleted_elsewhere_is_not_found(
    store: EventStore, retries: int
) -> None:
    """A cached state of a stream another process deleted: the update finds no aggregate (not a conflict)."""
    repo = Repository(store, snapshot_every={Wallet: None}, cache_size=10)
    await _wallet_with(repo, 1)
    await store.delete_stream("wallet-w1", expected_version=1)  # past this repository and its cache
    with pytest.raises(AggregateNotFound):
        await repo.update(Wallet, "w1", lambda w: w.credit(Decimal(1)), retries=retries)
    assert await store.stream_version("wallet-w1") == 0
    with pytest.raises(AggregateNotFound):
        await repo.load(Wallet, "w1")  # the cached state went with the refused save


def _spend(amount: Decimal) -> Callable[[Wallet], None]:
    """A command that refuses to spend more than the balance (recorded as a negative credit)."""

    def command(w: Wallet) -> None:
        if w.balance < amount:
            raise ValueError(f"balance {w.balance} is below {amount}")
        w.credit(-amount)

    return command


async def test_cached_update_refused_on_a_stale_state_runs_on_the_current_one(store: EventStore) -> None:
    """A command that refuses the cached state is run again on the loaded state, where it may succeed."""
    repo = Repository(store, snapshot_every={Wallet: None}, cache_size=10)
    await _wallet_with(repo, 1)
    await _credit_elsewhere(store, Decimal(5))
    wallet, result = await repo.update(Wallet, "w1", _spend(Decimal(6)))
    assert result is not None
    assert (result.stream_version, wallet.balance) == (3, Decimal("0.10"))


async def test_cached_update_refused_on_the_current_state_raises_and_writes_nothing(
    store: EventStore,
) -> None:
    """A refusal that holds on the loaded state reaches the caller; nothing is appended."""
    repo = Repository(store, snapshot_every={Wallet: None}, cache_size=10)
    await _wallet_with(repo, 1)
    spy = _ReadSpy(store)
    with pytest.raises(ValueError, match="below 6"):
        await repo.update(Wallet, "w1", _spend(Decimal(6)))
    assert spy.starts == [2]  # the refusal of the cached state was checked against the store
    assert await store.stream_version("wallet-w1") == 1


async def test_the_cache_keeps_only_the_most_recently_used(store: EventStore) -> None:
    """Past cache_size aggregates, the least recently used one is loaded from the log again."""
    repo = Repository(store, snapshot_every={Wallet: None}, cache_size=2)
    for wallet_id in ("a", "b"):
        await _wallet_with(repo, 2, wallet_id)
    await repo.load(Wallet, "a")  # "b" is now the least recently used
    await _wallet_with(repo, 2, "c")
    spy = _ReadSpy(store)
    for wallet_id in ("a", "c", "b"):
        await repo.load(Wallet, wallet_id)
    assert spy.starts == [3, 3, 1]


async def test_aggregates_with_undeclared_state_are_not_cached(store: EventStore) -> None:
    """An aggregate whose state is not all declared is replayed from the log on every load."""

    class Sloppy(Wallet):
        category = "sloppy"

        @applies(Credited)
        def _credited(self, e: Credited) -> None:
            self.hidden = e.amount

    repo = Repository(store, snapshot_every={Sloppy: None}, cache_size=10)
    s = Sloppy("s")
    s.credit(Decimal(1))
    await repo.save(s)
    spy = _ReadSpy(store)
    loaded = await repo.load(Sloppy, "s")
    assert spy.starts == [1]
    assert loaded.hidden == Decimal(1)


async def test_loads_of_the_past_ignore_the_cache(store: EventStore) -> None:
    """load(version=N) gives the state after N events even when a later state is cached."""
    repo = Repository(store, snapshot_every={Wallet: None}, cache_size=10)
    await _wallet_with(repo, 4)
    past = await repo.load(Wallet, "w1", version=2)
    assert (past.version, past.credits) == (2, 2)


@pytest.mark.parametrize("bad", [-1, 1.5, "10", True])
def test_bad_cache_size_is_refused(store: EventStore, bad: object) -> None:
    """cache_size must be an int >= 0."""
    with pytest.raises(InvalidInput, match="cache_size"):
        Repository(store, cache_size=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("cache_size", [0, 10])
async def test_a_command_run_again_after_it_landed_leaves_the_state_as_stored(
    store: EventStore, cache_size: int
) -> None:
    """The same event ids on an aggregate loaded after they landed: the first result, and no double state."""
    repo = Repository(store, snapshot_every={Wallet: None}, cache_size=cache_size)
    await _wallet_with(repo, 1)
    ids = [uuid.uuid4()]

    def credit(w: Wallet) -> None:
        w.credit(Decimal(5))

    first_state, first = await repo.update(Wallet, "w1", credit, event_ids=ids)
    again_state, again = await repo.update(Wallet, "w1", credit, event_ids=ids)  # loaded after it landed

    assert again == first
    assert (again_state.balance, again_state.version) == (first_state.balance, 2) == (Decimal("6.10"), 2)
    assert await store.stream_version("wallet-w1") == 2
    # The next command starts from the stored state, not from one that holds the credit twice.
    w, result = await repo.update(Wallet, "w1", credit)
    assert result is not None
    assert (w.balance, w.version, result.stream_version) == (Decimal("11.10"), 3, 3)
    assert (await Repository(store).load(Wallet, "w1")).balance == Decimal("11.10")


class TaggedWallet(Wallet):
    """Tags each credit with its size, from the state after it."""

    category = "tagged"

    def tags_of(self, event: object) -> tuple[str, ...]:
        assert isinstance(event, Credited)
        return ("wallet", f"credits:{self.credits}")


async def test_save_tags_events_as_the_aggregate_says(store: EventStore) -> None:
    """Aggregate.tags_of gives each pending event its tags; a query read finds them (and ids still apply)."""
    repo = Repository(store)
    w = TaggedWallet("t1")
    w.credit(Decimal(1))
    ids = [uuid.uuid4()]
    await repo.save(w, event_ids=ids)
    w.credit(Decimal(2))
    await repo.save(w)
    found = (await store.read(Query.of(tags=["wallet"]))).events
    assert [(e.stream_id, e.tags) for e in found] == [
        ("tagged-t1", ("wallet", "credits:1")),
        ("tagged-t1", ("wallet", "credits:2")),
    ]
    assert found[0].event_id == ids[0]
