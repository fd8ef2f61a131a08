"""``sqlite:///path.db``: the embedded default store, one file, durable, group-committed.

URL forms: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` and
``sqlite:///:memory:`` (a private database that lives as long as the store).

Options, from the URL query string (``sqlite:///app.db?synchronous=NORMAL``) or
keyword arguments of :func:`~eventvault.store.create_store`:

``synchronous`` = ``FULL`` (default) | ``EXTRA`` | ``NORMAL``
    ``FULL`` syncs the write-ahead log on every commit, so an acknowledged append
    survives a power cut. ``NORMAL`` syncs only at checkpoints: faster, and a
    power cut may lose the last appends (never corrupt the file). ``OFF`` is
    refused: an event store that forgets acknowledged events is not one.
``busy_timeout`` = seconds (default ``5``)
    How long to wait for another process's write lock before the call fails with
    :class:`~eventvault.errors.StoreUnavailable`.
``readers`` = ``0`` .. ``64`` (default ``4``)
    Read connections, each on its own thread, so reads never queue behind the
    writer. ``0`` runs every read on the writer's thread (``:memory:`` always
    does: every connection to ``:memory:`` would be a database of its own).
``read_models`` = a file path (default: none)
    Where :func:`~eventvault.projections.read_models_for` keeps the read models
    beside this store: a SQLite file of their own (relative to the store's
    folder, or absolute) instead of the store's file, so that their commits and
    the store's appends never wait for each other's lock.
``writer`` = ``auto`` (default) | ``thread``
    ``auto`` commits a group of appends on the event loop's own thread when the
    writer thread is idle and this store's recent commits took under 1 ms (a
    fast disk), and hands it to the writer thread otherwise. ``thread`` always
    hands appends to the writer thread, so the event loop never waits for a
    commit, however short.

How it works
------------
* **One writer.** One write connection, used by one thread at a time. The
  appends made while the event loop runs its ready tasks are gathered into
  ONE ``BEGIN IMMEDIATE`` transaction (group commit), each inside its own
  ``SAVEPOINT``: the first append of a group yields to the loop once, and
  every append made meanwhile joins it. While commits are fast and the writer
  thread idle, that transaction runs right there on the loop's thread (two
  thread hand-offs cost more than a commit on a fast disk); otherwise, and
  whenever another process holds the write lock, a dedicated writer thread
  runs it, taking every append waiting in its queue at that moment. A conflict
  (wrong expected version, an event id stored elsewhere) rolls back only its
  savepoint and fails only its own append. A
  caller's future is resolved only after ``COMMIT`` succeeded; if ``COMMIT``
  fails, every append of the batch fails. The read models beside the log in
  this process (``read_models_for``) take turns with the writer on one lock
  per file (:mod:`~eventvault.store.sqlite.filelock`), handed over at each
  commit; a turn not given within ``busy_timeout`` is ``StoreUnavailable``.
  Other processes may write the same file: ``BEGIN IMMEDIATE`` waits for them
  up to ``busy_timeout``, in SQLite's busy handler.
* **Readers** are separate connections. WAL gives each read statement (or read
  transaction) a snapshot of committed data, and it never waits for the writer.
  Reads that are small by construction (a stream's first 64 events, a version,
  the head, a snapshot) run on the calling thread, on a connection of its own
  that never waits for a lock: the trip to a reader thread and back costs
  more than such a read. Longer reads, pages of the log, and any read SQLite
  answers "busy" go to the reader threads.
* **Gap-safe positions with ``tx = 0``.** SQLite lets one transaction at a time
  write the file (across processes too), and each new event gets position
  ``max(position) + 1`` (SQLite's rowid rule) inside that transaction. A
  reader's snapshot holds a transaction's events completely or not at all. So
  when a reader sees position ``p``, every lower position is either visible too
  or will never exist: position order is commit order, and a checkpoint needs
  no transaction id (it is 0).
* **Schema** is created and migrated by the store on open (its ``store``
  component, by :mod:`eventvault.store.migrations`), inside ``BEGIN IMMEDIATE``,
  so processes that open one new file at the same moment take turns and the
  later ones find the work done. A file whose schema is newer than this code
  raises :class:`~eventvault.errors.SchemaVersionError`.
* **Errors.** No ``sqlite3`` exception leaves this package: a busy/locked database
  and a file that cannot be opened become :class:`~eventvault.errors.StoreUnavailable`
  (retry later), a full disk (``SQLITE_FULL``) :class:`~eventvault.errors.StorageFull`
  (retry once space is freed), anything else :class:`~eventvault.errors.StoreError`
  with SQLite's message.

* **Live wake-ups.** :meth:`SQLiteEventStore.add_commit_listener` registers a
  callback told the new head after each commit of this store (not of other
  processes: followers of the log still poll).

Cancelling a waiting ``append`` does not withdraw it once the writer has taken
it: it may still land (a retry with the same event ids is safe either way).

The parts: ``schema`` (tables, migrations, WAL), ``reads`` and ``writes`` (the
statements, on a cursor given), ``jobs`` (what the queues carry and how outcomes
return to their loops), ``core`` (options, threads, connections), ``writer``
(group commit, on the writer thread or the loop's) and ``store`` (the EventStore
API).
"""

from eventvault.store.sqlite.schema import MIGRATIONS, SCHEMA_COMPONENT, SCHEMA_VERSION
from eventvault.store.sqlite.store import SQLiteEventStore
from eventvault.store.sqlite.writer import SQLiteStats

__all__ = ["MIGRATIONS", "SCHEMA_COMPONENT", "SCHEMA_VERSION", "SQLiteEventStore", "SQLiteStats"]
