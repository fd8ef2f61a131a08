"""The DCB routes: query reads and conditional appends over HTTP, 501 on stores without DCB.

The routes' own behaviour is shown on memory and SQLite stores, behind the same
middleware, guard and problem handlers as the real app; the ledger app itself
answers them on the backends in DCB_BACKENDS and 501 on the others.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

import eventvault_ledger.domain  # noqa: F401 - registers the ledger's event types
from eventvault import NO_STREAM, EventStore, NewEvent, create_store, default_registry
from eventvault.store.memory import MemoryEventStore
from eventvault_ledger.api import dcb_routes
from eventvault_ledger.api.middleware import RequestIdMiddleware
from eventvault_ledger.api.problems import install_problem_handlers
from eventvault_ledger.api.security import Guard
from eventvault_ledger.domain import AccountOpened

PROBLEM_BASE = "https://eventvault.dev/problems/"
DCB_BACKENDS = {"sqlite", "postgresql"}
"""The service's backends with DCB support (the ledger app's routes answer 200, not 501)."""
SEAT = json.dumps([{"tags": ["seat:1"]}])


def problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["type"] == PROBLEM_BASE + code, body
    return body


class MemoryStoreWithoutDCB(MemoryEventStore):
    """A store of a backend without DCB support."""

    supports_dcb = False


def routes_app(store: EventStore) -> FastAPI:
    """The DCB routes on ``store``, with the API's guard (open on loopback) and problem handlers."""
    app = FastAPI()
    install_problem_handlers(app)
    app.add_middleware(Guard, tokens=(), metrics_token=None)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(dcb_routes.router)
    app.state.services = SimpleNamespace(store=store)
    return app


