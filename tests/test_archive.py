"""Export, import and their checks (eventvault.archive) on the embedded backends."""

from __future__ import annotations

import gzip
import hashlib
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from archive_lifecycle import lifecycle_registry, notes, shape, what_reads_show
from eventvault import (
    REDACTED,
    ArchiveError,
    ImportRefused,
    InvalidInput,
    RecordedEvent,
    Repository,
    Snapshot,
    default_registry,
    export_events,
    export_keys,
    import_events,
    import_keys,
    verify_store,
)
from eventvault.store.base import EventStore
from eventvault.store.memory import MemoryEventStore
from eventvault.store.sqlite import SQLiteEventStore
from eventvault_ledger.seed import DEMO_ACCOUNTS, seed_demo

pytestmark = pytest.mark.asyncio


@pytest.fixture(params=["memory", "sqlite"])
async def make_store(request, tmp_path):
    """Opens new, empty stores of one backend; closes them after the test."""
    stores: list[EventStore] = []

    async def make() -> EventStore:
        if request.param == "memory":
            store: EventStore = MemoryEventStore(registry=default_registry)
        else:
            store = SQLiteEventStore(str(tmp_path / f"s{len(stores)}.db"), registry=default_registry)
        stores.append(store)
        return await store.open()

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def ledger(make_store) -> EventStore:
    """A store holding the ledger's demo data."""
    store: EventStore = await make_store()
    assert await seed_demo(Repository(store))
    return store


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


async def test_an_export_has_every_envelope_field_and_a_checksum_line(ledger, tmp_path):
    """One JSON line per event in log order, times to the microsecond, then the checksum line."""
    out = tmp_path / "log.jsonl"
    summary = await export_events(ledger, out)
    stored = (await ledger.read_all()).events
    rows = [json.loads(line) for line in lines(out)]
    assert len(rows) == len(stored) + 1 == summary.events + 1
    first = rows[0]
    e = stored[0]
    assert first["event_id"] == str(e.event_id)
    assert (first["stream_id"], first["stream_version"], first["position"]) == (
        e.stream_id,
        e.stream_version,
        e.position,
    )
    assert (first["event_type"], first["schema_version"]) == (e.event_type, e.schema_version)
    assert first["occurred_at"] == e.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert first["recorded_at"] == e.recorded_at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert first["metadata"] == {"actor": "demo-seed"}
    assert json.dumps(first["data"], separators=(",", ":")).encode() == e.payload
    assert rows[-1] == {
        "checksum": summary.checksum,
        "events": len(stored),
        "last_position": stored[-1].position,
    }


async def test_a_round_trip_exports_the_same_bytes(ledger, make_store, tmp_path):
    """Export, import into an empty store, export again: byte-identical, and the gzip file holds the same."""
    first, again, packed = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl.gz"
    await export_events(ledger, first)
    await export_events(ledger, packed)
    assert gzip.decompress(packed.read_bytes()) == first.read_bytes()
    target = await make_store()
    summary = await import_events(target, packed)
    assert summary.imported == summary.events > 0
    await export_events(target, again)
    assert again.read_bytes() == first.read_bytes()


async def test_export_after_a_checkpoint_writes_only_the_later_events(ledger, tmp_path):
    """--after: the events after that checkpoint, with their own checksum."""
    stored = (await ledger.read_all()).events
    out = tmp_path / "tail.jsonl"
    summary = await export_events(ledger, out, after=stored[4].checkpoint)
    assert summary.events == len(stored) - 5
    assert json.loads(lines(out)[0])["position"] == stored[5].position


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda ls: ls[:-1], id="no checksum line"),
        pytest.param(lambda ls: [ls[0].replace(b"demo", b"DEMO"), *ls[1:]], id="an edited event"),
        pytest.param(lambda ls: ls[1:], id="a missing event"),
        pytest.param(
            lambda ls: [*ls[:-1], b'{"checksum":"sha256:00","events":1,"last_position":1}\n'],
            id="a wrong checksum",
        ),
        pytest.param(lambda ls: [b"not json\n", *ls], id="a line that is not JSON"),
    ],
)
async def test_a_damaged_file_is_refused_and_nothing_is_written(ledger, make_store, tmp_path, damage):
    """A file whose checksum is wrong or missing is refused with a clear error; the target stays empty."""
    good = tmp_path / "good.jsonl"
    await export_events(ledger, good)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join(damage(lines(good))))
    target = await make_store()
    with pytest.raises(ArchiveError, match=r"checksum|line 1"):
        await import_events(target, bad)
    assert (await target.read_all()).events == []


