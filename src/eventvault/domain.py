"""The domain layer: event types, their registry and upcasters, and aggregates.

Standard library only. Nothing here knows how events are stored or sent.

An event is an immutable value (a frozen dataclass, or a ``msgspec.Struct``)
registered under a stable name and a schema version::

    @event("MoneyDeposited", version=2)
    @dataclass(frozen=True, slots=True)
    class MoneyDeposited:
        amount: Decimal
        description: str

    @upcaster("MoneyDeposited", from_version=1)
    def _add_description(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "description": ""}

Stored events keep the version they were written with; on read, the chain of
upcasters brings their data to the current shape. Old events are never rewritten.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, Final, Self, TypeVar, overload

from eventvault.errors import DomainError, EventTypeError, InvalidEvent, UnknownEventType

__all__ = [
    "REDACTED",
    "STREAM_DELETED",
    "Aggregate",
    "DomainError",
    "EventRegistry",
    "EventType",
    "PersonalData",
    "StreamDeletedEvent",
    "applies",
    "default_registry",
    "event",
    "personal",
    "personal_data_of",
    "upcaster",
]

T = TypeVar("T")
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,127}")


@dataclasses.dataclass(frozen=True, slots=True)
class EventType:
    """A registered event class with its stable name and current schema version."""

    name: str
    version: int
    cls: type


@dataclasses.dataclass(frozen=True, slots=True)
class StreamDeletedEvent:
    """The system event a stream delete writes, as the stream's last event: ``$StreamDeleted``.

    Read models that keep rows per stream drop the stream's rows when they see
    it (``@handles(StreamDeletedEvent)``); projections that do not handle it skip
    it, as they skip every type they have no handler for. User code cannot
    append it: names starting with ``$`` are the store's own.
    """

    stream_id: str
    version: int
    """The version the stream was at when it was deleted (its events up to it are gone)."""
    tombstone: bool = False
    """True: deleted for ever (no more appends); False: it may be written again."""


STREAM_DELETED: typing.Final = "$StreamDeleted"
"""The event type name of :class:`StreamDeletedEvent`."""


class EventRegistry:
    """Maps event classes to stable names and versions, and holds upcaster chains.

    Most programs use :data:`default_registry` through :func:`event` and
    :func:`upcaster`; tests and plugins can keep a registry of their own.
    """

    def __init__(self) -> None:
        self._by_name: dict[str, EventType] = {}
        self._by_class: dict[type, EventType] = {}
        self._upcasters: dict[tuple[str, int], Upcaster] = {}
        self.changes = 0
        """Counts registrations: a cache of what a name stands for is valid while it is unchanged."""
        # The store's own events, under names no user registration can take ($...).
        system = EventType(STREAM_DELETED, 1, StreamDeletedEvent)
        self._by_name[STREAM_DELETED] = system
        self._by_class[StreamDeletedEvent] = system

    def register(self, cls: type[T], name: str | None = None, *, version: int = 1) -> type[T]:
        """Register ``cls`` under ``name`` (default: the class name) at ``version``."""
        name = cls.__name__ if name is None else name
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise EventTypeError(
                f"event type name {name!r} must start with a letter and hold at most 128 "
                "letters, digits or '_.:-'"
            )
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise EventTypeError(f"event type {name!r}: version must be an int >= 1, got {version!r}")
        if not (dataclasses.is_dataclass(cls) or hasattr(cls, "__struct_fields__")):
            raise EventTypeError(f"{cls.__qualname__} must be a dataclass or a msgspec.Struct to be an event")
        known = self._by_name.get(name)
        if known is not None and _same_class(known.cls, cls):
            # Re-registering the same class (a module reloaded) replaces it.
            del self._by_class[known.cls]
        elif known is not None:
            raise EventTypeError(
                f"event type name {name!r} is already registered for {known.cls.__qualname__}"
            )
        if cls in self._by_class:
            raise EventTypeError(f"{cls.__qualname__} is already registered as {self._by_class[cls].name!r}")
        entry = EventType(name, version, cls)
        self._by_name[name] = entry
        self._by_class[cls] = entry
        self.changes += 1
        return cls

    def add_upcaster(self, name: str, from_version: int, fn: Upcaster) -> None:
        """Add the step that turns ``name`` data of ``from_version`` into ``from_version + 1``."""
        if isinstance(from_version, bool) or not isinstance(from_version, int) or from_version < 1:
            raise EventTypeError(f"upcaster for {name!r}: from_version must be an int >= 1")
        key = (name, from_version)
        if key in self._upcasters and self._upcasters[key] is not fn:
            raise EventTypeError(f"{name!r} already has an upcaster from version {from_version}")
        self._upcasters[key] = fn

    def of_class(self, cls: type) -> EventType:
        """The registration of ``cls``; :class:`InvalidEvent` if it has none."""
        try:
            return self._by_class[cls]
        except KeyError:
            raise InvalidEvent(
                f"{cls.__module__}.{cls.__qualname__} is not a registered event type; decorate it with @event"
            ) from None

    def of_name(self, name: str) -> EventType:
        """The registration under ``name``; :class:`UnknownEventType` if none."""
        try:
            return self._by_name[name]
        except KeyError:
            raise UnknownEventType(f"no event class is registered as {name!r}") from None

    def upcast(self, name: str, stored_version: int, data: dict[str, Any]) -> dict[str, Any]:
        """Bring ``data`` stored at ``stored_version`` to the registered version."""
        current = self.of_name(name).version
        if stored_version > current:
            raise EventTypeError(
                f"stored {name!r} has schema version {stored_version}, newer than this code's "
                f"{current}: deploy the newer code before reading it"
            )
        for version in range(stored_version, current):
            step = self._upcasters.get((name, version))
            if step is None:
                raise EventTypeError(f"{name!r} has no upcaster from version {version} to {version + 1}")
            data = step(data)
        return data

    def check(self) -> None:
        """Raise :class:`EventTypeError` if any registered type's upcaster chain has a hole."""
        for entry in self._by_name.values():
            for version in range(1, entry.version):
                if (entry.name, version) not in self._upcasters:
                    raise EventTypeError(
                        f"{entry.name!r} has no upcaster from version {version} to {version + 1}"
                    )

    def __iter__(self) -> typing.Iterator[EventType]:
        return iter(list(self._by_name.values()))


