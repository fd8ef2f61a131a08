"""What goes through the store's queues, and how the outcomes get back to their callers.

A caller on an event loop puts a job on a queue (the writer's or the
readers') and awaits its future; the thread that runs the job hands the
outcome back to that loop as a :class:`Delivery`, which resolves the futures
there. A group committed on the loop's own thread settles its delivery
directly.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from eventvault.store.sqlite.writes import Append


class Call(NamedTuple):
    """``fn(cursor, *args)`` for the caller awaiting ``future`` on ``loop``."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    write: bool
    """Run inside the writer's transaction (else a read, outside any)."""


class AppendJob(NamedTuple):
    """An append for the caller awaiting ``future`` on ``loop``; the writer may batch it with others."""

    append: Append
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


Job = Call | AppendJob
STOP: Final = None
"""Put on a queue by close(): the thread taking it ends."""


class Outcome(NamedTuple):
    """A job's result (``ok``) or the exception its caller gets."""

    future: asyncio.Future[Any]
    ok: bool
    value: Any


@dataclass(slots=True)
class Delivery:
    """Outcomes for the callers on one loop, and what to run there before them."""

    loop: asyncio.AbstractEventLoop
    outcomes: list[Outcome] = field(default_factory=list)
    wake: Callable[[], None] | None = None
    """Wakes the store's waiters (wait_for_events) on that loop: one wake-up of it per commit."""


def settle(delivery: Delivery) -> None:
    """Resolve the futures of ``delivery``; call on its loop's thread."""
    if delivery.wake is not None:
        delivery.wake()
    for future, ok, value in delivery.outcomes:
        if future.done():  # cancelled while we worked
            continue
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)


def post(delivery: Delivery) -> None:
    """Have ``delivery`` settled on its loop, from any thread."""
    # A closed loop raises RuntimeError: its caller is gone, nobody waits any more.
    with contextlib.suppress(RuntimeError):
        delivery.loop.call_soon_threadsafe(settle, delivery)


def fail(job: Job, error: BaseException) -> None:
    """Fail ``job``'s caller with ``error``, from any thread."""
    post(Delivery(job.loop, [Outcome(job.future, ok=False, value=error)]))
