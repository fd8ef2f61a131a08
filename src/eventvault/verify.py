"""Check a store end to end: every event decodes, streams are whole, the log is in order.

:func:`verify_store` reads the whole log once, a page at a time, and reports
what it finds wrong and where:

- every event decodes through its upcasters into its current type (the store's
  registry), and its metadata decodes;
- the versions of each stream run 1, 2, 3, ... with no gap or repeat (a stream a
  scavenge removed the first events of, under a delete or retention rule, may
  start later);
- global positions are unique and rise along the log;
- every snapshot's state is JSON, at a version its stream has reached.

It writes nothing; memory grows with the number of streams (one version each),
not with the number of events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

import msgspec

from eventvault.errors import EventVaultError
from eventvault.store.base import MAX_PAGE, EventStore
from eventvault.store.records import RecordedEvent

__all__ = ["Problem", "VerifyReport", "verify_store"]

PAGE: Final = 1000
MAX_PROBLEMS: Final = 1000
"""Problems kept in a report (the count goes on past them)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong: what, and where (a position, a stream and version, or a snapshot)."""

    what: str
    where: str
    detail: str


@dataclass(slots=True)
class VerifyReport:
    """What :func:`verify_store` checked and found."""

    events: int = 0
    streams: int = 0
    snapshots: int = 0
    problem_count: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if nothing is wrong."""
        return self.problem_count == 0

    def add(self, what: str, where: str, detail: str) -> None:
        """Count a problem (and keep it, up to MAX_PROBLEMS)."""
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(Problem(what, where, detail))


def _reason(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_decodes(report: VerifyReport, e: RecordedEvent, where: str) -> None:
    try:
        _ = e.data
    except (EventVaultError, ValueError, TypeError) as exc:
        report.add("event does not decode", where, f"{e.event_type}@{e.schema_version}: {_reason(exc)}")
    try:
        _ = e.metadata
    except (EventVaultError, ValueError, TypeError) as exc:
        report.add("metadata does not decode", where, _reason(exc))


async def _check_version(
    store: EventStore, report: VerifyReport, versions: dict[str, int], e: RecordedEvent, where: str
) -> None:
    """The event continues its stream (``versions``: each stream's version so far, moved on)."""
    expected = versions.get(e.stream_id, 0) + 1
    if expected == 1 and e.stream_version > 1 and (await store.stream_lifecycle(e.stream_id)).has_rules:
        expected = e.stream_version  # a scavenge removed the versions before it (deleted or truncated)
    if e.stream_version != expected:
        gap = "a gap" if e.stream_version > expected else "a repeat"
        report.add("stream version " + gap, where, f"expected version {expected}")
    versions[e.stream_id] = max(e.stream_version, versions.get(e.stream_id, 0))


async def verify_store(
    store: EventStore, *, progress: Callable[[int, int | None], None] | None = None
) -> VerifyReport:
    """Check every event and snapshot of ``store``; the report lists each problem found."""
    report = VerifyReport()
    total = (await store.counts()).events if progress is not None else None
    versions: dict[str, int] = {}
    last_position = 0
    async for e in store.iter_all(batch=PAGE):
        report.events += 1
        where = f"position {e.position}, stream {e.stream_id!r} version {e.stream_version}"
        if e.position <= last_position:
            report.add("position out of order", where, f"follows position {last_position}")
        last_position = max(last_position, e.position)
        await _check_version(store, report, versions, e, where)
        _check_decodes(report, e, where)
        if progress is not None and report.events % PAGE == 0:
            progress(report.events, total)
    report.streams = len(versions)
    for info in await store.list_snapshots(limit=MAX_PAGE):
        report.snapshots += 1
        where = (
            f"snapshot of {info.stream_id!r} at version {info.stream_version} (schema {info.schema_version})"
        )
        snap = await store.load_snapshot(info.stream_id, schema_version=info.schema_version)
        if snap is None:
            continue  # dropped meanwhile
        try:
            msgspec.json.decode(snap.state)
        except msgspec.DecodeError as exc:
            report.add("snapshot does not decode", where, _reason(exc))
        if info.stream_version > versions.get(info.stream_id, 0):
            report.add(
                "snapshot ahead of its stream",
                where,
                f"the stream is at version {versions.get(info.stream_id, 0)}",
            )
    if progress is not None:
        progress(report.events, total)
    return report
