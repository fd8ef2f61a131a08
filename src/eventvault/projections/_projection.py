"""Projections: handlers per event type that keep SQL read models current."""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from eventvault.errors import EventTypeError
from eventvault.store.base import MAX_PAGE

if TYPE_CHECKING:
    from eventvault.projections._db import ReadModels
    from eventvault.store.records import RecordedEvent

__all__ = ["Projection", "Session", "handles", "partition_of"]

Handler = Callable[[Any, "Session", "RecordedEvent"], None]
_IDENT = re.compile(r"[a-z][a-z0-9_]{0,40}")


def handles(*event_classes: type) -> Callable[[Handler], Handler]:
    """Method decorator: this method applies events of these classes to the read model.

    The method gets a :class:`Session` (SQL inside the batch's transaction) and
    the :class:`~eventvault.store.records.RecordedEvent`. Write it so that
    applying an event twice changes nothing (an upsert keyed by the event's
    stream and version, or a guard on a stored version): the checkpoint makes
    replays impossible in normal operation, and the guard makes them harmless.
    """
    if not event_classes:
        raise TypeError("@handles needs at least one event class")

    def decorate(fn: Handler) -> Handler:
        fn.__handles__ = event_classes  # type: ignore[attr-defined]
        return fn

    return decorate


def partition_of(stream_id: str, partitions: int) -> int:
    """The partition of a stream: a stable hash, the same in every process and version."""
    return zlib.crc32(stream_id.encode("utf-8")) % partitions


class Session:
    """SQL for one batch of a projection, inside the transaction that also moves its checkpoint.

    Write table names as ``{table}``: they resolve to the tables of the
    generation being built (a rebuild writes new tables while queries read the
    old ones). Placeholders are ``?`` on every database.
    """

    def __init__(self, db: ReadModels, conn: Any, names: Mapping[str, str], *, generation: int = 0) -> None:
        self._db = db
        self._conn = conn
        self._names = names
        self._cache: dict[str, str] = {}
        self.generation = generation
        """The generation of the tables this batch writes (a rebuild writes a new one)."""
        self.batch: dict[str, Any] = {}
        """Memory that lives as long as this batch: rows handlers keep between events, for
        :meth:`Projection.end_batch` to write. It goes with the batch, committed or not."""

    def _sql(self, text: str) -> str:
        sql = self._cache.get(text)
        if sql is None:
            sql = self._cache[text] = self._db.sql(text.format_map(self._names))
        return sql

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; returns the number of rows it changed."""
        cur = self._conn.execute(self._sql(sql), params)
        return int(cur.rowcount)

    def executemany(self, sql: str, params: Sequence[Sequence[Any]]) -> int:
        """Run a statement once per parameter tuple; returns the number of rows they changed in all.

        On PostgreSQL the statements go to the server together, in one round trip.
        """
        if not params:
            return 0
        cur = self._conn.cursor()
        try:
            cur.executemany(self._sql(sql), params)
            return int(cur.rowcount)
        finally:
            cur.close()

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        """The first row of a query, or None."""
        row = self._conn.execute(self._sql(sql), params).fetchone()
        return None if row is None else tuple(row)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Every row of a query."""
        return [tuple(r) for r in self._conn.execute(self._sql(sql), params).fetchall()]

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``, for the rare statement that differs."""
        return self._db.dialect


class Projection:
    """A read model: its tables and the handlers that keep them current.

    Subclasses set :attr:`name`, :attr:`tables` (logical table names),
    :attr:`schema` (DDL with ``{table}`` placeholders, run for each new
    generation) and decorate handlers with :func:`handles`. Queries read the
    logical names, which are views of the active generation's tables, so a
    rebuild swaps them atomically.
    """

    name: ClassVar[str] = ""
    """Stable identifier (lower case, digits, ``_``); it keys the checkpoint."""
    version: ClassVar[int] = 1
    """Bump when the handlers' meaning changes; then rebuild."""
    tables: ClassVar[Sequence[str]] = ()
    """Logical names of the tables this projection owns."""
    schema: ClassVar[Sequence[str]] = ()
    """DDL statements for one generation, with ``{table}`` placeholders."""
    partitions: ClassVar[int] = 1
    """How many partitions (by a stable hash of stream_id) workers can share."""
    batch_size: ClassVar[int] = 500
    """Events applied per transaction (and per checkpoint write)."""

    _handlers: ClassVar[dict[type, Handler]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[type, Handler] = {}
        for klass in reversed(cls.__mro__):
            for attr in vars(klass).values():
                for event_cls in getattr(attr, "__handles__", ()):
                    handlers[event_cls] = attr
        cls._handlers = handlers
        if cls.name and not _IDENT.fullmatch(cls.name):
            raise EventTypeError(f"projection name {cls.name!r} must be lower case letters, digits, '_'")
        for table in cls.tables:
            if not _IDENT.fullmatch(table):
                raise EventTypeError(f"table name {table!r} must be lower case letters, digits, '_'")
        if not isinstance(cls.partitions, int) or not 1 <= cls.partitions <= 1024:
            raise EventTypeError(f"{cls.__name__}.partitions must be an int in 1..1024")
        if (
            isinstance(cls.batch_size, bool)
            or not isinstance(cls.batch_size, int)
            or not 1 <= cls.batch_size <= MAX_PAGE
        ):
            raise EventTypeError(f"{cls.__name__}.batch_size must be an int in 1..{MAX_PAGE}")

    def begin_batch(self, db: Session, events: Sequence[RecordedEvent]) -> None:
        """Called before a batch's handlers, in its transaction, with the events they will get.

        Override it to read in one query what the handlers of many events need
        (keeping it in :attr:`Session.batch`). The default does nothing.
        """

    def end_batch(self, db: Session) -> None:
        """Called after a batch's handlers, in its transaction, before its checkpoint moves.

        Override it to write what the handlers kept in :attr:`Session.batch`
        (:meth:`Session.executemany` writes many rows in one round trip). If it
        (or :meth:`begin_batch`) raises, the batch rolls back and its events are
        applied again one per transaction, so that the event at fault is the
        one a failure names. The default does nothing.
        """

    @classmethod
    def handled_types(cls) -> tuple[type, ...]:
        """The event classes this projection has handlers for."""
        return tuple(cls._handlers)

    @classmethod
    def handler_for(cls, event_cls: type) -> Handler | None:
        """The handler of ``event_cls``, if any."""
        return cls._handlers.get(event_cls)

    @classmethod
    def physical_names(cls, generation: int) -> dict[str, str]:
        """Logical table name -> the table of ``generation``."""
        return {t: f"{t}__g{generation}" for t in cls.tables}
