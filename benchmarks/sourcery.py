"""The second peer: Python Event Sourcery (``python-event-sourcery``, 0.6.1), as its documentation shows.

Its SQLAlchemy backend (``SQLAlchemyBackend().configure(session)``) keeps events in
the tables ``configure_models`` declares, created with ``metadata.create_all``;
aggregates are ``event_sourcery.event_sourcing.Aggregate`` subclasses with an
``__apply__`` and ``_emit``; they are loaded through ``Repository.aggregate``; the
global log is read through ``backend.subscriber`` (``start_from(0).build_batch``),
and snapshots are saved with ``EventStore.save_snapshot``. The session is the
application's, so every save ends with ``session.commit()``.

``Repository.aggregate`` loads the stream every time it is entered, so for the
writing workloads (W1, W2, W5's build, W7) the aggregate stays in memory and its
new events are appended with ``EventStore.append(..., expected_version=...)``, as
the library's versioning recipe does: no contender reads before it writes.

SQLite runs in WAL at ``synchronous=FULL``, set on every connection (checked
before each run), like every other contender; PostgreSQL goes through
psycopg2, the driver the library depends on, with the place's schema as the
``search_path``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any, ClassVar

import sqlalchemy as sa
from event_sourcery import StreamId, StreamUUID
from event_sourcery.event import Event, WrappedEvent
from event_sourcery.event_sourcing import Aggregate, Repository
from event_sourcery_sqlalchemy import SQLAlchemyBackend, configure_models
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, declarative_base, sessionmaker

from benchmarks.backends import Backend, Place, PostgresBackend
from benchmarks.model import AccountArgs, DepositArgs, account_args, deposit_args
from benchmarks.plan import Plan, Sizes, Stopwatch, Timing

__all__ = ["Sourcery", "check_synchronous"]

_Base: Any = declarative_base()
configure_models(_Base)


# -- the domain, as the library's event-sourcing recipe writes it --------------------------


class SourceryOpened(Event):
    """An account was opened."""

    owner_name: str
    currency: str
    branch: str
    note: str


class SourceryDeposited(Event):
    """Money was paid in."""

    amount: Decimal
    description: str
    reference: str
    channel: str


class SourcerySnapshot(Event):
    """The account's state at a version (W5 with a snapshot)."""

    owner_name: str
    currency: str
    balance: Decimal
    deposits: int


class SourceryAccount(Aggregate):
    """The account: commands ``_emit`` events, ``__apply__`` folds them."""

    category: ClassVar[str] = "bench"

    def __init__(self) -> None:
        self.owner_name = ""
        self.currency = ""
        self.balance = Decimal(0)
        self.deposits = 0

    def __apply__(self, event: Event) -> None:
        match event:
            case SourceryDeposited():
                self.balance += event.amount
                self.deposits += 1
            case SourceryOpened():
                self.owner_name = event.owner_name
                self.currency = event.currency
            case SourcerySnapshot():
                self.owner_name = event.owner_name
                self.currency = event.currency
                self.balance = event.balance
                self.deposits = event.deposits
            case _:
                raise NotImplementedError(f"unexpected event {type(event)}")

    def open(self, args: AccountArgs) -> None:
        """Open the account."""
        self._emit(SourceryOpened(**_fields(args)))

    def deposit(self, args: DepositArgs) -> None:
        """Pay money in."""
        if args.amount <= 0:
            raise ValueError("a deposit is positive")
        self._emit(SourceryDeposited(**_fields(args)))


def _fields(args: AccountArgs | DepositArgs) -> dict[str, Any]:
    return {name: getattr(args, name) for name in args.__dataclass_fields__}


