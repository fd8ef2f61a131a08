"""The values the event store takes and gives: envelopes, checkpoints, results."""

from __future__ import annotations

import enum
import re
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final, Protocol

import msgspec

from eventvault._ids import uuid7, uuid_from_bytes
from eventvault.errors import InvalidCheckpoint, InvalidInput

__all__ = [
    "ANY",
    "NO_STREAM",
    "STREAM_EXISTS",
    "AppendCondition",
    "AppendResult",
    "Checkpoint",
    "ExpectedVersion",
    "HorizonLag",
    "LogPage",
    "Metadata",
    "NewEvent",
    "Query",
    "QueryItem",
    "RawEvent",
    "RecordedEvent",
    "ScavengeProgress",
    "SequencedEvents",
    "Snapshot",
    "StoreCounts",
    "StreamInfo",
    "StreamLifecycle",
    "StreamState",
]


class StreamState(enum.Enum):
    """Expected-version conditions that are not a plain version number."""

    NO_STREAM = "no stream"
    """The stream must not exist yet (the same as expected version 0)."""
    STREAM_EXISTS = "an existing stream"
    """The stream must already hold at least one event, at any version."""
    ANY = "any version"
    """No check: append at whatever version the stream is."""

    def __str__(self) -> str:
        return self.value


NO_STREAM: Final = StreamState.NO_STREAM
STREAM_EXISTS: Final = StreamState.STREAM_EXISTS
ANY: Final = StreamState.ANY

ExpectedVersion = int | StreamState
"""The last version the writer saw (0 = no stream), or a :class:`StreamState`."""


class Metadata(msgspec.Struct, frozen=True, omit_defaults=True, kw_only=True):
    """Who and why: carried beside every event, never part of its data."""

    correlation_id: str | None = None
    """The id shared by everything one user action caused."""
    causation_id: str | None = None
    """The id of the command or event that directly caused this one."""
    actor: str | None = None
    """Who issued the command (a user, a token's subject, a system job)."""
    request_id: str | None = None
    """The id of the request that carried the command."""
    extra: dict[str, str] = msgspec.field(default_factory=dict)
    """Anything else, as text."""


EMPTY_METADATA: Final = Metadata()


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event to append, with the envelope fields the writer chooses.

    ``append`` also takes bare event objects and wraps them in a NewEvent with
    a fresh time-ordered id, the current time and empty metadata.
    ``tags`` (``"account:42"``, ``"course:7"``) are what a :class:`Query` selects
    events by, whichever stream they are in (see :meth:`EventStore.read`).
    """

    data: object
    metadata: Metadata = EMPTY_METADATA
    event_id: uuid.UUID = field(default_factory=uuid7)
    occurred_at: datetime = field(default_factory=_now)
    tags: Iterable[str] = ()


_TOKEN = re.compile(r"(0|[1-9][0-9]{0,19})\.(0|[1-9][0-9]{0,19})")


@dataclass(frozen=True, slots=True, order=True)
class Checkpoint:
    """A place in the global log: read_all continues after it.

    Treat it as opaque: keep ``str(checkpoint)`` and turn it back with
    :meth:`parse`. Checkpoints of one store are totally ordered, and that order
    is the order every reader sees the log in.
    """

    tx: int
    position: int

    START: ClassVar[Checkpoint]
    """The place before the first event."""

    def __str__(self) -> str:
        return f"{self.tx}.{self.position}"

    @classmethod
    def parse(cls, token: str | Checkpoint | None) -> Checkpoint:
        """Turn a token made by ``str(checkpoint)`` back into a Checkpoint (None: start)."""
        if token is None:
            return START
        if isinstance(token, Checkpoint):
            return token
        if not isinstance(token, str):
            raise InvalidCheckpoint(
                f"a checkpoint is a Checkpoint or its string token, got {type(token).__name__}"
            )
        m = _TOKEN.fullmatch(token)
        if m is None:
            raise InvalidCheckpoint(f"{token!r} is not a checkpoint token")
        return cls(int(m[1]), int(m[2]))


START: Final = Checkpoint(0, 0)
Checkpoint.START = START


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What an append did: the stream's new version and where its events sit in the log."""

    stream_id: str
    stream_version: int
    """The version of the last event of the append."""
    positions: tuple[int, ...]
    """The global position of each appended event, in order."""
    checkpoint: Checkpoint
    """The place of the append's last event: a projection that passed it has seen it."""

    @property
    def first_version(self) -> int:
        """The version of the first event of the append."""
        return self.stream_version - len(self.positions) + 1

    @property
    def position(self) -> int:
        """The global position of the append's last event."""
        return self.positions[-1]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros_to_datetime(us: int) -> datetime:
    """Microseconds since the Unix epoch to an aware UTC datetime."""
    return _EPOCH + timedelta(microseconds=us)


