"""Waiting in tests for what another thread, process or timer moves: poll, with a generous deadline.

::

    eventually(lambda: server.poll() is not None, what="the server exits")
    status = await eventually_async(lambda: runner.status(), lambda s: s[0].state == "running")

Only for state that the test cannot await (another process's start, a lease that
expires, a row a worker writes): steps of the test's own are ordered by awaits,
never by polling. The deadline is generous because a busy machine is slow, not
wrong; a poll ends as soon as its condition holds, so a generous deadline costs
nothing when things work. When it does run out, the failure names what was
awaited and the last value seen.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

__all__ = ["DEADLINE", "eventually", "eventually_async"]

T = TypeVar("T")

DEADLINE: Final = 60.0
"""Seconds a wait gives its condition by default: long enough for a machine under load."""

_INTERVAL: Final = 0.01
_MAX_INTERVAL: Final = 0.05
_SHOWN: Final = 2000  # characters of the last value a failure shows


def eventually(
    probe: Callable[[], T],
    done: Callable[[T], object] = bool,
    *,
    within: float = DEADLINE,
    what: str | Callable[[], str] = "",
) -> T:
    """Call ``probe`` until ``done(value)`` holds; return that value.

    ``done`` defaults to the value's truth. An exception of the probe ends the wait at
    once (a probe fails fast by raising: a process that died, an error recorded).
    After ``within`` seconds it raises AssertionError with ``what`` and the last value;
    ``what`` may be a function, asked then (for a log that has grown meanwhile).
    """
    end = time.monotonic() + within
    interval = _INTERVAL
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() > end:
            raise AssertionError(_gave_up(what, probe, within, value))
        time.sleep(interval)  # polling what another thread or process moves, with a deadline
        interval = min(interval * 2, _MAX_INTERVAL)


async def eventually_async(
    probe: Callable[[], Awaitable[T]],
    done: Callable[[T], object] = bool,
    *,
    within: float = DEADLINE,
    what: str | Callable[[], str] = "",
) -> T:
    """:func:`eventually` for a probe that is awaited (the event loop runs between polls)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    interval = _INTERVAL
    while True:
        value = await probe()
        if done(value):
            return value
        if loop.time() > end:
            raise AssertionError(_gave_up(what, probe, within, value))
        await asyncio.sleep(interval)  # polling what another task, thread or process moves
        interval = min(interval * 2, _MAX_INTERVAL)


def _gave_up(
    what: str | Callable[[], str], probe: Callable[..., object], within: float, value: object
) -> str:
    if callable(what):
        what = what()
    what = what or getattr(probe, "__qualname__", None) or repr(probe)
    shown = repr(value)
    if len(shown) > _SHOWN:
        shown = shown[:_SHOWN] + "..."
    return f"{what}: not within {within:g}s; last saw {shown}"
