"""Moving a log between stores: export to JSON Lines, import with a checksum, resumably.

An export is one line per event, in global order, each carrying every envelope
field and the data and metadata exactly as stored (raw JSON, not upcast), then
one last line: the SHA-256 of the event lines, their count and the last position::

    {"position":1,"event_id":"…","stream_id":"account-1","stream_version":1,…,"data":{…}}
    {"checksum":"sha256:…","events":1,"last_position":1}

A store with retention rules, or one a scavenge has cut, also gets one line
per such stream between the events and the checksum line (decision 36)::

    {"stream":"account-1","first_version":5,"truncate_before":5,"max_count":2,"max_age_us":null}

The same log exports byte-identical on every backend. A file whose name ends in
``.gz`` is gzip-compressed. Both directions read and write in pages, so memory
stays bounded however long the log.

:func:`import_events` reads the file twice: once to check it (the checksum, the
count, the order), then to write it, a page per transaction with
:meth:`EventStore.write_recorded`. An import that stopped part-way is continued
by running it again with the same file: the events already in the store must be
the file's first ones, and the rest follow them.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Final, cast

import msgspec

from eventvault.errors import EventVaultError, InvalidInput
from eventvault.store.base import EventStore
from eventvault.store.personal import KeyRecord, KeyStore
from eventvault.store.records import Checkpoint, RecordedEvent, datetime_to_micros, micros_to_datetime

__all__ = [
    "ArchiveError",
    "ExportSummary",
    "ImportRefused",
    "ImportSummary",
    "export_events",
    "export_keys",
    "import_events",
    "import_keys",
]

PAGE: Final = 1000
"""Events read from a store, or written to one, per call."""

Progress = Callable[[int, int | None], None]
"""Called with (events done, events in all if known) after each page."""

Target = str | os.PathLike[str] | IO[bytes]


class ArchiveError(EventVaultError, ValueError):
    """An export file that cannot be imported: unreadable, damaged or without its checksum."""


class ImportRefused(EventVaultError):
    """The target store holds events that are not the file's (pass ``force`` to import anyway)."""


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What an export wrote."""

    events: int
    last_position: int
    checksum: str


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """What an import found and wrote."""

    events: int
    """Events in the file."""
    imported: int
    """Events written by this run."""
    skipped: int
    """Events already in the store (written by an earlier, interrupted run)."""
    last_position: int
    checksum: str
    streams: int = 0
    """Streams whose retention rules (and where a scavenge cut them) the file set here."""


class _Line(msgspec.Struct, forbid_unknown_fields=True):
    """One event line; the field order is the file's (and fixed: exports are byte-identical)."""

    position: int
    event_id: uuid.UUID
    stream_id: str
    stream_version: int
    event_type: str
    schema_version: int
    occurred_at: str
    recorded_at: str
    tags: list[str]
    metadata: msgspec.Raw
    data: msgspec.Raw


class _StreamLine(msgspec.Struct, forbid_unknown_fields=True):
    """What a stream's retention rules and a scavenge left of it, after every event line."""

    stream: str
    first_version: int | None
    """The version of the stream's first event in the file, in a whole-log export (else null)."""
    truncate_before: int
    max_count: int | None
    max_age_us: int | None

    @property
    def scavenged(self) -> bool:
        return self.first_version is not None and self.first_version > 1