def datetime_to_micros(dt: datetime) -> int:
    """An aware datetime to microseconds since the Unix epoch."""
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


class EventDecoder(Protocol):
    """What a recorded event decodes its bytes with: the store's codec, or one holding keys."""

    def decode_event(self, name: str, schema_version: int, payload: bytes) -> Any: ...
    def decode_metadata(self, raw: bytes | None) -> Metadata: ...
    def decode_stored(self, name: str, payload: bytes) -> Any: ...


_UNSET: Final[Any] = object()


class RecordedEvent(msgspec.Struct, gc=False):
    """A stored event: the envelope, with data and metadata decoded on first access.

    ``data`` is an instance of the registered class, already brought to its
    current schema by the upcaster chain; ``schema_version`` is the version the
    event was stored with.

    Made by the stores, a page at a time: a Struct is built in C from a row
    (``RecordedEvent(codec, *row)``, in the order of the fields below), in a
    quarter of the time a Python ``__init__`` takes, and is not tracked by
    the garbage collector (an event refers to nothing that refers back to it),
    so reading a long log sets off no collections. Decision 42.
    """

    _codec: EventDecoder
    # A backend may hand over the 16 stored bytes: most readers never look at
    # the id, so it becomes a UUID only when asked for.
    _event_id: uuid.UUID | bytes
    stream_id: str
    stream_version: int
    position: int
    event_type: str
    schema_version: int
    _occurred_us: int
    _recorded_us: int
    _payload: bytes
    _meta_raw: bytes | None
    tx: int = 0
    tags: tuple[str, ...] = ()
    _data: Any = _UNSET  # not yet decoded (None is a value an event may decode to)
    _meta: Metadata | None = None

    def decode_with(self, decoder: EventDecoder) -> None:
        """Decode data and metadata with ``decoder`` (a store hands sealed events the keys of their read)."""
        self._codec = decoder

    @property
    def event_id(self) -> uuid.UUID:
        """The event's id, as written by its appender."""
        event_id = self._event_id
        if isinstance(event_id, bytes):
            event_id = self._event_id = uuid_from_bytes(event_id)
        return event_id

    @property
    def data(self) -> Any:
        """The event, as an instance of its registered class (decoded once)."""
        if self._data is _UNSET:
            self._data = self._codec.decode_event(self.event_type, self.schema_version, self._payload)
        return self._data

    def data_as_stored(self) -> Any:
        """The stored JSON of the data, decoded but not upcast; sealed personal fields opened.

        What tools show as the event "as written": its sealed fields read as
        their values, or as ``[redacted]`` once the subject is forgotten.
        """
        return self._codec.decode_stored(self.event_type, self._payload)

    @property
    def metadata(self) -> Metadata:
        """Correlation, causation, actor and request ids recorded with the event."""
        if self._meta is None:
            self._meta = self._codec.decode_metadata(self._meta_raw)
        return self._meta

    @property
    def payload(self) -> bytes:
        """The stored JSON of the data, as written (before any upcasting)."""
        return self._payload

    @property
    def metadata_json(self) -> bytes:
        """The stored JSON of the metadata (``{}`` when there is none)."""
        return self._meta_raw or b"{}"

    @property
    def occurred_us(self) -> int:
        """:attr:`occurred_at` in microseconds since the Unix epoch."""
        return self._occurred_us

    @property
    def recorded_us(self) -> int:
        """:attr:`recorded_at` in microseconds since the Unix epoch."""
        return self._recorded_us

    @property
    def occurred_at(self) -> datetime:
        """When the writer says the event happened (UTC)."""
        return micros_to_datetime(self._occurred_us)

    @property
    def recorded_at(self) -> datetime:
        """When the store recorded the event (UTC); temporal reads use this."""
        return micros_to_datetime(self._recorded_us)

    @property
    def checkpoint(self) -> Checkpoint:
        """The place of this event in the global log."""
        return Checkpoint(self.tx, self.position)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RecordedEvent):
            return NotImplemented
        return (
            self.event_id == other.event_id
            and self.position == other.position
            and self.stream_id == other.stream_id
            and self.stream_version == other.stream_version
        )

    def __hash__(self) -> int:
        return hash((self.event_id, self.position))

    def __repr__(self) -> str:
        return (
            f"RecordedEvent({self.event_type}@{self.schema_version} {self.stream_id!r} "
            f"v{self.stream_version} pos={self.position} id={self.event_id})"
        )


