"""The composition root: one place that wires the store, repository, projections and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from eventvault import Checkpoint, EventStore, Repository, StoreError, StoreUnavailable, open_store
from eventvault.processes import ProcessRunner
from eventvault.projections import ProjectionRunner, ProjectionStatus, ReadModels, read_models_for
from eventvault_ledger.api.problems import PROBLEM_BASE, Problem
from eventvault_ledger.api.settings import Settings

__all__ = ["IdempotencyStore", "Metrics", "Services"]

log = logging.getLogger("eventvault_ledger.api")


@dataclass(frozen=True, slots=True)
class Stored:
    """What an Idempotency-Key has on record."""

    fingerprint: str
    status: int | None
    body: str | None
    headers: dict[str, str]
    media_type: str | None


class IdempotencyStore:
    """Idempotency keys and the first answer given to each, beside the read models.

    Its commits wait for the disk even though the read models' do not: an answer
    is kept before it is sent, and must outlive a crash as the events do.
    """

    def __init__(self, db: ReadModels) -> None:
        self.db = db

    def setup(self) -> None:
        """Create the table. Idempotent."""
        with self.db.transaction() as conn:
            self.db.execute(
                conn,
                "CREATE TABLE IF NOT EXISTS ev_idempotency ("
                " key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, status INTEGER, body TEXT,"
                " headers TEXT, media_type TEXT, created_at DOUBLE PRECISION NOT NULL)",
            )
            self.db.execute(
                conn, "CREATE INDEX IF NOT EXISTS ev_idempotency_created ON ev_idempotency (created_at)"
            )

    def expire(self, before: float) -> int:
        """Forget the keys recorded before ``before`` (seconds since the epoch); how many there were."""
        with self.db.transaction() as conn:
            cur = self.db.execute(conn, "DELETE FROM ev_idempotency WHERE created_at < ?", (before,))
            return max(int(cur.rowcount), 0)

    def claim(self, key: str, fingerprint: str) -> Stored:
        """Record ``key`` for this request unless it is known; return what is on record."""
        with self.db.transaction(durable=True) as conn:
            self.db.execute(
                conn,
                "INSERT INTO ev_idempotency (key, fingerprint, created_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO NOTHING",
                (key, fingerprint, time.time()),
            )
            row = self.db.execute(
                conn,
                "SELECT fingerprint, status, body, headers, media_type FROM ev_idempotency WHERE key = ?",
                (key,),
            ).fetchone()
        return Stored(row[0], row[1], row[2], json.loads(row[3]) if row[3] else {}, row[4])

    def _store(self, key: str, status: int, body: str, headers: dict[str, str], media_type: str) -> None:
        # Durable before the answer is sent, as the event log is: a refusal given
        # once stays the answer to that key after a crash of the database.
        with self.db.transaction(durable=True) as conn:
            self.db.execute(
                conn,
                "UPDATE ev_idempotency SET status = ?, body = ?, headers = ?, media_type = ? "
                "WHERE key = ? AND status IS NULL",
                (status, body, json.dumps(headers), media_type, key),
            )

    def remember(self, key: str, response: JSONResponse) -> None:
        """Keep the answer to give again on a retry.

        The command's events are in the log by now, so failing to keep its answer
        (a full disk, the database gone) must not turn a success into an error:
        it is logged, and a retry of the key runs the command again, which
        lands on the same event ids (derived from the key) and appends nothing.
        """
        keep = {k: v for k, v in response.headers.items() if k.lower() in ("etag", "location")}
        try:
            self._store(key, response.status_code, bytes(response.body).decode(), keep, "application/json")
        except StoreError as exc:
            log.warning("the answer to a keyed command was not kept (a retry finds its events): %s", exc)

    def remember_problem(self, key: str, problem: Problem) -> None:
        """Keep a refusal (a domain error) to give again on a retry."""
        body = {
            "type": PROBLEM_BASE + problem.code,
            "title": problem.title,
            "status": problem.status,
            "detail": problem.detail,
            **problem.extra,
        }
        self._store(key, problem.status, json.dumps(body), {}, "application/problem+json")


class Metrics:
    """Prometheus metrics of one server (its own registry, so tests can make many)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.commands = Counter(
            "eventvault_commands", "Commands handled", ["command", "outcome"], registry=self.registry
        )
        self.command_seconds = Histogram(
            "eventvault_command_seconds",
            "Command latency",
            ["command"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
        )
        self.appends = Counter("eventvault_appends", "Appends to the event store", registry=self.registry)
        self.requests = Histogram(
            "eventvault_http_request_seconds",
            "HTTP request latency",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.lag_events = Gauge(
            "eventvault_projection_lag_events",
            "Events not yet applied",
            ["projection"],
            registry=self.registry,
        )
        self.lag_seconds = Gauge(
            "eventvault_projection_lag_seconds",
            "Age of the oldest event not yet applied",
            ["projection"],
            registry=self.registry,
        )
        self.rate = Gauge(
            "eventvault_projection_events_per_second",
            "Events applied per second",
            ["projection"],
            registry=self.registry,
        )
        self._children: dict[tuple[str, str], tuple[Counter, Histogram]] = {}
        self.failed = Gauge(
            "eventvault_projection_failed",
            "1 if the projection stopped on an error",
            ["projection"],
            registry=self.registry,
        )
        self.pending_events = Gauge(
            "eventvault_store_pending_events",
            "Committed events no reader can see yet: an event writer is still open (PostgreSQL)",
            registry=self.registry,
        )
        self.holder_seconds = Gauge(
            "eventvault_store_horizon_holder_seconds",
            "How long the event writer holding readers back has been open (0: none)",
            registry=self.registry,
        )

    def command(self, command: str, outcome: str, seconds: float) -> None:
        """Count a command and its latency."""
        children = self._children.get((command, outcome))
        if children is None:
            # labels() takes a lock and builds its key on every call: look each pair up once.
            children = self._children[command, outcome] = (
                self.commands.labels(command, outcome),
                self.command_seconds.labels(command),
            )
        children[0].inc()
        children[1].observe(seconds)
        if outcome == "ok":
            self.appends.inc()

    def projections(self, statuses: list[ProjectionStatus]) -> None:
        """Refresh the projection gauges."""
        for s in statuses:
            self.lag_events.labels(s.name).set(s.lag_events)
            self.lag_seconds.labels(s.name).set(s.lag_seconds)
            self.rate.labels(s.name).set(s.events_per_second or 0.0)
            self.failed.labels(s.name).set(1 if s.state == "failed" else 0)
        held = next((s.held_back for s in statuses if s.held_back is not None), None)
        self.pending_events.set(held.pending_events if held else 0)
        self.holder_seconds.set((held.oldest_xact_seconds or 0.0) if held else 0.0)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class Services:
    """The running parts of one server."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.metrics = Metrics()
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self.store: EventStore
        self.repository: Repository
        self.db: ReadModels
        self.runner: ProjectionRunner
        self.idempotency: IdempotencyStore
        self._expiry: asyncio.Task[None] | None = None
        # The sweep's own thread, so that stop() can join it: a deletion still running
        # on a connection when the read models close would crash the process.
        self._sweeper: ThreadPoolExecutor | None = None
        self._stopping = asyncio.Event()
        self.closing = asyncio.Event()
        """Set when the server begins to stop: live streams end at once on it."""
        self._loop: asyncio.AbstractEventLoop | None = None

    def lock_for(self, key: str) -> asyncio.Lock:
        """The in-process lock of one aggregate (commands on it run one at a time here)."""
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

    async def start(self) -> None:
        """Open the store, set up the read side, seed demo data when asked."""
        from eventvault_ledger.read_models import process_managers, projections  # noqa: PLC0415

        self._loop = asyncio.get_running_loop()
        self.store = await open_store(self.settings.db)
        self.repository = Repository(self.store, cache_size=self.settings.account_cache)
        self.db = read_models_for(self.store)
        # Transfers run beside the projections, on the same workers: a ProcessRunner is one.
        self.runner = ProcessRunner(
            self.store,
            process_managers(),
            projections=projections(),
            read_models=self.db,
            repository=self.repository,
        )
        self.idempotency = IdempotencyStore(self.db)
        await asyncio.to_thread(self.idempotency.setup)
        if self.settings.idempotency_ttl > 0:
            self._sweeper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventvault-key-expiry")
            self._expiry = asyncio.create_task(self._expire_keys(self.settings.idempotency_ttl))
        if self.settings.run_projections:
            await self.runner.start()
        else:
            # Workers run elsewhere; queries still need the read-model tables to exist.
            await self.runner.prepare()
        if self.settings.demo:
            from eventvault_ledger.seed import seed_demo  # noqa: PLC0415

            if await seed_demo(self.repository):
                log.info("seeded demo accounts")

    async def _expire_keys(self, ttl: float) -> None:
        """Forget idempotency keys older than ``ttl``, now and every quarter of it (at most hourly)."""
        loop = asyncio.get_running_loop()
        while not self._stopping.is_set():
            try:
                gone = await loop.run_in_executor(self._sweeper, self.idempotency.expire, time.time() - ttl)
            except StoreUnavailable as exc:  # a full disk, the database away: the next round tries again
                log.warning("expiring idempotency keys failed: %s", exc)
            except Exception:  # the next round tries again; requests are unaffected
                log.exception("expiring idempotency keys failed")
            else:
                if gone:
                    log.info("forgot %d idempotency keys older than %gs", gone, ttl)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), min(ttl / 4, 3600.0))

    def begin_stop(self) -> None:
        """The server is about to stop: end live streams now (they would hold the stop up)."""
        self.closing.set()

    def begin_stop_threadsafe(self) -> None:
        """:meth:`begin_stop` from another thread or a signal handler (a no-op before start)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(self.begin_stop)

    async def wait_for_events(self, after: Checkpoint, *, timeout: float) -> bool:
        """The store's ``wait_for_events``, cut short (False) when the server begins to stop."""
        if self.closing.is_set():
            return False
        waiting = asyncio.ensure_future(self.store.wait_for_events(after, timeout=timeout))
        closing = asyncio.ensure_future(self.closing.wait())
        try:
            await asyncio.wait((waiting, closing), return_when=asyncio.FIRST_COMPLETED)
        finally:
            closing.cancel()
            if not waiting.done():
                waiting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiting
        return waiting.result() if not waiting.cancelled() else False

    async def stop(self) -> None:
        """Stop everything that uses the databases, then close them, in that order.

        A read-model connection is closed only once nothing can use it: the sweep
        is stopped and its thread joined, the projection runner stopped, and the
        queries still running on other threads finished (ReadModels.close waits
        for them).
        """
        self.begin_stop()
        self._stopping.set()
        if self._expiry is not None:
            # Not cancelled: a deletion running in its thread finishes first.
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry
        if self._sweeper is not None:
            await asyncio.to_thread(self._sweeper.shutdown, wait=True)
        runner = getattr(self, "runner", None)
        if runner is not None:
            await runner.stop()
        store = getattr(self, "store", None)
        if store is not None:
            await store.close()
        db = getattr(self, "db", None)
        if db is not None:
            # The runner closed it too; this catches a query that reopened one meanwhile.
            await asyncio.to_thread(db.close)

    def describe(self) -> dict[str, Any]:
        """A short description for logs."""
        return {"db": self.settings.db, "projections": self.settings.run_projections}
