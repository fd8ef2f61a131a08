"""A store that deletes, retention rules and a scavenge have shaped: what export and import must keep."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from eventvault import NO_STREAM, EventRegistry, event
from eventvault.store.base import EventStore

lifecycle_registry = EventRegistry()


@event("archive_test.Noted", registry=lifecycle_registry)
@dataclass(frozen=True, slots=True)
class Noted:
    text: str


def notes(*texts: str) -> list[Noted]:
    return [Noted(t) for t in texts]


async def shape(store: EventStore) -> None:
    """Streams each of whose rules hides something, most of it then scavenged.

    a: truncated before 3; b: only its last 2 kept; c: deleted, then written
    again; d: tombstoned; f: a max_age that hides nothing yet; after the
    scavenge, e: only its last 2 shown, the rest still stored.
    """
    for stream, n in (("a", 5), ("b", 6), ("c", 3), ("d", 2), ("f", 3)):
        await store.append(
            stream, notes(*(f"{stream}{i}" for i in range(1, n + 1))), expected_version=NO_STREAM
        )
    await store.truncate_before("a", 3)
    await store.set_retention("b", max_count=2)
    await store.delete_stream("c", expected_version=3)
    await store.append("c", notes("c-again-1", "c-again-2"), expected_version=NO_STREAM)
    await store.delete_stream("d", expected_version=2, tombstone=True)
    await store.set_retention("f", max_age=timedelta(days=1))
    removed = await store.scavenge()
    assert removed.events_removed > 0
    await store.append("e", notes("e1", "e2", "e3", "e4"), expected_version=NO_STREAM)
    await store.set_retention("e", max_count=2)


async def what_reads_show(store: EventStore) -> dict[str, Any]:
    shown: dict[str, Any] = {}
    for stream in "abcdef":
        life = await store.stream_lifecycle(stream)
        shown[stream] = (
            [(e.stream_version, e.data) for e in await store.read_stream(stream)],
            await store.stream_version(stream),
            # (A stream a scavenge cut is truncated before its first version in the copy.)
            (life.tombstoned, life.visible_version, life.max_count, life.max_age),
        )
    shown["listed"] = [(s.stream_id, s.version) for s in await store.list_streams()]
    return shown