class _Writer:
    """One aggregate kept in memory, its new events appended with their expected version.

    Each save is a unit of work of its own: a new session, a backend configured
    on it, the append, the commit (as the library's FastAPI example does per
    request). One long-lived session would keep every stream it wrote in its
    ``strong_set`` and refresh them all after each commit.
    """

    def __init__(self, factory: sessionmaker[Session]) -> None:
        self.factory = factory
        self.account = SourceryAccount()
        self.stream = StreamId(uuid=uuid.uuid4(), category=SourceryAccount.category)
        self.saved = 0

    def save(self) -> None:
        changes = self.account.__changes__
        pending = [
            WrappedEvent.wrap(e, version) for version, e in enumerate(changes[self.saved :], self.saved + 1)
        ]
        if pending:
            with self.factory() as session:
                store = SQLAlchemyBackend().configure(session).event_store
                store.append(*pending, stream_id=self.stream, expected_version=self.saved)
                session.commit()
            self.saved = len(changes)


# -- the contender ----------------------------------------------------------------------------


def check_synchronous(engine: sa.Engine) -> None:
    """Refuse to measure a SQLite database that does not sync every commit (synchronous=FULL, WAL)."""
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        level = conn.exec_driver_sql("PRAGMA synchronous").scalar()
        mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
    if level != 2 or str(mode).lower() != "wal":
        raise RuntimeError(f"Event Sourcery's SQLite runs at synchronous={level}, journal_mode={mode}")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA synchronous = FULL")
    cur.close()