def _same_class(a: type, b: type) -> bool:
    return a is b or (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


default_registry = EventRegistry()
"""The registry :func:`event` and :func:`upcaster` use unless told otherwise."""


@overload
def event(name: type[T], /) -> type[T]: ...
@overload
def event(
    name: str | None = None, /, *, version: int = 1, registry: EventRegistry | None = None
) -> Callable[[type[T]], type[T]]: ...
def event(
    name: str | type[T] | None = None,
    /,
    *,
    version: int = 1,
    registry: EventRegistry | None = None,
) -> type[T] | Callable[[type[T]], type[T]]:
    """Class decorator: register an event type under a stable name and schema version.

    ``@event`` alone uses the class name; ``@event("Name", version=2)`` is better
    for types that may be renamed in code, since the stored name must not change.
    """
    reg = default_registry if registry is None else registry
    if isinstance(name, type):
        return reg.register(name)

    def decorate(cls: type[T]) -> type[T]:
        return reg.register(cls, name, version=version)

    return decorate


def upcaster(
    name: str, *, from_version: int, registry: EventRegistry | None = None
) -> Callable[[Upcaster], Upcaster]:
    """Function decorator: one step of ``name``'s upcaster chain, ``from_version`` -> +1.

    The function takes the stored JSON object (a dict) and returns the next shape.
    """
    reg = default_registry if registry is None else registry

    def decorate(fn: Upcaster) -> Upcaster:
        reg.add_upcaster(name, from_version, fn)
        return fn

    return decorate


REDACTED: Final = "[redacted]"
"""What a personal field reads as once its subject's key is destroyed (see :func:`personal`)."""

_PERSONAL_ATTR: Final = "__eventvault_personal__"


@dataclasses.dataclass(frozen=True, slots=True)
class PersonalData:
    """Which fields of an event class hold personal data, and whose.

    ``subject`` names the field holding the subject's id; None means the
    subject is the stream the event is appended to.
    """

    fields: tuple[str, ...]
    subject: str | None = None


def personal(*fields: str, subject: str | None = None) -> Callable[[type[T]], type[T]]:
    """Class decorator: these ``str`` fields of an event hold personal data of one subject.

    A store seals them with the subject's own key when the event is appended
    (the rest of the event stays plain JSON), and unseals them on every read.
    Once the subject is forgotten (``EventStore.forget``) the key is gone: the
    fields read as :data:`REDACTED`, and the event, its other fields and its
    place in the log stay as they were. The subject is the event's stream, or
    with ``subject="field"`` the value of that (non-personal ``str``) field::

        @event("AccountOpened")
        @personal("owner_name")
        @dataclass(frozen=True, slots=True)
        class AccountOpened:
            owner_name: str
            currency: str

    Apply it to the dataclass or ``msgspec.Struct`` (under ``@event``). Events
    without personal fields pay nothing for this.
    """
    if not fields:
        raise EventTypeError("@personal needs at least one field name")

    def decorate(cls: type[T]) -> type[T]:
        names = _field_names(cls)
        hints = typing.get_type_hints(cls)
        for name in (*fields, *(() if subject is None else (subject,))):
            if not isinstance(name, str) or name not in names:
                raise EventTypeError(f"{cls.__qualname__} has no field {name!r} to declare personal")
            if hints.get(name) is not str:
                raise EventTypeError(
                    f"{cls.__qualname__}.{name} must be a str to be personal or name a subject "
                    f"(a forgotten one reads as {REDACTED!r})"
                )
        if len(set(fields)) != len(fields):
            raise EventTypeError(f"@personal names a field of {cls.__qualname__} twice: {fields!r}")
        if subject is not None and subject in fields:
            raise EventTypeError(f"{cls.__qualname__}.{subject} names the subject: it cannot be personal too")
        setattr(cls, _PERSONAL_ATTR, PersonalData(tuple(fields), subject))
        return cls

    return decorate


def personal_data_of(cls: type) -> PersonalData | None:
    """What :func:`personal` declared on ``cls`` (None: no personal fields)."""
    found = cls.__dict__.get(_PERSONAL_ATTR)
    return found if isinstance(found, PersonalData) else None


def _field_names(cls: type) -> tuple[str, ...]:
    struct_fields: tuple[str, ...] | None = getattr(cls, "__struct_fields__", None)
    if struct_fields is not None:
        return struct_fields
    if dataclasses.is_dataclass(cls):
        return tuple(f.name for f in dataclasses.fields(cls))
    raise EventTypeError(f"@personal takes a dataclass or a msgspec.Struct, got {cls.__qualname__}")


def applies(*event_classes: type) -> Callable[[Callable[[Any, Any], None]], Callable[[Any, Any], None]]:
    """Method decorator: this method applies events of the given classes to the state.

    Appliers are the only place state changes, for new events and on replay alike.
    """
    if not event_classes:
        raise TypeError("@applies needs at least one event class")

    def decorate(fn: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
        fn.__applies__ = event_classes  # type: ignore[attr-defined]
        return fn

    return decorate


class Aggregate:
    """Base class of aggregates: a consistency boundary rebuilt from its own stream.

    Commands are methods that check the current state, raise a :class:`DomainError`
    subclass to refuse, and call :meth:`record` to accept. :meth:`record` applies
    the event through the method decorated with :func:`applies` for its class, the
    same path :meth:`replay` uses, so replayed state equals live state by design.

    Declare the state as annotated class attributes with defaults; the repository
    snapshots exactly those. Subclasses that override ``__init__`` must accept the
    aggregate id as their only argument and call ``super().__init__(id)``.
    """

    category: ClassVar[str] = ""
    """Stream id prefix: the stream of aggregate ``x`` is ``f"{category}-{x}"``.
    Defaults to the class name in lower case."""

    snapshot_every: ClassVar[int | None] = None
    """Take a snapshot whenever the version passes a multiple of this; None for never."""

    snapshot_schema: ClassVar[int] = 1
    """Bump when the state's shape changes: snapshots of other versions are ignored."""

    _appliers: ClassVar[dict[type, Callable[[Any, Any], None]]] = {}

    id: str
    version: int

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.__dict__.get("category"):
            cls.category = cls.__name__.lower()
        appliers: dict[type, Callable[[Any, Any], None]] = {}
        for klass in reversed(cls.__mro__):
            for attr in vars(klass).values():
                for event_cls in getattr(attr, "__applies__", ()):
                    appliers[event_cls] = attr
        cls._appliers = appliers

    def __init__(self, id: str) -> None:  # noqa: A002 - "id" is the domain's word
        if not isinstance(id, str) or not id:
            raise InvalidEvent(f"{type(self).__name__} id must be a non-empty str, got {id!r}")
        self.id = id
        self.version = 0
        self._pending: list[object] = []

    @property
    def stream_id(self) -> str:
        """The id of the stream holding this aggregate's events."""
        return f"{self.category}-{self.id}"

    @classmethod
    def stream_id_for(cls, id: str) -> str:  # noqa: A002
        """The stream id of the aggregate of this class with ``id``."""
        return f"{cls.category}-{id}"

    @property
    def pending_events(self) -> tuple[object, ...]:
        """Events recorded since the last save, oldest first."""
        return tuple(self._pending)

    def record(self, event: object) -> None:
        """Accept a command's outcome: apply ``event`` and keep it until saved."""
        self._apply(event)
        self._pending.append(event)

    def tags_of(self, event: object) -> Iterable[str]:  # noqa: ARG002 - a hook: no tags by default
        """The tags the repository stores ``event`` (one of this aggregate's pending ones) with.

        None by default. Override it to make events of an aggregate visible to
        decision models across aggregates (``eventvault.decisions``); it runs
        when the events are saved, on the state after them.
        """
        return ()

    def mark_saved(self) -> list[object]:
        """Forget the pending events (the repository calls this after an append)."""
        saved, self._pending = self._pending, []
        return saved

    def _apply(self, event: object) -> None:
        applier = self._appliers.get(type(event))
        if applier is None:
            raise EventTypeError(
                f"{type(self).__name__} has no @applies method for {type(event).__qualname__}"
            )
        applier(self, event)
        self.version += 1

    @classmethod
    def replay(cls, id: str, events: Iterable[object], *, version: int = 0) -> Self:  # noqa: A002
        """Rebuild the aggregate by applying ``events`` to a new instance.

        ``version`` is the version already reached before ``events`` (for a snapshot).
        """
        self = cls(id)
        self.version = version
        for e in events:
            self._apply(e)
        return self

    def state(self) -> dict[str, Any]:
        """The declared state fields and their values (what a snapshot holds)."""
        return {name: getattr(self, name) for name in state_fields(type(self))}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.state().items())
        return (
            f"{type(self).__name__}(id={self.id!r}, version={self.version}{', ' if fields else ''}{fields})"
        )


_BASE_FIELDS = frozenset({"id", "version", "_pending", "_appliers"})


def state_fields(cls: type[Aggregate]) -> Mapping[str, Any]:
    """The annotated state fields of an aggregate class and their resolved types."""
    cached: Mapping[str, Any] | None = cls.__dict__.get("_state_fields_cache")
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls, include_extras=False)
    fields = {
        name: hint
        for name, hint in hints.items()
        if name not in _BASE_FIELDS
        and not name.startswith("_")
        and typing.get_origin(hint) is not ClassVar
        and hint is not ClassVar
    }
    cls._state_fields_cache = fields  # type: ignore[attr-defined]
    return fields
