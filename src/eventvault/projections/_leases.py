"""Leases and fencing: which partitions of a projection a worker holds, and proof that it still does.

A projection's streams are split into partitions by a stable hash of the
stream id. Workers (in any number of processes, on any machines that share
the database) hold leases on partitions in ``ev_partition`` and announce
themselves in ``ev_worker``, each taking a fair share. Every takeover bumps
the partition's token; every checkpoint write checks it in the batch's own
transaction (:meth:`Leases.fence`), so a worker that lost its lease (paused,
partitioned, presumed dead) can never commit again: its whole batch rolls back.

Every method that touches the database blocks: the worker runs them on its
own thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from eventvault.projections._projection import partition_of
from eventvault.store.records import START, Checkpoint

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from eventvault.projections._db import ReadModels
    from eventvault.projections._projection import Projection
    from eventvault.projections._status import ProjectionError
    from eventvault.store.records import RecordedEvent

__all__ = ["Abandoned", "LeaseLost", "Leases", "checkpoint_at"]

log = logging.getLogger("eventvault.projections")


class LeaseLost(Exception):
    """Another worker took a partition over (or its checkpoint moved): this worker's batch was rolled back."""


class Abandoned(Exception):
    """The generation this rebuild was building is gone (another rebuild replaced it)."""


def checkpoint_at(tx: Any, position: Any) -> Checkpoint:
    """The checkpoint of a row's transaction id and position columns."""
    return Checkpoint(int(tx), int(position))


