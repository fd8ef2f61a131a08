"""W9: conditional appends (dynamic consistency boundaries) with many events stored.

Each contender's place is filled once per size with tagged events (one
``user:N`` tag each, written in large unconditional batches, not timed); then,
in runs whose contenders take turns, each contender makes ``dcb_appends``
decisions: read the events of a new user's tag, then append one event under
the condition "no event of that tag after the head I read". Only the
conditional append is timed, one at a time, so each gives a latency.

The peer is the eventsourcing library's DCB recorder (``PostgresDCBRecorderTT``),
on PostgreSQL only (it has no SQLite DCB recorder). The same work is checked: at
the end every contender's place holds the seed plus every appended event, and a
repeated decision fails its condition.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from benchmarks.backends import Backend, Place, PostgresBackend, SQLiteBackend
from benchmarks.http import percentile
from benchmarks.plan import Timing
from eventvault import (
    AppendCondition,
    AppendConditionFailed,
    EventRegistry,
    EventStore,
    NewEvent,
    Query,
    event,
    open_store,
)

__all__ = ["DCBContender", "EvDCB", "PeerDCB", "explain_condition", "latency_ms", "new_tag"]

REGISTRY = EventRegistry()
_TYPE = "Registered"
_BATCH = 1000
_EAGER_PARALLEL = (
    "parallel_setup_cost",
    "parallel_tuple_cost",
    "min_parallel_table_scan_size",
    "min_parallel_index_scan_size",
)


@event(_TYPE, registry=REGISTRY)
@dataclass(frozen=True, slots=True)
class Registered:
    """A user name taken: the DCB workload's one event type."""

    user: str


def new_tag(run: int, j: int) -> str:
    """The tag of the ``j``-th new user of ``run`` (no seeded event has it)."""
    return f"user:new-{run}-{j}"


class DCBContender:
    """What W9 asks of a contender."""

    name = ""

    def seed(self, first: int, last: int) -> None:
        """Store events ``first..last-1`` (tag ``user:N``), in large unconditional batches."""
        raise NotImplementedError

    def decide(self, run: int, count: int) -> Timing:
        """``count`` read-then-conditional-append decisions; the appends timed, one latency each."""
        raise NotImplementedError

    def conflicts(self, tag: str) -> bool:
        """Whether a decision on an already taken tag fails its condition (it must)."""
        raise NotImplementedError

    def stored(self) -> int:
        """Events in the place."""
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""


class EvDCB(DCBContender):
    """eventvault's ``read(query)`` + ``append_events(condition=...)``."""

    name = "eventvault"

    def __init__(self, backend: Backend, place: Place) -> None:
        self.url = backend.ev_url(place)
        self.loop = asyncio.new_event_loop()
        self.store: EventStore = self._run(self._open)

    async def _open(self) -> EventStore:
        store = await open_store(self.url, registry=REGISTRY)
        await store.head()
        return store

    def _run(self, fn: Callable[[], Any]) -> Any:
        return self.loop.run_until_complete(fn())

    def seed(self, first: int, last: int) -> None:
        """Append the seed in batches of 1,000, without a condition."""

        async def go() -> None:
            for start in range(first, last, _BATCH):
                events = [
                    NewEvent(Registered(f"u{i}"), tags=[f"user:{i}"])
                    for i in range(start, min(last, start + _BATCH))
                ]
                await self.store.append_events(events)

        self._run(go)

    def decide(self, run: int, count: int) -> Timing:
        """Read the new tag, then append under the condition; the append timed."""

        async def go() -> Timing:
            latencies: list[float] = []
            for j in range(count):
                tag = new_tag(run, j)
                query = Query.of(types=[_TYPE], tags=[tag])
                seen = await self.store.read(query)
                if seen.events:
                    raise AssertionError(f"{tag} is taken before its decision")
                started = time.perf_counter()
                await self.store.append_events(
                    [NewEvent(Registered(tag), tags=[tag])], condition=AppendCondition(query, after=seen.head)
                )
                latencies.append(time.perf_counter() - started)
            return Timing(count, sum(latencies), latencies)

        result: Timing = self._run(go)
        return result

    def conflicts(self, tag: str) -> bool:
        """A condition from the log's start on a taken tag."""

        async def go() -> bool:
            query = Query.of(types=[_TYPE], tags=[tag])
            try:
                await self.store.append_events(
                    [NewEvent(Registered(tag), tags=[tag])], condition=AppendCondition(query, after=0)
                )
            except AppendConditionFailed:
                return True
            return False

        result: bool = self._run(go)
        return result

    def stored(self) -> int:
        """Events of the workload's type in the log."""

        async def go() -> int:
            return len((await self.store.read(Query.of(types=[_TYPE]))).events)

        result: int = self._run(go)
        return result

    def close(self) -> None:
        """Release connections."""
        self._run(self.store.close)
        self.loop.close()


