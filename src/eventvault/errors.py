"""The one exception tree of eventvault.

Every error the library raises on purpose derives from :class:`EventVaultError`,
so ``except EventVaultError`` catches them all. Driver errors (sqlite3, psycopg)
never escape: each backend maps them at its edge to the most specific class here.

::

    EventVaultError
    ├── InvalidInput                 bad argument to a public API (also a ValueError)
    │   ├── InvalidStreamId
    │   ├── InvalidExpectedVersion
    │   ├── InvalidEvent             not a registered event, bad metadata, empty append
    │   │   └── SubjectForgotten     personal data for a subject whose key was destroyed
    │   ├── InvalidCheckpoint
    │   └── InvalidStoreURL
    ├── ConcurrencyError             someone else wrote first: reload and retry
    │   ├── WrongExpectedVersion     names the stream, the expected and the actual version
    │   └── AppendConditionFailed    an event the append's condition forbids was stored after its position
    ├── DuplicateEventId             an event id is already stored somewhere else
    ├── StreamDeleted                the stream is tombstoned: it takes no events, ever again
    ├── AggregateNotFound            a repository load of a stream that has no events
    ├── EventTypeError               registry trouble (conflicting names, missing upcaster)
    │   └── UnknownEventType         a stored event type no class is registered for
    ├── DecodeError                  stored bytes that cannot become the registered type
    ├── StoreError                   the backend failed
    │   ├── StoreUnavailable         cannot reach the database now; safe to retry later
    │   │   └── StorageFull          the database's disk is full: nothing written; retry once freed
    │   ├── StoreClosed              the store was closed by its owner
    │   └── SchemaVersionError       the database schema is newer than this code
    └── DomainError                  a business rule refused a command (subclass per rule)
"""

from __future__ import annotations

__all__ = [
    "AggregateNotFound",
    "AppendConditionFailed",
    "ConcurrencyError",
    "DCBNotSupported",
    "DecodeError",
    "DomainError",
    "DuplicateEventId",
    "EventTypeError",
    "EventVaultError",
    "InvalidCheckpoint",
    "InvalidEvent",
    "InvalidExpectedVersion",
    "InvalidInput",
    "InvalidStoreURL",
    "InvalidStreamId",
    "SchemaVersionError",
    "StorageFull",
    "StoreClosed",
    "StoreError",
    "StoreUnavailable",
    "StreamDeleted",
    "SubjectForgotten",
    "UnknownEventType",
    "WrongExpectedVersion",
]


class EventVaultError(Exception):
    """Root of every error eventvault raises."""


class InvalidInput(EventVaultError, ValueError):
    """An argument to a public API is not acceptable; nothing was written."""


class InvalidStreamId(InvalidInput):
    """A stream id is empty, too long, not a string or holds control characters."""


class InvalidExpectedVersion(InvalidInput):
    """An expected version is neither a non-negative int nor a StreamState."""


class InvalidEvent(InvalidInput):
    """An event cannot be appended as given (unregistered, bad metadata, none at all)."""


class SubjectForgotten(InvalidEvent):
    """An append holds personal data of a subject that was forgotten: its key is gone for good."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        super().__init__(
            f"subject {subject!r} was forgotten: its personal data cannot be stored again "
            "(a forgotten key is never replaced)"
        )

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return (type(self), (self.subject,))


class InvalidCheckpoint(InvalidInput):
    """A checkpoint token is malformed or belongs to another kind of store."""


class InvalidStoreURL(InvalidInput):
    """A store URL names no known backend or cannot be parsed."""


class ConcurrencyError(EventVaultError):
    """Another writer changed the stream first. Reload, decide again, retry."""


class WrongExpectedVersion(ConcurrencyError):
    """The stream is not at the version the append expected."""

    def __init__(self, stream_id: str, expected: object, actual: int) -> None:
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual
        shown = "no stream" if actual == 0 else f"version {actual}"
        super().__init__(
            f"stream {stream_id!r} is at {shown}, but the append expected {_expected_text(expected)}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.stream_id, self.expected, self.actual))


class AppendConditionFailed(ConcurrencyError):
    """An event matching the append condition's query was stored after its position.

    The decision the append carries was made on a state that has changed:
    read the query again, decide again, retry.
    """

    def __init__(self, query: object, after: int | None, position: int) -> None:
        self.query = query
        self.after = after
        self.position = position
        since = "in the log" if after is None else f"after position {after}"
        super().__init__(
            f"the append condition failed: the event at position {position} matches {query!r}, "
            f"and the condition allows none {since}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.query, self.after, self.position))


def _expected_text(expected: object) -> str:
    if isinstance(expected, int):
        return "no stream (version 0)" if expected == 0 else f"version {expected}"
    return str(expected)


class DuplicateEventId(EventVaultError):
    """An event id of the append is already stored in another place."""

    def __init__(self, event_id: object, detail: str) -> None:
        self.event_id = event_id
        self.detail = detail
        super().__init__(f"event id {event_id} is already stored {detail}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.event_id, self.detail))


class StreamDeleted(EventVaultError):
    """The stream was deleted for ever (a tombstone): no append or delete is ever taken again.

    Even a re-send of events stored before the tombstone is refused: the stream
    id is closed, whatever the events.
    """

    def __init__(self, stream_id: str) -> None:
        self.stream_id = stream_id
        super().__init__(f"stream {stream_id!r} is deleted for ever (tombstoned): it takes no more events")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.stream_id,))


class AggregateNotFound(EventVaultError, LookupError):
    """The repository found no events for the aggregate asked for."""


class EventTypeError(EventVaultError):
    """The event type registry cannot do what was asked."""


class UnknownEventType(EventTypeError):
    """No class is registered under a stored event type name."""


class DecodeError(EventVaultError):
    """Stored bytes could not be decoded into their registered type."""


class StoreError(EventVaultError):
    """The backend failed to do its part."""


class StoreUnavailable(StoreError):
    """The database cannot be reached now (connection lost, server down, busy)."""


class StorageFull(StoreUnavailable):
    """The database's disk (or quota) is full: the write was not made.

    SQLite's ``SQLITE_FULL`` and PostgreSQL's ``disk_full`` (SQLSTATE 53100).
    A transient condition like any :class:`StoreUnavailable`: the same call
    succeeds once space is freed, with no restart.
    """


class StoreClosed(StoreError):
    """The store was closed; open a new one."""


class SchemaVersionError(StoreError):
    """The database holds a schema version newer than this code understands."""


class DomainError(EventVaultError):
    """A business rule refused a command. Aggregates raise a subclass per rule."""


class DCBNotSupported(EventVaultError, NotImplementedError):
    """The backend cannot store tags, read by query or append under a condition (yet)."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        super().__init__(
            f"the {backend} event store does not support dynamic consistency boundaries "
            "(tags, query reads, conditional appends) yet; memory:// does"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.backend,))
