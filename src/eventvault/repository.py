"""Load and save aggregates through an event store, with snapshots.

``load`` = the latest usable snapshot + the events after it. ``save`` appends
the pending events expecting the version the aggregate was loaded at, and takes
a snapshot whenever the new version passes a multiple of the type's interval.

With ``cache_size``, the repository also keeps the state of the aggregates it
loaded or saved last, in this process (encoded, like a snapshot, so a command
that changes a loaded aggregate and then fails never changes the cache). A load
then starts from that state and reads only the events after it, so it is as
current as a full replay, for the price of one short read.
"""

from __future__ import annotations

import logging
import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from eventvault.domain import Aggregate, state_fields
from eventvault.errors import AggregateNotFound, ConcurrencyError, InvalidInput, WrongExpectedVersion
from eventvault.store.base import EventStore, check_positive_int
from eventvault.store.records import EMPTY_METADATA, AppendResult, Metadata, NewEvent, RecordedEvent, Snapshot

__all__ = ["Repository"]

A = TypeVar("A", bound=Aggregate)
log = logging.getLogger("eventvault.repository")


class Repository:
    """Loads aggregates from their streams and appends what commands recorded.

    ``snapshot_every`` overrides the ``snapshot_every`` class attribute per
    aggregate type (None turns snapshots off for that type). ``cache_size`` is
    how many aggregates' latest states this repository keeps in memory to start
    loads from (0, the default, keeps none); like snapshots, it needs the state
    declared as class annotations, and aggregates with other state are simply
    not cached.
    """

    def __init__(
        self,
        store: EventStore,
        *,
        snapshot_every: Mapping[type[Aggregate], int | None] | None = None,
        cache_size: int = 0,
    ) -> None:
        self.store = store
        self._every: dict[type[Aggregate], int | None] = dict(snapshot_every or {})
        for cls, every in self._every.items():
            check_positive_int(f"snapshot_every[{cls.__name__}]", every)
        check_positive_int("cache_size", cache_size, minimum=0, optional=False)
        self._state_types: dict[type[Aggregate], type[msgspec.Struct]] = {}
        self._cache_size = cache_size
        # (class, aggregate id) -> (version, encoded state), least recently used first.
        self._cache: OrderedDict[tuple[type[Aggregate], str], tuple[int, bytes]] = OrderedDict()

    def snapshot_interval(self, cls: type[Aggregate]) -> int | None:
        """Events between snapshots for ``cls`` (None: no snapshots)."""
        return self._every.get(cls, cls.snapshot_every)

    async def load(
        self,
        cls: type[A],
        aggregate_id: str,
        *,
        version: int | None = None,
        as_of: datetime | None = None,
    ) -> A:
        """The aggregate as it is now, at ``version``, or as it was at ``as_of``.

        Raises AggregateNotFound if it has no events (or had none by then).
        """
        _check_id(aggregate_id)
        check_positive_int("version", version)
        if version is not None and as_of is not None:
            raise InvalidInput("load takes version or as_of, not both")
        stream_id = cls.stream_id_for(aggregate_id)
        if as_of is not None:
            last = await self.store.read_stream(stream_id, backwards=True, limit=1, as_of=as_of)
            if not last:
                raise AggregateNotFound(f"{stream_id} did not exist at {as_of.isoformat()}")
            version = last[0].stream_version

        current = version is None
        aggregate, events, cached = await self._state_and_events(cls, aggregate_id, stream_id, version)
        if aggregate is None:
            if not events:
                raise AggregateNotFound(f"{stream_id} has no events")
            # A stream deleted and written again, or truncated, starts past version 1.
            aggregate = cls.replay(
                aggregate_id, (e.data for e in events), version=events[0].stream_version - 1
            )
        else:
            for e in events:
                aggregate._apply(e.data)  # noqa: SLF001 - the replay path, by design
        if version is not None and aggregate.version < version:
            raise AggregateNotFound(f"{stream_id} has no version {version}: it is at {aggregate.version}")
        if current and self._cache_size and (events or not cached):
            self._remember(aggregate)
        return aggregate

    async def save(
        self,
        aggregate: Aggregate,
        *,
        metadata: Metadata | None = None,
        event_ids: Sequence[uuid.UUID] | None = None,
    ) -> AppendResult | None:
        """Append the aggregate's pending events; None if it has none.

        Raises WrongExpectedVersion if its stream moved on since it was loaded.
        ``event_ids`` (one per pending event) make a retried command idempotent:
        derive them from the command's idempotency key, and a second save of
        the same command returns the first one's result instead of appending.
        If the aggregate was loaded after that first save landed, the command
        ran on a state that already held its events: the result's
        ``stream_version`` then differs from ``aggregate.version``, and the
        aggregate should be loaded again (:meth:`update` does).
        """
        if not isinstance(aggregate, Aggregate):
            raise InvalidInput(f"save takes an Aggregate, got {type(aggregate).__name__}")
        pending = aggregate._pending  # noqa: SLF001 - read here, replaced (not changed) by mark_saved
        if not pending:
            return None
        if event_ids is not None and len(event_ids) != len(pending):
            raise InvalidInput(f"{len(event_ids)} event ids given for {len(pending)} pending events")
        events: list[object]
        tags = [tuple(aggregate.tags_of(e)) for e in pending]
        if event_ids is None and metadata is None and not any(tags):
            events = pending  # bare events: new ids, no metadata, now (encoded before any await)
        else:
            meta = EMPTY_METADATA if metadata is None else metadata
            events = (
                [NewEvent(e, meta, tags=t) for e, t in zip(pending, tags, strict=True)]
                if event_ids is None
                else [
                    NewEvent(e, meta, event_id, tags=t)
                    for e, event_id, t in zip(pending, event_ids, tags, strict=True)
                ]
            )
        expected = aggregate.version - len(pending)
        result = await self.store.append(aggregate.stream_id, events, expected_version=expected)
        aggregate.mark_saved()
        if result.stream_version != aggregate.version:
            # The events were stored already, by an earlier save that landed (the
            # store answered with that save's result), and this aggregate was loaded
            # after it: its state has them twice. Never start from it again.
            self._cache.pop((type(aggregate), aggregate.id), None)
            return result
        if self._cache_size:
            self._remember(aggregate)
        every = self.snapshot_interval(type(aggregate))
        if every and result.stream_version // every > expected // every:
            try:
                await self.snapshot(aggregate)
            except Exception:  # a snapshot is an optimisation: the append stands
                log.warning("snapshot of %s failed", aggregate.stream_id, exc_info=True)
        return result

    def forget_stream(self, stream_id: str) -> None:
        """Drop the cached state of the aggregate in ``stream_id`` (after the stream was deleted, say).

        A save from a stale cached state is refused by the store anyway (its
        expected version no longer holds); a plain :meth:`load` would return it.
        """
        for key in [k for k in self._cache if k[0].stream_id_for(k[1]) == stream_id]:
            del self._cache[key]

    async def update(  # noqa: PLR0913 - the arguments of save, plus the command
        self,
        cls: type[A],
        aggregate_id: str,
        command: Callable[[A], object],
        *,
        metadata: Metadata | None = None,
        event_ids: Sequence[uuid.UUID] | None = None,
        retries: int = 5,
    ) -> tuple[A, AppendResult | None]:
        """Load, run ``command`` on the aggregate, save; on a conflict, do it all again.

        Domain errors from the command propagate at once; after ``retries``
        conflicts in a row the last ConcurrencyError propagates.

        With a cache (``cache_size``), an aggregate this repository saved or
        loaded before is not read first: the command runs on its cached state
        and the save expects the cached version, which the store checks. If
        another writer moved the stream on, that save conflicts, and the
        aggregate is loaded and the command run again; if the command refuses
        the cached state, it runs again on the loaded one before its error
        counts. Neither costs one of the ``retries``. A save refused because the
        stream is at no stream (deleted meanwhile, by any process) drops the
        cached state, so the load that follows reads the log: AggregateNotFound.
        """
        check_positive_int("retries", retries, minimum=0, optional=False)
        aggregate = self._from_cache(cls, aggregate_id) if self._cache_size else None
        conflicts = 0
        while True:
            cached = aggregate is not None
            if aggregate is not None:
                try:
                    command(aggregate)
                except Exception:  # noqa: BLE001 - perhaps only stale: decided on the loaded state
                    aggregate = None
                    cached = False
            if aggregate is None:
                aggregate = await self.load(cls, aggregate_id)
                command(aggregate)
            try:
                result = await self.save(aggregate, metadata=metadata, event_ids=event_ids)
            except ConcurrencyError as conflict:
                if isinstance(conflict, WrongExpectedVersion) and conflict.actual == 0:
                    # At no stream: deleted since the state was cached (a stream read
                    # shows nothing of it, so a load would start from that state again).
                    self._cache.pop((cls, aggregate_id), None)
                if not cached:
                    if conflicts == retries:
                        raise
                    conflicts += 1
                aggregate = None
                continue
            if result is not None and result.stream_version != aggregate.version:
                # A retry of a command that had landed: the state as it landed.
                aggregate = await self.load(cls, aggregate_id, version=result.stream_version)
            return aggregate, result

    async def snapshot(self, aggregate: Aggregate) -> None:
        """Save a snapshot of ``aggregate`` now (its pending events must be saved)."""
        if aggregate.pending_events:
            raise InvalidInput("snapshot an aggregate after saving it, not with pending events")
        cls = type(aggregate)
        fields = state_fields(cls)
        stray = set(vars(aggregate)) - set(fields) - _BASE_ATTRIBUTES
        if stray:
            raise InvalidInput(
                f"{cls.__name__} has state that is not declared as a class annotation: "
                f"{sorted(stray)}; a snapshot would lose it"
            )
        state = self.store.codec.encode_value(aggregate.state())
        await self.store.save_snapshot(
            Snapshot(aggregate.stream_id, aggregate.version, cls.snapshot_schema, state, datetime.now(UTC))
        )

    async def _state_and_events(
        self, cls: type[A], aggregate_id: str, stream_id: str, version: int | None
    ) -> tuple[A | None, list[RecordedEvent], bool]:
        """A state to start from (None: the start), the events after it, and whether it was cached."""
        if version is None and self._cache_size:
            aggregate = self._from_cache(cls, aggregate_id)
            if aggregate is not None:
                events = await self.store.read_stream(stream_id, from_version=aggregate.version + 1)
                if not events or events[0].stream_version == aggregate.version + 1:
                    return aggregate, events, True
                # A gap: the stream was deleted (and written again) since: the state is not its.
                self._cache.pop((cls, aggregate_id), None)
        if not self.snapshot_interval(cls):
            return None, await self.store.read_stream(stream_id, to_version=version), False
        snap, events = await self.store.load_snapshot_and_stream(
            stream_id, schema_version=cls.snapshot_schema, to_version=version
        )
        if snap is None:
            return None, events, False
        aggregate = self._restore(cls, aggregate_id, snap.state, snap.stream_version)
        if aggregate is None:
            log.warning("ignoring unreadable snapshot of %s at v%d", stream_id, snap.stream_version)
            return None, await self.store.read_stream(stream_id, to_version=version), False
        return aggregate, events, False

    def _restore(self, cls: type[A], aggregate_id: str, encoded: bytes, version: int) -> A | None:
        """An aggregate from its encoded state at ``version``; None if the state does not fit."""
        try:
            state = msgspec.json.decode(encoded, type=self._state_type(cls))
        except msgspec.MsgspecError:
            return None
        aggregate = cls(aggregate_id)
        for name in state.__struct_fields__:
            setattr(aggregate, name, getattr(state, name))
        aggregate.version = version
        return aggregate

    def _from_cache(self, cls: type[A], aggregate_id: str) -> A | None:
        key = (cls, aggregate_id)
        entry = self._cache.get(key)
        if entry is None:
            return None
        self._cache.move_to_end(key)
        aggregate = self._restore(cls, aggregate_id, entry[1], entry[0])
        if aggregate is None:  # the class changed shape under the same name: forget it
            del self._cache[key]
        return aggregate

    def _remember(self, aggregate: Aggregate) -> None:
        """Keep the state of ``aggregate`` (saved, at its version) for the next load."""
        cls = type(aggregate)
        key = (cls, aggregate.id)
        if aggregate.pending_events or set(vars(aggregate)) - set(state_fields(cls)) - _BASE_ATTRIBUTES:
            self._cache.pop(key, None)  # state a cache entry would lose: never start from it
            return
        try:
            encoded = self.store.codec.encode_value(aggregate.state())
        except (TypeError, ValueError, msgspec.EncodeError):
            self._cache.pop(key, None)
            return
        self._cache[key] = (aggregate.version, encoded)
        self._cache.move_to_end(key)
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _state_type(self, cls: type[Aggregate]) -> type[msgspec.Struct]:
        st = self._state_types.get(cls)
        if st is None:
            fields: list[tuple[str, Any]] = list(state_fields(cls).items())
            st = self._state_types[cls] = msgspec.defstruct(
                f"{cls.__name__}State", fields, forbid_unknown_fields=True
            )
        return st


_BASE_ATTRIBUTES = frozenset({"id", "version", "_pending"})


def _check_id(aggregate_id: object) -> None:
    if not isinstance(aggregate_id, str) or not aggregate_id:
        raise InvalidInput(f"an aggregate id is a non-empty str, got {aggregate_id!r}")