class PeerDCB(DCBContender):
    """The eventsourcing library's PostgreSQL DCB recorder (``eventsourcing.dcb.postgres_tt``)."""

    name = "peer"

    def __init__(self, backend: PostgresBackend) -> None:
        from eventsourcing.dcb.postgres_tt import PostgresDCBRecorderTT  # noqa: PLC0415
        from eventsourcing.postgres import PostgresDatastore  # noqa: PLC0415

        # In 9.5.6 the tag table's foreign key names the events table without its schema, so the
        # recorder's tables must be on the search path: it gets the run's database's public schema
        # (eventvault's places are other schemas of it; the database is dropped at the end).
        self.datastore = PostgresDatastore(
            backend.database, backend.host, backend.port, backend.user, backend.password, schema="public"
        )
        self.recorder = PostgresDCBRecorderTT(self.datastore, events_table_name="dcb_events")
        self.recorder.create_table()

    def _event(self, user: str, tag: str) -> Any:
        from eventsourcing.dcb.api import DCBEvent  # noqa: PLC0415

        return DCBEvent(type=_TYPE, data=user.encode(), tags=[tag])

    def _query(self, tag: str) -> Any:
        from eventsourcing.dcb.api import DCBQuery, DCBQueryItem  # noqa: PLC0415

        return DCBQuery(items=[DCBQueryItem(types=[_TYPE], tags=[tag])])

    def seed(self, first: int, last: int) -> None:
        """Append the seed in batches of 1,000, without a condition."""
        for start in range(first, last, _BATCH):
            self.recorder.append(
                [self._event(f"u{i}", f"user:{i}") for i in range(start, min(last, start + _BATCH))]
            )

    def decide(self, run: int, count: int) -> Timing:
        """Read the new tag, then append under the condition; the append timed."""
        from eventsourcing.dcb.api import DCBAppendCondition  # noqa: PLC0415

        latencies: list[float] = []
        for j in range(count):
            tag = new_tag(run, j)
            query = self._query(tag)
            response = self.recorder.read(query)
            if list(response):
                raise AssertionError(f"{tag} is taken before its decision")
            head = response.head
            started = time.perf_counter()
            self.recorder.append(
                [self._event(tag, tag)], DCBAppendCondition(fail_if_events_match=query, after=head)
            )
            latencies.append(time.perf_counter() - started)
        return Timing(count, sum(latencies), latencies)

    def conflicts(self, tag: str) -> bool:
        """A condition from the log's start on a taken tag."""
        from eventsourcing.dcb.api import DCBAppendCondition  # noqa: PLC0415
        from eventsourcing.persistence import IntegrityError  # noqa: PLC0415

        try:
            self.recorder.append(
                [self._event(tag, tag)], DCBAppendCondition(fail_if_events_match=self._query(tag), after=0)
            )
        except IntegrityError:
            return True
        return False

    def stored(self) -> int:
        """Events of the workload's type in the log."""
        from eventsourcing.dcb.api import DCBQuery, DCBQueryItem  # noqa: PLC0415

        return sum(1 for _ in self.recorder.read(DCBQuery(items=[DCBQueryItem(types=[_TYPE])])))

    def close(self) -> None:
        """Release connections."""
        self.datastore.close()