async def test_an_interrupted_import_is_finished_by_running_it_again(ledger, make_store, tmp_path):
    """A store holding the file's first events gets the rest, and the result equals a whole import."""
    whole = tmp_path / "whole.jsonl"
    await export_events(ledger, whole)
    stored = (await ledger.read_all()).events
    target = await make_store()
    # What a run stopped after its first pages leaves: the file's first events.
    await target.write_recorded(stored[:7])
    summary = await import_events(target, whole)
    assert (summary.skipped, summary.imported) == (7, len(stored) - 7)
    again = tmp_path / "again.jsonl"
    await export_events(target, again)
    assert again.read_bytes() == whole.read_bytes()
    # Once more: nothing left to do.
    assert (await import_events(target, whole)).imported == 0


async def test_a_store_with_other_events_is_refused_unless_forced(ledger, make_store, tmp_path):
    """Another store's events are not the file's: refused, naming the first difference."""
    whole = tmp_path / "whole.jsonl"
    await export_events(ledger, whole)
    target = await make_store()
    assert await seed_demo(Repository(target))  # the same shape, other ids
    before = len((await target.read_all()).events)
    with pytest.raises(ImportRefused, match="other events: at position 1"):
        await import_events(target, whole)
    assert len((await target.read_all()).events) == before
    # force: the file's positions are at or below the head, so they cannot follow.
    with pytest.raises(InvalidInput, match="positions must rise"):
        await import_events(target, whole, force=True)


async def test_force_writes_a_later_export_after_the_store_own_events(ledger, make_store, tmp_path):
    """With force, an export of the later events goes on top of a store holding the earlier ones."""
    stored = (await ledger.read_all()).events
    tail = tmp_path / "tail.jsonl"
    await export_events(ledger, tail, after=stored[-3].checkpoint)
    target = await make_store()
    await target.write_recorded(stored[:-2])  # what an earlier export brought
    with pytest.raises(ImportRefused, match="other events"):
        await import_events(target, tail)
    summary = await import_events(target, tail, force=True)
    assert (summary.events, summary.imported) == (2, 2)
    assert [e.event_id for e in (await target.read_all()).events] == [e.event_id for e in stored]