class _Trailer(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    checksum: str
    events: int
    last_position: int
    streams: int = 0
    """Stream lines (none: not written, as in files from before they were)."""


_ENCODER: Final = msgspec.json.Encoder()
_LINE: Final = msgspec.json.Decoder(_Line)
_STREAM: Final = msgspec.json.Decoder(_StreamLine)
_TRAILER: Final = msgspec.json.Decoder(_Trailer)
_TRAILER_START: Final = b'{"checksum"'
_STREAM_START: Final = b'{"stream"'


def _time(us: int) -> str:
    return micros_to_datetime(us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _micros(text: str, what: str) -> int:
    try:
        return datetime_to_micros(datetime.fromisoformat(text))
    except ValueError:
        raise ArchiveError(f"{what} {text!r} is not an ISO 8601 time") from None


def _one_line(raw: bytes) -> bytes:
    # JSON strings escape line breaks, so a stored document holds them only as
    # whitespace; a line of the file must not, so such whitespace becomes spaces.
    return raw.replace(b"\n", b" ").replace(b"\r", b" ") if b"\n" in raw or b"\r" in raw else raw


def _encode(e: RecordedEvent) -> bytes:
    line = _Line(
        e.position,
        e.event_id,
        e.stream_id,
        e.stream_version,
        e.event_type,
        e.schema_version,
        _time(e.occurred_us),
        _time(e.recorded_us),
        list(e.tags),
        msgspec.Raw(_one_line(e.metadata_json)),
        msgspec.Raw(_one_line(e.payload)),
    )
    return _ENCODER.encode(line) + b"\n"


@contextlib.contextmanager
def _opened(target: Target, mode: str) -> Iterator[IO[bytes]]:
    if isinstance(target, (str, os.PathLike)):
        path = Path(target)
        if path.name.endswith(".gz"):
            # No name and no time in the gzip header: the same log, the same bytes.
            with path.open(mode + "b") as raw, gzip.GzipFile("", mode + "b", fileobj=raw, mtime=0) as packed:
                yield cast("IO[bytes]", packed)
        else:
            with path.open(mode + "b") as f:
                yield f
    else:
        yield target


async def export_events(
    store: EventStore,
    out: Target,
    *,
    after: Checkpoint | str | None = None,
    progress: Progress | None = None,
) -> ExportSummary:
    """Write the events of ``store`` after ``after`` (all by default) to ``out`` as JSON Lines.

    ``out`` is a path (``.gz``: compressed) or a binary file. Returns the count,
    the last position written and the checksum (also the file's last line).
    """
    digest = hashlib.sha256()
    events = 0
    last = 0
    total = None
    whole = after is None
    if whole and progress is not None:
        total = (await store.counts()).events
    ruled = set(await store.ruled_streams())
    seen: set[str] = set()
    first: dict[str, int] = {}  # whole log: where the ruled streams, and those a scavenge cut, start
    with _opened(out, "w") as f:
        page: list[bytes] = []
        async for e in store.iter_all(after, batch=PAGE):
            line = _encode(e)
            digest.update(line)
            page.append(line)
            events += 1
            last = e.position
            if whole and e.stream_id not in seen:
                seen.add(e.stream_id)
                if e.stream_id in ruled or e.stream_version > 1:
                    first[e.stream_id] = e.stream_version
            if len(page) == PAGE:
                f.write(b"".join(page))
                page.clear()
                if progress is not None:
                    progress(events, total)
        f.write(b"".join(page))
        streams = 0
        for stream_line in await _stream_lines(store, sorted(ruled | first.keys()), first if whole else None):
            line = _ENCODER.encode(stream_line) + b"\n"
            digest.update(line)
            f.write(line)
            streams += 1
        checksum = f"sha256:{digest.hexdigest()}"
        f.write(_ENCODER.encode(_Trailer(checksum, events, last, streams)) + b"\n")
        f.flush()
    if progress is not None:
        progress(events, total)
    return ExportSummary(events, last, checksum)


async def _stream_lines(
    store: EventStore, stream_ids: list[str], first: dict[str, int] | None
) -> list[_StreamLine]:
    """The stream lines of an export: the streams whose rules hide events, or whose first ones are gone.

    A stream whose first stored version is above 1 (a scavenge removed the
    ones before) is truncated before it in the line, so the store an import
    makes hides what the source hides, and exports the same line again.
    """
    out = []
    for stream_id in stream_ids:
        life = await store.stream_lifecycle(stream_id)
        first_version = None if first is None else first.get(stream_id)
        truncate = life.truncate_before
        if first_version is not None and first_version > 1:
            truncate = max(truncate, first_version)
        age = None if life.max_age is None else life.max_age // timedelta(microseconds=1)
        line = _StreamLine(stream_id, first_version, truncate, life.max_count, age)
        if line.scavenged or truncate > 1 or line.max_count is not None or age is not None:
            out.append(line)
    return out


def _lines(source: Target) -> Iterator[tuple[int, bytes]]:
    try:
        with _opened(source, "r") as f:
            yield from enumerate(f, 1)
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise ArchiveError(f"cannot read {source}: {exc}") from None


def _decode(n: int, line: bytes) -> _Line:
    try:
        return _LINE.decode(line)
    except msgspec.ValidationError as exc:
        raise ArchiveError(f"line {n}: not an event line: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ArchiveError(f"line {n}: not JSON: {exc}") from None


def _decode_stream(n: int, line: bytes) -> _StreamLine:
    try:
        stream = _STREAM.decode(line)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise ArchiveError(f"line {n}: a damaged stream line: {exc}") from None
    if stream.truncate_before < 0 or (stream.first_version is not None and stream.first_version < 1):
        raise ArchiveError(f"line {n}: a stream line with a version below 1")
    if (stream.max_count is not None and stream.max_count < 1) or (
        stream.max_age_us is not None and stream.max_age_us < 1
    ):
        raise ArchiveError(f"line {n}: a stream line whose max_count or max_age_us is not positive")
    return stream


def _check_file(source: Target) -> tuple[_Trailer, list[_StreamLine]]:
    """Read the whole file once: events in rising positions, the stream lines, then a matching checksum."""
    digest = hashlib.sha256()
    events = 0
    last = 0
    trailer: _Trailer | None = None
    streams: list[_StreamLine] = []
    for n, line in _lines(source):
        if trailer is not None:
            raise ArchiveError(f"line {n}: the checksum line must be the last line")
        if line.startswith(_TRAILER_START):
            try:
                trailer = _TRAILER.decode(line)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                raise ArchiveError(f"line {n}: a damaged checksum line: {exc}") from None
            continue
        digest.update(line)
        if line.startswith(_STREAM_START):
            streams.append(_decode_stream(n, line))
            continue
        if streams:
            raise ArchiveError(f"line {n}: an event line after the stream lines")
        e = _decode(n, line)
        if e.position <= last:
            raise ArchiveError(f"line {n}: position {e.position} does not rise above {last}")
        last = e.position
        events += 1
    if trailer is None:
        raise ArchiveError("the file has no checksum line: it was cut short, or is not an export")
    checksum = f"sha256:{digest.hexdigest()}"
    if (
        trailer.checksum != checksum
        or trailer.events != events
        or trailer.last_position != last
        or trailer.streams != len(streams)
    ):
        raise ArchiveError(
            f"the checksum does not match: the file says {trailer.checksum} over {trailer.events} events "
            f"and {trailer.streams} stream lines (last position {trailer.last_position}), its lines give "
            f"{checksum} over {events} and {len(streams)} (last position {last}); the file is damaged"
        )
    return trailer, streams


def _recorded(store: EventStore, n: int, e: _Line) -> RecordedEvent:
    return RecordedEvent(
        store.codec,
        e.event_id,
        e.stream_id,
        e.stream_version,
        e.position,
        e.event_type,
        e.schema_version,
        _micros(e.occurred_at, f"line {n}: occurred_at"),
        _micros(e.recorded_at, f"line {n}: recorded_at"),
        bytes(e.data),
        bytes(e.metadata),
        tags=tuple(e.tags),
    )


def _file_events(source: Target) -> Iterator[tuple[int, _Line]]:
    for n, line in _lines(source):
        if line.startswith((_STREAM_START, _TRAILER_START)):
            return  # the event lines come first
        yield n, _decode(n, line)


async def _resume_point(store: EventStore, source: Target, *, force: bool) -> int:
    """The last position already imported: 0 for an empty store (or with ``force``)."""
    head = await store.head()
    if head.position == 0:
        return 0
    lines = _file_events(source)
    last = 0
    async for stored in store.iter_all(batch=PAGE):
        found = next(lines, None)
        if found is None:
            if force:
                return 0
            raise ImportRefused(
                f"the store holds events the file does not (from position {stored.position} on); "
                "import into an empty store, or pass force"
            )
        n, e = found
        same = (
            stored.event_id == e.event_id
            and stored.position == e.position
            and stored.stream_id == e.stream_id
            and stored.stream_version == e.stream_version
            and stored.payload == bytes(e.data)
        )
        if not same:
            if force:
                return 0
            raise ImportRefused(
                f"the store already holds other events: at position {stored.position} it has "
                f"{stored.event_id} ({stored.stream_id!r} v{stored.stream_version}), line {n} of the file "
                f"{e.event_id} ({e.stream_id!r} v{e.stream_version} at position {e.position}); "
                "import into an empty store, or pass force"
            )
        last = stored.position
    return last


async def _write_pages(  # noqa: PLR0913 - the file, where it resumes, and what to report
    store: EventStore,
    source: Target,
    done: int,
    total: int,
    *,
    progress: Progress | None,
    first_versions: dict[str, int],
) -> tuple[int, int]:
    """Write the file's events after position ``done``, a page per call; (skipped, imported)."""
    skipped = imported = 0
    page: list[RecordedEvent] = []
    for n, e in _file_events(source):
        if e.position <= done:
            skipped += 1
            continue
        page.append(_recorded(store, n, e))
        if len(page) == PAGE:
            await store.write_recorded(page, first_versions=first_versions)
            imported += len(page)
            page = []
            if progress is not None:
                progress(skipped + imported, total)
    if page:
        await store.write_recorded(page, first_versions=first_versions)
        imported += len(page)
    if progress is not None:
        progress(skipped + imported, total)
    return skipped, imported


async def import_events(
    store: EventStore,
    source: Target,
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> ImportSummary:
    """Write the events of an export file into ``store``, keeping ids, versions, positions and times.

    Refuses (ArchiveError, nothing written) a file whose checksum is wrong or
    missing. Refuses (ImportRefused) a store that holds events other than the
    file's first ones, unless ``force``: then the file's events are written after
    the store's own (their positions must lie above the store's head). A store
    holding the file's first events (an interrupted import) gets the rest.
    """
    if isinstance(source, str) and not source:
        raise InvalidInput("source is a path or a binary file")
    if not isinstance(source, (str, os.PathLike)) and not source.seekable():
        raise InvalidInput("import reads its source twice: pass a path or a seekable file")
    start = 0 if isinstance(source, (str, os.PathLike)) else source.tell()
    trailer, streams = _check_file(source)
    if not isinstance(source, (str, os.PathLike)):
        source.seek(start)
    done = await _resume_point(store, source, force=force)
    if not isinstance(source, (str, os.PathLike)):
        source.seek(start)
    first_versions = {
        s.stream: s.first_version for s in streams if s.first_version is not None and s.scavenged
    }
    skipped, imported = await _write_pages(
        store, source, done, trailer.events, progress=progress, first_versions=first_versions
    )
    for line in streams:  # the rules as the source had them (again, after an interrupted run: the same)
        if line.truncate_before > 1:
            await store.truncate_before(line.stream, line.truncate_before)
        if line.max_count is not None or line.max_age_us is not None:
            age = None if line.max_age_us is None else timedelta(microseconds=line.max_age_us)
            await store.set_retention(line.stream, max_count=line.max_count, max_age=age)
    return ImportSummary(
        trailer.events, imported, skipped, trailer.last_position, trailer.checksum, len(streams)
    )


# -- the keys of personal fields (docs/data-protection.md) ----------------------------


class _KeyLine(msgspec.Struct, forbid_unknown_fields=True):
    """One row of a key table; key_id and key null once the subject was forgotten."""

    subject: str
    key_id: str | None
    key: bytes | None  # base64 in JSON
    created_us: int
    forgotten_us: int | None


def _key_store(store: EventStore) -> KeyStore:
    keys = store.keys
    if keys is None:
        raise InvalidInput(f"this {store.scheme} store keeps no keys")
    return keys


async def export_keys(store: EventStore, out: Target) -> int:
    """Write the key table of ``store`` (forgotten subjects too, without keys) as JSON Lines.

    The keys open every sealed personal field of the log: a key file is as
    sensitive as the data itself, and a copy made before a forget undoes it
    for whoever holds it. Export events and keys apart, and keep the key file
    only as long as it is needed (docs/data-protection.md). Returns the rows written.
    """
    keys = _key_store(store)
    rows = 0
    after = ""
    with _opened(out, "w") as f:
        while True:
            page = await keys.records(after, PAGE)
            if not page:
                break
            f.write(b"".join(_ENCODER.encode(_KeyLine(*r)) + b"\n" for r in page))
            rows += len(page)
            after = page[-1].subject
        f.flush()
    return rows


async def import_keys(store: EventStore, source: Target) -> int:
    """Take the rows of a key file into ``store``'s key table; the rows read.

    Subjects new to the store get their keys; a subject forgotten in the file
    or in the store ends forgotten; a subject that has a key here keeps it.
    Running it again changes nothing more.
    """
    keys = _key_store(store)
    decoder = msgspec.json.Decoder(_KeyLine)
    rows = 0
    page: list[KeyRecord] = []
    for n, line in _lines(source):
        try:
            r = decoder.decode(line)
        except msgspec.MsgspecError as exc:
            raise ArchiveError(f"line {n} is not a key row: {exc}") from None
        page.append(KeyRecord(r.subject, r.key_id, r.key, r.created_us, r.forgotten_us))
        if len(page) == PAGE:
            await keys.restore(page)
            rows += len(page)
            page = []
    await keys.restore(page)
    return rows + len(page)
