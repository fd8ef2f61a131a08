"""Runs the workloads: every contender, every run, one backend after the other.

Within a run of a workload the contenders take turns in an order that rotates
from run to run, so that a slow moment of a shared machine does not always
fall on the same one. Each writing run starts on fresh, empty places; reading
workloads (W3, W4, W6) read the data the first W1 run wrote, and the limit
reads eventvault's copy of it (the same schema, the same rows).

The second peer (Python Event Sourcery, ``benchmarks.sourcery``) runs where its
package is installed (the ``bench`` extra); without it its column stays empty.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TextIO

from benchmarks.backends import Backend, Place, PostgresBackend, commit_latency
from benchmarks.dcb import DCBContender, EvDCB, PeerDCB, explain_condition, latency_ms, new_tag
from benchmarks.ev import EventVault
from benchmarks.http import percentile, run_http, run_wrk_only
from benchmarks.limit import Limit
from benchmarks.peer import Peer
from benchmarks.plan import Plan, Sizes, Timing
from benchmarks.results import Results
from benchmarks.wrk import WrkResult

try:
    from benchmarks.sourcery import Sourcery
except ImportError as exc:  # the optional second peer is not installed
    Sourcery = None  # type: ignore[assignment,misc]
    SOURCERY_MISSING: str | None = f"{exc}"
else:
    SOURCERY_MISSING = None

__all__ = ["DEFAULT_WORKLOADS", "SOURCERY_MISSING", "WORKLOADS", "Config", "run_backend"]

DEFAULT_WORKLOADS: Final = ("W1", "W2", "W3", "W4", "W5", "W6", "W7", "W8")
"""The workloads a run does unless told (W9, conditional appends at 1,000,000 events, is asked for)."""
WORKLOADS: Final = (*DEFAULT_WORKLOADS, "W9")
_NEEDS_DATA: Final = frozenset({"W3", "W4", "W6"})


@dataclass(frozen=True, slots=True)
class Config:
    """What one benchmark run does."""

    sizes: Sizes = field(default_factory=Sizes)
    workloads: tuple[str, ...] = DEFAULT_WORKLOADS
    runs: int = 3
    workdir: Path = Path()
    keep: bool = False
    growth: bool = False
    wrk: str | None = None
    """The wrk program for W8's second load (None: the harness's own client only)."""
    second_peer: bool = True
    """Run the second peer where it is installed (it is the slowest writer by far)."""


class _Log:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def __call__(self, message: str) -> None:
        self.out.write(message + "\n")
        self.out.flush()


@dataclass(slots=True)
class _Dataset:
    """W1's first run: what W3, W4 and W6 read."""

    ev_place: Place
    ev_ids: list[Any]
    peer_place: Place
    peer_ids: list[Any]
    sourcery_place: Place | None
    sourcery_ids: list[Any]


def _rotate(items: Sequence[Any], run: int) -> list[Any]:
    k = run % len(items)
    return [*items[k:], *items[:k]]


def _expected_total(plan: Plan) -> Decimal:
    return sum((d.amount for deposits in plan.deposits for d in deposits), Decimal(0))


def _same(what: str, values: dict[str, Any]) -> None:
    """The contenders did the same work: their results agree."""
    distinct = {repr(v) for v in values.values()}
    if len(distinct) > 1:
        raise RuntimeError(f"{what}: the contenders disagree: {values}")


