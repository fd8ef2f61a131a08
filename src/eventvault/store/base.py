"""The event store interface every backend implements, and the checks they share.

Public methods validate their arguments and encode events *before* a backend
touches storage, so bad input raises a specific :class:`~eventvault.errors.InvalidInput`
and nothing is written. Backends implement the underscored methods.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Collection, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import ClassVar, NamedTuple, Self

from eventvault._ids import uuid7
from eventvault.domain import STREAM_DELETED, EventRegistry
from eventvault.errors import (
    DCBNotSupported,
    DuplicateEventId,
    InvalidEvent,
    InvalidExpectedVersion,
    InvalidInput,
    InvalidStreamId,
    StoreClosed,
    StreamDeleted,
    WrongExpectedVersion,
)
from eventvault.store.codec import EMPTY_METADATA_JSON, EventCodec
from eventvault.store.personal import (
    SEALED_PREFIX,
    KeyStore,
    SubjectKey,
    UnsealingDecoder,
    check_subject,
    seal,
    sealed_subject,
    subject_of,
)
from eventvault.store.records import (
    ANY,
    MAX_TAGS,
    NO_STREAM,
    STREAM_EXISTS,
    AppendCondition,
    AppendResult,
    Checkpoint,
    ExpectedVersion,
    HorizonLag,
    LogPage,
    Metadata,
    NewEvent,
    Query,
    RecordedEvent,
    ScavengeProgress,
    SequencedEvents,
    Snapshot,
    SnapshotInfo,
    StoreCounts,
    StreamInfo,
    StreamLifecycle,
    StreamState,
    check_tags,
    datetime_to_micros,
)

__all__ = ["EventStore", "PreparedEvent"]

MAX_STREAM_ID_LENGTH = 200
MAX_PAGE = 10_000
_STREAM_ID = re.compile(r"[^\x00-\x1f\x7f]+")


class PreparedEvent(NamedTuple):
    """An event checked and encoded, ready for a backend to write."""

    event_id: uuid.UUID
    event_type: str
    schema_version: int
    payload: bytes
    metadata: bytes
    occurred_us: int
    tags: tuple[str, ...] = ()


DCB_STREAM_PREFIX = "dcb-"
"""A conditional append that names no stream writes a stream of its own, ``dcb-<first event id>``."""


class Found(NamedTuple):
    """Where an already stored event id sits (for idempotent re-appends)."""

    stream_id: str
    stream_version: int
    position: int
    tx: int


def check_stream_id(stream_id: object) -> str:
    """Return ``stream_id`` if it is a usable stream id, else raise InvalidStreamId."""
    if not isinstance(stream_id, str):
        raise InvalidStreamId(f"a stream id is a str, got {type(stream_id).__name__}")
    if not stream_id or stream_id.strip() != stream_id:
        raise InvalidStreamId(
            f"a stream id must be non-empty with no surrounding whitespace, got {stream_id!r}"
        )
    if len(stream_id) > MAX_STREAM_ID_LENGTH:
        raise InvalidStreamId(
            f"a stream id has at most {MAX_STREAM_ID_LENGTH} characters, got {len(stream_id)}"
        )
    if not _STREAM_ID.fullmatch(stream_id):
        raise InvalidStreamId(f"a stream id must not hold control characters: {stream_id!r}")
    if not stream_id.isascii():
        try:
            stream_id.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: no database can store them
            raise InvalidStreamId(f"a stream id must be valid Unicode text: {stream_id!r}") from None
    return stream_id


def prefix_end(prefix: str) -> str | None:
    """The least string past every string that starts with ``prefix`` (None: there is none).

    Strings compare by code point (as UTF-8 bytes do), so ``stream_id >= prefix
    AND stream_id < prefix_end(prefix)`` is a range on an index of stream ids
    that holds exactly the ids starting with ``prefix``.
    """
    chars = prefix.rstrip("\U0010ffff")
    if not chars:
        return None
    last = ord(chars[-1]) + 1
    if 0xD800 <= last <= 0xDFFF:  # surrogates are no characters: skip them
        last = 0xE000
    return chars[:-1] + chr(last)


def _snapshot_selection(category: object, stream_id: object) -> tuple[str | None, str | None]:
    """(stream id prefix, stream id) of a snapshot listing or drop; at most one of them."""
    if category is not None and stream_id is not None:
        raise InvalidInput("pass category or stream_id, not both")
    if category is not None:
        if not isinstance(category, str) or not category:
            raise InvalidInput(f"category must be a non-empty str, got {category!r}")
        return f"{category}-", None
    if stream_id is not None:
        return None, check_stream_id(stream_id)
    return None, None


def check_expected_version(expected: object) -> ExpectedVersion:
    """Return ``expected`` if it is a valid expected version, else raise."""
    if isinstance(expected, StreamState):
        return expected
    if isinstance(expected, bool) or not isinstance(expected, int):
        raise InvalidExpectedVersion(
            f"expected_version is an int >= 0 or one of NO_STREAM, STREAM_EXISTS, ANY; got {expected!r}"
        )
    if expected < 0:
        raise InvalidExpectedVersion(f"expected_version must be >= 0, got {expected}")
    return expected


def version_holds(expected: ExpectedVersion, actual: int) -> bool:
    """Whether a stream at version ``actual`` (0: no stream) satisfies ``expected``: the one rule."""
    if expected is ANY:
        return True
    if expected is STREAM_EXISTS:
        return actual > 0
    if expected is NO_STREAM:
        return actual == 0
    return actual == expected


def deletion_marker(
    stream_id: str, version: int, tombstone: bool, now_us: int, tags: Sequence[str] = ()
) -> PreparedEvent:
    """The ``$StreamDeleted`` event a delete of ``stream_id`` at ``version`` appends (as version + 1).

    ``tags`` are those of the stream's stored events (:func:`stream_tags`), so
    that query reads and append conditions on them see the delete (decision 35).
    """
    payload = (
        b'{"stream_id":'
        + json.dumps(stream_id, ensure_ascii=False).encode()
        + b',"version":'
        + str(version).encode()
        + b',"tombstone":'
        + (b"true" if tombstone else b"false")
        + b"}"
    )
    return PreparedEvent(uuid7(), STREAM_DELETED, 1, payload, EMPTY_METADATA_JSON, now_us, tuple(tags))


def event_types_arg(event_types: Iterable[str] | None) -> tuple[str, ...] | None:
    """``event_types`` as a tuple, checked: a collection of non-empty type names, or None (every type)."""
    if event_types is None:
        return None
    if isinstance(event_types, str) or not isinstance(event_types, Iterable):
        raise InvalidInput("event_types must be a collection of type names, not a str")
    types = tuple(event_types)
    if not all(isinstance(t, str) and t for t in types):
        raise InvalidInput(f"event_types must hold non-empty strs, got {types!r}")
    if not types:
        raise InvalidInput("event_types is empty: pass None to read every type")
    return types


def stream_tags(tags_of_events: Iterable[Sequence[str]]) -> tuple[str, ...]:
    """The union of the tags of a stream's events (given oldest first), in the order they first appear."""
    union: dict[str, None] = {}
    for tags in tags_of_events:
        for tag in tags:
            union[tag] = None
    return tuple(union)


