"""Sizes, the data every contender writes, and what one measurement is."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from benchmarks.model import AccountArgs, DepositArgs, account_args, deposit_args

__all__ = ["Plan", "Sizes", "Stopwatch", "Timing"]


@dataclass(frozen=True, slots=True)
class Sizes:
    """How much each workload does. The defaults are DESIGN.md §10's."""

    accounts: int = 2000
    """W1-W4, W6: accounts written, loaded and projected."""
    events_per_account: int = 10
    """The open and the deposits of each account."""
    long_stream: int = 10_000
    """W5: events in the one long stream."""
    long_loads: int = 5
    """W5: times the long aggregate is loaded (without a snapshot; 100x that with one)."""
    page: int = 1000
    """W4: events per page of the global log."""
    log_reads: int = 5
    """W4: times the whole log is read per measurement (one read of 20,000 events is too short to time)."""
    projection_batch: int = 500
    """W6: events per read-model transaction (eventvault's default batch)."""
    writers: int = 32
    """W7: concurrent writers."""
    appends_per_writer: int = 100
    """W7: appends (one event each) by each writer."""
    clients: int = 32
    """W8: concurrent HTTP clients."""
    requests_per_client: int = 50
    """W8: requests each client sends, per endpoint."""
    wrk_seconds: int = 10
    """W8 with wrk: seconds each endpoint is under wrk's load."""
    growth_events: int = 1_000_000
    """Cost growth: events stored before measuring again."""
    growth_baseline: int = 20_000
    """Cost growth: events stored for the first measurement."""
    growth_accounts: int = 200
    """Cost growth: accounts W1 writes (and 10x that W3 loads) at each size."""
    dcb_baseline: int = 20_000
    """W9: tagged events stored for the first measurement."""
    dcb_events: int = 1_000_000
    """W9: tagged events stored for the second measurement."""
    dcb_appends: int = 500
    """W9: conditional appends each contender makes per run, at each size."""

    @classmethod
    def tiny(cls) -> Sizes:
        """Sizes for a smoke run: every code path, in seconds."""
        return cls(
            accounts=6,
            events_per_account=3,
            long_stream=40,
            long_loads=2,
            page=4,
            log_reads=1,
            projection_batch=5,
            writers=3,
            appends_per_writer=3,
            clients=2,
            requests_per_client=3,
            wrk_seconds=1,
            growth_events=300,
            growth_baseline=60,
            growth_accounts=3,
            dcb_baseline=40,
            dcb_events=120,
            dcb_appends=5,
        )


@dataclass(slots=True)
class Plan:
    """The commands of W1-W4 and W6: the same arguments for every contender."""

    accounts: list[AccountArgs]
    deposits: list[list[DepositArgs]]

    @classmethod
    def make(cls, accounts: int, events_per_account: int, first: int = 0) -> Plan:
        """Accounts ``first`` .. ``first + accounts - 1``, each with ``events_per_account`` events."""
        return cls(
            [account_args(i) for i in range(first, first + accounts)],
            [
                [deposit_args(i, k) for k in range(1, events_per_account)]
                for i in range(first, first + accounts)
            ],
        )

    @property
    def events(self) -> int:
        """Events the plan writes in all."""
        return len(self.accounts) + sum(len(d) for d in self.deposits)


@dataclass(slots=True)
class Timing:
    """One measurement: ``count`` things done in ``seconds``."""

    count: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    """Seconds per request, when the workload has them (W8)."""

    @property
    def rate(self) -> float:
        """Things per second."""
        return self.count / self.seconds if self.seconds > 0 else float("inf")


class Stopwatch:
    """Times the one block that is the measurement, nothing around it."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @contextmanager
    def running(self) -> Iterator[None]:
        """Time the block."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds += time.perf_counter() - started

    def timing(self, count: int) -> Timing:
        """The measurement of ``count`` things."""
        return Timing(count, self.seconds)
