"""Generations of a projection: registering one, building a new one from the start, swapping it in.

Each generation has its own physical tables (``balances__g2``); the logical
name is a view of the serving generation, named in ``ev_projection``. A
rebuild builds a new generation while the old one serves, then swaps it in
(:func:`swap_in`) in one transaction that also fences the old generation's
workers, and drops the old tables.

The functions that take a :class:`ReadModels` block: call them from a thread.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Final

from eventvault.errors import StoreError
from eventvault.projections._leases import checkpoint_at

if TYPE_CHECKING:
    from eventvault.projections._db import ReadModels
    from eventvault.projections._leases import Leases
    from eventvault.projections._projection import Projection

__all__ = [
    "create_generation",
    "drop_generation",
    "lock_ddl",
    "new_generation",
    "register",
    "setup",
    "swap_in",
]

log = logging.getLogger("eventvault.projections")

_ADVISORY_KEY: Final = 0x6576_7072  # "evpr": serializes projection DDL on PostgreSQL


def lock_ddl(db: ReadModels, conn: Any) -> None:
    """Serialize projection DDL across processes (SQLite's write lock already does)."""
    if db.dialect == "postgresql":
        db.execute(conn, "SELECT pg_advisory_xact_lock(?)", (_ADVISORY_KEY,))


def _serving(db: ReadModels, conn: Any, name: str) -> int:
    (generation,) = db.execute(
        conn, "SELECT generation FROM ev_projection WHERE name = ?", (name,)
    ).fetchone()
    return int(generation)


def setup(db: ReadModels) -> None:
    """Create the bookkeeping tables if missing."""
    db.setup()


def register(db: ReadModels, cls: type[Projection], *, clear_errors: bool = True) -> int:
    """The serving generation of ``cls``, creating generation 1 on first sight.

    With ``clear_errors``, recorded failures are cleared: a restart (or
    ``resume``) is the way to retry after a fix.
    """
    with db.transaction() as conn:
        lock_ddl(db, conn)
        row = db.execute(
            conn, "SELECT generation, version, partitions FROM ev_projection WHERE name = ?", (cls.name,)
        ).fetchone()
        if row is None:
            create_generation(db, conn, cls, 1)
            db.execute(
                conn,
                "INSERT INTO ev_projection (name, generation, version, partitions) VALUES (?, 1, ?, ?)",
                (cls.name, cls.version, cls.partitions),
            )
            for logical, physical in cls.physical_names(1).items():
                db.execute(conn, f"CREATE VIEW {logical} AS SELECT * FROM {physical}")
            return 1
        generation, version, partitions = (int(x) for x in row)
        if (version, partitions) != (cls.version, cls.partitions):
            log.warning(
                "%s: stored generation was built by version %d with %d partitions; this code is "
                "version %d with %d: rebuild it",
                cls.name,
                version,
                partitions,
                cls.version,
                cls.partitions,
            )
        if not clear_errors:
            return generation
        db.execute(
            conn,
            "UPDATE ev_partition SET error = NULL, error_at = NULL, error_tx = NULL, error_pos = NULL, "
            "error_event = NULL, error_type = NULL, error_stream = NULL "
            "WHERE name = ? AND generation = ? AND error IS NOT NULL",
            (cls.name, generation),
        )
        return generation


def create_generation(db: ReadModels, conn: Any, cls: type[Projection], generation: int) -> None:
    """Create the tables and the partitions of ``generation``."""
    names = cls.physical_names(generation)
    for statement in cls.schema:
        db.execute(conn, statement.format_map(names))
    for part in range(cls.partitions):
        db.execute(
            conn,
            "INSERT INTO ev_partition (name, generation, part) VALUES (?, ?, ?)",
            (cls.name, generation, part),
        )


def new_generation(db: ReadModels, cls: type[Projection]) -> int:
    """Create the next generation of ``cls`` for a rebuild, empty, and return its number."""
    with db.transaction() as conn:
        lock_ddl(db, conn)
        (newest,) = db.execute(
            conn, "SELECT max(generation) FROM ev_partition WHERE name = ?", (cls.name,)
        ).fetchone()
        active = _serving(db, conn, cls.name)
        generation = max(int(newest or 0), active) + 1
        # Leftovers of an abandoned rebuild are dropped before building anew.
        for stale in range(active + 1, generation):
            for physical in cls.physical_names(stale).values():
                db.execute(conn, f"DROP TABLE IF EXISTS {physical}")
            db.execute(conn, "DELETE FROM ev_partition WHERE name = ? AND generation = ?", (cls.name, stale))
        create_generation(db, conn, cls, generation)
    return generation


def drop_generation(db: ReadModels, cls: type[Projection], generation: int) -> None:
    """Drop an old generation's tables (after a swap)."""
    try:
        with db.transaction() as conn:
            lock_ddl(db, conn)
            for physical in cls.physical_names(generation).values():
                db.execute(conn, f"DROP TABLE IF EXISTS {physical}")
            db.execute(
                conn, "DELETE FROM ev_partition WHERE name = ? AND generation = ?", (cls.name, generation)
            )
    except StoreError:
        log.warning("%s: could not drop generation %d yet", cls.name, generation, exc_info=True)


def swap_in(db: ReadModels, cls: type[Projection], leases: Leases) -> int | None:
    """Make the rebuilt generation ``leases`` holds serve queries, if it has caught up with the serving one.

    Returns the generation it replaced (its tables are left to drop), or None
    if it is not complete or not caught up yet. Raises LeaseLost if another
    worker took the rebuild over.
    """
    if len(leases.owned) < cls.partitions:
        return None  # a partition of the new generation is not ours (yet): not complete
    with leases.transaction() as conn:
        lock_ddl(db, conn)
        leases.fence(conn)  # still ours: nobody took this rebuild over
        active = _serving(db, conn, cls.name)
        behind = db.execute(
            conn,
            "SELECT cp_tx, cp_pos FROM ev_partition WHERE name = ? AND generation = ? "
            "ORDER BY cp_tx, cp_pos LIMIT 1",
            (cls.name, active),
        ).fetchone()
        if behind is not None and checkpoint_at(*behind) > leases.checkpoint():
            return None  # the live generation is ahead: catch up further first
        db.execute(
            conn,
            "UPDATE ev_projection SET generation = ?, version = ?, partitions = ? WHERE name = ?",
            (leases.generation, cls.version, cls.partitions, cls.name),
        )
        for logical, physical in cls.physical_names(leases.generation).items():
            db.execute(conn, f"DROP VIEW IF EXISTS {logical}")
            db.execute(conn, f"CREATE VIEW {logical} AS SELECT * FROM {physical}")
        # Fence the old generation's workers: their next checkpoint write fails.
        db.execute(
            conn,
            "UPDATE ev_partition SET token = token + 1, owner = NULL, expires = 0 "
            "WHERE name = ? AND generation = ?",
            (cls.name, active),
        )
        # Hand our partitions to the live workers.
        db.execute(
            conn,
            "UPDATE ev_partition SET owner = NULL, expires = 0 WHERE name = ? AND generation = ?",
            (cls.name, leases.generation),
        )
    leases.owned.clear()
    return active
