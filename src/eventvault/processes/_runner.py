"""The process runner: process managers run as projections whose handlers act before they commit.

Each process manager becomes a projection of the log (the same workers,
checkpoints, leases, fencing and status as any projection). Its worker
differs in one thing: before a page's transaction, it runs the step each
event of the page calls for — the commands, then the instance's events, all
with derived ids — and only then commits the page and moves the checkpoint.
A crash in between runs those steps again, and they append nothing new.

The projection also keeps two tables from the instances' own events: the
instances (state, last step, error) and their pending deadlines. A worker
fires the due deadlines of the partitions it holds, so a deadline that came
due while no worker ran fires when one starts.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from eventvault.errors import InvalidInput
from eventvault.processes._process import (
    DeadlineCancelled,
    DeadlineFired,
    DeadlineScheduled,
    ProcessEnded,
    ProcessManager,
    ProcessStopped,
    Step,
    StepDone,
)
from eventvault.processes._steps import StepOutcome, run_step
from eventvault.projections import Projection, ProjectionRunner, Session, partition_of
from eventvault.projections._worker import Worker
from eventvault.repository import Repository

if TYPE_CHECKING:
    from eventvault.projections import ReadModels
    from eventvault.store.base import EventStore
    from eventvault.store.records import Checkpoint, RecordedEvent

__all__ = ["InstanceStatus", "ProcessRunner"]

log = logging.getLogger("eventvault.processes")

_BOOKKEEPING = (StepDone, DeadlineScheduled, DeadlineCancelled, DeadlineFired, ProcessEnded, ProcessStopped)
_DUE_PER_STEP = 100  # deadlines fired between two pages of the log


@dataclass(frozen=True)
class InstanceStatus:
    """One process instance, as its events left it: ``running``, ``ended`` or ``stopped`` (with the error)."""

    process_id: str
    state: str
    step: str | None
    error: str | None
    version: int
    updated_at: float


class _ManagerProjection(Projection):
    """The projection a process manager runs as (one subclass per manager)."""

    manager: ClassVar[ProcessManager[Any]]
    statements: ClassVar[dict[str, str]]

    def apply(self, db: Session, e: RecordedEvent) -> None:
        """Keep the instances and deadlines tables of this manager's instances."""
        m = type(self).manager
        prefix = m.process.category + "-"
        if not e.stream_id.startswith(prefix) or not isinstance(e.data, _BOOKKEEPING):
            return  # an event the manager reacts to: its step ran before this transaction
        pid = e.stream_id[len(prefix) :]
        data = e.data
        now = e.recorded_at.timestamp()
        state = {ProcessEnded: "ended", ProcessStopped: "stopped"}.get(type(data), "running")
        step = data.step if isinstance(data, (StepDone, ProcessStopped)) else None
        error = data.error if isinstance(data, ProcessStopped) else None
        sql = type(self).statements
        db.execute(sql["instance"], (pid, state, step, error, e.stream_version, now))
        if isinstance(data, DeadlineScheduled):
            due_at = datetime.fromisoformat(data.due).timestamp()
            part = partition_of(e.stream_id, m.partitions)
            db.execute(sql["schedule"], (pid, data.name, data.due, due_at, part))
        elif isinstance(data, (DeadlineCancelled, DeadlineFired)):
            db.execute(sql["unschedule"], (pid, data.name))
        elif isinstance(data, (ProcessEnded, ProcessStopped)):
            db.execute(sql["unschedule_all"], (pid,))