def _check_recorded(e: RecordedEvent, last: int) -> None:
    """What write_recorded checks of each event alone (``last``: the position before it)."""
    if not isinstance(e, RecordedEvent):
        raise InvalidInput(f"write_recorded takes RecordedEvent, got {type(e).__name__}")
    check_stream_id(e.stream_id)
    if e.tags:
        # A delete carries the tags of all its stream's events: more than one event may.
        check_tags(e.tags, most=None if e.event_type == STREAM_DELETED else MAX_TAGS)
    if e.position <= last:
        raise InvalidInput(f"event {e.event_id} at position {e.position}: positions must rise above {last}")


def _check_not_system(name: str) -> None:
    """Refuse the store's own event types (their names start with ``$``) in an append."""
    if name[0] == "$":
        raise InvalidEvent(f"{name} is the store's own event: delete_stream writes it")


def recorded_deletions(events: Sequence[RecordedEvent]) -> list[tuple[str, int, bool]]:
    """(stream id, version, tombstone) of each ``$StreamDeleted`` in ``events``: write_recorded marks them."""
    return [
        (e.stream_id, e.stream_version, json.loads(e.payload).get("tombstone") is True)
        for e in events
        if e.event_type == STREAM_DELETED
    ]


def check_append_allowed(stream_id: str, tombstoned: bool) -> None:
    """Raise StreamDeleted if the stream is tombstoned (before any other check of an append)."""
    if tombstoned:
        raise StreamDeleted(stream_id)


def check_version_matches(stream_id: str, expected: ExpectedVersion, actual: int) -> None:
    """Raise WrongExpectedVersion unless a stream at ``actual`` satisfies ``expected``."""
    if not version_holds(expected, actual):
        raise WrongExpectedVersion(stream_id, expected, actual)