def latency_ms(timing: Timing, q: float) -> float:
    """The ``q`` percentile of the appends' latencies, in milliseconds."""
    return percentile(timing.latencies, q) * 1000


def explain_condition(backend: Backend, place: Place, tag: str, after: int) -> dict[str, Any]:
    """The plan of eventvault's condition check on ``tag`` after ``after``; whether it probes the tag index.

    SQLite: EXPLAIN QUERY PLAN of the statements ``first_match`` runs; PostgreSQL:
    EXPLAIN (ANALYZE) of the conditional append's statement (the check and the
    insert it gates, as the store runs it after its locks), in a transaction
    rolled back, with its execution time and whether any part ran under a
    parallel ``Gather`` (with parallel plans made free for the planner, so that
    only the statement's shape keeps them out).
    """
    query = Query.of(types=[_TYPE], tags=[tag])
    if isinstance(backend, PostgresBackend):
        return _explain_postgres(backend, place, query, after)
    import contextlib  # noqa: PLC0415
    import sqlite3  # noqa: PLC0415

    from eventvault.store.sqlite import reads  # noqa: PLC0415

    assert isinstance(backend, SQLiteBackend)  # noqa: S101
    statements: list[str] = []
    with contextlib.closing(backend.connect(place)) as conn:
        conn.set_trace_callback(statements.append)
        cur: sqlite3.Cursor = conn.cursor()
        started = time.perf_counter()
        reads.first_match(cur, query, after)
        ms = (time.perf_counter() - started) * 1000
        conn.set_trace_callback(None)
        selects = [st for st in statements if st.startswith("SELECT")]
        steps = [str(row[3]) for st in selects for row in conn.execute(f"EXPLAIN QUERY PLAN {st}")]
    plan = "\n".join(steps)
    uses = any("PRIMARY KEY (tag=? AND position>?)" in s for s in steps) and not any(
        s.startswith("SCAN") for s in steps
    )
    return {"plan": plan, "uses_tag_index": uses, "execution_ms": round(ms, 3), "parallel": False}


def _explain_postgres(backend: PostgresBackend, place: Place, query: Query, after: int) -> dict[str, Any]:
    import uuid  # noqa: PLC0415

    from psycopg import sql  # noqa: PLC0415

    from eventvault.store.base import PreparedEvent  # noqa: PLC0415
    from eventvault.store.postgres._dcb import _append_params, _params, append_sql  # noqa: PLC0415
    from eventvault.store.postgres._schema import statements  # noqa: PLC0415
    from eventvault.store.records import ANY  # noqa: PLC0415

    assert place.schema is not None  # noqa: S101
    tag = query.items[0].tags[0]
    event = PreparedEvent(uuid.uuid4(), _TYPE, 1, b"{}", b"{}", 0, (tag,))
    stream_id = f"explain-{event.event_id}"
    statement = b"EXPLAIN (ANALYZE, COSTS OFF) " + append_sql(
        sql.Identifier(place.schema), statements(place.schema).bumps["any"], query
    )
    params = {**_append_params(stream_id, [event], ANY), **_params(query, after)}
    with backend.connect(autocommit=False) as conn:
        # Parallel plans made free: the plan shows that the statement's shape rules
        # them out (a statement that writes never gets one), not this size's costs.
        for setting in _EAGER_PARALLEL:
            conn.execute(f"SET LOCAL {setting} = 0")
        lines = [str(r[0]) for r in conn.execute(statement, params).fetchall()]
        conn.rollback()  # the append it ran is not kept
    plan = "\n".join(lines)
    uses = "event_tags_pkey" in plan and "Seq Scan on event_tags" not in plan
    ms = next((float(x.split(":")[1].split()[0]) for x in lines if x.startswith("Execution Time")), None)
    return {"plan": plan, "uses_tag_index": uses, "execution_ms": ms, "parallel": "Gather" in plan}
