"""What a process manager is made of: its instance state, its reactions, the step they run in.

A process manager coordinates several aggregates. Each instance of the
process is an aggregate of its own (a :class:`Process`), event-sourced in its
own stream; a *step* is one reaction of one instance (to an event of the log,
or to a deadline that came due). A step may issue commands to aggregates
(:meth:`Step.command`), record events on the instance (its own commands, as
on any aggregate), schedule and cancel deadlines, and end the instance.

Exactly once: every event a step appends, to an aggregate or to the
instance, carries an id derived from the instance's stream, the step and
its place in the step (:func:`step_event_id`). A step run again after a
crash so appends the same ids, which the store stores once; and the
instance records the step as done (``StepDone``, in the same append as the
step's other events), so a step that has landed is never decided again.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from eventvault.domain import Aggregate, applies, event
from eventvault.errors import AggregateNotFound, ConcurrencyError, DomainError, EventTypeError, InvalidInput

if TYPE_CHECKING:
    from eventvault.repository import Repository
    from eventvault.store.records import AppendResult, Metadata, RecordedEvent

__all__ = [
    "DeadlineCancelled",
    "DeadlineFired",
    "DeadlineScheduled",
    "Outcome",
    "Process",
    "ProcessEnded",
    "ProcessManager",
    "ProcessStopped",
    "Step",
    "StepDone",
    "on_deadline",
    "reacts_to",
    "step_event_id",
]

A = TypeVar("A", bound=Aggregate)
P = TypeVar("P", bound="Process")

_NAMESPACE = uuid.UUID("6f1c4d2e-5b8a-4c3e-9d7f-0a1b2c3d4e5f")


def step_event_id(stream_id: str, step: str, place: str) -> uuid.UUID:
    """The id of an event a step appends: the same for the same instance, step and place, always."""
    return uuid.uuid5(_NAMESPACE, f"{stream_id}\x00{step}\x00{place}")


# -- the toolkit's own events on an instance's stream ----------------------------------


@event("eventvault.StepDone")
@dataclass(frozen=True)
class StepDone:
    """The step ``step`` of this instance landed: it is never run again."""

    step: str


@event("eventvault.DeadlineScheduled")
@dataclass(frozen=True)
class DeadlineScheduled:
    """If the instance has not cancelled ``name`` by ``due`` (ISO 8601, UTC), its deadline step runs."""

    name: str
    due: str


@event("eventvault.DeadlineCancelled")
@dataclass(frozen=True)
class DeadlineCancelled:
    """The deadline ``name`` will not fire."""

    name: str


@event("eventvault.DeadlineFired")
@dataclass(frozen=True)
class DeadlineFired:
    """The deadline ``name`` (due at ``due``) came due and its step ran."""

    name: str
    due: str


@event("eventvault.ProcessEnded")
@dataclass(frozen=True)
class ProcessEnded:
    """The instance is done: later events and deadlines do nothing."""


@event("eventvault.ProcessStopped")
@dataclass(frozen=True)
class ProcessStopped:
    """The step ``step`` kept failing with ``error``: the instance stopped there."""

    step: str
    error: str


class Process(Aggregate):
    """The state of one process instance, rebuilt from its stream like any aggregate.

    Subclass it with the process's own events and appliers; the toolkit's
    bookkeeping (steps done, deadlines, ended, stopped) is kept here.
    """

    steps_done: set[str]
    deadlines: dict[str, str]
    ended: bool = False
    stopped: str | None = None

    def __init__(self, id: str) -> None:  # noqa: A002 - the aggregate's word
        super().__init__(id)
        self.steps_done = set()
        self.deadlines = {}

    @applies(StepDone)
    def _step_done(self, e: StepDone) -> None:
        self.steps_done.add(e.step)

    @applies(DeadlineScheduled)
    def _scheduled(self, e: DeadlineScheduled) -> None:
        self.deadlines[e.name] = e.due

    @applies(DeadlineCancelled)
    def _cancelled(self, e: DeadlineCancelled) -> None:
        self.deadlines.pop(e.name, None)

    @applies(DeadlineFired)
    def _fired(self, e: DeadlineFired) -> None:
        if self.deadlines.get(e.name) == e.due:
            del self.deadlines[e.name]

    @applies(ProcessEnded)
    def _ended(self, _e: ProcessEnded) -> None:
        self.ended = True
        self.deadlines.clear()

    @applies(ProcessStopped)
    def _stopped(self, e: ProcessStopped) -> None:
        self.stopped = f"{e.step}: {e.error}"


@dataclass(frozen=True)
class Outcome(Generic[A]):
    """What a command issued by a step came to: accepted (with its append) or refused (with the error)."""

    aggregate: A | None
    result: AppendResult | None = None
    error: DomainError | None = None

    @property
    def accepted(self) -> bool:
        return self.error is None

    @property
    def refused(self) -> bool:
        return self.error is not None


@dataclass
class Step(Generic[P]):
    """One step of one instance: what a reaction gets to decide and act with."""

    manager: ProcessManager[P]
    process: P
    key: str
    repository: Repository
    event: RecordedEvent | None = None
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    metadata: Metadata | None = None
    commands: int = 0

    @property
    def process_id(self) -> str:
        return self.process.id

    async def command(
        self,
        cls: type[A],
        aggregate_id: str,
        command: Callable[[A], object],
        *,
        create: bool = False,
        retries: int = 10,
    ) -> Outcome[A]:
        """Run ``command`` on the aggregate and append what it recorded, exactly once.

        The events get ids derived from this step and the command's place in
        it: when a step runs again after a crash, a command that had landed
        appends nothing again, and a command that now refuses (the state holds
        its own earlier events) is found to have landed. A refusal (a
        :class:`DomainError`) is an outcome, not a failure: react to it, for
        instance with a compensating step. ``create`` runs the command on a new
        aggregate when the stream is empty.
        """
        n = self.commands
        self.commands += 1
        stream_id = cls.stream_id_for(aggregate_id)

        def ids(count: int) -> list[uuid.UUID]:
            return [step_event_id(self.process.stream_id, self.key, f"command-{n}-{i}") for i in range(count)]

        for _ in range(retries + 1):
            try:
                aggregate = await self.repository.load(cls, aggregate_id)
            except AggregateNotFound as exc:
                if not create:
                    return Outcome(None, None, _NotFound(str(exc)))
                aggregate = cls(aggregate_id)
            try:
                command(aggregate)
            except DomainError as exc:
                landed = await _landed(self.repository, stream_id, ids(1)[0])
                if landed is not None:
                    return Outcome(aggregate, landed)
                return Outcome(aggregate, None, exc)
            if not aggregate.pending_events:
                return Outcome(aggregate)
            try:
                result = await self.repository.save(
                    aggregate, metadata=self.metadata, event_ids=ids(len(aggregate.pending_events))
                )
            except ConcurrencyError:
                continue
            return Outcome(aggregate, result)
        raise ConcurrencyError(f"{stream_id} kept changing under the command of step {self.key}")

    def schedule(self, name: str, *, at: datetime | None = None, after: timedelta | None = None) -> datetime:
        """If nothing cancels it first, run the ``@on_deadline(name)`` step at ``at`` (or ``after`` from now).

        Scheduling a name again moves its deadline. Returns the due time.
        """
        if (at is None) == (after is None):
            raise InvalidInput("schedule takes at= or after=, one of them")
        due = self.now + after if after is not None else at
        if due is None or due.utcoffset() is None:
            raise InvalidInput("a deadline is a timezone-aware datetime")
        if name not in self.manager.deadline_handlers():
            raise InvalidInput(f"{type(self.manager).__name__} has no @on_deadline({name!r}) step")
        self.process.record(DeadlineScheduled(name, due.astimezone(UTC).isoformat()))
        return due

    def cancel(self, name: str) -> None:
        """The deadline ``name`` will not fire (nothing if it is not scheduled)."""
        if name in self.process.deadlines:
            self.process.record(DeadlineCancelled(name))

    def end(self) -> None:
        """The instance is done: its deadlines are dropped, later events do nothing."""
        if not self.process.ended:
            self.process.record(ProcessEnded())


class _NotFound(DomainError):
    """The aggregate a command was for does not exist."""


async def _landed(repository: Repository, stream_id: str, event_id: uuid.UUID) -> AppendResult | None:
    """The append that stored ``event_id`` in ``stream_id``, if one did."""
    from eventvault.store.records import AppendResult, Checkpoint  # noqa: PLC0415 - runtime only here

    for e in await repository.store.read_stream(stream_id):
        if e.event_id == event_id:
            return AppendResult(stream_id, e.stream_version, (e.position,), Checkpoint(e.tx, e.position))
    return None


Reaction = Callable[[Any, Step[Any], "RecordedEvent"], Awaitable[None]]
DeadlineStep = Callable[[Any, Step[Any]], Awaitable[None]]


@dataclass(frozen=True)
class _Reacts:
    event_classes: tuple[type, ...]
    instance: Callable[[RecordedEvent], str | None]
    starts: bool


def reacts_to(
    *event_classes: type, instance: Callable[[RecordedEvent], str | None], starts: bool = False
) -> Callable[[Reaction], Reaction]:
    """Method decorator: a step of the instance ``instance(event)`` names, for each event of these classes.

    ``instance`` returns the process id (None: the event is not for this
    process). With ``starts``, an event for an instance that does not exist
    yet creates it; otherwise such an event is ignored.
    """
    if not event_classes:
        raise TypeError("@reacts_to needs at least one event class")
    if not callable(instance):
        raise TypeError("@reacts_to needs instance=, a function of the event that returns the process id")

    def decorate(fn: Reaction) -> Reaction:
        fn.__reacts__ = _Reacts(event_classes, instance, starts)  # type: ignore[attr-defined]
        return fn

    return decorate


def on_deadline(name: str) -> Callable[[DeadlineStep], DeadlineStep]:
    """Method decorator: the step that runs when the instance's deadline ``name`` comes due."""

    def decorate(fn: DeadlineStep) -> DeadlineStep:
        fn.__deadline__ = name  # type: ignore[attr-defined]
        return fn

    return decorate


