"""A projection worker process for the crash and scale-out tests, and the helpers that check its work.

Run ``python tests/projection_worker.py STORE_URL [--read-models URL] [--worker-id ID]
[--lease S] [--partitions N] [--batch N] [--pace S] [--stop-at POSITION]``: it runs the ``sums``
projection until SIGTERM (a clean stop) or SIGKILL (the point of the tests). ``--stop-at``
makes the worker stop itself (SIGSTOP) once, in the handler of the event at that position:
inside its batch transaction, after the batch fenced its partitions; SIGCONT resumes it there.

The projection is written to catch mistakes, not to be a model: ``sums`` adds
without any guard (a replayed event would count twice), and ``applied`` has the
event id as primary key, so applying an event twice fails the handler loudly
(the projection stops with the error in its status) instead of passing
unnoticed. Each ``applied`` row records the worker and the partition's fencing
token of the transaction that applied it.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eventvault import EventRegistry, EventStore, StoreError, event, open_store
from eventvault.projections import (
    Projection,
    ProjectionRunner,
    ReadModels,
    Session,
    handles,
    open_read_models,
    partition_of,
)
from eventvault.store.records import START, Checkpoint, RecordedEvent
from eventvault.testing import DEADLINE, eventually_async

REGISTRY = EventRegistry()


@event("crash.Added", registry=REGISTRY)
@dataclass(frozen=True, slots=True)
class Added:
    """An amount added to a stream's total."""

    n: int


class Sums(Projection):
    """Totals per stream, and a row per applied event (see the module docstring)."""

    name = "sums"
    tables = ("sums", "applied")
    schema = (
        "CREATE TABLE {sums} (stream TEXT PRIMARY KEY, total BIGINT NOT NULL, events BIGINT NOT NULL)",
        (
            "CREATE TABLE {applied} (event_id TEXT PRIMARY KEY, position BIGINT NOT NULL, "
            "stream TEXT NOT NULL, part INTEGER NOT NULL, worker TEXT NOT NULL, token BIGINT NOT NULL)"
        ),
    )

    def __init__(self, worker: str, pace: float = 0.0, stop_at: int = 0) -> None:
        self.worker = worker
        self.pace = pace
        self.stop_at = stop_at

    @handles(Added)
    def _added(self, db: Session, e: RecordedEvent) -> None:
        if self.stop_at and e.position == self.stop_at:
            self.stop_at = 0  # once: a retry of the batch after SIGCONT runs on
            # To this thread: it stops before its next instruction. Sent to the process,
            # another thread may take the signal, and this one would run on for a moment
            # (long enough, on a busy machine, to finish and commit the batch).
            signal.pthread_kill(threading.get_ident(), signal.SIGSTOP)
        if self.pace:
            # Stands for a handler with real work to do, so that most of a worker's
            # time is spent inside batches, where the kills should land.
            time.sleep(self.pace)
        part = partition_of(e.stream_id, self.partitions)
        # The fencing token this batch runs under: the batch locked (PostgreSQL) or
        # write-locked (SQLite) this row first, so it cannot change before the commit.
        row = db.fetchone(
            "SELECT token FROM ev_partition WHERE name = ? AND generation = ? AND part = ?",
            (self.name, db.generation, part),
        )
        assert row is not None
        db.execute(
            "INSERT INTO {applied} (event_id, position, stream, part, worker, token) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (str(e.event_id), e.position, e.stream_id, part, self.worker, row[0]),
        )
        db.execute(
            "INSERT INTO {sums} (stream, total, events) VALUES (?, ?, 1) ON CONFLICT (stream) "
            "DO UPDATE SET total = {sums}.total + excluded.total, events = {sums}.events + 1",
            (e.stream_id, e.data.n),
        )


def sums_class(partitions: int, batch: int) -> type[Sums]:
    """Sums with this many partitions and this batch size (the same in every process of a test)."""
    return type("Sums", (Sums,), {"partitions": partitions, "batch_size": batch, "__module__": __name__})


# -- checks, for the tests ------------------------------------------------------------------


async def expected_from_log(store: EventStore) -> tuple[dict[str, tuple[int, int]], set[str]]:
    """The sums table and the applied event ids, computed from the log itself."""
    totals: Counter[str] = Counter()
    counts: Counter[str] = Counter()
    ids: set[str] = set()
    async for e in store.iter_all(event_types=["crash.Added"]):
        totals[e.stream_id] += e.data.n
        counts[e.stream_id] += 1
        ids.add(str(e.event_id))
    return {s: (totals[s], counts[s]) for s in totals}, ids


