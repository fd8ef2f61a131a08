"""eventvault.testing.eventually: waits for a condition another thread moves, and says what it last saw."""

from __future__ import annotations

import asyncio
import threading

import pytest

from eventvault.testing import eventually, eventually_async


def test_it_returns_the_first_value_that_is_done() -> None:
    """The probe is called until ``done`` holds; that value is the answer."""
    seen = iter(range(100))
    assert eventually(lambda: next(seen), lambda n: n >= 3) == 3


def test_it_waits_for_another_thread() -> None:
    """A flag another thread sets is seen once it is set."""
    flag = threading.Event()
    t = threading.Thread(target=flag.set)
    t.start()
    assert eventually(flag.is_set, what="the flag") is True
    t.join(60)


def test_running_out_names_what_and_the_last_value() -> None:
    """After ``within`` seconds: AssertionError with what was awaited and the last value seen."""
    calls = iter(range(10**9))
    with pytest.raises(AssertionError, match=r"the counter reaches -1: not within 0\.05s; last saw \d+"):
        eventually(lambda: next(calls), lambda n: n < 0, within=0.05, what="the counter reaches -1")


def test_what_may_be_asked_when_the_wait_runs_out() -> None:
    """A function as ``what`` is called at the failure: it can show a log written meanwhile."""
    log: list[str] = []

    def probe() -> bool:
        log.append("still starting")
        return False

    with pytest.raises(AssertionError, match=r"log: still starting"):
        eventually(probe, within=0.01, what=lambda: f"log: {log[-1]}")


def test_a_failing_probe_ends_the_wait_at_once() -> None:
    """An exception of the probe is raised as it is, without waiting out the deadline."""

    def probe() -> bool:
        raise RuntimeError("the process died")

    with pytest.raises(RuntimeError, match="the process died"):
        eventually(probe, within=3600)


def test_a_long_last_value_is_cut() -> None:
    """The failure shows the start of a huge value, not all of it."""
    with pytest.raises(AssertionError) as caught:
        eventually(lambda: "x" * 100_000, lambda _: False, within=0.01)
    assert len(str(caught.value)) < 3000


async def test_the_async_form_awaits_the_probe_and_lets_the_loop_run() -> None:
    """A task of the same loop moves the state between polls."""
    box: list[int] = []

    async def fill() -> None:
        for i in range(5):
            box.append(i)
            await asyncio.sleep(0)

    async def probe() -> list[int]:
        return list(box)

    task = asyncio.create_task(fill())
    assert await eventually_async(probe, lambda b: len(b) == 5) == [0, 1, 2, 3, 4]
    await task


async def test_the_async_form_names_the_last_value_too() -> None:
    """Running out in the async form is the same AssertionError."""

    async def probe() -> str:
        return "still starting"

    with pytest.raises(AssertionError, match=r"the worker: not within 0\.05s; last saw 'still starting'"):
        await eventually_async(probe, lambda s: s == "running", within=0.05, what="the worker")