class Leases:
    """The partitions one worker holds of one generation of a projection: their tokens and checkpoints.

    A rebuild's worker holds every partition of the generation it builds and
    never follows another; a live worker takes its fair share of the serving
    generation and follows a rebuild that swaps a new one in.
    """

    def __init__(  # noqa: PLR0913 - what a lease is made of
        self,
        db: ReadModels,
        cls: type[Projection],
        generation: int,
        *,
        worker_id: str,
        lease_seconds: float,
        rebuild: bool,
    ) -> None:
        self.db = db
        self.name = cls.name
        self.partitions = cls.partitions
        self.generation = generation
        self.worker_id = worker_id
        self.lease_seconds = lease_seconds
        self.rebuild = rebuild
        self.owned: dict[int, int] = {}
        """Partition -> the lease token this worker took it with."""
        self.cps: dict[int, Checkpoint] = {}
        """Partition -> its checkpoint, as this worker last committed or read it."""
        self.last_sync = -math.inf

    def checkpoint(self) -> Checkpoint:
        """The lowest checkpoint over the partitions held (START if none)."""
        return min(self.cps.values()) if self.cps else START

    def partition_of(self, stream_id: str) -> int:
        return partition_of(stream_id, self.partitions) if self.partitions > 1 else 0

    # -- bookkeeping in memory (the worker's coroutine) ------------------------------------------

    def due(self) -> bool:
        """Whether the leases should be synced now: a third of the lease has passed, or none is held."""
        return time.monotonic() - self.last_sync >= self.lease_seconds / 3 or not self.owned

    def synced(self) -> None:
        self.last_sync = time.monotonic()

    def sync_soon(self) -> None:
        """Sync at the next step, not at the next renewal (a rebuild swapped a generation in)."""
        self.last_sync = -math.inf

    def forget(self) -> None:
        """Hold nothing until the next sync says what is still ours (after a fence or a database error)."""
        self.owned.clear()
        self.last_sync = -math.inf

    # -- within a batch's transaction ---------------------------------------------------------------

    def fence(self, conn: Any) -> None:
        """Raise LeaseLost unless every partition held still carries its token and checkpoint.

        Fence first: confirm (and, on PostgreSQL, lock) every partition we write
        for, so a takeover or a rebuild's swap either waits for this batch or
        makes it fail here, before any read-model row is touched. In partition
        order, like takeovers, so two workers never lock in opposite orders.
        The checkpoint must be where this worker left it too: read models that
        commit without waiting for the disk can lose their last batches in a
        crash of the database, and then the worker starts again from the
        checkpoint the database kept, not from the one it remembers.
        """
        db = self.db
        for p in sorted(self.owned):
            cp = self.cps[p]
            n = db.execute(
                conn,
                "UPDATE ev_partition SET token = token "
                "WHERE name = ? AND generation = ? AND part = ? AND token = ? AND cp_tx = ? AND cp_pos = ?",
                (self.name, self.generation, p, self.owned[p], cp.tx, cp.position),
            ).rowcount
            if n != 1:
                raise LeaseLost(p)

    def advance(self, conn: Any, end: Checkpoint, counts: Mapping[int, int]) -> bool:
        """Move every partition held (and behind ``end``) to ``end``, adding the events applied for it.

        Returns whether one moved.
        """
        moved = False
        for p in sorted(self.owned):
            if self.cps[p] >= end:
                continue
            moved = True
            self.db.execute(
                conn,
                "UPDATE ev_partition SET cp_tx = ?, cp_pos = ?, applied = applied + ? "
                "WHERE name = ? AND generation = ? AND part = ? AND token = ?",
                (end.tx, end.position, counts[p], self.name, self.generation, p, self.owned[p]),
            )
        return moved

    def advanced(self, end: Checkpoint) -> None:
        """The batch that moved the partitions to ``end`` committed."""
        for p in self.owned:
            self.cps[p] = max(self.cps[p], end)

    # -- transactions of their own ------------------------------------------------------------------

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Any]:
        """A transaction of this worker's that may lock its partitions' rows.

        The database ends it if it sits idle a whole lease (PostgreSQL; see
        ReadModels.limit_idle): a worker stopped in the middle of a batch (SIGSTOP,
        a frozen machine) then keeps a takeover waiting on its locks for at most
        that long, and its batch rolls back. The lease was renewed before the
        transaction began, so a batch that is only slow, under a lease still
        valid, is never ended this way.
        """
        with self.db.transaction() as conn:
            self.db.limit_idle(conn, self.lease_seconds)
            yield conn

    def record_failure(self, event: RecordedEvent, error: ProjectionError) -> None:
        """Record on the partition of ``event`` that it failed for good, then give every partition back."""
        db = self.db
        p = self.partition_of(event.stream_id)
        with self.transaction() as conn:
            db.execute(
                conn,
                f"UPDATE ev_partition SET error = ?, error_at = {db.now_sql}, error_tx = ?, error_pos = ?, "
                "error_event = ?, error_type = ?, error_stream = ?, owner = NULL, expires = 0 "
                "WHERE name = ? AND generation = ? AND part = ? AND token = ?",
                (
                    error.message,
                    event.tx,
                    event.position,
                    str(event.event_id),
                    event.event_type,
                    event.stream_id,
                    self.name,
                    self.generation,
                    p,
                    self.owned.get(p, -1),
                ),
            )
        self.release_all()

    def release_all(self) -> None:
        """Give every partition back (others take them at once, not when the lease expires)."""
        db = self.db
        if self.owned:
            log.info("%s: giving back partitions %s", self.name, sorted(self.owned))
        with self.transaction() as conn:
            for p in sorted(self.owned):
                db.execute(
                    conn,
                    "UPDATE ev_partition SET owner = NULL, expires = 0 "
                    "WHERE name = ? AND generation = ? AND part = ? AND token = ?",
                    (self.name, self.generation, p, self.owned[p]),
                )
            if not self.rebuild:
                # Gone from the count of live workers: the others take a fair share at once.
                db.execute(
                    conn,
                    "DELETE FROM ev_worker WHERE worker = ? AND name = ?",
                    (self.worker_id, self.name),
                )
        self.owned.clear()

    def sync(self) -> None:
        """Renew what we hold, give back what is over our fair share, take free partitions."""
        db = self.db
        with self.transaction() as conn:
            (db_now,) = db.execute(conn, f"SELECT {db.now_sql}").fetchone()
            now = float(db_now)
            target = self._fair_share(conn, now)
            self._renew(conn, now, target)
            if len(self.owned) < target:
                self._take(conn, now, target - len(self.owned))
            db.execute(conn, "DELETE FROM ev_worker WHERE expires < ?", (now - 10 * self.lease_seconds,))

    def _fair_share(self, conn: Any, now: float) -> int:
        """How many partitions this worker should hold; follows a swapped-in generation."""
        db = self.db
        serving, paused = db.execute(
            conn, "SELECT generation, paused FROM ev_projection WHERE name = ?", (self.name,)
        ).fetchone()
        active = int(serving)
        if self.rebuild:
            (exists,) = db.execute(
                conn,
                "SELECT count(*) FROM ev_partition WHERE name = ? AND generation = ?",
                (self.name, self.generation),
            ).fetchone()
            if not exists or active > self.generation:
                raise Abandoned(f"rebuild of generation {self.generation} was replaced by another")
            return self.partitions
        if active != self.generation:  # a rebuild swapped generations: follow it
            self.generation = active
            self.owned.clear()
            self.cps.clear()
        db.execute(
            conn,
            "INSERT INTO ev_worker (worker, name, expires) VALUES (?, ?, ?) "
            "ON CONFLICT (worker, name) DO UPDATE SET expires = excluded.expires",
            (self.worker_id, self.name, now + self.lease_seconds),
        )
        if paused:  # an operator paused the projection: hold nothing (see _control.py)
            return 0
        (live,) = db.execute(
            conn, "SELECT count(*) FROM ev_worker WHERE name = ? AND expires > ?", (self.name, now)
        ).fetchone()
        return math.ceil(self.partitions / max(int(live), 1))

    def _renew(self, conn: Any, now: float, target: int) -> None:
        """Extend the leases still ours (forget those taken over), give back those above ``target``."""
        db = self.db
        for p in sorted(self.owned):
            n = db.execute(
                conn,
                "UPDATE ev_partition SET expires = ? "
                "WHERE name = ? AND generation = ? AND part = ? AND token = ?",
                (now + self.lease_seconds, self.name, self.generation, p, self.owned[p]),
            ).rowcount
            if n != 1:
                del self.owned[p]
                self.cps.pop(p, None)
        for p in sorted(self.owned, reverse=True)[: max(0, len(self.owned) - target)]:
            db.execute(
                conn,
                "UPDATE ev_partition SET owner = NULL, expires = 0 "
                "WHERE name = ? AND generation = ? AND part = ? AND token = ?",
                (self.name, self.generation, p, self.owned.pop(p)),
            )
            self.cps.pop(p, None)

    def _take(self, conn: Any, now: float, want: int) -> None:
        """Take up to ``want`` free partitions, bumping each one's token (which fences its last holder).

        Free: nobody's, expired, or ours from before (a restart under the same
        worker id, or a lease this worker lost track of after an error).
        """
        db = self.db
        me = self.worker_id
        free = db.execute(
            conn,
            "SELECT part, owner, expires FROM ev_partition WHERE name = ? AND generation = ? "
            "AND (owner IS NULL OR expires < ? OR owner = ?) AND error IS NULL ORDER BY part",
            (self.name, self.generation, now, me),
        ).fetchall()
        for p, owner, expires in free:
            if want == 0:
                return
            if int(p) in self.owned:
                continue
            taken = db.execute(
                conn,
                "UPDATE ev_partition SET owner = ?, token = token + 1, expires = ? "
                "WHERE name = ? AND generation = ? AND part = ? "
                "AND (owner IS NULL OR expires < ? OR owner = ?) AND error IS NULL "
                "RETURNING token, cp_tx, cp_pos",
                (me, now + self.lease_seconds, self.name, self.generation, p, now, me),
            ).fetchone()
            if taken is None:
                continue
            token, cp_tx, cp_pos = taken
            self.owned[int(p)] = int(token)
            self.cps[int(p)] = checkpoint_at(cp_tx, cp_pos)
            want -= 1
            if owner is None:
                log.info("%s: took partition %d (free)", self.name, p)
            elif owner == me:
                log.info("%s: took partition %d back (held under this worker id before)", self.name, p)
            else:
                log.info(
                    "%s: took partition %d over from %s, whose lease expired %.1fs ago",
                    self.name,
                    p,
                    owner,
                    now - float(expires),
                )