def read_model(db: ReadModels) -> tuple[dict[str, tuple[int, int]], set[str]]:
    """The sums table and the applied event ids, as the read model holds them."""
    sums = {str(s): (int(t), int(n)) for s, t, n in db.query("SELECT stream, total, events FROM sums")}
    applied = [str(r[0]) for r in db.query("SELECT event_id FROM applied")]
    assert len(applied) == len(set(applied))
    return sums, set(applied)


def checkpoint(db: ReadModels) -> Checkpoint:
    """Where every partition of the serving generation is (START before the first batch)."""
    try:
        rows = db.query(
            "SELECT p.cp_tx, p.cp_pos FROM ev_partition p JOIN ev_projection j "
            "ON j.name = p.name AND j.generation = p.generation WHERE p.name = 'sums' "
            "ORDER BY p.cp_tx, p.cp_pos LIMIT 1"
        )
    except StoreError:
        return START  # the worker has not created its tables yet
    return Checkpoint(int(rows[0][0]), int(rows[0][1])) if rows else START


def recorded_errors(db: ReadModels) -> list[str]:
    """Failures recorded for ``sums`` (a double apply would be one)."""
    try:
        return [str(r[0]) for r in db.query("SELECT error FROM ev_partition WHERE error IS NOT NULL")]
    except StoreError:
        return []


class Worker:
    """One run of this script as a process; its stderr goes to ``log``."""

    def __init__(self, log: Path, *args: str) -> None:
        self.log = log
        with log.open("ab") as err:
            self.proc = subprocess.Popen(  # noqa: S603 - this script, the test's arguments
                [sys.executable, __file__, *args], stdout=subprocess.DEVNULL, stderr=err
            )

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind runs in the worker."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> int:
        """SIGTERM: a clean stop (leases given back); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)

    def assert_alive(self) -> None:
        """Fail with the worker's stderr if it died on its own."""
        if self.proc.poll() is not None:
            raise AssertionError(f"a worker exited with {self.proc.returncode}:\n{self.log.read_text()}")


async def progress_past(
    db: ReadModels, position: int, workers: list[Worker], *, within: float = DEADLINE
) -> int:
    """Poll the checkpoint rows until every partition passed ``position``; return the position then.

    Fails at once if the projection recorded an error or a worker died.
    """

    async def probe() -> int:
        now = (await asyncio.to_thread(checkpoint, db)).position
        if now > position:
            return now
        errors = await asyncio.to_thread(recorded_errors, db)
        if errors:
            raise AssertionError(f"the projection failed: {errors}")
        for w in workers:
            w.assert_alive()
        return now

    # A bounded poll of other processes' progress, never a way to order our own tasks.
    return await eventually_async(
        probe, lambda now: now > position, within=within, what=f"progress past {position}"
    )


async def kill_repeatedly(
    db: ReadModels,
    args: Sequence[str],
    *,
    log: Path,
    kills: int,
    head: int,
    rng: random.Random,
    jitter: float,
) -> tuple[int, int]:
    """Start the worker, SIGKILL it at a random moment after some progress, again and again.

    Each run must get a random part of the way left (so the last kill still
    lands before the end). Progress is seen at batch commits, so the kill then
    waits a random ``jitter`` more: that picks its instant inside the next
    batch or between two transactions; it orders nothing. Returns the kills
    made and where the projection was at the end.
    """
    seen = 0
    made = 0
    while made < kills and seen < head - 1:
        step = max(1, (head - seen) // (kills - made + 1))
        worker = Worker(log, *args)
        try:
            seen = await progress_past(db, min(head - 1, seen + rng.randint(1, step)), [worker])
            await asyncio.sleep(rng.uniform(0, jitter))
        finally:
            worker.kill()
        made += 1
    return made, (await asyncio.to_thread(checkpoint, db)).position


# -- the process -------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    """Run the projection until SIGTERM."""
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    cls = sums_class(args.partitions, args.batch)
    async with open_store(args.store_url, registry=REGISTRY) as store:
        options: dict[str, Any] = {}
        if args.read_models:
            options["read_models"] = open_read_models(args.read_models)
        runner = ProjectionRunner(
            store,
            [cls(args.worker_id, args.pace, args.stop_at)],
            worker_id=args.worker_id,
            lease_seconds=args.lease,
            idle_wait=0.2,
            **options,
        )
        async with runner:
            await stop.wait()


def main() -> None:
    """Parse the command line and run."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("store_url")
    parser.add_argument("--read-models", default="")
    parser.add_argument("--worker-id", default="worker")
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--pace", type=float, default=0.0, help="seconds of work per event")
    parser.add_argument("--stop-at", type=int, default=0, help="SIGSTOP itself at this event's position")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