async def test_progress_is_reported(ledger, make_store, tmp_path):
    """Both directions report (done, total) and end at the total."""
    out = tmp_path / "log.jsonl"
    seen: list[tuple[int, int | None]] = []
    summary = await export_events(ledger, out, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (summary.events, summary.events)
    seen.clear()
    await import_events(await make_store(), out, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (summary.events, summary.events)


async def test_verify_reports_snapshots_that_do_not_decode_or_run_ahead(ledger):
    """A snapshot state that is not JSON, and one past its stream's version, are both named."""
    stream = (await ledger.read_all()).events[0].stream_id
    version = await ledger.stream_version(stream)
    now = datetime.now(UTC)
    await ledger.save_snapshot(Snapshot(stream, version, 7, b"{not json", now))
    await ledger.save_snapshot(Snapshot(stream, version + 3, 8, b"{}", now))
    report = await verify_store(ledger)
    assert not report.ok
    assert sorted(p.what for p in report.problems) == [
        "snapshot ahead of its stream",
        "snapshot does not decode",
    ]
    assert all(stream in p.where for p in report.problems)
    assert report.events == len((await ledger.read_all()).events)


async def test_verify_passes_a_sound_store(ledger):
    """The demo ledger has no problem."""
    report = await verify_store(ledger)
    assert report.ok
    assert report.problems == []
    assert report.streams == 6


# -- sealed personal fields (docs/data-protection.md) ------------------------------------


async def owners(store: EventStore) -> list[str]:
    return [e.data.owner_name for e in (await store.read_all()).events if e.event_type == "AccountOpened"]


async def test_an_export_holds_ciphertext_and_no_key(ledger, make_store, tmp_path):
    """The owner names are sealed in the file; imported elsewhere, without the keys, they read redacted."""
    out = tmp_path / "log.jsonl"
    await export_events(ledger, out)
    text = out.read_bytes()
    assert b'"$sealed"' in text
    assert not any(name.encode() in text for name, _, _ in DEMO_ACCOUNTS)
    target = await make_store()
    await import_events(target, out)
    assert await owners(target) == [REDACTED] * len(DEMO_ACCOUNTS)  # the keys stayed behind
    assert await owners(ledger) == [name for name, _, _ in DEMO_ACCOUNTS]
    assert (await verify_store(target)).ok  # unreadable by design is not damage


async def test_a_forgotten_owner_is_no_damage_and_stays_forgotten_through_a_round_trip(
    ledger, make_store, tmp_path
):
    """Given a forgotten account, verify passes, a later export holds the same bytes, and imports."""
    before, after = tmp_path / "before.jsonl", tmp_path / "after.jsonl"
    await export_events(ledger, before)
    first = next(e for e in (await ledger.read_all()).events if e.event_type == "AccountOpened")
    assert await ledger.forget(first.stream_id)

    report = await verify_store(ledger)

    assert report.ok, report.problems
    assert (await owners(ledger))[0] == REDACTED
    await export_events(ledger, after)
    assert after.read_bytes() == before.read_bytes()  # the log itself did not change
    target = await make_store()
    await import_events(target, after)
    assert (await verify_store(target)).ok


async def test_verify_reports_sealed_bytes_that_were_changed(ledger):
    """A sealed member its key does not open is damage, and verify says which event."""
    opened = next(e for e in (await ledger.read_all()).events if e.event_type == "AccountOpened")
    payload = json.loads(opened.payload)
    blob = payload["$sealed"]["c"]
    payload["$sealed"]["c"] = ("A" if blob[0] != "A" else "B") + blob[1:]
    head = (await ledger.head()).position
    copy = RecordedEvent(
        ledger.codec,
        uuid.uuid4(),
        "account-copy",
        1,
        head + 1,
        opened.event_type,
        opened.schema_version,
        opened.occurred_us,
        opened.recorded_us,
        json.dumps(payload, separators=(",", ":")).encode(),
        b"{}",
    )
    await ledger.write_recorded([copy])

    report = await verify_store(ledger)

    assert [(p.what, "account-copy" in p.where) for p in report.problems] == [("event does not decode", True)]


async def test_keys_move_in_a_file_of_their_own_and_a_forget_travels(ledger, make_store, tmp_path):
    """Events and keys exported apart, imported together: names read again, a forgotten one stays so."""
    log, keys = tmp_path / "log.jsonl", tmp_path / "keys.jsonl"
    first = next(e for e in (await ledger.read_all()).events if e.event_type == "AccountOpened")
    await ledger.forget(first.stream_id)
    await export_events(ledger, log)
    assert await export_keys(ledger, keys) == len(DEMO_ACCOUNTS)
    assert b"Ada Lovelace" not in keys.read_bytes()
    target = await make_store()
    await import_events(target, log)

    assert await import_keys(target, keys) == len(DEMO_ACCOUNTS)

    assert await owners(target) == [REDACTED, *(name for name, _, _ in DEMO_ACCOUNTS[1:])]
    assert await import_keys(target, keys) == len(DEMO_ACCOUNTS)  # again: nothing changes
    assert await owners(target) == await owners(ledger)
    assert (await verify_store(target)).ok


# -- stores that deletes, retention rules and scavenges have shaped --------------------------------


@pytest.fixture
async def sqlite_stores(tmp_path):
    """Opens new, empty SQLite stores of the lifecycle events; closes them after the test."""
    stores: list[EventStore] = []

    async def make() -> EventStore:
        store = SQLiteEventStore(str(tmp_path / f"life{len(stores)}.db"), registry=lifecycle_registry)
        stores.append(store)
        return await store.open()

    yield make
    for store in stores:
        await store.close()


async def test_a_scavenged_store_round_trips_with_its_rules(sqlite_stores, tmp_path):
    """After deletes, rules and a scavenge: the copy reads as the source, verifies, exports the same bytes."""
    source = await sqlite_stores()
    await shape(source)
    first, again = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    summary = await export_events(source, first)
    streams = [json.loads(line) for line in lines(first) if line.startswith(b'{"stream"')]
    # d too: the scavenge left it only its $StreamDeleted event, at version 3.
    assert [(s["stream"], s["first_version"], s["truncate_before"]) for s in streams] == [
        ("a", 3, 3),
        ("b", 5, 5),
        ("c", 5, 5),
        ("d", 3, 3),
        ("e", 1, 0),
        ("f", 1, 0),
    ]
    assert json.loads(lines(first)[-1])["streams"] == 6
    target = await sqlite_stores()
    imported = await import_events(target, first)
    assert (imported.imported, imported.streams) == (summary.events, 6)
    assert await what_reads_show(target) == await what_reads_show(source)
    assert (await verify_store(target)).ok
    await export_events(target, again)
    assert again.read_bytes() == first.read_bytes()
    # Appends go on where the source's would: the versions a scavenge removed are never reused.
    assert (await target.append("b", notes("b7"), expected_version=6)).stream_version == 7
    assert (await source.append("b", notes("b7"), expected_version=6)).stream_version == 7


async def test_an_interrupted_import_of_a_scavenged_store_finishes_with_its_rules(sqlite_stores, tmp_path):
    """A run stopped after its first events: the next run writes the rest, then the rules."""
    source = await sqlite_stores()
    await shape(source)
    whole = tmp_path / "whole.jsonl"
    await export_events(source, whole)
    stored = (await source.read_all()).events
    target = await sqlite_stores()
    starts = {"a": 3, "b": 5, "c": 5}  # where the scavenge left them
    await target.write_recorded(stored[:4], first_versions=starts)
    summary = await import_events(target, whole)
    assert (summary.skipped, summary.imported) == (4, len(stored) - 4)
    assert await what_reads_show(target) == await what_reads_show(source)
    again = tmp_path / "again.jsonl"
    await export_events(target, again)
    assert again.read_bytes() == whole.read_bytes()


async def test_a_file_whose_stream_lines_were_changed_is_refused(sqlite_stores, tmp_path):
    """The checksum covers the stream lines: one edited, dropped, or put among the events is damage."""
    source = await sqlite_stores()
    await shape(source)
    good = tmp_path / "good.jsonl"
    await export_events(source, good)
    ls = lines(good)
    at = next(i for i, line in enumerate(ls) if line.startswith(b'{"stream"'))
    damaged = {
        "edited": [*ls[:at], ls[at].replace(b'"truncate_before":3', b'"truncate_before":1'), *ls[at + 1 :]],
        "dropped": [*ls[:at], *ls[at + 1 :]],
        "among the events": [ls[at], *ls[:at], *ls[at + 1 :]],
    }
    for name, content in damaged.items():
        bad = tmp_path / f"{name}.jsonl"
        bad.write_bytes(b"".join(content))
        target = await sqlite_stores()
        with pytest.raises(ArchiveError, match=r"checksum|stream lines"):
            await import_events(target, bad)
        assert (await target.read_all()).events == [], name


async def test_a_file_from_before_the_stream_lines_imports(sqlite_stores, tmp_path):
    """A file as exports were written before stream lines existed: its events come in as they were."""
    body = [
        (
            b'{"position":1,"event_id":"0190f0b2-6c1e-7a6e-9a51-000000000001","stream_id":"a",'
            b'"stream_version":1,"event_type":"archive_test.Noted","schema_version":1,'
            b'"occurred_at":"2026-11-20T10:00:00.000001Z","recorded_at":"2026-11-20T10:00:00.000002Z",'
            b'"tags":[],"metadata":{},"data":{"text":"old"}}\n'
        ),
        (
            b'{"position":2,"event_id":"0190f0b2-6c1e-7a6e-9a51-000000000002","stream_id":"a",'
            b'"stream_version":2,"event_type":"archive_test.Noted","schema_version":1,'
            b'"occurred_at":"2026-11-20T10:00:01.000001Z","recorded_at":"2026-11-20T10:00:01.000002Z",'
            b'"tags":["t:1"],"metadata":{"actor":"ann"},"data":{"text":"older"}}\n'
        ),
    ]
    checksum = "sha256:" + hashlib.sha256(b"".join(body)).hexdigest()
    old = tmp_path / "old.jsonl"
    old.write_bytes(b"".join([*body, f'{{"checksum":"{checksum}","events":2,"last_position":2}}\n'.encode()]))
    target = await sqlite_stores()
    summary = await import_events(target, old)
    assert (summary.imported, summary.streams) == (2, 0)
    assert [e.data for e in await target.read_stream("a")] == notes("old", "older")
    again = tmp_path / "again.jsonl"
    await export_events(target, again)
    assert again.read_bytes() == old.read_bytes()  # no rules, no stream lines: the old format, byte for byte


async def test_a_memory_store_refuses_a_scavenged_log(sqlite_stores, tmp_path):
    """The memory store keeps versions (and positions) dense: such an import is refused, nothing written."""
    source = await sqlite_stores()
    await shape(source)
    out = tmp_path / "log.jsonl"
    await export_events(source, out)
    target = await MemoryEventStore(registry=lifecycle_registry).open()
    with pytest.raises(InvalidInput, match="dense"):
        await import_events(target, out)
    assert (await target.read_all()).events == []


async def test_a_stream_line_with_a_rule_that_cannot_be_is_refused_before_anything_is_written(
    sqlite_stores, tmp_path
):
    """A max_count of 0 under a checksum that matches: refused in the check pass, the target stays empty."""
    source = await sqlite_stores()
    await shape(source)
    good = tmp_path / "good.jsonl"
    await export_events(source, good)
    body = [line for line in lines(good) if not line.startswith(b'{"checksum"')]
    body = [line.replace(b'"max_count":2', b'"max_count":0') for line in body]
    trailer = json.loads(lines(good)[-1])
    trailer["checksum"] = "sha256:" + hashlib.sha256(b"".join(body)).hexdigest()
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b"".join([*body, json.dumps(trailer, separators=(",", ":")).encode() + b"\n"]))
    target = await sqlite_stores()
    with pytest.raises(ArchiveError, match="max_count or max_age_us is not positive"):
        await import_events(target, bad)
    assert (await target.read_all()).events == []
