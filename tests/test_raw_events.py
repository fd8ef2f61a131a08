"""Raw events: events of unregistered types, stored as the JSON given; registered types refused."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from eventvault import EventRegistry, InvalidEvent, InvalidInput, NewEvent, Query, RawEvent, event
from eventvault.store.memory import MemoryEventStore

REGISTRY = EventRegistry()


@event("test.Registered", registry=REGISTRY)
@dataclass(frozen=True)
class Registered:
    name: str


async def test_a_raw_event_is_stored_and_read_back_as_given() -> None:
    """Its type and payload come back unchanged, with its tags."""
    async with MemoryEventStore(registry=REGISTRY) as store:
        await store.append_events([NewEvent(RawEvent("client.Noted", b'{"a": [1, "x"]}'), tags=["n:1"])])
        [e] = (await store.read(Query.of(tags=["n:1"]))).events
        assert (e.event_type, e.payload, e.tags) == ("client.Noted", b'{"a": [1, "x"]}', ("n:1",))


async def test_a_raw_event_of_a_registered_type_is_refused() -> None:
    """A registered type's events are appended as their class, whose fields get checked."""
    async with MemoryEventStore(registry=REGISTRY) as store:
        with pytest.raises(InvalidEvent, match="registered type"):
            await store.append_events([RawEvent("test.Registered", b'{"name": 1}')])
        assert (await store.head()).position == 0


@pytest.mark.parametrize(
    ("event_type", "payload"),
    [("", b"{}"), ("9lives", b"{}"), ("ok", b"[1]"), ("ok", b"{nope"), ("ok", "{}")],
)
def test_a_bad_raw_event_is_refused(event_type: str, payload: object) -> None:
    """A bad type name, or a payload that is not a JSON object in bytes, raises InvalidInput."""
    with pytest.raises(InvalidInput):
        RawEvent(event_type, payload)  # type: ignore[arg-type]