@dataclass(frozen=True, slots=True)
class LogPage:
    """One page of the global log, and the checkpoint to read the next page after."""

    events: Sequence[RecordedEvent]
    checkpoint: Checkpoint
    """Pass this as ``after`` to continue; it moves on even if a filter matched nothing."""

    def __iter__(self) -> Iterator[RecordedEvent]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A saved aggregate state at a stream version, for one snapshot schema version."""

    stream_id: str
    stream_version: int
    schema_version: int
    state: bytes
    created_at: datetime


@dataclass(frozen=True, slots=True)
class HorizonLag:
    """How far the readable log trails what is committed (:meth:`EventStore.read_horizon_lag`).

    On PostgreSQL an event writer whose transaction is still open holds back the
    events committed after it (see ``docs/postgres.md``); a transaction elsewhere
    in the cluster, or on other tables, never does. Other backends never lag.
    """

    pending_events: int
    """Committed events readers cannot see yet: an older event writer is still open."""
    oldest_xact_pid: int | None
    """The server process of the event-writing transaction holding them back (None: there is none)."""
    oldest_xact_state: str | None
    """Its state in pg_stat_activity (``idle in transaction`` is the usual culprit)."""
    oldest_xact_database: str | None
    """The database it runs in (the store's own)."""
    oldest_xact_seconds: float | None
    """How long that transaction has been open."""
    oldest_xact_started: datetime | None = None
    """When that transaction began."""


# -- dynamic consistency boundaries (dcb.events) ---------------------------------------

MAX_TAG_LENGTH: Final = 200
MAX_TAGS: Final = 100
_TAG = re.compile(r"[^\x00-\x1f\x7f]+")


def check_tag(tag: object) -> str:
    """Return ``tag`` if it is a usable tag, else raise InvalidInput."""
    if not isinstance(tag, str):
        raise InvalidInput(f"a tag is a str, got {type(tag).__name__}")
    if not tag or tag.strip() != tag:
        raise InvalidInput(f"a tag must be non-empty with no surrounding whitespace, got {tag!r}")
    if len(tag) > MAX_TAG_LENGTH:
        raise InvalidInput(f"a tag has at most {MAX_TAG_LENGTH} characters, got {len(tag)}")
    if not _TAG.fullmatch(tag):
        raise InvalidInput(f"a tag must not hold control characters: {tag!r}")
    try:
        tag.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"a tag must be valid Unicode text: {tag!r}") from None
    return tag


def check_tags(tags: object, what: str = "tags", *, most: int | None = MAX_TAGS) -> tuple[str, ...]:
    """A collection of tags as a tuple without repeats, in the order given (at most ``most``)."""
    if isinstance(tags, (str, bytes)) or not isinstance(tags, Iterable):
        raise InvalidInput(f"{what} must be a collection of strs, not {type(tags).__name__}")
    out = tuple(dict.fromkeys(check_tag(t) for t in tags))
    if most is not None and len(out) > most:
        raise InvalidInput(f"{what} hold at most {most} tags, got {len(out)}")
    return out


def _check_types(types: object) -> tuple[str, ...]:
    if isinstance(types, (str, bytes)) or not isinstance(types, Iterable):
        raise InvalidInput(f"types must be a collection of event type names, not {type(types).__name__}")
    out = tuple(dict.fromkeys(types))
    if not all(isinstance(t, str) and t for t in out):
        raise InvalidInput(f"types must hold non-empty strs, got {out!r}")
    return out


@dataclass(frozen=True, slots=True, init=False)
class QueryItem:
    """One alternative of a :class:`Query`.

    An event matches when its type is one of ``types`` (any type if none are
    given) AND its tags include every one of ``tags``.
    """

    types: tuple[str, ...]
    tags: tuple[str, ...]

    def __init__(self, *, types: Iterable[str] = (), tags: Iterable[str] = ()) -> None:
        object.__setattr__(self, "types", _check_types(types))
        object.__setattr__(self, "tags", check_tags(tags))

    def matches(self, event_type: str, tags: Iterable[str]) -> bool:
        """True if an event of ``event_type`` with ``tags`` matches this item."""
        if self.types and event_type not in self.types:
            return False
        have = tags if isinstance(tags, (set, frozenset)) else frozenset(tags)
        return all(t in have for t in self.tags)


