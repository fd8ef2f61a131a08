"""The domain layer: event registration, upcaster chains and the aggregate base."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from eventvault import (
    Aggregate,
    EventRegistry,
    EventTypeError,
    InvalidEvent,
    UnknownEventType,
    applies,
    uuid7,
)
from eventvault.domain import event, upcaster


@dataclass(frozen=True)
class Added:
    n: int


@dataclass(frozen=True)
class Reset:
    pass


class Counter(Aggregate):
    total: int = 0

    def add(self, n: int) -> None:
        if n <= 0:
            raise ValueError(n)
        self.record(Added(n))

    @applies(Added)
    def _added(self, e: Added) -> None:
        self.total += e.n


def test_register_uses_class_name_by_default() -> None:
    """@event without a name registers the class under its own name at version 1."""
    reg = EventRegistry()
    event(registry=reg)(Added)
    assert reg.of_class(Added).name == "Added"
    assert reg.of_name("Added").version == 1


def test_registering_a_taken_name_for_another_class_fails() -> None:
    """Two classes can never share a stored name: reads would be ambiguous."""
    reg = EventRegistry()
    reg.register(Added, "Thing")
    with pytest.raises(EventTypeError, match="already registered"):
        reg.register(Reset, "Thing")


def test_registering_a_class_twice_under_two_names_fails() -> None:
    """One class has one stable name."""
    reg = EventRegistry()
    reg.register(Added, "A")
    with pytest.raises(EventTypeError, match="already registered as 'A'"):
        reg.register(Added, "B")


@pytest.mark.parametrize("name", ["", "1abc", "a b", "x" * 129, None])
def test_bad_event_type_names_are_refused(name: Any) -> None:
    """Stored names must be short identifiers (None means the class name, which is valid)."""
    reg = EventRegistry()
    if name is None:
        reg.register(Added, name)
        return
    with pytest.raises(EventTypeError):
        reg.register(Added, name)


@pytest.mark.parametrize("version", [0, -1, True, "2"])
def test_bad_versions_are_refused(version: Any) -> None:
    """A schema version is an int >= 1."""
    with pytest.raises(EventTypeError):
        EventRegistry().register(Added, "Added", version=version)


def test_only_dataclasses_and_structs_can_be_events() -> None:
    """The codec needs typed fields, so plain classes are refused at registration."""

    class Plain:
        pass

    with pytest.raises(EventTypeError, match=r"dataclass or a msgspec\.Struct"):
        EventRegistry().register(Plain)


def test_unregistered_class_lookup_names_the_class() -> None:
    """Appending an unregistered event says which class and how to fix it."""
    with pytest.raises(InvalidEvent, match="Reset is not a registered event type"):
        EventRegistry().of_class(Reset)


def test_unknown_name_lookup() -> None:
    """Reading a type no class is registered for raises UnknownEventType."""
    with pytest.raises(UnknownEventType, match="'Nope'"):
        EventRegistry().of_name("Nope")


def test_upcaster_chain_runs_in_order() -> None:
    """Stored v1 data passes through v1->v2 then v2->v3."""
    reg = EventRegistry()
    reg.register(Added, "Added", version=3)

    @upcaster("Added", from_version=1, registry=reg)
    def _v2(d: dict[str, Any]) -> dict[str, Any]:
        return {"m": d["n"]}

    @upcaster("Added", from_version=2, registry=reg)
    def _v3(d: dict[str, Any]) -> dict[str, Any]:
        return {"n": d["m"] * 10}

    assert reg.upcast("Added", 1, {"n": 2}) == {"n": 20}
    assert reg.upcast("Added", 2, {"m": 2}) == {"n": 20}
    assert reg.upcast("Added", 3, {"n": 2}) == {"n": 2}
    reg.check()


def test_a_hole_in_the_chain_is_reported() -> None:
    """A missing step is named, both by check() and when reading."""
    reg = EventRegistry()
    reg.register(Added, "Added", version=2)
    with pytest.raises(EventTypeError, match="no upcaster from version 1 to 2"):
        reg.check()
    with pytest.raises(EventTypeError, match="no upcaster from version 1 to 2"):
        reg.upcast("Added", 1, {"n": 1})


def test_data_newer_than_the_code_is_refused() -> None:
    """An event stored by newer code cannot be read by older code, and says so."""
    reg = EventRegistry()
    reg.register(Added, "Added", version=1)
    with pytest.raises(EventTypeError, match="newer than this code"):
        reg.upcast("Added", 2, {"n": 1})


def test_record_applies_and_keeps_pending() -> None:
    """A command's event changes state at once and waits to be saved."""
    c = Counter("c1")
    c.add(2)
    c.add(3)
    assert (c.total, c.version) == (5, 2)
    assert c.pending_events == (Added(2), Added(3))
    assert c.mark_saved() == [Added(2), Added(3)]
    assert not c.pending_events


def test_replay_equals_live() -> None:
    """Replaying the recorded events gives exactly the live state."""
    live = Counter("c1")
    for n in (1, 2, 3):
        live.add(n)
    replayed = Counter.replay("c1", live.pending_events)
    assert replayed.state() == live.state() == {"total": 6}
    assert replayed.version == live.version == 3
    assert replayed.pending_events == ()


def test_an_event_without_applier_is_an_error() -> None:
    """Silently ignoring an event would make replay differ from live state."""
    with pytest.raises(EventTypeError, match="no @applies method for Reset"):
        Counter("c1").record(Reset())


def test_stream_id_uses_the_category() -> None:
    """Streams are named category-id; the category defaults to the lowercased class name."""
    assert Counter("x").stream_id == "counter-x" == Counter.stream_id_for("x")

    class Other(Aggregate):
        category = "thing"

    assert Other("1").stream_id == "thing-1"


def test_aggregate_ids_must_be_non_empty_strings() -> None:
    """An aggregate without a usable id is refused at construction."""
    with pytest.raises(InvalidEvent):
        Counter("")
    with pytest.raises(InvalidEvent):
        Counter(1)  # type: ignore[arg-type]


def test_appliers_are_inherited_and_overridable() -> None:
    """A subclass keeps its parent's appliers and may replace one."""

    class Doubling(Counter):
        @applies(Added)
        def _double(self, e: Added) -> None:
            self.total += 2 * e.n

    d = Doubling("d")
    d.add(2)
    assert d.total == 4


def test_uuid7_is_version_7_and_increasing() -> None:
    """Event ids are RFC 9562 v7 UUIDs, strictly increasing within a process."""
    ids = [uuid7() for _ in range(5000)]
    assert all(i.version == 7 and i.variant == uuid.RFC_4122 for i in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