# The tables of a manager named N are N_instances and N_deadlines: {instances} and
# {deadlines} below become the {N_instances} and {N_deadlines} of a projection's SQL.
_SCHEMA = (
    (
        "CREATE TABLE {instances} (process_id TEXT PRIMARY KEY, state TEXT NOT NULL, step TEXT, error TEXT,"
        " version INTEGER NOT NULL, updated_at DOUBLE PRECISION NOT NULL)"
    ),
    "CREATE INDEX {instances}_by_state ON {instances} (state)",
    (
        "CREATE TABLE {deadlines} (process_id TEXT NOT NULL, name TEXT NOT NULL, due TEXT NOT NULL,"
        " due_at DOUBLE PRECISION NOT NULL, part INTEGER NOT NULL, PRIMARY KEY (process_id, name))"
    ),
    "CREATE INDEX {deadlines}_by_due ON {deadlines} (due_at)",
)
_STATEMENTS = {
    # An instance's row follows its events; once ended or stopped it stays so.
    "instance": "INSERT INTO {instances} (process_id, state, step, error, version, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (process_id) DO UPDATE SET"
    " state = CASE WHEN {instances}.state = 'running' THEN excluded.state ELSE {instances}.state END,"
    " step = COALESCE(excluded.step, {instances}.step), error = COALESCE(excluded.error, {instances}.error),"
    " version = excluded.version, updated_at = excluded.updated_at"
    " WHERE {instances}.version < excluded.version",
    "schedule": "INSERT INTO {deadlines} (process_id, name, due, due_at, part) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (process_id, name) DO UPDATE SET due = excluded.due, due_at = excluded.due_at",
    "unschedule": "DELETE FROM {deadlines} WHERE process_id = ? AND name = ?",
    "unschedule_all": "DELETE FROM {deadlines} WHERE process_id = ?",
}
_DUE = "SELECT process_id, name, due, part FROM {deadlines} WHERE due_at <= ? ORDER BY due_at LIMIT ?"
_INSTANCES = "SELECT process_id, state, step, error, version, updated_at FROM {instances}"


def _named(sql: str, name: str, *, braces: bool = True) -> str:
    """``sql`` with the manager's table names (in braces: a projection's logical names)."""
    open_, close = ("{", "}") if braces else ("", "")
    return sql.replace("{instances}", f"{open_}{name}_instances{close}").replace(
        "{deadlines}", f"{open_}{name}_deadlines{close}"
    )


def projection_for(manager: ProcessManager[Any]) -> Projection:
    """The projection ``manager`` runs as: its reactions' events, its instances' bookkeeping."""
    if not isinstance(manager, ProcessManager) or not manager.name:
        raise InvalidInput("process managers are ProcessManager instances with a name")
    name = manager.name
    reacted = tuple(manager.reactions())
    if not reacted:
        raise InvalidInput(f"process manager {name!r} has no @reacts_to steps: it would never do anything")

    def handler(self: _ManagerProjection, db: Session, e: RecordedEvent) -> None:
        self.apply(db, e)

    handler.__handles__ = tuple(dict.fromkeys((*reacted, *_BOOKKEEPING)))  # type: ignore[attr-defined]
    attrs = {
        "name": name,
        "tables": (f"{name}_instances", f"{name}_deadlines"),
        "schema": tuple(_named(ddl, name) for ddl in _SCHEMA),
        "statements": {k: _named(v, name) for k, v in _STATEMENTS.items()},
        "partitions": manager.partitions,
        "batch_size": manager.batch_size,
        "manager": manager,
        "_handle": handler,
    }
    cls: type[_ManagerProjection] = type(f"{type(manager).__name__}Projection", (_ManagerProjection,), attrs)
    return cls()


class ProcessWorker(Worker):
    """A projection worker that runs each event's step, then commits the page and its checkpoint."""

    lingers = False  # its steps act on the events: at once, not a batch later

    def __init__(
        self, runner: ProcessRunner, projection: _ManagerProjection, generation: int, *, rebuild: bool = False
    ) -> None:
        super().__init__(runner, projection, generation, rebuild=rebuild)
        self.manager = type(projection).manager
        self.repository = runner.repository

    async def _step(self) -> bool:
        # A rebuild only rebuilds the tables: every step of the log has run already.
        if not self.rebuild and self.leases.owned:
            await self._fire_due()
        return await super()._step()

    async def _apply_page(self, events: list[RecordedEvent], end: Checkpoint) -> bool:
        if not self.rebuild:
            for planned in self._plan(events):
                await self._react(planned.event)
        return await super()._apply_page(events, end)

    async def _react(self, e: RecordedEvent) -> None:
        await react(self.manager, self.repository, e)

    async def _fire_due(self) -> None:
        name = self.manager.name
        rows = await self._db(
            self.runner.db.query,
            _named(_DUE, name, braces=False),
            (time.time(), _DUE_PER_STEP),
        )
        owned = self.leases.owned
        for pid, deadline, due, part in rows:
            if part in owned and not self.runner.stopping.is_set():
                await fire_deadline(self.manager, self.repository, str(pid), str(deadline), str(due))