class ProcessManager(Generic[P]):
    """Coordinates aggregates by reacting to events: subclass it with reactions and deadline steps.

    Set :attr:`name` (it keys the checkpoint, like a projection's) and
    :attr:`process` (the :class:`Process` subclass holding an instance's
    state). A step that raises anything but a refusal is retried
    :attr:`retries` times; then that instance stops there (``ProcessStopped``,
    shown by ``ProcessRunner.instances``) and the others go on.
    """

    name: ClassVar[str] = ""
    process: ClassVar[type[Process]] = Process
    partitions: ClassVar[int] = 1
    batch_size: ClassVar[int] = 100
    retries: ClassVar[int] = 3
    retry_delay: ClassVar[float] = 0.05

    _reactions: ClassVar[dict[type, tuple[_Reacts, Reaction]]] = {}
    _deadlines: ClassVar[dict[str, DeadlineStep]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        reactions: dict[type, tuple[_Reacts, Reaction]] = {}
        deadlines: dict[str, DeadlineStep] = {}
        for klass in reversed(cls.__mro__):
            for attr in vars(klass).values():
                spec = getattr(attr, "__reacts__", None)
                if spec is not None:
                    for c in spec.event_classes:
                        reactions[c] = (spec, attr)
                name = getattr(attr, "__deadline__", None)
                if name is not None:
                    deadlines[name] = attr
        cls._reactions = reactions
        cls._deadlines = deadlines
        if cls.name and not (cls.name.isidentifier() and cls.name.islower() and len(cls.name) <= 30):
            raise EventTypeError(f"process manager name {cls.name!r}: lower case letters, digits, '_', <= 30")
        if not (isinstance(cls.process, type) and issubclass(cls.process, Process)):
            raise EventTypeError(f"{cls.__name__}.process must be a Process subclass")

    def reactions(self) -> Mapping[type, tuple[_Reacts, Reaction]]:
        """Event class -> (how to find its instance, the reaction)."""
        return self._reactions

    def deadline_handlers(self) -> Mapping[str, DeadlineStep]:
        """Deadline name -> its step."""
        return self._deadlines

    def instance_of(self, e: RecordedEvent) -> tuple[str, bool, Reaction] | None:
        """The process id this event is for, whether it may start one, and the reaction; None if none."""
        found = self._reactions.get(type(e.data))
        if found is None:
            return None
        spec, reaction = found
        pid = spec.instance(e)
        if pid is None:
            return None
        if not isinstance(pid, str) or not pid:
            raise InvalidInput(f"{type(self).__name__}: instance= gave {pid!r} for {e.event_type}, not a str")
        return pid, spec.starts, reaction
