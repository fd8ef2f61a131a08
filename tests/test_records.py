"""RecordedEvent: built from a row, compared by its place in the log, left untracked by the collector."""

from __future__ import annotations

import gc
import types
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from eventvault import NO_STREAM, EventRegistry, Metadata, NewEvent, event, open_store, personal
from eventvault.store.base import EventStore
from eventvault.store.memory import MemoryEventStore
from eventvault.store.records import RecordedEvent

REGISTRY = EventRegistry()


@event("records.Noted", registry=REGISTRY)
@dataclass(frozen=True)
class Noted:
    text: str
    tags: list[str]


@event("records.Registered", registry=REGISTRY)
@personal("name")
@dataclass(frozen=True)
class Registered:
    name: str


@pytest.fixture(params=["memory", "sqlite"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    opened: EventStore = (
        MemoryEventStore(registry=REGISTRY)
        if request.param == "memory"
        else await open_store(f"sqlite:///{tmp_path / 'events.db'}", registry=REGISTRY)
    )
    yield opened
    await opened.close()


def _reaches(start: list[object], target: object) -> bool:
    """Whether ``target`` is reachable from ``start`` through the objects' referents.

    Classes, modules and functions are not entered: every object leads to them,
    and through them to the whole interpreter, which holds the test's own frame.
    """
    seen: set[int] = set()
    todo = list(start)
    while todo:
        obj = todo.pop()
        if obj is target:
            return True
        if id(obj) in seen or isinstance(obj, type | types.ModuleType | types.FunctionType):
            continue
        seen.add(id(obj))
        if isinstance(obj, RecordedEvent):
            todo.extend(getattr(obj, name) for name in obj.__struct_fields__)
        else:
            todo.extend(gc.get_referents(obj))
    return False


async def test_a_read_event_is_not_tracked_and_nothing_it_holds_leads_back_to_it(store: EventStore) -> None:
    """gc=False is safe only for an object in no reference cycle: nothing it holds leads back."""
    noted = NewEvent(
        Noted("hello", ["a", "b"]), metadata=Metadata(actor="ada", request_id="r-1"), tags=["note:1"]
    )
    await store.append("note-1", [noted], expected_version=NO_STREAM)
    (read,) = await store.read_stream("note-1")
    assert read.data == Noted("hello", ["a", "b"])
    assert read.metadata.actor == "ada"
    assert read.event_id.version == 7
    assert read.tags == ("note:1",)
    assert not gc.is_tracked(read)
    fields = [getattr(read, name) for name in read.__struct_fields__]
    assert read.data in fields  # decoded once, kept on the event
    assert not _reaches(fields, read)


async def test_a_sealed_event_and_the_keys_it_is_opened_with_lead_back_to_it_neither(
    store: EventStore,
) -> None:
    """A read of personal data hands its events a decoder holding the keys: that decoder holds no event."""
    await store.append("person-1", [Registered("Ada Lovelace")], expected_version=NO_STREAM)
    (read,) = await store.read_stream("person-1")
    assert b"Ada Lovelace" not in read.payload  # sealed as stored
    assert read.data == Registered("Ada Lovelace")
    assert read._codec is not store.codec  # the read's own decoder, with the subject's key
    assert not _reaches([getattr(read, name) for name in read.__struct_fields__], read)


def test_a_reference_cycle_through_an_event_is_what_the_check_would_find() -> None:
    """The check above can fail: an event whose data refers back to it is found."""
    holder: list[object] = []
    e = RecordedEvent(None, uuid.uuid4().bytes, "s", 1, 1, "t", 1, 0, 0, b"{}", None)  # type: ignore[arg-type]
    e._data = holder  # the cycle a decoder must never make
    holder.append(e)
    assert _reaches([getattr(e, name) for name in e.__struct_fields__], e)


def test_events_compare_by_their_place_in_the_log_and_hash_alike() -> None:
    """Equality is id, position, stream and version; the bytes and the decoder do not take part."""
    event_id = uuid.uuid4()
    a = RecordedEvent(None, event_id.bytes, "s", 2, 7, "t", 1, 10, 20, b"{}", None)  # type: ignore[arg-type]
    b = RecordedEvent(None, event_id, "s", 2, 7, "t", 1, 11, 21, b'{"x":1}', b"{}", tx=3)  # type: ignore[arg-type]
    assert a == b
    assert hash(a) == hash(b)
    assert a != RecordedEvent(None, event_id, "s", 2, 8, "t", 1, 10, 20, b"{}", None)  # type: ignore[arg-type]
    assert a.tags == ()
    assert a.checkpoint.position == 7
    assert b.checkpoint.tx == 3
    assert repr(a) == f"RecordedEvent(t@1 's' v2 pos=7 id={event_id})"
