"""An operator's controls on a projection, from any process: pause, resume, reset its checkpoint.

They act on the bookkeeping tables, so workers in every process obey them:
a paused projection's serving generation is held by nobody. Pausing also
bumps every partition's lease token, which fences the workers holding them:
a batch in flight rolls back at its checkpoint write, and each worker's next
lease sync finds a fair share of zero (it is ``idle`` then; the status says
``paused``). Nothing here is a worker state: docs/decisions/0029-projection-pause-and-reset.md.

The functions block: call them from a thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from eventvault.errors import InvalidInput
from eventvault.projections._leases import checkpoint_at
from eventvault.projections._rebuild import lock_ddl

if TYPE_CHECKING:
    from eventvault.projections._db import ReadModels
    from eventvault.store.records import Checkpoint

__all__ = ["is_paused", "reset_to", "set_paused"]


def _serving(db: ReadModels, conn: object, name: str) -> tuple[int, bool]:
    row = db.execute(conn, "SELECT generation, paused FROM ev_projection WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise InvalidInput(f"projection {name!r} has never run on this database: nothing to control yet")
    return int(row[0]), bool(row[1])


def is_paused(db: ReadModels, name: str) -> bool:
    """Whether ``name`` is paused."""
    with db.transaction() as conn:
        return _serving(db, conn, name)[1]


def set_paused(db: ReadModels, name: str, *, paused: bool) -> bool:
    """Pause (or unpause) ``name``; True if that changed anything."""
    with db.transaction() as conn:
        lock_ddl(db, conn)
        generation, was = _serving(db, conn, name)
        if was == paused:
            return False
        db.execute(conn, "UPDATE ev_projection SET paused = ? WHERE name = ?", (int(paused), name))
        if paused:
            # Fence the holders: their next checkpoint write fails, and their next
            # lease sync takes nothing.
            db.execute(
                conn,
                "UPDATE ev_partition SET token = token + 1, owner = NULL, expires = 0 "
                "WHERE name = ? AND generation = ?",
                (name, generation),
            )
        return True


def reset_to(db: ReadModels, name: str, checkpoint: Checkpoint, head: Checkpoint) -> int:
    """Move the paused projection ``name`` forward to ``checkpoint``, skipping the events before it.

    Every partition behind ``checkpoint`` moves there, and every partition
    loses its recorded error (the event that failed is skipped). A checkpoint only moves forward:
    the read-model rows already hold what was applied, and applying it again
    would count it twice (a rebuild starts afresh instead). Returns how many
    partitions moved.
    """
    if checkpoint > head:
        raise InvalidInput(f"checkpoint {checkpoint} is past the head of the log ({head})")
    with db.transaction() as conn:
        lock_ddl(db, conn)
        generation, paused = _serving(db, conn, name)
        if not paused:
            raise InvalidInput(f"pause {name} before resetting its checkpoint: workers apply its events")
        rows = db.execute(
            conn,
            "SELECT part, cp_tx, cp_pos FROM ev_partition WHERE name = ? AND generation = ? ORDER BY part",
            (name, generation),
        ).fetchall()
        ahead = [int(p) for p, tx, pos in rows if checkpoint_at(tx, pos) > checkpoint]
        if ahead:
            lowest = min(checkpoint_at(tx, pos) for _, tx, pos in rows)
            raise InvalidInput(
                f"{name} is already past {checkpoint} (partitions {ahead}; the lowest checkpoint is "
                f"{lowest}): a checkpoint only moves forward; to apply events again, rebuild it"
            )
        moved = 0
        for p, tx, pos in rows:
            db.execute(
                conn,
                "UPDATE ev_partition SET cp_tx = ?, cp_pos = ?, token = token + 1, owner = NULL, "
                "expires = 0, error = NULL, error_at = NULL, error_tx = NULL, error_pos = NULL, "
                "error_event = NULL, error_type = NULL, error_stream = NULL "
                "WHERE name = ? AND generation = ? AND part = ?",
                (checkpoint.tx, checkpoint.position, name, generation, int(p)),
            )
            moved += checkpoint_at(tx, pos) < checkpoint
        return moved