async def react(manager: ProcessManager[Any], repository: Repository, e: RecordedEvent) -> StepOutcome | None:
    """Run the step ``e`` calls for, if it calls for one (None: it is for no instance of ``manager``)."""
    found = manager.instance_of(e)
    if found is None:
        return None
    pid, starts, reaction = found

    async def act(step: Step[Any]) -> None:
        await reaction(manager, step, e)

    return await run_step(manager, repository, pid, f"event:{e.event_id}", act, starts=starts, event=e)


async def fire_deadline(
    manager: ProcessManager[Any], repository: Repository, process_id: str, name: str, due: str
) -> StepOutcome:
    """Run the step of the deadline ``name`` due at ``due``, if the instance still waits for it."""
    handler = manager.deadline_handlers()[name]

    async def act(step: Step[Any]) -> None:
        if step.process.deadlines.get(name) != due:
            return  # cancelled or moved since: nothing to do
        step.process.record(DeadlineFired(name, due))
        await handler(manager, step)

    return await run_step(manager, repository, process_id, f"deadline:{name}:{due}", act, starts=False)


class ProcessRunner(ProjectionRunner):
    """Runs process managers (and any projections) in this process, with leases shared across processes.

    Takes the options of :class:`~eventvault.projections.ProjectionRunner`;
    ``repository`` is what steps load and save aggregates with.
    """

    def __init__(
        self,
        store: EventStore,
        managers: Sequence[ProcessManager[Any]],
        *,
        projections: Sequence[Projection] = (),
        repository: Repository | None = None,
        read_models: ReadModels | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(managers, (list, tuple)) or not all(
            isinstance(m, ProcessManager) for m in managers
        ):
            raise InvalidInput("managers is a list of ProcessManager instances")
        self.managers = {m.name: m for m in managers}
        self.repository = repository if repository is not None else Repository(store)
        super().__init__(
            store, [*(projection_for(m) for m in managers), *projections], read_models=read_models, **options
        )

    def make_worker(self, projection: Projection, generation: int, *, rebuild: bool = False) -> Worker:
        if isinstance(projection, _ManagerProjection):
            return ProcessWorker(self, projection, generation, rebuild=rebuild)
        return super().make_worker(projection, generation, rebuild=rebuild)

    async def instances(
        self, name: str, *, state: str | None = None, limit: int = 100
    ) -> list[InstanceStatus]:
        """The instances of the process manager ``name`` (``state``: only those), last changed first."""
        if name not in self.managers:
            raise InvalidInput(f"unknown process manager {name!r}; this runner has {sorted(self.managers)}")
        if state not in (None, "running", "ended", "stopped"):
            raise InvalidInput(f"state is running, ended or stopped, not {state!r}")
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
            raise InvalidInput(f"limit must be an int in 1..10000, got {limit!r}")
        where = "" if state is None else " WHERE state = ?"
        params: tuple[Any, ...] = () if state is None else (state,)
        rows = await asyncio.to_thread(
            self.db.query,
            _named(_INSTANCES, name, braces=False) + where + " ORDER BY updated_at DESC, process_id LIMIT ?",
            (*params, limit),
        )
        return [InstanceStatus(str(r[0]), str(r[1]), r[2], r[3], int(r[4]), float(r[5])) for r in rows]
