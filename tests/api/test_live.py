"""Server-Sent Events over a real socket: changes arrive live; a reconnection misses and repeats nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx

# Generous: a guard against a hang, never what the test waits for.
DEADLINE = 15.0


class Events:
    """An open event stream, read one event at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.lines = response.aiter_lines()

    async def next(self) -> dict[str, Any]:
        """The next ``account`` event: its id and data (comments and retry hints skipped)."""
        async with asyncio.timeout(DEADLINE):
            fields: dict[str, str] = {}
            async for line in self.lines:
                if line:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                elif fields.get("event") == "account":
                    return {"id": fields["id"], **json.loads(fields["data"])}
                else:
                    fields = {}
        raise AssertionError("the stream ended")


@contextlib.asynccontextmanager
async def stream(base: str, path: str, **headers: str) -> AsyncIterator[Events]:
    async with (
        httpx.AsyncClient(base_url=base, timeout=DEADLINE) as client,
        client.stream("GET", path, headers=headers) as response,
    ):
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield Events(response)


async def test_a_change_made_by_another_client_arrives_on_the_stream(api, live):
    """A deposit made through another connection arrives as an account event with the new summary."""
    opened = await api.opened()
    account_id = opened["accountId"]

    # From the opening on: on PostgreSQL a fresh stream's start (the readable head)
    # may trail the last commit, and this test wants to know its first event.
    async with stream(
        live, "/api/query/accounts/changes", **{"Last-Event-ID": opened["checkpoint"]}
    ) as events:
        async with httpx.AsyncClient(base_url=live) as other:
            r = await other.post(f"/api/command/accounts/{account_id}/deposit", json={"amount": "4.20"})
            assert r.status_code == 200
        event = await events.next()

    assert event["accountId"] == account_id
    assert (event["currentBalance"], event["version"]) == ("4.20", 2)
    assert event["id"] == r.json()["checkpoint"]


async def test_reconnecting_with_last_event_id_misses_and_repeats_nothing(api, live):
    """After a reconnection with Last-Event-ID come exactly the changes made after that event, in order."""
    first = await api.open("First")
    opened = await api.opened("Second")
    second = opened["accountId"]

    async with stream(
        live, "/api/query/accounts/changes", **{"Last-Event-ID": opened["checkpoint"]}
    ) as events:
        seen = (await api.deposit(first, "1.00")).json()
        assert (await events.next())["id"] == seen["checkpoint"]
    # While disconnected: a change of the other account, then of the first.
    missed = [(await api.deposit(second, "2.00")).json(), (await api.deposit(first, "3.00")).json()]

    async with stream(live, "/api/query/accounts/changes", **{"Last-Event-ID": seen["checkpoint"]}) as events:
        resumed = [await events.next(), await events.next()]
        after = (await api.deposit(second, "4.00")).json()
        latest = await events.next()

    assert [(e["id"], e["accountId"]) for e in resumed] == [(m["checkpoint"], m["accountId"]) for m in missed]
    assert [e["currentBalance"] for e in resumed] == ["2.00", "4.00"]
    assert (latest["id"], latest["currentBalance"]) == (after["checkpoint"], "6.00")


async def test_resuming_from_a_position_works_like_from_an_id(api, live):
    """Last-Event-ID may also be a position a command returned (lastEventId as a query parameter too)."""
    account_id = await api.open()
    seen = (await api.deposit(account_id, "1.00")).json()
    nxt = (await api.deposit(account_id, "2.00")).json()

    async with stream(live, f"/api/query/accounts/changes?lastEventId={seen['position']}") as events:
        event = await events.next()

    assert (event["id"], event["currentBalance"]) == (nxt["checkpoint"], "3.00")


async def test_the_stream_of_one_account_shows_only_that_account(api, live):
    """/accounts/{id}/changes carries that account's changes and none of the others'."""
    mine = await api.open("Mine")
    opened = await api.opened("Other")
    other = opened["accountId"]

    async with stream(
        live, f"/api/query/accounts/{mine}/changes", **{"Last-Event-ID": opened["checkpoint"]}
    ) as events:
        await api.deposit(other, "9.00")
        r = await api.deposit(mine, "1.00")
        await api.deposit(other, "9.00")
        r2 = await api.deposit(mine, "2.00")
        # Changes read in one page are sent once, as the latest state: the two
        # deposits arrive as one or two events, and the last is the second.
        got = [await events.next()]
        if got[-1]["id"] != r2.json()["checkpoint"]:
            got.append(await events.next())

    assert {e["accountId"] for e in got} == {mine}
    assert [e["id"] for e in got] in (
        [r.json()["checkpoint"], r2.json()["checkpoint"]],
        [r2.json()["checkpoint"]],
    )
    assert got[-1]["currentBalance"] == "3.00"


async def test_bad_stream_requests_are_problems(api, live):
    """A Last-Event-ID that is no event is 422; a stream of an unknown account is 404."""
    async with httpx.AsyncClient(base_url=live) as client:
        bad = await client.get("/api/query/accounts/changes", headers={"Last-Event-ID": "not-an-id"})
        beyond = await client.get("/api/query/accounts/changes", headers={"Last-Event-ID": "999999"})
        unknown = await client.get("/api/query/accounts/00000000-0000-0000-0000-000000000001/changes")

    api.problem(bad, 422, "validation")
    api.problem(beyond, 422, "validation")
    api.problem(unknown, 404, "account-not-found")