@dataclass(frozen=True, slots=True, init=False)
class Query:
    """Which events a decision depends on: an OR of :class:`QueryItem`.

    ``Query.all()`` matches every event. ``a | b`` matches what either matches.
    A query needs at least one item: one that matches nothing is never useful,
    and an empty one is more likely a mistake than a wish.
    """

    items: tuple[QueryItem, ...]

    def __init__(self, items: Iterable[QueryItem]) -> None:
        if isinstance(items, QueryItem) or not isinstance(items, Iterable):
            raise InvalidInput("a Query takes a list of QueryItem")
        got = tuple(dict.fromkeys(items))
        if not got:
            raise InvalidInput("a query needs at least one item (Query.all() matches every event)")
        for item in got:
            if not isinstance(item, QueryItem):
                raise InvalidInput(f"a query's items are QueryItem, got {type(item).__name__}")
        object.__setattr__(self, "items", got)

    @classmethod
    def all(cls) -> Query:
        """The query every event matches."""
        return cls([QueryItem()])

    @classmethod
    def of(cls, *, types: Iterable[str] = (), tags: Iterable[str] = ()) -> Query:
        """A query of one item: ``Query.of(types=[...], tags=[...])``."""
        return cls([QueryItem(types=types, tags=tags)])

    @property
    def matches_all(self) -> bool:
        """True if every event matches (an item with neither types nor tags)."""
        return any(not i.types and not i.tags for i in self.items)

    def matches(self, event_type: str, tags: Iterable[str]) -> bool:
        """True if an event of ``event_type`` with ``tags`` matches any item."""
        have = tags if isinstance(tags, (set, frozenset)) else frozenset(tags)
        return any(i.matches(event_type, have) for i in self.items)

    def __or__(self, other: Query) -> Query:
        if not isinstance(other, Query):
            return NotImplemented
        return Query(self.items + other.items)

    def to_json(self) -> list[dict[str, list[str]]]:
        """The query as JSON values: ``[{"types": [...], "tags": [...]}, ...]``."""
        return [{"types": list(i.types), "tags": list(i.tags)} for i in self.items]

    @classmethod
    def from_json(cls, value: object) -> Query:
        """The query :meth:`to_json` gives (``{"items": [...]}`` is accepted too)."""
        if isinstance(value, dict) and set(value) == {"items"}:
            value = value["items"]
        if not isinstance(value, list):
            raise InvalidInput('a query is a list of items: [{"types": [...], "tags": [...]}]')
        out = []
        for item in value:
            if not isinstance(item, dict) or not set(item) <= {"types", "tags"}:
                raise InvalidInput(f'a query item is {{"types": [...], "tags": [...]}}, got {item!r}')
            types, tags = item.get("types", []), item.get("tags", [])
            if not isinstance(types, list) or not isinstance(tags, list):
                raise InvalidInput(f"a query item's types and tags are lists, got {item!r}")
            out.append(QueryItem(types=types, tags=tags))
        return cls(out)


@dataclass(frozen=True, slots=True)
class AppendCondition:
    """Fail the append if any event matching ``fail_if_events_match`` is stored after ``after``.

    ``after`` is the position the decision was made at (the ``head`` of its
    read); None looks at the whole log (the event must not exist at all).
    """

    fail_if_events_match: Query
    after: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.fail_if_events_match, Query):
            raise InvalidInput(
                f"fail_if_events_match is a Query, got {type(self.fail_if_events_match).__name__}"
            )
        after = self.after
        if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
            raise InvalidInput(f"after is a position >= 0 or None, got {after!r}")


@dataclass(frozen=True, slots=True)
class SequencedEvents:
    """The events a query read, in log order (newest first if read backwards), and the head.

    ``head`` is the position of the last event in the whole store when the read
    was made: pass it as :attr:`AppendCondition.after` to fail if anything the
    query matches has been stored since.
    """

    events: Sequence[RecordedEvent]
    head: int

    def __iter__(self) -> Iterator[RecordedEvent]:
        return iter(self.events)

    def __len__(self) -> int:
        return len(self.events)