class _BackendRun:
    def __init__(self, backend: Backend, config: Config, results: Results, log: _Log) -> None:
        self.backend = backend
        self.config = config
        self.sizes = config.sizes
        self.results = results
        self.log = log
        self.ev = EventVault(backend, self.sizes)
        self.peer = Peer(backend, self.sizes)
        self.sourcery = None if Sourcery is None or not config.second_peer else Sourcery(backend, self.sizes)
        self.limit = Limit(backend, self.sizes, self.ev.prepare)
        self.plan = Plan.make(self.sizes.accounts, self.sizes.events_per_account)
        self.dataset: _Dataset | None = None
        self._places: list[Place] = []

    def record(self, workload: str, unit: str, contender: str, timing: Timing, run: int) -> None:
        self.results.add(workload, self.backend.name, unit, contender, timing.rate)
        self.log(
            f"[{self.backend.name}] {workload:<12} run {run + 1}/{self.config.runs} {contender:<10} "
            f"{timing.rate:>12,.1f} {unit:<14} ({timing.count} in {timing.seconds:.2f} s)"
        )

    def fresh(self, label: str) -> Place:
        place = self.backend.new_place(label)
        self._places.append(place)
        return place

    def discard(self, place: Place) -> None:
        if not self.config.keep:
            self.backend.drop(place)
            self._places.remove(place)

    def writers(self) -> list[Any]:
        """The contenders that write, in their base order."""
        return [c for c in (self.ev, self.peer, self.sourcery, self.limit) if c is not None]

    def readers(self) -> tuple[str, ...]:
        """The contenders that read W1's data, by name."""
        return tuple(c.name for c in self.writers())

    def cleanup(self) -> None:
        if not self.config.keep:
            for place in list(self._places):
                self.backend.drop(place)
            self._places.clear()

    # -- the workloads --------------------------------------------------------------------

    def w1_w2(self, workload: str, *, per_event: bool) -> None:
        record = workload in self.config.workloads
        runs = self.config.runs if record else 1
        for run in range(runs):
            ids: dict[str, Any] = {}
            places: dict[str, Place] = {}
            for contender in _rotate(self.writers(), run):
                if not record and contender is self.limit:
                    continue  # only building W3's data
                place = self.fresh(f"{workload.lower()}_{contender.name}")
                timing, ids[contender.name] = contender.write(place, self.plan, per_event=per_event)
                places[contender.name] = place
                if contender is self.limit:
                    _same(
                        f"{workload} rows the limit wrote",
                        {
                            "limit": self.limit.written(place),
                            "expected": (self.plan.events, _expected_total(self.plan)),
                        },
                    )
                if record:
                    self.record(workload, "events/s", contender.name, timing, run)
            keep_data = per_event and self.dataset is None
            if keep_data:
                self.dataset = _Dataset(
                    places["eventvault"],
                    ids["eventvault"],
                    places["peer"],
                    ids["peer"],
                    places.get("sourcery"),
                    ids.get("sourcery", []),
                )
            for name, place in places.items():
                if not (keep_data and name in ("eventvault", "peer", "sourcery")):
                    self.discard(place)

    def data(self) -> _Dataset:
        if self.dataset is None:
            self.w1_w2("W1", per_event=True)
        assert self.dataset is not None  # noqa: S101 - W1 made it
        return self.dataset

    def w3(self) -> None:
        d = self.data()
        expected = _expected_total(self.plan)
        for run in range(self.config.runs):
            totals: dict[str, Any] = {}
            for contender in _rotate(self.readers(), run):
                if contender == "eventvault":
                    timing, totals[contender] = self.ev.load_each(d.ev_place, d.ev_ids)
                elif contender == "peer":
                    timing, totals[contender] = self.peer.load_each(d.peer_place, d.peer_ids)
                elif contender == "sourcery":
                    assert self.sourcery is not None  # noqa: S101 - named only when installed
                    assert d.sourcery_place is not None  # noqa: S101 - W1 wrote it
                    timing, totals[contender] = self.sourcery.load_each(d.sourcery_place, d.sourcery_ids)
                else:
                    streams = [f"bench-{aid}" for aid in d.ev_ids]
                    timing, totals[contender] = self.limit.load_each(d.ev_place, streams)
                self.record("W3", "aggregates/s", contender, timing, run)
            _same("W3 sum of balances", {**totals, "expected": expected})

    def w4(self) -> None:
        d = self.data()
        for run in range(self.config.runs):
            counts: dict[str, Any] = {}
            for contender in _rotate(self.readers(), run):
                if contender == "eventvault":
                    timing, counts[contender] = self.ev.read_log(d.ev_place)
                elif contender == "peer":
                    timing, counts[contender] = self.peer.read_log(d.peer_place)
                elif contender == "sourcery":
                    assert self.sourcery is not None  # noqa: S101
                    assert d.sourcery_place is not None  # noqa: S101
                    timing, counts[contender] = self.sourcery.read_log(d.sourcery_place, self.plan.events)
                else:
                    timing, counts[contender] = self.limit.read_log(d.ev_place)
                self.record("W4", "events/s", contender, timing, run)
            _same("W4 events read", {**counts, "expected": self.plan.events * self.sizes.log_reads})

    def w5(self) -> None:
        n = self.sizes.long_stream
        ev_place, peer_place = self.fresh("w5_eventvault"), self.fresh("w5_peer")
        self.log(f"[{self.backend.name}] W5: writing a stream of {n:,} events for each contender")
        ev_id = self.ev.build_long(ev_place, n)
        peer_id = self.peer.build_long(peer_place, n)
        sourcery_place = self.fresh("w5_sourcery") if self.sourcery is not None else None
        sourcery_id = None
        if self.sourcery is not None and sourcery_place is not None:
            sourcery_id = self.sourcery.build_long(sourcery_place, n)
        for snapshot in (False, True):
            workload = "W5 snapshot" if snapshot else "W5"
            loads = self.sizes.long_loads * (100 if snapshot else 1)
            for run in range(self.config.runs):
                outcomes: dict[str, Any] = {}
                for contender in _rotate(self.readers(), run):
                    if contender == "eventvault":
                        timing, state = self.ev.load_long(ev_place, ev_id, loads, snapshot=snapshot)
                    elif contender == "peer":
                        timing, state = self.peer.load_long(peer_place, peer_id, loads, snapshot=snapshot)
                    elif contender == "sourcery":
                        assert self.sourcery is not None  # noqa: S101
                        assert sourcery_place is not None  # noqa: S101
                        assert sourcery_id is not None  # noqa: S101
                        timing, state = self.sourcery.load_long(
                            sourcery_place, sourcery_id, loads, snapshot=snapshot
                        )
                    else:
                        timing, state = self.limit.load_long(
                            ev_place, f"bench-{ev_id}", loads, snapshot=snapshot
                        )
                    outcomes[contender] = (int(state[0]), Decimal(str(state[1])))
                    self.record(workload, "loads/s", contender, timing, run)
                _same(f"{workload} version and balance", outcomes)
        self.discard(ev_place)
        self.discard(peer_place)
        if sourcery_place is not None:
            self.discard(sourcery_place)

    def w6(self) -> None:
        d = self.data()
        cents = int(_expected_total(self.plan).scaleb(2))
        for run in range(self.config.runs):
            totals: dict[str, Any] = {}
            for contender in _rotate(("eventvault", "limit"), run):
                suffix = f"{contender[0]}{run}"
                if contender == "eventvault":
                    timing, totals[contender] = self.ev.project(d.ev_place, suffix, self.plan.events)
                else:
                    timing, totals[contender] = self.limit.project(d.ev_place, suffix, self.plan.events)
                totals[contender] = tuple(int(x) for x in totals[contender])
                self.record("W6", "events/s", contender, timing, run)
            _same("W6 read model", {**totals, "expected": (self.sizes.accounts, cents)})

    def w7(self) -> None:
        plan = Plan.make(self.sizes.writers, self.sizes.appends_per_writer, first=1_000_000)
        for run in range(self.config.runs):
            for contender in _rotate(self.writers(), run):
                place = self.fresh(f"w7_{contender.name}")
                timing = contender.concurrent(place, plan)
                self.record("W7", "events/s", contender.name, timing, run)
                self.discard(place)

    def w8(self) -> None:
        for run in range(self.config.runs):
            place = self.fresh("w8")
            log = self.config.workdir / f"w8-{self.backend.name}-{run}.log"
            result = run_http(
                self.backend.ev_url(place),
                self.sizes.clients,
                self.sizes.requests_per_client,
                log,
                noop_first=run % 2 == 1,
                wrk=self.config.wrk,
                wrk_seconds=self.sizes.wrk_seconds,
            )
            self.record("W8", "requests/s", "eventvault", result.deposits, run)
            self.record("W8", "requests/s", "limit", result.noop, run)
            for name, q in (("W8 p50", 0.5), ("W8 p99", 0.99)):
                for contender, timing in (("eventvault", result.deposits), ("limit", result.noop)):
                    ms = percentile(timing.latencies, q) * 1000
                    self.results.add(name, self.backend.name, "ms", contender, ms)
            self.log(
                f"[{self.backend.name}] W8 latency     run {run + 1}/{self.config.runs} deposits p50 "
                f"{percentile(result.deposits.latencies, 0.5) * 1000:.1f} ms p99 "
                f"{percentile(result.deposits.latencies, 0.99) * 1000:.1f} ms; no-op p50 "
                f"{percentile(result.noop.latencies, 0.5) * 1000:.1f} ms p99 "
                f"{percentile(result.noop.latencies, 0.99) * 1000:.1f} ms"
            )
            if result.wrk_deposits is not None and result.wrk_noop is not None:
                self._record_wrk("W8 wrk", result.wrk_deposits, result.wrk_noop, run)
            self.discard(place)
            if self.config.wrk is not None:
                self._w8_workers(self.config.wrk, run)

    def _w8_workers(self, wrk: str, run: int) -> None:
        """W8 under wrk, the projections in the server's own worker process (on SQLite, in a file apart).

        The layout docs/scaling.md gives for the most commands per second from
        one server: ``serve --projection-workers 1``, and on SQLite the read
        models in a file of their own (``?read_models=``), so that the worker's
        batches never wait for the log's lock, nor the log's appends for theirs.
        """
        place = self.fresh("w8_workers")
        # On SQLite a second place of the run's: a file beside the store's, dropped as places are.
        apart = self.fresh("w8_read_models") if place.path is not None else None
        options = {} if apart is None or apart.path is None else {"read_models": apart.path.name}
        url = self.backend.ev_url(place, **options)
        deposits, noop = run_wrk_only(
            url,
            self.sizes.clients,
            self.config.workdir / f"w8-workers-{self.backend.name}-{run}.log",
            ("--projection-workers", "1"),
            wrk=wrk,
            wrk_seconds=self.sizes.wrk_seconds,
            noop_first=run % 2 == 1,
        )
        self._record_wrk("W8 wrk workers", deposits, noop, run)
        self.discard(place)
        if apart is not None:
            self.discard(apart)

    def w9(self) -> None:
        """Conditional appends at two stored sizes; the peer (eventsourcing's DCB recorder) on PostgreSQL."""
        ev_place = self.fresh("w9_eventvault")
        contenders: list[DCBContender] = [EvDCB(self.backend, ev_place)]
        if isinstance(self.backend, PostgresBackend):
            contenders.append(PeerDCB(self.backend))
        try:
            stored = 0
            appended = 0
            for size in (self.sizes.dcb_baseline, self.sizes.dcb_events):
                for c in contenders:
                    c.seed(stored, max(stored, size))
                stored = max(stored, size)
                label = f"W9 {_short(stored)}"
                plan = explain_condition(self.backend, ev_place, new_tag(0, 0), stored // 2)
                self.log(
                    f"[{self.backend.name}] {label} condition check: tag index "
                    f"{'used' if plan['uses_tag_index'] else 'NOT USED'}, "
                    f"{'PARALLEL, ' if plan['parallel'] else ''}{plan['execution_ms']} ms"
                )
                check = {
                    "check": "dcb_condition_plan",
                    "backend": self.backend.name,
                    "stored": stored,
                    **plan,
                }
                self.results.add_check(check)
                for run in range(self.config.runs):
                    for c in _rotate(contenders, run):
                        timing = c.decide(appended + run, self.sizes.dcb_appends)
                        self.record(label, "appends/s", c.name, timing, run)
                        for suffix, q in (("p50", 0.5), ("p99", 0.99)):
                            self.results.add(
                                f"{label} {suffix}", self.backend.name, "ms", c.name, latency_ms(timing, q)
                            )
                appended += self.config.runs
            total = stored + appended * self.sizes.dcb_appends
            _same("W9 events stored", {**{c.name: c.stored() for c in contenders}, "expected": total})
            _same(
                "W9 repeated decision fails",
                {c.name: c.conflicts(new_tag(0, 0)) for c in contenders} | {"expected": True},
            )
        finally:
            for c in contenders:
                c.close()

    def _record_wrk(self, workload: str, deposits: WrkResult, noop: WrkResult, run: int) -> None:
        for contender, r in (("eventvault", deposits), ("limit", noop)):
            self.record(workload, "requests/s", contender, Timing(r.requests, r.seconds), run)
            self.results.add(f"{workload} p50", self.backend.name, "ms", contender, r.p50_ms)
            self.results.add(f"{workload} p99", self.backend.name, "ms", contender, r.p99_ms)
        self.log(
            f"[{self.backend.name}] {workload} latency run {run + 1}/{self.config.runs} deposits p50 "
            f"{deposits.p50_ms:.1f} ms p99 {deposits.p99_ms:.1f} ms; no-op p50 {noop.p50_ms:.1f} ms "
            f"p99 {noop.p99_ms:.1f} ms"
        )


def _short(n: int) -> str:
    """20000 -> '20k', 1000000 -> '1M' (the W9 row names)."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


def run_backend(backend: Backend, config: Config, results: Results, out: TextIO = sys.stderr) -> None:
    """Run the configured workloads on ``backend``, adding every measurement to ``results``."""
    log = _Log(out)
    run = _BackendRun(backend, config, results, log)
    steps: dict[str, Callable[[], None]] = {
        "W1": lambda: run.w1_w2("W1", per_event=True),
        "W2": lambda: run.w1_w2("W2", per_event=False),
        "W3": run.w3,
        "W4": run.w4,
        "W5": run.w5,
        "W6": run.w6,
        "W7": run.w7,
        "W8": run.w8,
        "W9": run.w9,
    }

    def probe(when: str) -> None:
        latency = commit_latency(backend)
        log(
            f"[{backend.name}] raw commit latency {when}: "
            f"p50 {latency['p50_ms']} ms, p90 {latency['p90_ms']} ms"
        )
        results.add_check({"check": "commit_latency", "backend": backend.name, "when": when, **latency})

    try:
        probe("before")
        for workload in WORKLOADS:
            if workload in config.workloads:
                steps[workload]()
        if config.growth:
            from benchmarks.growth import run_growth  # noqa: PLC0415

            run_growth(backend, config, results, log)
        probe("after")
    finally:
        run.cleanup()