def check_positive_int(name: str, value: object, *, minimum: int = 1, optional: bool = True) -> int | None:
    """Validate an int argument (None allowed when optional)."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise InvalidInput(f"{name} must be >= {minimum}, got {value}")
    return value


def versions_before(events: Sequence[RecordedEvent]) -> dict[str, int]:
    """The version each stream of ``events`` must be at for them to continue it."""
    before: dict[str, int] = {}
    for e in events:
        before.setdefault(e.stream_id, e.stream_version - 1)
    return before


def idempotent_result(
    stream_id: str, events: Sequence[PreparedEvent], found: Mapping[uuid.UUID, Found]
) -> AppendResult | None:
    """Decide what to do when some event ids of an append are already stored.

    None: none are stored (the append is new). An AppendResult: all of them are
    stored, in this stream, in this order, at consecutive versions (a retry of an
    append that landed). Otherwise the ids are used elsewhere: DuplicateEventId.
    """
    if not found:
        return None
    places = []
    for e in events:
        place = found.get(e.event_id)
        if place is None:
            hit = next(x for x in events if x.event_id in found)
            at = found[hit.event_id]
            raise DuplicateEventId(
                hit.event_id,
                f"in stream {at.stream_id!r} at version {at.stream_version}, "
                "while other events of this append are not: not a retry of one append",
            )
        if place.stream_id != stream_id:
            raise DuplicateEventId(e.event_id, f"in stream {place.stream_id!r}, not in {stream_id!r}")
        places.append(place)
    first = places[0].stream_version
    for i, place in enumerate(places):
        if place.stream_version != first + i:
            raise DuplicateEventId(
                events[i].event_id,
                f"in stream {stream_id!r} at version {place.stream_version}, not in the order of this append",
            )
    last = places[-1]
    return AppendResult(
        stream_id,
        last.stream_version,
        tuple(p.position for p in places),
        Checkpoint(last.tx, last.position),
    )


class EventStore(abc.ABC):
    """An append-only log of events in streams, with a global order and snapshots.

    All methods are coroutines. Use a store as an async context manager, or call
    :meth:`close` when done. :mod:`eventvault.sync` wraps any store for scripts.
    """

    #: The URL scheme this backend serves (``memory``, ``sqlite``, ``postgresql``).
    scheme: str = ""

    #: Seconds between checks of the head while waiting for events (see wait_for_events).
    poll_interval: float = 0.5

    #: True if the backend stores tags and implements ``_read_query`` and ``_append_conditioned``.
    supports_dcb: ClassVar[bool] = False

    #: True if the backend tells the types of the events it commits when it wakes waiters,
    #: so that ``wait_for_events(..., event_types=...)`` sleeps through appends of other
    #: types made through this store (without it, every append ends such a wait too).
    wakes_by_type: ClassVar[bool] = False

    def __init__(self, *, registry: EventRegistry | None = None) -> None:
        self.codec = EventCodec(registry)
        self.keys: KeyStore | None = None
        """Where the subjects' keys of personal fields are kept (None: this store keeps none)."""
        self._closed = False
        self._wait_loop: asyncio.AbstractEventLoop | None = None
        self._appended: asyncio.Event | None = None
        self._typed_waiters: dict[asyncio.Event, frozenset[str]] = {}

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> Self:
        """Connect and create or migrate the schema. Idempotent."""
        return self

    async def close(self) -> None:
        """Release connections and threads. Idempotent."""
        self._closed = True

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"this {self.scheme} store is closed")

    # -- writing -------------------------------------------------------------

    async def append(
        self,
        stream_id: str,
        events: Iterable[NewEvent | object],
        *,
        expected_version: ExpectedVersion,
    ) -> AppendResult:
        """Append ``events`` to ``stream_id`` atomically, if it is at ``expected_version``.

        ``events`` are :class:`NewEvent` or bare registered event objects. All land
        or none does. Re-sending events whose ids are already stored at this place
        returns the first append's result and writes nothing; the same ids
        anywhere else raise DuplicateEventId. A stream at another version raises
        WrongExpectedVersion, naming the stream, the expected and the actual version.
        """
        check_stream_id(stream_id)
        check_expected_version(expected_version)
        prepared = self.prepare(events)
        self._check_open()
        if self.codec.personal_types():
            prepared = await self._seal(stream_id, prepared)
        if any(e.tags for e in prepared):
            # Tagged events are what query reads and conditions see: a backend that
            # would drop the tags must refuse them instead.
            self._check_dcb()
            return await self._append_conditioned(stream_id, prepared, expected_version, None)
        return await self._append(stream_id, prepared, expected_version)

    def prepare(self, events: Iterable[NewEvent | object]) -> list[PreparedEvent]:
        """Check and encode events for appending (raises InvalidEvent on bad input)."""
        if isinstance(events, (str, bytes, NewEvent)) or not isinstance(events, Iterable):
            raise InvalidEvent("events must be a list of events, not a single value")
        out: list[PreparedEvent] = []
        seen: set[uuid.UUID] = set()  # the ids given; new ones never repeat
        encode_event = self.codec.encode_event
        encode_metadata = self.codec.encode_metadata
        now_us = 0
        for item in events:
            if type(item) is not NewEvent and not isinstance(item, NewEvent):
                # A bare event gets what NewEvent(item) would give it (a new
                # time-ordered id, no metadata, now), without building one.
                name, version, payload = encode_event(item)
                _check_not_system(name)
                if not now_us:
                    now_us = time.time_ns() // 1000
                out.append(PreparedEvent(uuid7(), name, version, payload, EMPTY_METADATA_JSON, now_us))
            else:
                event_id = item.event_id
                if not isinstance(event_id, uuid.UUID):
                    raise InvalidEvent(f"event_id must be a uuid.UUID, got {event_id!r}")
                if event_id in seen:
                    raise InvalidEvent(f"event id {event_id} appears twice in one append")
                occurred_at = item.occurred_at
                if not isinstance(occurred_at, datetime) or occurred_at.utcoffset() is None:
                    raise InvalidEvent(f"occurred_at must be a timezone-aware datetime, got {occurred_at!r}")
                if not isinstance(item.metadata, Metadata):
                    raise InvalidEvent(f"metadata must be a Metadata, got {type(item.metadata).__name__}")
                name, version, payload = encode_event(item.data)
                _check_not_system(name)
                tags = check_tags(item.tags) if item.tags else ()
                seen.add(event_id)
                out.append(
                    PreparedEvent(
                        event_id,
                        name,
                        version,
                        payload,
                        encode_metadata(item.metadata),
                        datetime_to_micros(occurred_at),
                        tags,
                    )
                )
        if not out:
            raise InvalidEvent("an append needs at least one event")
        return out

    @abc.abstractmethod
    async def _append(
        self, stream_id: str, events: list[PreparedEvent], expected: ExpectedVersion
    ) -> AppendResult: ...

    # -- dynamic consistency boundaries (dcb.events) ---------------------------

    async def append_events(
        self,
        events: Iterable[NewEvent | object],
        *,
        condition: AppendCondition | None = None,
        stream_id: str | None = None,
        expected_version: ExpectedVersion | None = None,
    ) -> AppendResult:
        """Append ``events`` atomically, unless ``condition`` fails.

        The append fails with AppendConditionFailed, writing nothing, if any
        event matching ``condition.fail_if_events_match`` is stored after
        ``condition.after``. ``stream_id`` with ``expected_version`` also makes it
        an append to that stream, checked like :meth:`append` (both checks hold,
        or nothing is written). Without a stream the events form a stream of their
        own, ``dcb-<first event id>``, so a retry of the same events is recognised
        and returns the first result, as for stream appends.
        """
        if condition is not None and not isinstance(condition, AppendCondition):
            raise InvalidInput(f"condition is an AppendCondition or None, got {type(condition).__name__}")
        if stream_id is None:
            if expected_version is not None:
                raise InvalidInput("expected_version needs a stream_id to apply to")
        else:
            check_stream_id(stream_id)
            if expected_version is None:
                raise InvalidExpectedVersion(
                    f"an append to stream {stream_id!r} needs an expected_version (ANY to skip the check)"
                )
            check_expected_version(expected_version)
        prepared = self.prepare(events)
        self._check_open()
        self._check_dcb()
        if stream_id is None:
            stream_id, expected_version = f"{DCB_STREAM_PREFIX}{prepared[0].event_id}", NO_STREAM
        assert expected_version is not None  # noqa: S101 - set on both branches above
        if self.codec.personal_types():
            prepared = await self._seal(stream_id, prepared)
        return await self._append_conditioned(stream_id, prepared, expected_version, condition)

    # -- personal data (crypto-shredding) -------------------------------------------

    async def _seal(self, stream_id: str, events: list[PreparedEvent]) -> list[PreparedEvent]:
        """``events`` with the personal fields of those that have some sealed under their subject's key."""
        specs = self.codec.personal_types()
        if not any(e.event_type in specs for e in events):
            return events
        keys: dict[str, SubjectKey] = {}
        out = []
        for e in events:
            spec = specs.get(e.event_type)
            if spec is None or e.payload.startswith(SEALED_PREFIX):
                out.append(e)
                continue
            if self.keys is None:
                raise InvalidEvent(
                    f"{e.event_type} has personal fields, and this {self.scheme} store "
                    "keeps no keys to seal them"
                )
            subject = subject_of(spec, stream_id, e.payload)
            key = keys.get(subject)
            if key is None:
                key = keys[subject] = await self.keys.key_for(subject)
            out.append(e._replace(payload=seal(e.event_type, e.payload, spec, subject, key)))
        return out

    def _sealed(self, events: Sequence[RecordedEvent]) -> list[RecordedEvent]:
        """The events of a read whose personal fields are sealed (none, unless the registry has some)."""
        specs = self.codec.personal_types()
        if not specs or self.keys is None:
            return []
        return [e for e in events if e.event_type in specs and e.payload.startswith(SEALED_PREFIX)]

    async def _unseal(self, sealed: list[RecordedEvent]) -> None:
        """Hand the sealed events of one read the keys of their subjects (one look-up for them all)."""
        assert self.keys is not None  # noqa: S101 - _sealed finds none without keys
        subjects = {s for e in sealed if (s := sealed_subject(e.payload)) is not None}
        decoder = UnsealingDecoder(self.codec, await self.keys.keys_of(subjects) if subjects else {})
        for e in sealed:
            e.decode_with(decoder)

    async def forget(self, subject: str) -> bool:
        """Destroy ``subject``'s key: its personal fields read as REDACTED from now on, everywhere.

        The events stay as they are (never rewritten); what is gone is the one
        key that opens their sealed fields, so every read, replay and export
        made from now on shows the placeholder. The subject stays forgotten:
        appending personal data of it again raises SubjectForgotten. When the
        subject is a stream id, that stream's snapshots are dropped too (an
        aggregate's state may hold the fields in the clear). Returns True if a
        key was destroyed by this call; forgetting again is harmless.
        """
        check_subject(subject)
        self._check_open()
        if self.keys is None:
            raise InvalidInput(f"this {self.scheme} store keeps no keys: it holds no sealed personal data")
        destroyed = await self.keys.forget(subject)
        with contextlib.suppress(InvalidStreamId):
            await self.drop_snapshots(stream_id=check_stream_id(subject))
        return destroyed

    # -- moving a log (export / import) ------------------------------------------

    async def write_recorded(
        self, events: Sequence[RecordedEvent], *, first_versions: Mapping[str, int] | None = None
    ) -> None:
        """Store recorded events exactly as given: ids, versions, positions and times.

        For moving a log between stores (:func:`eventvault.import_events`): the
        events are written atomically, each at its own global position (above
        every stored one, rising), each stream continuing at its stored version
        + 1; data and metadata bytes are kept as they are (not upcast). Anything
        else raises InvalidInput and nothing is written. Event ids already stored
        raise DuplicateEventId. A ``$StreamDeleted`` event deletes its stream
        here as it did where it was recorded (in the same transaction).

        ``first_versions`` names the streams whose first stored events a
        scavenge removed where they were recorded, with the version of the first
        one kept: a stream with no events here may start at that version (and
        only that one) instead of 1.
        """
        events = list(events)
        if not events:
            return
        if first_versions is not None and not isinstance(first_versions, Mapping):
            raise InvalidInput("first_versions maps stream ids to versions")
        starts = first_versions or {}
        self._check_open()
        head = await self._head()
        last = head.position
        versions: dict[str, int] = {}
        before: dict[str, int] = {}
        seen: set[uuid.UUID] = set()
        for e in events:
            _check_recorded(e, last)
            last = e.position
            version = versions.get(e.stream_id)
            if version is None:
                version = before[e.stream_id] = await self._stream_version(e.stream_id)
                if version == 0 and e.stream_version > 1 and starts.get(e.stream_id) == e.stream_version:
                    version = e.stream_version - 1  # where a scavenge left the stream it was recorded in
            if e.stream_version != version + 1:
                raise InvalidInput(
                    f"event {e.event_id} is version {e.stream_version} of stream {e.stream_id!r}, "
                    f"which is at version {version}"
                )
            versions[e.stream_id] = e.stream_version
            if e.event_id in seen:
                raise InvalidInput(f"event id {e.event_id} appears twice")
            seen.add(e.event_id)
        stored = await self._stored_ids([e.event_id for e in events])
        if stored:
            first = next(e for e in events if e.event_id in stored)
            raise DuplicateEventId(first.event_id, "already stored")
        await self._write_recorded(events, before)
        self._announce_append({e.event_type for e in events})

    async def _stored_ids(self, event_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        # Generic: one lookup per id. Backends override it with one query per page.
        return {i for i in event_ids if await self._get_event(i) is not None}

    async def _write_recorded(
        self, events: list[RecordedEvent], before: Mapping[str, int] | None = None
    ) -> None:
        """Backends: write ``events`` as checked; ``before`` is each stream's stored version they continue.

        (None: each stream's first event's version - 1.) Both it and the head are
        checked again in the transaction that writes.
        """
        del events, before  # a backend that keeps positions of its own cannot take them
        raise InvalidInput(f"the {self.scheme} store cannot write recorded events")

    async def read(
        self,
        query: Query,
        *,
        after: int = 0,
        limit: int | None = None,
        backwards: bool = False,
    ) -> SequencedEvents:
        """The events ``query`` matches with positions after ``after``, and the head position.

        Oldest first, or newest first with ``backwards``; ``limit`` keeps the
        first ``limit`` of that order. Pass the result's ``head`` as the
        ``after`` of the :class:`AppendCondition` of a decision made on it.
        """
        if not isinstance(query, Query):
            raise InvalidInput(f"read takes a Query, got {type(query).__name__}")
        check_positive_int("after", after, minimum=0, optional=False)
        check_positive_int("limit", limit, minimum=0)
        if not isinstance(backwards, bool):
            raise InvalidInput(f"backwards must be a bool, got {backwards!r}")
        self._check_open()
        self._check_dcb()
        found = await self._read_query(query, after, limit, backwards)
        if self.codec.personal_types() and (sealed := self._sealed(found.events)):
            await self._unseal(sealed)
        return found

    def _check_dcb(self) -> None:
        if not self.supports_dcb:
            raise DCBNotSupported(self.scheme or type(self).__name__)

    async def _append_conditioned(
        self,
        stream_id: str,
        events: list[PreparedEvent],
        expected: ExpectedVersion,
        condition: AppendCondition | None,
    ) -> AppendResult:
        """With ``supports_dcb``: append to ``stream_id`` at ``expected``, with tags, if ``condition`` holds.

        In one atomic step: an idempotent retry returns the first result (before
        any check); then the expected version (WrongExpectedVersion); then the
        condition (AppendConditionFailed).
        """
        del stream_id, events, expected, condition  # the signature backends implement
        raise DCBNotSupported(self.scheme or type(self).__name__)

    async def _read_query(
        self, query: Query, after: int, limit: int | None, backwards: bool
    ) -> SequencedEvents:
        """Backends with ``supports_dcb``: what :meth:`read` returns, arguments checked."""
        del query, after, limit, backwards  # the signature backends implement
        raise DCBNotSupported(self.scheme or type(self).__name__)

    # -- reading -------------------------------------------------------------

    async def read_stream(  # noqa: PLR0913 - the read options users expect
        self,
        stream_id: str,
        *,
        from_version: int = 1,
        to_version: int | None = None,
        backwards: bool = False,
        limit: int | None = None,
        as_of: datetime | None = None,
    ) -> list[RecordedEvent]:
        """Events of one stream with versions in ``[from_version, to_version]``.

        Oldest first, or newest first with ``backwards`` (``limit`` then keeps the
        newest). ``as_of`` keeps only the stream as it was at that time: the events
        up to the last one recorded at or before it. A stream with no events gives [].
        """
        check_stream_id(stream_id)
        check_positive_int("from_version", from_version, optional=False)
        check_positive_int("to_version", to_version, minimum=0)
        check_positive_int("limit", limit, minimum=0)
        if not isinstance(backwards, bool):
            raise InvalidInput(f"backwards must be a bool, got {backwards!r}")
        as_of_us = None
        if as_of is not None:
            if not isinstance(as_of, datetime) or as_of.utcoffset() is None:
                raise InvalidInput(f"as_of must be a timezone-aware datetime, got {as_of!r}")
            as_of_us = datetime_to_micros(as_of)
        if limit == 0 or (to_version is not None and to_version < from_version):
            return []
        self._check_open()
        events = await self._read_shown(stream_id, from_version, to_version, backwards, limit, as_of_us)
        if self.codec.personal_types() and (sealed := self._sealed(events)):
            await self._unseal(sealed)
        return events

    async def _read_shown(  # noqa: PLR0913, PLR0917
        self,
        stream_id: str,
        from_version: int,
        to_version: int | None,
        backwards: bool,
        limit: int | None,
        as_of_us: int | None,
    ) -> list[RecordedEvent]:
        """:meth:`_read_stream` without what deletes and retention rules hide (a backend may do both)."""
        life = await self._lifecycle(stream_id)
        if life.has_rules:
            from_version = max(from_version, await self._first_shown(life))
            if to_version is not None and to_version < from_version:
                return []
            if from_version > life.version:
                return []
        return await self._read_stream(stream_id, from_version, to_version, backwards, limit, as_of_us)

    @abc.abstractmethod
    async def _read_stream(  # noqa: PLR0913, PLR0917
        self,
        stream_id: str,
        from_version: int,
        to_version: int | None,
        backwards: bool,
        limit: int | None,
        as_of_us: int | None,
    ) -> list[RecordedEvent]: ...

    async def stream_version(self, stream_id: str) -> int:
        """The version of the stream's last event; 0 if it has none, or while it is deleted."""
        check_stream_id(stream_id)
        self._check_open()
        return (await self._lifecycle(stream_id)).visible_version

    @abc.abstractmethod
    async def _stream_version(self, stream_id: str) -> int: ...

    async def read_all(
        self,
        after: Checkpoint | str | None = None,
        *,
        limit: int = 1000,
        event_types: Iterable[str] | None = None,
    ) -> LogPage:
        """A page of the global log after ``after`` (None: from the start).

        Every reader sees the same order and no event is ever skipped: a page
        ends before any event that could still be committed ahead of it. With
        ``event_types``, only those types are returned, and the page's
        checkpoint still moves past the events filtered out.
        """
        checkpoint = Checkpoint.parse(after)
        check_positive_int("limit", limit, optional=False)
        if limit > MAX_PAGE:
            raise InvalidInput(f"limit is at most {MAX_PAGE}, got {limit}")
        types = event_types_arg(event_types)
        self._check_open()
        page = await self._read_all(checkpoint, limit, types)
        if self.codec.personal_types() and (sealed := self._sealed(page.events)):
            await self._unseal(sealed)
        return page

    @abc.abstractmethod
    async def _read_all(
        self, after: Checkpoint, limit: int, event_types: tuple[str, ...] | None
    ) -> LogPage: ...

    async def iter_all(
        self,
        after: Checkpoint | str | None = None,
        *,
        batch: int = 1000,
        event_types: Iterable[str] | None = None,
    ) -> AsyncGenerator[RecordedEvent, None]:
        """Every event after ``after`` up to the head of the log as it is reached.

        The next page is read while the caller works through this one (a
        backend reads on a thread of its own or over the network), so a caller
        that decodes every event seldom waits for the store.
        """
        checkpoint = Checkpoint.parse(after)
        types = None if event_types is None else tuple(event_types)
        page = await self.read_all(checkpoint, limit=batch, event_types=types)
        while page.checkpoint != checkpoint:
            checkpoint = page.checkpoint
            ahead = asyncio.ensure_future(self.read_all(checkpoint, limit=batch, event_types=types))
            try:
                for e in page.events:
                    yield e
            except BaseException:
                ahead.cancel()
                with contextlib.suppress(BaseException):
                    await ahead
                raise
            page = await ahead

    async def read_category(
        self,
        stream_prefix: str,
        after: Checkpoint | str | None = None,
        *,
        limit: int = 1000,
    ) -> LogPage:
        """A page of the global log after ``after``: only streams whose id starts with ``stream_prefix``.

        The same order and guarantees as :meth:`read_all`; the page's checkpoint
        moves past the events of other streams, so a reader of a quiet
        category still moves on. (``account-`` reads every account's events.)
        """
        if not isinstance(stream_prefix, str) or not stream_prefix:
            raise InvalidInput(f"stream_prefix must be a non-empty str, got {stream_prefix!r}")
        checkpoint = Checkpoint.parse(after)
        check_positive_int("limit", limit, optional=False)
        if limit > MAX_PAGE:
            raise InvalidInput(f"limit is at most {MAX_PAGE}, got {limit}")
        self._check_open()
        page = await self._read_category(stream_prefix, checkpoint, limit)
        if self.codec.personal_types() and (sealed := self._sealed(page.events)):
            await self._unseal(sealed)
        return page

    async def _read_category(self, stream_prefix: str, after: Checkpoint, limit: int) -> LogPage:
        # Generic: a scan of the global log. Backends override it with a query
        # served by their (stream_id, stream_version) index.
        events: list[RecordedEvent] = []
        checkpoint = after
        while len(events) < limit:
            page = await self._read_all(checkpoint, MAX_PAGE, None)
            for e in page.events:
                if e.stream_id.startswith(stream_prefix):
                    events.append(e)
                    if len(events) == limit:
                        return LogPage(events, e.checkpoint)
            if page.checkpoint == checkpoint:
                break
            checkpoint = page.checkpoint
        return LogPage(events, checkpoint)

    async def list_streams(
        self, *, prefix: str | None = None, after: str | None = None, limit: int = 100
    ) -> list[StreamInfo]:
        """Streams in order of their ids, with their version and when their last event was recorded.

        ``prefix`` keeps the streams whose id starts with it; ``after`` continues
        a listing after that stream id (the last one of the previous page). A
        deleted stream is not listed (soft-deleted and not written since, or
        tombstoned: its last event is its ``$StreamDeleted``); one written again
        after a soft delete is, at its new version. A page may hold fewer than
        ``limit`` streams only when it is the last one.
        """
        if prefix is not None and not isinstance(prefix, str):
            raise InvalidInput(f"prefix must be a str, got {prefix!r}")
        if after is not None:
            check_stream_id(after)
        check_positive_int("limit", limit, optional=False)
        if limit > MAX_PAGE:
            raise InvalidInput(f"limit is at most {MAX_PAGE}, got {limit}")
        self._check_open()
        return await self._list_streams(prefix or None, after, limit)

    async def _list_streams(self, prefix: str | None, after: str | None, limit: int) -> list[StreamInfo]:
        # Generic: one pass over the whole log. Backends override it with a
        # query on their table of streams.
        last: dict[str, RecordedEvent] = {}
        checkpoint = Checkpoint.START
        while True:
            page = await self._read_all(checkpoint, MAX_PAGE, None)
            for e in page.events:
                wanted = prefix is None or e.stream_id.startswith(prefix)
                if wanted and (after is None or e.stream_id > after):
                    last[e.stream_id] = e
            if page.checkpoint == checkpoint:
                break
            checkpoint = page.checkpoint
        shown = [e for _, e in sorted(last.items()) if e.event_type != STREAM_DELETED]
        return [StreamInfo(e.stream_id, e.stream_version, e.position, e.recorded_at) for e in shown[:limit]]

    async def get_event(self, event_id: uuid.UUID | str) -> RecordedEvent | None:
        """The stored event with this id, wherever it is; None if there is none."""
        if isinstance(event_id, str):
            try:
                event_id = uuid.UUID(event_id)
            except ValueError:
                raise InvalidInput(f"{event_id!r} is not an event id (a UUID)") from None
        if not isinstance(event_id, uuid.UUID):
            raise InvalidInput(f"an event id is a uuid.UUID, got {type(event_id).__name__}")
        self._check_open()
        found = await self._get_event(event_id)
        if found is not None and self.codec.personal_types() and (sealed := self._sealed([found])):
            await self._unseal(sealed)
        return found

    async def _get_event(self, event_id: uuid.UUID) -> RecordedEvent | None:
        # Generic: a scan of the log. Backends override it with their unique index on event_id.
        checkpoint = Checkpoint.START
        while True:
            page = await self._read_all(checkpoint, MAX_PAGE, None)
            for e in page.events:
                if e.event_id == event_id:
                    return e
            if page.checkpoint == checkpoint:
                return None
            checkpoint = page.checkpoint

    async def counts(self) -> StoreCounts:
        """How many events and streams the store holds, and its head.

        ``events`` counts the events stored (what ``read_all`` reads): those of
        deleted streams and their ``$StreamDeleted`` events too, until a
        scavenge removes them. ``streams`` counts the streams ``list_streams``
        lists: a deleted stream is not one, until it is written again.
        """
        self._check_open()
        return await self._counts()

    async def _counts(self) -> StoreCounts:
        # Generic: one pass over the log (stopping at the head it read first).
        head = await self._head()
        events = 0
        last_type: dict[str, str] = {}
        checkpoint = Checkpoint.START
        while checkpoint < head:
            page = await self._read_all(checkpoint, MAX_PAGE, None)
            for e in page.events:
                if e.checkpoint > head:
                    break
                events += 1
                last_type[e.stream_id] = e.event_type
            if page.checkpoint == checkpoint:
                break
            checkpoint = page.checkpoint
        streams = sum(1 for t in last_type.values() if t != STREAM_DELETED)
        return StoreCounts(events, streams, head)

    async def wait_for_events(
        self, after: Checkpoint | str | None, timeout: float, *, event_types: Iterable[str] | None = None
    ) -> bool:
        """Wait until the log holds events after ``after``; False if ``timeout`` passed first.

        Returns at once if it already does. Appends made through this store wake
        waiters immediately; appends by other processes are seen by polling the
        head every :attr:`poll_interval` seconds, so a missed wake-up only delays.
        It is a hint: callers read the log again after it returns.

        With ``event_types``, it waits for events of those types: on a backend
        that :attr:`wakes_by_type`, appends of other types through this store do
        not end the wait (appends by other processes, whose types it does not
        hear of, still do).
        """
        checkpoint = Checkpoint.parse(after)
        types = event_types_arg(event_types)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout >= 0:
            raise InvalidInput(f"timeout must be a number of seconds >= 0, got {timeout!r}")
        self._check_open()
        loop = asyncio.get_running_loop()
        self._wait_loop = loop
        await self._prepare_wait()
        deadline = loop.time() + timeout
        wanted = None if types is None else frozenset(types)
        while True:
            appended = self._wake_event(wanted)  # taken before the check: a wake-up during it is not lost
            try:
                if await self._holds_after(checkpoint, types):
                    return True
                remaining = deadline - loop.time()
                if remaining <= 0 or self._closed:
                    return False
                try:
                    async with asyncio.timeout(min(self.poll_interval, remaining)):
                        await appended.wait()
                except TimeoutError:
                    continue
                if wanted is not None:
                    return True  # events of those types were committed (or of types not told)
            finally:
                if wanted is not None:
                    self._typed_waiters.pop(appended, None)

    async def _holds_after(self, checkpoint: Checkpoint, types: tuple[str, ...] | None) -> bool:
        """Whether the log holds events (of ``types``, if given) after ``checkpoint``."""
        if not await self.head() > checkpoint:
            return False
        return types is None or bool((await self._read_all(checkpoint, 1, types)).events)

    async def _prepare_wait(self) -> None:
        """Backends start what wakes waiters (a LISTEN connection, say) here."""
        return

    def _wake_event(self, types: frozenset[str] | None = None) -> asyncio.Event:
        """The event the next wake-up (for ``types``, if given) sets; untyped waiters share one."""
        if types is not None:
            event = asyncio.Event()
            self._typed_waiters[event] = types
            return event
        if self._appended is None:
            self._appended = asyncio.Event()
        return self._appended

    def _announce_append(self, event_types: Collection[str] | None = None) -> None:
        """Backends call this after a commit, from any thread: wakes wait_for_events.

        ``event_types``: the types of the events committed, where the backend
        knows them (:attr:`wakes_by_type`); None wakes every waiter.
        """
        loop = self._wait_loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wake_waiters, event_types)

    def _wake_waiters(self, event_types: Collection[str] | None = None) -> None:
        """Wake the waiters for any event, and those for ``event_types`` (None: every one)."""
        appended, self._appended = self._appended, None
        if appended is not None:
            appended.set()
        typed = self._typed_waiters
        if not typed:
            return
        if event_types is None:
            woken = list(typed)
            typed.clear()
        else:
            woken = [e for e, wanted in typed.items() if not wanted.isdisjoint(event_types)]
            for e in woken:
                del typed[e]
        for e in woken:
            e.set()

    async def checkpoint_at(self, position: int) -> Checkpoint | None:
        """The checkpoint of the event at global ``position``; None if there is none.

        Lets callers that kept only a position (an HTTP client, say) ask whether a
        reader has passed it, on backends whose order is not position alone.
        """
        check_positive_int("position", position, optional=False)
        self._check_open()
        return await self._checkpoint_at(position)

    async def _checkpoint_at(self, position: int) -> Checkpoint | None:
        # Backends without transaction ids: position order is the log order.
        head = await self._head()
        return Checkpoint(0, position) if position <= head.position else None

    async def head(self) -> Checkpoint:
        """The checkpoint of the last event readers can see (START when empty)."""
        self._check_open()
        return await self._head()

    @abc.abstractmethod
    async def _head(self) -> Checkpoint: ...

    async def read_horizon_lag(self) -> HorizonLag:
        """How many committed events readers cannot see yet, and the transaction holding them back.

        Only PostgreSQL can lag (an event writer still open holds back the events
        committed after it); the other backends show every commit at once.
        """
        self._check_open()
        return HorizonLag(0, None, None, None, None)

    # -- deletes, truncation and retention -----------------------------------------

    async def stream_lifecycle(self, stream_id: str) -> StreamLifecycle:
        """What deletes and retention rules say of ``stream_id`` (its versions, what reads hide)."""
        check_stream_id(stream_id)
        self._check_open()
        return await self._lifecycle(stream_id)

    async def ruled_streams(self) -> list[str]:
        """The ids of the streams with a delete or a retention rule, in order (those scavenge visits)."""
        self._check_open()
        return await self._ruled_streams()

    async def _lifecycle(self, stream_id: str) -> StreamLifecycle:
        # Backends without deletes or retention: every stored event is shown.
        return StreamLifecycle(stream_id, await self._stream_version(stream_id))

    async def _first_shown(self, life: StreamLifecycle) -> int:
        """The first version a stream read shows, ``max_age`` applied (the stream's version + 1: none)."""
        first = life.first_version
        if life.max_age is None or first > life.version:
            return first
        cutoff = time.time_ns() // 1000 - life.max_age // timedelta(microseconds=1)
        # Recorded times rise along a stream (each append's time is taken after the
        # previous one committed), so the events kept by age are a suffix of it.
        while first <= life.version:
            page = await self._read_stream(
                life.stream_id, first, None, backwards=False, limit=1000, as_of_us=None
            )
            if not page:
                break
            for e in page:
                if e.recorded_us >= cutoff:
                    return e.stream_version
            first = page[-1].stream_version + 1
        return life.version + 1

    async def delete_stream(
        self, stream_id: str, *, expected_version: ExpectedVersion, tombstone: bool = False
    ) -> AppendResult | None:
        """Delete ``stream_id`` if it is at ``expected_version``; the ``$StreamDeleted`` event's result.

        The delete appends a ``$StreamDeleted`` event (:class:`~eventvault.StreamDeletedEvent`)
        as the stream's next version, so read_all, read_category and projections
        see it, and from then on stream reads show nothing of the stream (it
        reads as "no stream", version 0) and its snapshots are dropped.

        A soft delete (the default) lets the stream be written again: an append
        expecting NO_STREAM (or ANY) starts it anew, with versions continuing
        after the delete's event (the first new event is its version + 1), so a
        (stream, version) pair never names two events. ``tombstone=True``
        deletes it for ever: every later append, even a re-send of events stored
        before, and every later delete, raises :class:`~eventvault.errors.StreamDeleted`.

        The events stay stored (read_all shows them) until :meth:`scavenge`
        removes them. A soft delete of a stream that is at no stream already
        writes nothing and returns None; a tombstone of one writes its event (the
        id is then reserved for ever).
        """
        check_stream_id(stream_id)
        check_expected_version(expected_version)
        if not isinstance(tombstone, bool):
            raise InvalidInput(f"tombstone must be a bool, got {tombstone!r}")
        self._check_open()
        result = await self._delete_stream(stream_id, expected_version, tombstone)
        if result is not None:
            self._announce_append()
        return result

    async def _delete_stream(
        self, stream_id: str, expected: ExpectedVersion, tombstone: bool
    ) -> AppendResult | None:
        """Backends: delete the stream, atomically, as :meth:`delete_stream` says.

        StreamDeleted if it is tombstoned; then the expected version against
        the visible one; then (unless a soft delete of no stream) append :func:`deletion_marker` at
        version + 1, record it as the deleted version (and the tombstone), and
        drop the stream's snapshots.
        """
        del stream_id, expected, tombstone
        raise InvalidInput(f"the {self.scheme or type(self).__name__} store cannot delete streams")

    async def truncate_before(self, stream_id: str, version: int) -> None:
        """Hide the versions of ``stream_id`` below ``version`` from stream reads (0 or 1: none).

        Hidden events stay stored until :meth:`scavenge` removes them; lowering
        the mark again before that shows them again. Appends are not affected.
        """
        check_stream_id(stream_id)
        check_positive_int("version", version, minimum=0, optional=False)
        self._check_open()
        await self._set_retention(stream_id, truncate_before=version)

    async def set_retention(
        self, stream_id: str, *, max_count: int | None = None, max_age: timedelta | None = None
    ) -> None:
        """Keep only the ``max_count`` latest events of ``stream_id``, or those younger than ``max_age``.

        Both may be given (an event must pass both); None for both removes the
        rules. Stream reads apply them at once; :meth:`scavenge` removes what
        they hide.
        """
        check_stream_id(stream_id)
        check_positive_int("max_count", max_count)
        if max_age is not None and (not isinstance(max_age, timedelta) or max_age <= timedelta(0)):
            raise InvalidInput(f"max_age must be a positive timedelta, got {max_age!r}")
        self._check_open()
        age_us = None if max_age is None else max_age // timedelta(microseconds=1)
        await self._set_retention(stream_id, retention=(max_count, age_us))

    async def _set_retention(
        self,
        stream_id: str,
        *,
        truncate_before: int | None = None,
        retention: tuple[int | None, int | None] | None = None,
    ) -> None:
        """Store a stream's truncate-before mark, or its (max_count, max_age in us), keeping the rest."""
        del stream_id, truncate_before, retention
        raise InvalidInput(f"the {self.scheme or type(self).__name__} store has no retention rules")

    async def scavenge(
        self, *, progress: Callable[[ScavengeProgress], None] | None = None
    ) -> ScavengeProgress:
        """Remove for good the events that deletes and retention rules hide; how many went.

        Looks at the streams with a delete or a rule, one at a time, calling
        ``progress`` after each. Never removes a stream's last event (its version
        must survive, so versions never go back), nor an event a snapshot still
        needs: with a snapshot at version S (taken after the stream's last
        delete), retention removes nothing after S, so a load from the snapshot
        stays exact. Events below a delete go whatever the snapshots.
        read_all and projections continue from any checkpoint: positions of
        removed events are simply no longer in the log.
        """
        if progress is not None and not callable(progress):
            raise InvalidInput("progress must be a callable taking a ScavengeProgress")
        self._check_open()
        streams = await self._ruled_streams()
        removed = 0
        state = ScavengeProgress(0, len(streams), 0)
        for done, stream_id in enumerate(streams, start=1):
            cut = await self._scavenge_cut(await self._lifecycle(stream_id))
            if cut > 1:
                removed += await self._remove_events(stream_id, cut)
            state = ScavengeProgress(done, len(streams), removed)
            if progress is not None:
                progress(state)
        return state

    async def _scavenge_cut(self, life: StreamLifecycle) -> int:
        """The version below which scavenge removes the stream's events (the last one stays anyway)."""
        floor = life.deleted_version  # the delete's event itself goes once the stream is written again
        if life.deleted:
            return life.version
        shown = await self._first_shown(life)
        snapshots = [
            s.stream_version
            for s in await self._list_snapshots(None, life.stream_id, MAX_PAGE)
            if s.stream_version >= life.deleted_version
        ]
        if snapshots:
            shown = min(shown, min(snapshots) + 1)
        return max(floor + 1 if floor else 0, shown)

    async def _ruled_streams(self) -> list[str]:
        """The ids of the streams with a delete or a retention rule."""
        return []

    async def _remove_events(self, stream_id: str, below: int) -> int:
        """Delete the stream's events with versions below ``below`` and below its last; how many."""
        del stream_id, below
        return 0

    # -- snapshots -----------------------------------------------------------

    async def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` as the latest of its stream and schema version.

        An older snapshot (a lower stream version) never replaces a newer one.
        """
        if not isinstance(snapshot, Snapshot):
            raise InvalidInput(f"save_snapshot takes a Snapshot, got {type(snapshot).__name__}")
        check_stream_id(snapshot.stream_id)
        check_positive_int("stream_version", snapshot.stream_version, optional=False)
        check_positive_int("schema_version", snapshot.schema_version, optional=False)
        if not isinstance(snapshot.state, bytes):
            raise InvalidInput("a snapshot's state is bytes")
        self._check_open()
        await self._save_snapshot(snapshot)

    @abc.abstractmethod
    async def _save_snapshot(self, snapshot: Snapshot) -> None: ...

    async def load_snapshot(
        self, stream_id: str, *, schema_version: int, max_version: int | None = None
    ) -> Snapshot | None:
        """The latest snapshot of ``stream_id`` at ``schema_version``, if any.

        Snapshots of other schema versions are never returned. With
        ``max_version``, a snapshot past that version is not returned either.
        """
        check_stream_id(stream_id)
        check_positive_int("schema_version", schema_version, optional=False)
        check_positive_int("max_version", max_version, minimum=0)
        self._check_open()
        snap = await self._load_snapshot(stream_id, schema_version)
        if snap is None or (max_version is not None and snap.stream_version > max_version):
            return None
        return snap

    @abc.abstractmethod
    async def _load_snapshot(self, stream_id: str, schema_version: int) -> Snapshot | None: ...

    async def load_snapshot_and_stream(
        self, stream_id: str, *, schema_version: int, to_version: int | None = None
    ) -> tuple[Snapshot | None, list[RecordedEvent]]:
        """The latest snapshot at or below ``to_version``, and the stream's events after it.

        What :meth:`load_snapshot` (with ``max_version=to_version``) and then
        :meth:`read_stream` from the snapshot's version would give (from version
        1 without a snapshot), in one call: a backend may fetch both at once.
        """
        check_stream_id(stream_id)
        check_positive_int("schema_version", schema_version, optional=False)
        check_positive_int("to_version", to_version, minimum=0)
        self._check_open()
        snap, events = await self._snapshot_and_stream_shown(stream_id, schema_version, to_version)
        if self.codec.personal_types() and (sealed := self._sealed(events)):
            await self._unseal(sealed)
        return snap, events

    async def _snapshot_and_stream_shown(
        self, stream_id: str, schema_version: int, to_version: int | None
    ) -> tuple[Snapshot | None, list[RecordedEvent]]:
        """:meth:`_snapshot_and_stream` without what deletes and retention rules hide."""
        life = await self._lifecycle(stream_id)
        snap, events = await self._snapshot_and_stream(stream_id, schema_version, to_version)
        if not life.has_rules:
            return snap, events
        if life.deleted:
            return None, []
        if snap is not None and snap.stream_version >= life.deleted_version:
            # A snapshot still needs every event after it (scavenge keeps them,
            # whatever the retention rules hide from read_stream), so a load from
            # it stays exact; only a delete's floor applies.
            return snap, [e for e in events if e.stream_version > life.deleted_version]
        first = await self._first_shown(life)
        if to_version is not None and to_version < first:
            return None, []
        return None, await self._read_stream(
            stream_id, first, to_version, backwards=False, limit=None, as_of_us=None
        )

    async def _snapshot_and_stream(
        self, stream_id: str, schema_version: int, to_version: int | None
    ) -> tuple[Snapshot | None, list[RecordedEvent]]:
        snap = await self._load_snapshot(stream_id, schema_version)
        if snap is not None and to_version is not None and snap.stream_version > to_version:
            snap = None
        start = 1 if snap is None else snap.stream_version + 1
        if to_version is not None and to_version < start:
            return snap, []
        return snap, await self._read_stream(
            stream_id, start, to_version, backwards=False, limit=None, as_of_us=None
        )

    async def list_snapshots(
        self, *, category: str | None = None, stream_id: str | None = None, limit: int = 1000
    ) -> list[SnapshotInfo]:
        """The stored snapshots by stream id and schema version, without their states.

        ``category`` keeps the snapshots of one aggregate type (the streams
        ``f"{category}-..."``), ``stream_id`` those of one stream; not both.
        """
        prefix, stream = _snapshot_selection(category, stream_id)
        check_positive_int("limit", limit, optional=False)
        if limit > MAX_PAGE:
            raise InvalidInput(f"limit is at most {MAX_PAGE}, got {limit}")
        self._check_open()
        return await self._list_snapshots(prefix, stream, limit)

    @abc.abstractmethod
    async def _list_snapshots(
        self, prefix: str | None, stream_id: str | None, limit: int
    ) -> list[SnapshotInfo]: ...

    async def drop_snapshots(self, *, category: str | None = None, stream_id: str | None = None) -> int:
        """Delete stored snapshots: every one, one aggregate type's, or one stream's; how many went.

        Only a cache goes: aggregates load by replaying their events, and the
        repository saves new snapshots as it did before.
        """
        prefix, stream = _snapshot_selection(category, stream_id)
        self._check_open()
        return await self._drop_snapshots(prefix, stream)

    @abc.abstractmethod
    async def _drop_snapshots(self, prefix: str | None, stream_id: str | None) -> int: ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.scheme}{' closed' if self._closed else ''}>"