class Sourcery:
    """The python-event-sourcery contender (SQLAlchemy backend)."""

    name = "sourcery"

    def __init__(self, backend: Backend, sizes: Sizes) -> None:
        self.backend = backend
        self.sizes = sizes

    def _engine(self, place: Place, pool: int = 5) -> sa.Engine:
        if isinstance(self.backend, PostgresBackend):
            assert place.schema is not None  # noqa: S101 - a PostgreSQL place has a schema
            url = sa.URL.create(
                "postgresql+psycopg2",
                username=self.backend.user,
                password=self.backend.password or None,
                host=self.backend.host,
                port=int(self.backend.port),
                database=self.backend.database,
            )
            engine = sa.create_engine(
                url,
                pool_size=pool,
                max_overflow=0,
                connect_args={"options": f"-csearch_path={place.schema}"},
            )
        else:
            engine = sa.create_engine(
                f"sqlite:///{place.path}",
                pool_size=pool,
                max_overflow=0,
                connect_args={"timeout": 60, "check_same_thread": False},
            )
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        _Base.metadata.create_all(engine)
        check_synchronous(engine)
        return engine

    @contextmanager
    def _session(self, place: Place, pool: int = 5) -> Iterator[tuple[sessionmaker[Session], Session]]:
        engine = self._engine(place, pool)
        factory = sessionmaker(bind=engine)
        session = factory()
        try:
            yield factory, session
        finally:
            session.close()
            engine.dispose()

    # -- W1, W2 ----------------------------------------------------------------------------

    def write(self, place: Place, plan: Plan, *, per_event: bool) -> tuple[Timing, list[Any]]:
        """W1 (a commit per event) or W2 (a commit per account); returns the stream ids too."""
        ids: list[uuid.UUID] = []
        watch = Stopwatch()
        with self._session(place) as (factory, _), watch.running():
            for args, deposits in zip(plan.accounts, plan.deposits, strict=True):
                writer = _Writer(factory)
                writer.account.open(args)
                if per_event:
                    writer.save()
                for d in deposits:
                    writer.account.deposit(d)
                    if per_event:
                        writer.save()
                writer.save()
                ids.append(writer.stream)
        return watch.timing(plan.events), ids

    # -- W3 ------------------------------------------------------------------------------------

    def load_each(self, place: Place, ids: list[Any]) -> tuple[Timing, Any]:
        """W3: load every account through the repository; returns the sum of balances."""
        watch = Stopwatch()
        total = Decimal(0)
        with self._session(place) as (_, session):
            repository = Repository[SourceryAccount](SQLAlchemyBackend().configure(session).event_store)
            with watch.running():
                for sid in ids:
                    with repository.aggregate(StreamUUID(sid), SourceryAccount()) as wrapped:
                        total += wrapped.aggregate.balance
            session.rollback()
        return watch.timing(len(ids)), total

    # -- W4 ------------------------------------------------------------------------------------

    def read_log(self, place: Place, expected: int) -> tuple[Timing, Any]:
        """W4: read every event of the global log through a batch subscription, ``log_reads`` times.

        A subscription waits for new events once it is caught up; each read stops at
        the ``expected`` count (W1's events), which it reaches without waiting.
        """
        watch = Stopwatch()
        n = 0
        with self._session(place) as (_, session):
            backend = SQLAlchemyBackend().configure(session)
            with watch.running():
                for _ in range(self.sizes.log_reads):
                    seen = 0
                    batches = backend.subscriber.start_from(0).build_batch(
                        size=self.sizes.page, timelimit=0.1
                    )
                    for batch in batches:
                        seen += len(batch)
                        if seen >= expected:
                            break
                    n += seen
            session.rollback()
        return watch.timing(n), n

    # -- W5 ------------------------------------------------------------------------------------

    def build_long(self, place: Place, events: int) -> uuid.UUID:
        """Write one account of ``events`` events (committed every 500) and snapshot it at the end."""
        with self._session(place) as (factory, _):
            writer = _Writer(factory)
            writer.account.open(account_args(0))
            for k in range(1, events):
                writer.account.deposit(deposit_args(0, k))
                if k % 500 == 0:
                    writer.save()
            writer.save()
            return writer.stream

    def load_long(self, place: Place, sid: uuid.UUID, loads: int, *, snapshot: bool) -> tuple[Timing, Any]:
        """W5: load the long account ``loads`` times, from its snapshot or from its events."""
        watch = Stopwatch()
        last: SourceryAccount | None = None
        version = 0
        with self._session(place) as (_, session):
            backend = SQLAlchemyBackend().configure(session)
            if snapshot:
                self._save_snapshot(session, backend, sid)
            repository = Repository[SourceryAccount](backend.event_store)
            with watch.running():
                for _ in range(loads):
                    with repository.aggregate(StreamUUID(sid), SourceryAccount()) as wrapped:
                        last, version = wrapped.aggregate, wrapped.version
            session.rollback()
        assert last is not None  # noqa: S101 - loads >= 1
        return watch.timing(loads), (version, last.balance)

    def _save_snapshot(self, session: Session, backend: SQLAlchemyBackend, sid: uuid.UUID) -> None:
        """Snapshot the long account at its last version (once; the snapshot recipe)."""
        stream = StreamId(uuid=sid, category=SourceryAccount.category)
        events = backend.event_store.load_stream(stream)
        if isinstance(events[-1].event, SourcerySnapshot):
            return
        account = SourceryAccount()
        for e in events:
            account.__apply__(e.event)
        state = SourcerySnapshot(
            owner_name=account.owner_name,
            currency=account.currency,
            balance=account.balance,
            deposits=account.deposits,
        )
        backend.event_store.save_snapshot(stream, WrappedEvent.wrap(state, events[-1].version))
        session.commit()

    # -- W7 ------------------------------------------------------------------------------------

    def concurrent(self, place: Place, plan: Plan) -> Timing:
        """W7: one thread (and session) per account of ``plan``, all at once, a commit per event.

        On SQLite a transaction that read before another writer committed cannot
        write (SQLITE_BUSY): it is rolled back and the command retried, as an
        application would.
        """
        n = len(plan.accounts)
        barrier = threading.Barrier(n + 1)
        errors: list[BaseException] = []
        with self._session(place, pool=n) as (factory, _):

            def writer(i: int) -> None:
                try:
                    w = _Writer(factory)
                    barrier.wait()
                    w.account.open(plan.accounts[i])
                    _retrying(w.save)
                    for d in plan.deposits[i]:
                        w.account.deposit(d)
                        _retrying(w.save)
                except Exception as exc:  # noqa: BLE001 - reported after the run
                    errors.append(exc)

            threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            watch = Stopwatch()
            with watch.running():
                barrier.wait()
                for t in threads:
                    t.join()
        if errors:
            raise RuntimeError(f"{len(errors)} Event Sourcery writers failed: {errors[0]!r}") from errors[0]
        return watch.timing(plan.events)


def _retrying(save: Callable[[], None], attempts: int = 1000) -> None:
    for attempt in range(attempts):
        try:
            save()  # its session rolls back as it closes
        except OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
        else:
            return