_EVENT_TYPE = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,127}")


@dataclass(frozen=True, slots=True, init=False)
class RawEvent:
    """An event of a type no class is registered for: its name and its JSON, stored as given.

    For writers that are not Python code (the HTTP API, an import): the data is
    never decoded into a class, so read it back as ``RecordedEvent.payload``.
    A registered type's name is refused (use its class: its fields get checked).
    """

    event_type: str
    payload: bytes

    def __init__(self, event_type: str, payload: bytes) -> None:
        if not isinstance(event_type, str) or not _EVENT_TYPE.fullmatch(event_type):
            raise InvalidInput(
                f"an event type name starts with a letter and holds at most 128 letters, digits "
                f"or '_.:-', got {event_type!r}"
            )
        if not isinstance(payload, bytes):
            raise InvalidInput(f"a raw event's payload is JSON bytes, got {type(payload).__name__}")
        try:
            data = msgspec.json.decode(payload)
        except msgspec.DecodeError:
            raise InvalidInput(f"a raw event's payload is not JSON: {payload[:60]!r}") from None
        if not isinstance(data, dict):
            raise InvalidInput("a raw event's payload is a JSON object")
        object.__setattr__(self, "event_type", event_type)
        object.__setattr__(self, "payload", payload)


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """A stream as :meth:`EventStore.list_streams` lists it."""

    stream_id: str
    version: int
    """The version of its last event."""
    last_position: int
    """The global position of its last event."""
    last_recorded_at: datetime
    """When the store recorded its last event (UTC)."""


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A stored snapshot as :meth:`EventStore.list_snapshots` lists it (without its state)."""

    stream_id: str
    schema_version: int
    stream_version: int
    size: int
    """The length of its state, in bytes."""
    created_at: datetime


@dataclass(frozen=True, slots=True)
class StoreCounts:
    """How much a store holds (:meth:`EventStore.counts`)."""

    events: int
    """The events stored, deleted streams' and ``$StreamDeleted`` events included (until a scavenge)."""
    streams: int
    """The streams :meth:`EventStore.list_streams` lists: deleted ones are not counted."""
    head: Checkpoint
    """The checkpoint of the last event readers can see."""


@dataclass(frozen=True, slots=True)
class StreamLifecycle:
    """What deletes and retention rules say of one stream (:meth:`EventStore.stream_lifecycle`).

    Stream reads show the versions from :attr:`first_version` on (older ones are
    hidden until :meth:`EventStore.scavenge` removes them); the stream's own
    version for expected-version checks is :attr:`visible_version`.
    """

    stream_id: str
    version: int = 0
    """The version of the last event stored in it, hidden or not (0: none)."""
    deleted_version: int = 0
    """The version of its latest ``$StreamDeleted`` event (0: never deleted)."""
    tombstoned: bool = False
    """Deleted for ever: appends raise StreamDeleted."""
    truncate_before: int = 0
    """Versions below this one are hidden (0: none)."""
    max_count: int | None = None
    """Only this many of its latest events are shown."""
    max_age: timedelta | None = None
    """Only events recorded this long ago or less are shown."""

    @property
    def deleted(self) -> bool:
        """Whether it is deleted now (soft or for ever): no event of it is shown."""
        return self.tombstoned or (self.deleted_version > 0 and self.version == self.deleted_version)

    @property
    def visible_version(self) -> int:
        """Its version as appends and :meth:`EventStore.stream_version` see it: 0 while deleted."""
        return 0 if self.deleted else self.version

    @property
    def has_rules(self) -> bool:
        """Whether anything of the stream is (or may become) hidden."""
        return bool(
            self.deleted_version
            or self.tombstoned
            or self.truncate_before > 1
            or self.max_count
            or self.max_age
        )

    @property
    def first_version(self) -> int:
        """The first version a stream read may show, before ``max_age`` is applied (version + 1: none)."""
        if self.deleted:
            return self.version + 1
        first = max(1, self.truncate_before, self.deleted_version + 1)
        if self.max_count is not None:
            first = max(first, self.version - self.max_count + 1)
        return first


@dataclass(frozen=True, slots=True)
class ScavengeProgress:
    """How far a :meth:`EventStore.scavenge` has come (given to its progress callback)."""

    streams_done: int
    streams_total: int
    """The streams with a delete or a retention rule, which are the ones a scavenge looks at."""
    events_removed: int
    """Events removed for good so far."""