@pytest.fixture(params=["memory", "sqlite"])
async def dcb(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, EventStore]]:
    """The DCB routes on a memory store or a SQLite file."""
    if request.param == "memory":
        store: EventStore = MemoryEventStore(registry=default_registry)
    else:
        store = create_store(f"sqlite:///{tmp_path / 'dcb.db'}", registry=default_registry)
    await store.open()
    transport = httpx.ASGITransport(app=routes_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c, store
    await store.close()


def seat_taken(student: str, after: int | None = 0) -> dict[str, Any]:
    return {
        "events": [
            {"type": "SeatTaken", "data": {"student": student}, "tags": ["seat:1", f"student:{student}"]}
        ],
        "condition": {"failIfEventsMatch": [{"tags": ["seat:1"]}], "after": after},
    }


async def test_an_append_lands_and_a_query_reads_it_back(dcb: Any) -> None:
    """An append answers its position; a read by tag returns the event's type, tags, data and the head."""
    client, _ = dcb
    r = await client.post("/api/dcb/append", json=seat_taken("ada"))
    assert r.status_code == 200, r.text
    position = r.json()["position"]
    r = await client.get("/api/dcb/read", params={"query": SEAT})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["head"] == position
    [e] = body["events"]
    assert (e["position"], e["eventType"], e["tags"], e["data"]) == (
        position,
        "SeatTaken",
        ["seat:1", "student:ada"],
        {"student": "ada"},
    )
    assert e["streamId"].startswith("dcb-")


async def test_a_stale_condition_is_409_append_condition_failed(dcb: Any) -> None:
    """An append decided before another answers 409, naming the conflicting position; nothing lands."""
    client, store = dcb
    first = (await client.post("/api/dcb/append", json=seat_taken("ada"))).json()["position"]
    body = problem(
        await client.post("/api/dcb/append", json=seat_taken("bob")), 409, "append-condition-failed"
    )
    assert (body["position"], body["after"]) == (first, 0)
    assert (await store.head()).position == first
    # Decided on the current head, it lands.
    r = await client.post("/api/dcb/append", json=seat_taken("bob", after=first))
    assert r.status_code == 200, r.text


async def test_reads_honour_after_limit_and_or_of_items(dcb: Any) -> None:
    """Reads skip positions up to after, stop at limit and OR their items; the head stays the log's."""
    client, _ = dcb
    positions = []
    for student in ("a", "b", "c"):
        r = await client.post("/api/dcb/append", json={"events": [seat_taken(student)["events"][0]]})
        positions.append(r.json()["position"])
    query = json.dumps([{"tags": ["student:a"]}, {"types": ["SeatTaken"], "tags": ["student:c"]}])
    got = (await client.get("/api/dcb/read", params={"query": query})).json()
    assert [e["position"] for e in got["events"]] == [positions[0], positions[2]]
    got = (
        await client.get("/api/dcb/read", params={"query": SEAT, "after": positions[0], "limit": 1})
    ).json()
    assert ([e["position"] for e in got["events"]], got["head"]) == ([positions[1]], positions[2])


async def test_stream_events_with_tags_are_read_as_stored(dcb: Any) -> None:
    """A ledger event appended to its stream with a tag is read back with its stream, version and JSON."""
    client, store = dcb
    opened = AccountOpened(owner_name="Ada", currency="EUR")
    await store.append("account-1", [NewEvent(opened, tags=["owner:ada"])], expected_version=NO_STREAM)
    [e] = (await client.get("/api/dcb/read", params={"query": json.dumps([{"tags": ["owner:ada"]}])})).json()[
        "events"
    ]
    assert (e["streamId"], e["version"], e["eventType"], e["data"]["currency"]) == (
        "account-1",
        1,
        "AccountOpened",
        "EUR",
    )


async def test_a_retry_with_the_same_event_id_appends_once(dcb: Any) -> None:
    """Sending the same eventId again answers the first position, though its condition would now fail."""
    client, store = dcb
    body = seat_taken("ada")
    body["events"][0]["eventId"] = str(uuid.uuid4())
    first = await client.post("/api/dcb/append", json=body)
    again = await client.post("/api/dcb/append", json=body)
    assert first.json() == again.json()
    assert (await store.head()).position == 1


@pytest.mark.parametrize(
    ("body", "words"),
    [
        pytest.param({"events": []}, "events", id="no events"),
        pytest.param({"events": [{"type": "X", "data": {}, "tags": [""]}]}, "tag", id="empty tag"),
        pytest.param({"events": [{"type": "X", "data": []}]}, "data", id="data not an object"),
        pytest.param({"events": [{"type": "9x", "data": {}}]}, "event type", id="bad type name"),
        pytest.param({"events": [{"type": "AccountOpened", "data": {}}]}, "registered", id="a ledger type"),
        pytest.param(
            {"events": [{"type": "X", "data": {}}], "condition": {"failIfEventsMatch": []}},
            "failIfEventsMatch",
            id="empty condition",
        ),
        pytest.param({"events": [{"type": "X", "data": {}}], "extra": 1}, "extra", id="unknown field"),
    ],
)
async def test_bad_appends_are_422_and_write_nothing(dcb: Any, body: dict[str, Any], words: str) -> None:
    """Bad bodies, and the ledger's own event types, are refused with a validation problem."""
    client, store = dcb
    found = problem(await client.post("/api/dcb/append", json=body), 422, "validation")
    assert words.lower() in json.dumps(found).lower(), found
    assert (await store.head()).position == 0


@pytest.mark.parametrize(
    "query",
    ["not json", "[]", '[{"tags": "a"}]', '{"types": ["A"]}', '[{"colour": ["red"]}]'],
)
async def test_bad_queries_are_422(dcb: Any, query: str) -> None:
    """A query that is not a list of items of types and tags is a validation problem naming it."""
    client, _ = dcb
    body = problem(await client.get("/api/dcb/read", params={"query": query}), 422, "validation")
    assert body["parameter"] == "query"


async def test_a_store_without_dcb_answers_501(tmp_path: Path) -> None:
    """On a store without DCB support both routes are 501 dcb-not-supported; a bad query is still 422."""
    store = await MemoryStoreWithoutDCB(registry=default_registry).open()
    transport = httpx.ASGITransport(app=routes_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        body = problem(await client.get("/api/dcb/read", params={"query": SEAT}), 501, "dcb-not-supported")
        assert store.scheme in body["detail"]
        problem(await client.post("/api/dcb/append", json=seat_taken("ada")), 501, "dcb-not-supported")
        problem(await client.get("/api/dcb/read", params={"query": "[]"}), 422, "validation")
    assert (await store.head()).position == 0
    await store.close()


async def test_the_ledger_answers_on_its_store(make_api: Any) -> None:
    """The ledger app's routes append and read on a backend with DCB, and answer 501 on one without."""
    api = await make_api()
    scheme = api.services.store.scheme
    read = await api.get("/api/dcb/read", params={"query": SEAT})
    if scheme not in DCB_BACKENDS:
        body = api.problem(read, 501, "dcb-not-supported")
        assert scheme in body["detail"]
        api.problem(await api.post("/api/dcb/append", json=seat_taken("ada")), 501, "dcb-not-supported")
        assert await api.log_size() == 0
        return
    assert read.status_code == 200, read.text
    assert read.json() == {"events": [], "head": 0}
    r = await api.post("/api/dcb/append", json=seat_taken("ada"))
    assert r.status_code == 200, r.text
    position = r.json()["position"]
    api.problem(await api.post("/api/dcb/append", json=seat_taken("bob")), 409, "append-condition-failed")
    got = (await api.get("/api/dcb/read", params={"query": SEAT})).json()
    assert ([e["position"] for e in got["events"]], got["head"]) == ([position], position)
    assert await api.log_size() == 1


async def test_the_routes_take_the_apis_scopes(make_api: Any) -> None:
    """Reading needs the read scope, appending the write scope; no token is 401."""
    api = await make_api(tokens=("reader", "writer"))
    reader = {"Authorization": "Bearer reader-token-0123456789"}
    writer = {"Authorization": "Bearer writer-token-0123456789"}
    api.problem(await api.get("/api/dcb/read", params={"query": SEAT}), 401, "unauthorized")
    api.problem(await api.post("/api/dcb/append", json=seat_taken("a"), headers=reader), 403, "forbidden")
    read = await api.get("/api/dcb/read", params={"query": SEAT}, headers=reader)
    append = await api.post("/api/dcb/append", json=seat_taken("a"), headers=writer)
    if api.services.store.scheme in DCB_BACKENDS:
        assert (read.status_code, append.status_code) == (200, 200), (read.text, append.text)
    else:
        api.problem(read, 501, "dcb-not-supported")
        api.problem(append, 501, "dcb-not-supported")


async def test_a_body_that_is_not_json_is_422_or_415(dcb: Any) -> None:
    """Malformed JSON is a validation problem, another media type 415, as for the commands."""
    client, store = dcb
    headers = {"Content-Type": "application/json"}
    body = problem(
        await client.post("/api/dcb/append", content=b'{"events": [', headers=headers), 422, "validation"
    )
    assert "not valid JSON" in body["detail"]
    r = await client.post("/api/dcb/append", content=b"events", headers={"Content-Type": "text/plain"})
    problem(r, 415, "unsupported-media-type")
    assert (await store.head()).position == 0
