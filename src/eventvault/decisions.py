"""Decision models: the state a command decides on, and the condition that keeps it true.

The pattern of the dynamic consistency boundary examples (dcb.events): each rule
a command checks is a small :class:`Projection` (the events it cares about, by
type and tags, folded into a state). :func:`build_decision_model` reads the
events of all of them in one query, folds each projection's own events into its
state, and returns the :class:`~eventvault.store.AppendCondition` that fails the
append if any of those events has been stored since::

    def username_taken(username: str) -> Projection[bool]:
        return Projection(False, {UserRegistered: lambda _, e: True}, tags=[f"username:{username}"])

    model = await build_decision_model(store, taken=username_taken("ada"))
    if model["taken"]:
        raise UsernameTaken("ada")
    await store.append_events(
        [NewEvent(UserRegistered("ada"), tags=["username:ada"])], condition=model.condition
    )

The boundary is exactly the union of the projections' queries: two commands
conflict only if one appended an event the other's decision read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from eventvault.domain import EventRegistry
from eventvault.errors import InvalidInput
from eventvault.store import AppendCondition, EventStore, Query, QueryItem, RecordedEvent
from eventvault.store.records import check_tags

__all__ = ["DecisionModel", "Projection", "build_decision_model", "fold"]

S = TypeVar("S")


@dataclass(frozen=True, slots=True)
class Projection(Generic[S]):
    """A state folded from the events of some types that carry all of some tags.

    ``handlers`` maps each registered event class to ``(state, event) -> state``;
    its classes are the projection's types. ``tags`` narrow it to the events
    that carry every one of them (``["course:7"]``).
    """

    initial: S
    handlers: Mapping[type, Callable[[S, Any], S]]
    tags: Iterable[str] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.handlers, Mapping) or not self.handlers:
            raise InvalidInput("a projection needs handlers: {EventClass: (state, event) -> state}")
        for cls, fn in self.handlers.items():
            if not isinstance(cls, type) or not callable(fn):
                raise InvalidInput(f"a projection's handlers map event classes to functions, got {cls!r}")
        object.__setattr__(self, "tags", check_tags(self.tags, "a projection's tags"))

    def query_item(self, registry: EventRegistry) -> QueryItem:
        """The query item of this projection's events, named as ``registry`` names them."""
        return QueryItem(types=[registry.of_class(cls).name for cls in self.handlers], tags=self.tags)

    def apply(self, state: S, event: RecordedEvent, item: QueryItem) -> S:
        """``state`` after ``event`` if ``item`` (this projection's) matches it, else ``state``."""
        if not item.matches(event.event_type, event.tags):
            return state
        return self.handlers[type(event.data)](state, event.data)


@dataclass(frozen=True, slots=True)
class DecisionModel:
    """The states of the projections, by name, and the condition for the append they allow."""

    states: Mapping[str, Any]
    condition: AppendCondition
    """Fails the append if an event any projection would fold was stored after the read."""

    def __getitem__(self, name: str) -> Any:
        return self.states[name]


def fold(
    projections: Mapping[str, Projection[Any]], events: Sequence[RecordedEvent], registry: EventRegistry
) -> dict[str, Any]:
    """Each projection's state after the events (in log order) it matches."""
    items = {name: p.query_item(registry) for name, p in projections.items()}
    states = {name: p.initial for name, p in projections.items()}
    for e in events:
        for name, p in projections.items():
            states[name] = p.apply(states[name], e, items[name])
    return states


def query_of(projections: Mapping[str, Projection[Any]], registry: EventRegistry) -> Query:
    """The query that reads every event any of ``projections`` folds."""
    return Query([p.query_item(registry) for p in projections.values()])


async def build_decision_model(store: EventStore, **projections: Projection[Any]) -> DecisionModel:
    """Read the events of ``projections`` in one query, fold them, and the condition to append with."""
    if not projections:
        raise InvalidInput("build_decision_model needs at least one projection")
    for name, p in projections.items():
        if not isinstance(p, Projection):
            raise InvalidInput(f"{name} is not a Projection, got {type(p).__name__}")
    registry = store.codec.registry
    query = query_of(projections, registry)
    read = await store.read(query)
    return DecisionModel(fold(projections, read.events, registry), AppendCondition(query, after=read.head))
