"""The composition root: :meth:`Services.open` builds every part of one server, finished.

The store, the repository, the read-model database, the projection runner, the
idempotency keys and the metrics are made here and nowhere else; routes get
them through :data:`ServicesDep` (the command routes, plain Starlette ones,
through :func:`services_of`). Tests swap a part by passing it to :meth:`Services.open`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Self

from fastapi import Depends, Request

from eventvault import Checkpoint, EventStore, Repository, StoreUnavailable, open_store
from eventvault.processes import ProcessRunner
from eventvault.projections import ProjectionRunner, ReadModels, read_models_for
from eventvault_ledger.api.idempotency import IdempotencyStore
from eventvault_ledger.api.metrics import Metrics
from eventvault_ledger.api.settings import Settings
from eventvault_ledger.read_models import process_managers, projections
from eventvault_ledger.seed import seed_demo

__all__ = ["Services", "ServicesDep", "services_of"]

log = logging.getLogger("eventvault_ledger.api")


class Services:
    """The running parts of one server: every one built and started by :meth:`open`.

    Nothing is left to fill in later: once :meth:`open` returns, each attribute
    is the finished part, until :meth:`stop` ends them all.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        store: EventStore,
        repository: Repository,
        db: ReadModels,
        runner: ProjectionRunner,
        metrics: Metrics,
    ) -> None:
        # Only open() makes one, on the running loop, and starts it before handing it out.
        self.settings = settings
        self.store = store
        self.repository = repository
        self.db = db
        self.runner = runner
        self.idempotency = IdempotencyStore(db)
        self.metrics = metrics
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._expiry: asyncio.Task[None] | None = None
        # The sweep's own thread, so that stop() can join it: a deletion still running
        # on a connection when the read models close would crash the process.
        self._sweeper: ThreadPoolExecutor | None = None
        self._stopping = asyncio.Event()
        self.closing = asyncio.Event()
        """Set when the server begins to stop: live streams end at once on it."""
        self._loop = asyncio.get_running_loop()

    @classmethod
    async def open(cls, settings: Settings, *, metrics: Metrics | None = None) -> Self:
        """Open the store, set up and start the read side, seed demo data when asked.

        A failure half way closes whatever was opened before it is raised (a
        pool left running would keep the process from ever exiting).
        """
        store = await open_store(settings.db)
        try:
            repository = Repository(store, cache_size=settings.account_cache)
            db = read_models_for(store)
            # Transfers run beside the projections, on the same workers: a ProcessRunner is one.
            runner = ProcessRunner(
                store, process_managers(), projections=projections(), read_models=db, repository=repository
            )
            services = cls(
                settings,
                store=store,
                repository=repository,
                db=db,
                runner=runner,
                metrics=metrics or Metrics(),
            )
        except BaseException:
            await store.close()
            raise
        try:
            await services._start()
        except BaseException:
            await services.stop()
            raise
        return services

    async def _start(self) -> None:
        await asyncio.to_thread(self.idempotency.setup)
        if self.settings.idempotency_ttl > 0:
            self._sweeper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eventvault-key-expiry")
            self._expiry = asyncio.create_task(self._expire_keys(self.settings.idempotency_ttl))
        if self.settings.run_projections:
            await self.runner.start()
        else:
            # Workers run elsewhere; queries still need the read-model tables to exist.
            await self.runner.prepare()
        if self.settings.demo and await seed_demo(self.repository):
            log.info("seeded demo accounts")

    def lock_for(self, key: str) -> asyncio.Lock:
        """The in-process lock of one aggregate (commands on it run one at a time here)."""
        lock = self._locks.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._locks[key] = lock
        return lock

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
        """:meth:`begin_stop` from another thread or a signal handler."""
        loop = self._loop
        if not loop.is_closed():
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
        await self.runner.stop()
        await self.store.close()
        # The runner closed it too; this catches a query that reopened one meanwhile.
        await asyncio.to_thread(self.db.close)


def services_of(request: Request) -> Services:
    """The services of the app serving ``request`` (there once the app has started)."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(services_of)]
"""A route's parameter ``services: ServicesDep``: the running services."""
