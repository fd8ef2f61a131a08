"""The store's connections: the pool, a spare connection for a lone caller, driver errors mapped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

import psycopg
import psycopg.errors
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.pq import Format, TransactionStatus
from psycopg_pool import AsyncConnectionPool, PoolClosed, PoolTimeout

from eventvault.errors import StorageFull, StoreClosed, StoreError, StoreUnavailable
from eventvault.store.postgres._options import Options

log = logging.getLogger("eventvault.store.postgres")

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Any]

# How long a call waits for a connection while the server is known to be away.
_OUTAGE_TIMEOUT: Final = 0.5
# How long one pooled connection may stay kept aside for the next call (see release).
_SPARE_SECONDS: Final = 10.0
_XID8_OID: Final = 5069

# Class 40: the server rolled the transaction back (nothing was written); retrying helps.
_ROLLED_BACK: Final = (
    psycopg.errors.TransactionRollback,
    psycopg.errors.SerializationFailure,
    psycopg.errors.DeadlockDetected,
)


class _Xid8Loader(Loader):
    def load(self, data: Buffer) -> int:
        return int(bytes(data))


class _Xid8BinaryLoader(Loader):
    format = Format.BINARY

    def load(self, data: Buffer) -> int:
        return int.from_bytes(data, "big")


def adapt(conn: Conn) -> None:
    """Load xid8 (the log's transaction ids) as int on ``conn``."""
    conn.adapters.register_loader(_XID8_OID, _Xid8Loader)
    conn.adapters.register_loader(_XID8_OID, _Xid8BinaryLoader)


def reason(exc: BaseException) -> str:
    """The first line of an error's message."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _lost(conn: Conn) -> bool:
    return conn.closed or conn.broken


class Connections:
    """The pool of autocommit connections one store runs its calls on.

    ``target`` names the database in messages ("PostgreSQL at host:port/db
    (schema s)"). :meth:`run` is the one way a call gets a connection: it maps
    psycopg's errors to eventvault's, and retries once on a fresh connection
    when the one it had died.
    """

    def __init__(self, conninfo: str, libpq: dict[str, Any], options: Options, target: str) -> None:
        self.conninfo = conninfo
        self.libpq = libpq
        self.target = target
        self._options = options
        self.pool: AsyncConnectionPool[Conn] | None = None
        self.closed = False
        self._users = 0  # calls holding or waiting for a connection (see acquire)
        self._spare: Conn | None = None  # a pooled connection kept aside for the next call
        self._spare_conn: Conn | None = None  # the connection last kept aside, until _spare_until
        self._spare_until = 0.0
        # Set when no connection could be had or a retried one died too; cleared
        # by the next call that succeeds (see run).
        self._unreachable = False
        self._outage_timeout = min(options.pool_timeout, _OUTAGE_TIMEOUT)

    async def start(self) -> None:
        """Open the pool (without waiting for its first connections)."""
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            self.conninfo,
            kwargs={"autocommit": True, **self.libpq},
            min_size=self._options.pool_min,
            max_size=self._options.pool_max,
            timeout=self._options.pool_timeout,
            configure=self._configure,
            name=f"eventvault-{self._options.schema}",
            open=False,
        )
        await pool.open(wait=False)
        self.pool = pool

    async def close(self) -> None:
        """Close the pool, the spare connection with it."""
        self.closed = True
        if self.pool is not None:
            spare, self._spare, self._spare_conn = self._spare, None, None
            if spare is not None:
                await self.pool.putconn(spare)
            await self.pool.close()

    @staticmethod
    async def _configure(conn: Conn) -> None:
        adapt(conn)

    async def connect(self, what: str) -> Conn:
        """A connection outside the pool (the listener)."""
        try:
            conn = await psycopg.AsyncConnection.connect(self.conninfo, autocommit=True, **self.libpq)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"{what}: cannot connect to {self.target}: {reason(exc)}") from exc
        adapt(conn)
        return conn

    def connect_blocking(self, what: str) -> psycopg.Connection[Any]:
        """A connection of psycopg's blocking API, outside the pool (migrations run on one)."""
        try:
            return psycopg.Connection.connect(self.conninfo, autocommit=True, **self.libpq)
        except psycopg.Error as exc:
            raise StoreUnavailable(f"{what}: cannot connect to {self.target}: {reason(exc)}") from exc

    # -- errors ------------------------------------------------------------------------

    def error(self, what: str, exc: psycopg.Error) -> StoreError:
        """The eventvault error for a psycopg error on a live connection."""
        why = reason(exc)
        if isinstance(exc, psycopg.errors.DiskFull):
            return StorageFull(
                f"{what}: {self.target}'s disk is full ({why}); nothing was written, "
                "retry once space is freed"
            )
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return StoreUnavailable(
                f"{what}: PostgreSQL cancelled the statement ({why}); nothing was written, retry later"
            )
        if isinstance(exc, _ROLLED_BACK):
            return StoreUnavailable(
                f"{what}: PostgreSQL rolled the transaction back ({why}); nothing was written, retry"
            )
        if isinstance(exc, psycopg.OperationalError):
            return StoreUnavailable(f"{what}: {self.target} is unavailable: {why}")
        state = f" [{exc.sqlstate}]" if exc.sqlstate else ""
        return StoreError(f"{what}: {self.target} failed{state}: {why}")

    def _unavailable(self, what: str, exc: BaseException, *, writes: bool, unknown: bool) -> StoreUnavailable:
        if isinstance(exc, PoolTimeout):
            cause = f"no connection to {self.target} within {self._options.pool_timeout:g}s"
        else:
            cause = f"the connection to {self.target} was lost ({reason(exc)})"
        if unknown:
            return StoreUnavailable(
                f"{what}: {cause}. The outcome is unknown: it may or may not have been committed. "
                "Retrying with the same event ids is safe: if it landed, the retry returns its "
                "result and writes nothing"
            )
        return StoreUnavailable(f"{what}: {cause}; {'nothing was written, ' if writes else ''}retry later")

    # -- running calls -----------------------------------------------------------------

    async def run(self, what: str, op: Callable[[Conn], Awaitable[T]], *, writes: bool = False) -> T:
        """Run ``op`` on a pooled connection, mapping errors at this edge.

        A connection found dead (the server restarted, the backend was terminated)
        is dropped, the pool's idle connections are checked, and ``op`` runs once
        more on a fresh one. That is safe for appends too: a retried append either
        finds its event ids already stored (and returns the first result) or
        appends them. If the retry cannot run either, the error says whether the
        outcome of a write is unknown.
        """
        pool = self.pool
        if pool is None or self.closed:
            raise StoreClosed("this postgresql store is closed")
        retrying = False
        while True:
            conn = await self._connection_for(what, pool, writes=writes, retrying=retrying)
            try:
                result = await op(conn)
            except psycopg.Error as exc:
                self._raise_unless_lost_once(what, conn, exc, writes=writes, retrying=retrying)
                self._unreachable = True  # until a call succeeds: others wait briefly meanwhile
                log.warning("%s: connection to %s lost (%s); retrying once", what, self.target, reason(exc))
            else:
                self._unreachable = False
                return result
            finally:
                await self.release(pool, conn)
            retrying = True
            await pool.check()

    async def _connection_for(
        self, what: str, pool: AsyncConnectionPool[Conn], *, writes: bool, retrying: bool
    ) -> Conn:
        # While the server is known to be away, or right after a connection
        # died, waiting the whole pool_timeout for a connection only delays
        # the answer: wait briefly, then say it is unavailable.
        timeout = self._outage_timeout if (self._unreachable or retrying) else None
        try:
            return await self.acquire(pool, timeout)
        except PoolClosed:
            raise StoreClosed("this postgresql store is closed") from None
        except PoolTimeout as exc:
            self._unreachable = True
            raise self._unavailable(what, exc, writes=writes, unknown=writes and retrying) from exc

    def _raise_unless_lost_once(
        self, what: str, conn: Conn, exc: psycopg.Error, *, writes: bool, retrying: bool
    ) -> None:
        """Raise the error ``exc`` maps to, unless the connection died and a first retry is due."""
        if not _lost(conn):
            if writes and retrying:  # the first attempt's outcome is still unknown
                raise self._unavailable(what, exc, writes=True, unknown=True) from exc
            raise self.error(what, exc) from exc
        if retrying:
            self._unreachable = True
            raise self._unavailable(what, exc, writes=writes, unknown=writes) from exc

    async def acquire(self, pool: AsyncConnectionPool[Conn], timeout: float | None = None) -> Conn:
        """A connection for one call: the spare one if it is free, else one from the pool.

        Each call gets a connection of its own, as from the pool, and gives it
        back with :meth:`release`.
        """
        self._users += 1
        conn = self._spare
        if conn is not None:
            self._spare = None
            return conn
        try:
            if timeout is not None:
                return await pool.getconn(timeout)
            try:
                return await pool.getconn(self._outage_timeout)
            except PoolTimeout:
                # All taken for a while: wait out pool_timeout in slices, and give up
                # early if meanwhile another call found the server gone.
                loop = asyncio.get_running_loop()
                deadline = loop.time() + self._options.pool_timeout - self._outage_timeout
                while not self._unreachable and (left := deadline - loop.time()) > 0:
                    with contextlib.suppress(PoolTimeout):
                        return await pool.getconn(min(left, self._outage_timeout))
                raise
        except BaseException:
            self._users -= 1
            raise

    async def release(self, pool: AsyncConnectionPool[Conn], conn: Conn) -> None:
        """Give back a connection from :meth:`acquire`.

        When no other call holds or waits for a connection, this one is kept
        aside as the spare, for the next call to take without going through the
        pool (a single caller, one append after another, otherwise pays the
        pool's get and put, with their locks and bookkeeping, on every call).
        Anything else goes back to the pool: a connection that is not idle and
        healthy, one kept aside for ``_SPARE_SECONDS`` already (so that the pool
        still sees each connection now and then, to retire it at its
        ``max_lifetime``), and any connection while another call waits for one,
        which the pool hands on.
        """
        self._users -= 1
        if (
            self._users == 0
            and self._spare is None
            and not self.closed
            and conn.info.transaction_status == TransactionStatus.IDLE
        ):
            now = asyncio.get_running_loop().time()
            if conn is not self._spare_conn:
                self._spare_conn, self._spare_until = conn, now + _SPARE_SECONDS
            if now < self._spare_until:
                self._spare = conn
                return
            self._spare_conn = None
        await pool.putconn(conn)
