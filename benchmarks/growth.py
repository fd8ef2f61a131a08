"""Cost growth: do W1 and W3 slow down when the log holds a million events, and does reading it all stay flat?

One eventvault store is filled in bulk by the raw driver (the rows eventvault
itself writes: same schema, codec JSON, time-ordered ids, versions from 1) to
the baseline size; W1 (a fresh set of accounts, an append per event) and W3
(loading stored accounts, spread over the whole log) are measured; the store
is filled on to the large size and both are measured again. Last, eventvault
reads and decodes the whole log, a page at a time, while this process's
resident memory is sampled after every page.
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, Final

import msgspec
from psycopg import sql

from benchmarks.backends import Backend, Place, PostgresBackend, SQLiteBackend
from benchmarks.ev import EventVault
from benchmarks.model import REGISTRY, Deposited, Opened, account_args, deposit_args
from benchmarks.plan import Plan, Stopwatch, Timing
from benchmarks.results import Results, TargetResult
from benchmarks.runner import Config
from eventvault import open_store
from eventvault._ids import uuid7

__all__ = ["run_growth"]

_CHUNK: Final = 50_000  # rows per bulk transaction
_MB: Final = 1024 * 1024
_encoder = msgspec.json.Encoder(decimal_format="string")


def rss_bytes() -> int:
    """This process's resident set size."""
    with Path("/proc/self/status").open(encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _rows(first: int, last: int, per_account: int) -> Iterator[tuple[str, int, str, bytes]]:
    """(stream id, version, event type, JSON) of accounts ``first`` .. ``last - 1``, in W1's order."""
    for i in range(first, last):
        stream = f"bench-{_account_id(i)}"
        a = account_args(i)
        yield stream, 1, "BenchOpened", _encoder.encode(Opened(a.owner_name, a.currency, a.branch, a.note))
        for k in range(1, per_account):
            d = deposit_args(i, k)
            data = _encoder.encode(Deposited(d.amount, d.description, d.reference, d.channel))
            yield stream, k + 1, "BenchDeposited", data


def _account_id(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


class _Bulk:
    """Fills eventvault's tables directly, in large transactions."""

    def __init__(self, backend: Backend, place: Place) -> None:
        self.backend = backend
        self.place = place

    def add(self, first: int, last: int, per_account: int) -> None:
        rows = _rows(first, last, per_account)
        while True:
            chunk = [r for _, r in zip(range(_CHUNK), rows, strict=False)]
            if not chunk:
                break
            if isinstance(self.backend, SQLiteBackend):
                self._sqlite(chunk)
            else:
                self._postgres(chunk)
        self._settle()

    def _settle(self) -> None:
        """Leave the database as steady use would: WAL checkpointed, tables vacuumed and analysed.

        A store that grew to this size over time was checkpointed (SQLite) and
        vacuumed (PostgreSQL's autovacuum) along the way; without this, the
        first measured appends would pay for checkpointing the whole bulk load.
        """
        if isinstance(self.backend, SQLiteBackend):
            conn = self.backend.connect(self.place)
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                conn.close()
            return
        assert isinstance(self.backend, PostgresBackend)  # noqa: S101
        assert self.place.schema is not None  # noqa: S101
        with self.backend.connect() as pg:
            for table in ("events", "streams"):
                pg.execute(
                    sql.SQL("VACUUM ANALYZE {}.{}").format(
                        sql.Identifier(self.place.schema), sql.Identifier(table)
                    )
                )
            pg.execute("CHECKPOINT")

    def _sqlite(self, chunk: list[tuple[str, int, str, bytes]]) -> None:
        assert isinstance(self.backend, SQLiteBackend)  # noqa: S101
        conn = self.backend.connect(self.place)
        try:
            now = time.time_ns() // 1000
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO events (event_id, stream_id, stream_version, event_type, schema_version, "
                "occurred_at, recorded_at, data, metadata) VALUES (?, ?, ?, ?, 1, ?, ?, ?, NULL)",
                ((uuid7().bytes, s, v, t, now, now, d) for s, v, t, d in chunk),
            )
            conn.execute("COMMIT")
        finally:
            conn.close()

    def _postgres(self, chunk: list[tuple[str, int, str, bytes]]) -> None:
        assert isinstance(self.backend, PostgresBackend)  # noqa: S101
        assert self.place.schema is not None  # noqa: S101
        s = sql.Identifier(self.place.schema)
        now = time.time_ns() // 1000
        with self.backend.connect(autocommit=False) as conn, conn.cursor() as cur:
            events = sql.SQL(
                "COPY {s}.events (event_id, stream_id, stream_version, event_type, schema_version, "
                "occurred_us, recorded_us, data, metadata) FROM STDIN"
            ).format(s=s)
            with cur.copy(events) as copy:
                for stream, version, kind, data in chunk:
                    copy.write_row((uuid7(), stream, version, kind, 1, now, now, data, b"{}"))
            last = {stream: version for stream, version, _, _ in chunk}
            streams = sql.SQL(
                "INSERT INTO {s}.streams (stream_id, version) SELECT * FROM unnest(%s::text[], %s::int8[]) "
                "ON CONFLICT (stream_id) DO UPDATE SET version = excluded.version"
            ).format(s=s)
            cur.execute(streams, (list(last), list(last.values())))
            conn.commit()


async def _read_all_measured(url: str, page: int) -> dict[str, float]:
    """Read and decode the whole log at ``url``; the count, the seconds and the peak RSS growth."""
    store = await open_store(url, registry=REGISTRY)
    watch = Stopwatch()
    n = 0
    try:
        await store.head()  # connected, threads started: the baseline includes the store itself
        gc.collect()
        before = peak = rss_bytes()
        with watch.running():
            async for e in store.iter_all(batch=page):
                e.data  # noqa: B018 - decoding is the work measured
                n += 1
                if n % page == 0:
                    peak = max(peak, rss_bytes())
        peak = max(peak, rss_bytes())
    finally:
        await store.close()
    return {"count": n, "seconds": watch.seconds, "growth": peak - before}


def _read_everything(ev: EventVault, place: Place, page: int) -> tuple[Timing, int]:
    """Read the whole log in a process of its own: this one's memory holds the bulk load's leftovers."""
    out = subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "benchmarks.growth", ev.backend.ev_url(place), str(page)],
        capture_output=True,
        check=False,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if out.returncode != 0:
        raise RuntimeError(f"reading the whole log failed:\n{out.stderr[-3000:]}")
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    return Timing(int(measured["count"]), float(measured["seconds"])), int(measured["growth"])


def _sample(accounts: int, size: int) -> list[int]:
    """``size`` account numbers spread evenly over ``accounts``."""
    step = max(1, accounts // size)
    return list(range(0, accounts, step))[:size]


def _expected(numbers: list[int], per_account: int) -> Decimal:
    return sum((deposit_args(i, k).amount for i in numbers for k in range(1, per_account)), Decimal(0))


def run_growth(backend: Backend, config: Config, results: Results, log: Any) -> None:
    """Measure W1 and W3 on a store of the baseline size and on one of the large size, then read everything.

    The two stores exist side by side and every run measures both, one right after
    the other (alternating which goes first), so that the drift of a shared
    machine falls on both sides of the ratio alike.
    """
    sizes = config.sizes
    per_account = sizes.events_per_account
    ev = EventVault(backend, sizes)
    name = backend.name
    places = {"baseline": backend.new_place("growth_base"), "large": backend.new_place("growth_large")}
    accounts = {
        "baseline": sizes.growth_baseline // per_account,
        "large": sizes.growth_events // per_account,
    }
    try:
        for label, place in places.items():
            ev.prepare(place)
            started = time.perf_counter()
            _Bulk(backend, place).add(0, accounts[label], per_account)
            log(
                f"[{name}] growth: {accounts[label] * per_account:,} events stored in bulk "
                f"({time.perf_counter() - started:.1f} s)"
            )
        samples = {label: _sample(n, sizes.growth_accounts * 10) for label, n in accounts.items()}
        expected = {label: _expected(sample, per_account) for label, sample in samples.items()}
        measured: dict[str, dict[str, list[float]]] = {"W1": {}, "W3": {}}
        next_account = 10_000_000
        for run in range(config.runs):
            order = ["baseline", "large"] if run % 2 == 0 else ["large", "baseline"]
            for label in order:
                place = places[label]
                plan = Plan.make(sizes.growth_accounts, per_account, first=next_account)
                next_account += sizes.growth_accounts
                w1, _ = ev.write(place, plan, per_event=True)
                w3, total = ev.load_each(place, [_account_id(i) for i in samples[label]])
                if total != expected[label]:
                    raise RuntimeError(
                        f"growth W3 loaded a balance total of {total}, expected {expected[label]}"
                    )
                measured["W1"].setdefault(label, []).append(w1.rate)
                measured["W3"].setdefault(label, []).append(w3.rate)
                log(
                    f"[{name}] growth {label:<8} ({accounts[label] * per_account:,} events) run {run + 1}: "
                    f"W1 {w1.rate:,.1f} events/s, W3 {w3.rate:,.1f} aggregates/s"
                )
        for workload, unit in (("W1", "events/s"), ("W3", "aggregates/s")):
            base, large = measured[workload]["baseline"], measured[workload]["large"]
            ratio = statistics.median(b / a for a, b in zip(base, large, strict=True))
            results.add_check(
                {
                    "check": "growth",
                    "backend": name,
                    "workload": workload,
                    "unit": unit,
                    "baseline_events": sizes.growth_baseline,
                    "baseline": round(statistics.median(base), 3),
                    "events": sizes.growth_events,
                    "rate": round(statistics.median(large), 3),
                    "ratio": round(ratio, 3),
                },
                TargetResult(
                    f"{workload} at {sizes.growth_events:,} / at {sizes.growth_baseline:,} events",
                    name,
                    ratio,
                    0.8,
                ),
            )
        timing, growth = _read_everything(ev, places["large"], sizes.page)
        log(
            f"[{name}] growth: read and decoded {timing.count:,} events in {timing.seconds:.1f} s "
            f"({timing.rate:,.0f} events/s); RSS grew {growth / _MB:.1f} MB"
        )
        results.add_check(
            {
                "check": "memory",
                "backend": name,
                "events": timing.count,
                "seconds": round(timing.seconds, 3),
                "rss_growth_mb": round(growth / _MB, 3),
            },
            TargetResult(f"RSS growth reading {timing.count:,} events (MB)", name, growth / _MB, 50, "<"),
        )
    finally:
        if not config.keep:
            for place in places.values():
                backend.drop(place)


if __name__ == "__main__":
    # python -m benchmarks.growth URL PAGE: the memory check's reader, in a fresh process.
    sys.stdout.write(json.dumps(asyncio.run(_read_all_measured(sys.argv[1], int(sys.argv[2])))) + "\n")
