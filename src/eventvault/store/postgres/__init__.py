"""``postgresql://``: the event store on PostgreSQL (psycopg 3, an async connection pool).

::

    store = await open_store("postgresql://app@db.internal/ledger?schema=ledger&pool_max=20")

The global log, and why it is ordered by transaction id
-------------------------------------------------------
Positions come from an identity column: they are handed out when a row is
inserted, not when its transaction commits. With concurrent writers a reader
that follows positions alone can see position 11 committed while position 10
is still in flight; it moves its checkpoint past 10 and never sees it. Taking a
table lock around every append would fix that by letting only one writer in at
a time. This store keeps writers concurrent instead:

* every row records ``pg_current_xact_id()`` (xid8) of the transaction that
  wrote it, in ``tx_id``;
* every transaction that writes events holds the schema's writers' lock (a
  shared transaction-level advisory lock), taken before its first write;
* a reader only returns rows with ``tx_id`` below the read horizon: the oldest
  transaction still running that holds that lock (``read_horizon()``, created
  by the schema's migrations; decision 0018 says why the order of its reads is
  safe). Every event writer below it has finished, so the set of rows below it
  is final: nothing can still commit there;
* the log is ordered, and checkpoints compare, by ``(tx_id, position)``. A
  checkpoint is below the horizon of the read that produced it, so every row
  that commits later sorts after it. Ordering by position alone would not be
  safe, because a transaction with a low id can insert (and get positions) after
  one with a higher id has committed.

The price: an event writer that stays open (a stuck append, an ``append_on``
transaction left idle) holds the horizon back, and readers wait for it; a
transaction elsewhere in the cluster, or on other tables, does not.
They are delayed, never wrong. See ``docs/postgres.md``.

Writers
-------
An append is one SQL statement in its own (autocommit) transaction: it bumps the
stream's row in ``streams`` under the expected-version condition (which locks
that one row, so appends to different streams never wait for each other), and
inserts the events. A conflict (wrong version, an event id already stored) makes
that statement fail and nothing else; the idempotency check then runs on the
conflict path only (see :func:`~eventvault.store.base.idempotent_result`).
The store runs it as a statement prepared on each of its connections (see
``_libpq``), and one event goes in scalar parameters rather than arrays.
While ``append_concurrency`` appends are in flight, the appends made meanwhile
wait and then go together: their statements in one pipeline, one transaction,
one round trip (see ``_appends``).

Wake-ups
--------
After an append commits the store sends ``pg_notify`` on the schema's channel,
coalesced (at most one in flight per store, and at most one per ``notify_debounce``,
which listeners wait after one anyway) and in its own transaction, committed
without waiting for the WAL flush (a hint may be lost; readers poll too).
NOTIFY inside the appending transaction would take PostgreSQL's database-wide
notify lock before that transaction's commit record is flushed, serializing the
commits of all concurrent writers (measured with pgbench, 32 clients inserting one
row per transaction: 17,000-28,000 transactions/s without, 3,000-4,000 with NOTIFY
in the transaction). A notification is only a hint: readers always poll too
(:meth:`~eventvault.store.base.EventStore.wait_for_events`), so a lost one only delays them.

Options (URL query parameters or keyword arguments)
---------------------------------------------------
``schema`` (default ``eventvault``), ``pool_min`` (1), ``pool_max`` (10),
``pool_timeout`` (5.0 s to wait for a connection), ``poll_interval`` (1.0 s),
``notify`` (true), ``notify_debounce`` (0.005 s), ``append_concurrency`` (2),
and any libpq connection
parameter (``sslmode``, ``connect_timeout``, ``application_name``, ...).

The parts
---------
``_options`` (the options above), ``_schema`` (tables, migrations, the read
horizon and every statement), ``_connections`` (the pool, the spare connection,
errors mapped at the edge), ``_appends`` (appends and append groups),
``_reads`` (streams, the log, snapshots), ``_deletes`` (stream deletes, under
the locks appenders of their tags take), ``_live`` (notifications and the
LISTEN connection) and ``_store`` (the store, handing each call to its part).
Everything runs through psycopg's public API except the hottest statements
(appends, notifications, stream reads), which ``_libpq`` sends through libpq
on the store's own connections; its documentation says what that buys.
"""

from eventvault.store.postgres._schema import SCHEMA_VERSION
from eventvault.store.postgres._store import PostgresEventStore
from eventvault.store.records import HorizonLag

__all__ = ["SCHEMA_VERSION", "HorizonLag", "PostgresEventStore"]
