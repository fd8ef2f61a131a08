"""DELETE /api/command/accounts/{id}/personal-data: the owner's name is erased (crypto-shredding).

Given an account, when its personal data is erased, then every read shows the
owner as "[redacted]" (the read model, the account read from the log, the raw
event, a rebuilt read model), the account still works, and the name is in no
row of the database.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from eventvault import REDACTED

NAME = "Zelda Quixote-Marlowe"  # a name nothing else in a test database holds


def erase(api: Any, account_id: str, **kw: Any) -> Any:
    return api.client.delete(f"/api/command/accounts/{account_id}/personal-data", **kw)


async def settled(api: Any, account_id: str) -> dict[str, Any]:
    """The account's summary once the read models have passed its last event.

    Not the log's head: on PostgreSQL it trails commits (an erase answers with
    no checkpoint, so the account's own last event is the place to wait for).
    """
    last = (await api.events(account_id))[-1]
    return dict(await api.account(account_id, str(last.checkpoint)))


async def test_erasing_redacts_the_owner_everywhere_and_keeps_the_account(api):
    account_id = await api.open(NAME, "EUR")
    await api.deposit(account_id, "10.00")

    r = await erase(api, account_id)

    assert r.status_code == 204, r.text
    assert r.content == b""
    summary = await settled(api, account_id)
    assert (summary["ownerName"], summary["currentBalance"], summary["currency"]) == (
        REDACTED,
        "10.00",
        "EUR",
    )
    events = [e.data for e in await api.events(account_id)]
    assert [type(e).__name__ for e in events] == ["AccountOpened", "MoneyDeposited", "PersonalDataErased"]
    assert events[0].owner_name == REDACTED
    # The account works on: money moves, and it closes.
    assert (await api.withdraw(account_id, "10.00")).status_code == 200
    assert (await api.post(f"/api/command/accounts/{account_id}/close")).status_code == 200


async def test_a_second_erase_is_204_and_records_nothing(api):
    account_id = await api.open(NAME, "EUR")
    assert (await erase(api, account_id)).status_code == 204
    version = await api.version(account_id)

    again = await erase(api, account_id)

    assert again.status_code == 204
    assert await api.version(account_id) == version


async def test_an_unknown_account_is_404(api):
    api.problem(await erase(api, "0190a4c2-0000-7000-8000-000000000000"), 404, "account-not-found")
    api.problem(await erase(api, "not-a-uuid"), 404, "account-not-found")


async def test_erasing_needs_the_admin_scope(make_api, tokens):
    api = await make_api(tokens=("admin", "writer"))
    opened = await api.post(
        "/api/command/accounts",
        json={"ownerName": NAME, "currency": "EUR"},
        headers={"Authorization": tokens["writer"]},
    )
    account_id = opened.json()["accountId"]

    api.problem(await erase(api, account_id), 401, "unauthorized")
    api.problem(await erase(api, account_id, headers={"Authorization": tokens["writer"]}), 403, "forbidden")
    assert (await erase(api, account_id, headers={"Authorization": tokens["admin"]})).status_code == 204


async def test_an_erased_account_still_frees_its_place_in_the_open_limit_when_closed(api):
    ids = [await api.open(NAME, "EUR") for _ in range(3)]
    api.problem(
        await api.post("/api/command/accounts", json={"ownerName": NAME, "currency": "EUR"}),
        409,
        "too-many-open-accounts",
    )
    assert (await erase(api, ids[0])).status_code == 204

    assert (await api.post(f"/api/command/accounts/{ids[0]}/close")).status_code == 200

    await api.open(NAME, "EUR")  # the close of the erased account made room


async def test_a_rebuilt_read_model_shows_the_placeholder(api):
    account_id = await api.open(NAME, "EUR")
    assert (await erase(api, account_id)).status_code == 204
    await settled(api, account_id)

    r = await api.post("/api/projections/accounts/rebuild")

    assert r.status_code == 202, r.text
    assert await api.services.runner.wait_rebuilt("accounts", timeout=60)
    assert (await api.get(f"/api/query/accounts/{account_id}")).json()["ownerName"] == REDACTED
    found = (await api.get("/api/query/accounts", params={"search": "zelda"})).json()
    assert found["items"] == []


async def test_the_name_is_in_no_row_of_the_database_after_erasing(api, db_url):
    account_id = await api.open(NAME, "EUR")
    await settled(api, account_id)
    assert any(NAME in row for row in raw_rows(api, db_url)), "the read model holds the name before"

    assert (await erase(api, account_id)).status_code == 204
    await settled(api, account_id)

    assert [row for row in raw_rows(api, db_url) if NAME.casefold() in row.casefold()] == []
    if db_url.startswith("sqlite:///"):
        path = db_url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert NAME.encode() not in Path(path).read_bytes()  # noqa: ASYNC240 - a small test file


def raw_rows(api: Any, db_url: str) -> list[str]:
    """Every row of every table of the test's database, as text (bytes decoded leniently)."""
    if db_url.startswith("sqlite:///"):
        with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
            tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            return [_text(row) for t in tables for row in conn.execute(f'SELECT * FROM "{t}"')]  # noqa: S608
    store = api.services.store
    with psycopg.connect(store.conninfo, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema IN (%s, current_schema())",
            [store.schema],
        ).fetchall()
        assert tables
        return [
            _text(row)
            for (schema, t) in tables
            for row in conn.execute(
                sql.SQL("SELECT * FROM {}.{}").format(sql.Identifier(schema), sql.Identifier(t))
            ).fetchall()
        ]


def _text(row: tuple[Any, ...]) -> str:
    return " ".join(
        bytes(v).decode("utf-8", "replace") if isinstance(v, bytes | memoryview) else str(v) for v in row
    )


async def test_an_account_read_ahead_of_its_read_model_shows_the_placeholder(api):
    """The read model paused before the erase: the account read (summary + later events) is redacted."""
    account_id = await api.open(NAME, "EUR")
    await settled(api, account_id)  # the summary holds the name
    assert (await api.post("/api/projections/accounts/pause")).status_code == 200

    assert (await erase(api, account_id)).status_code == 204

    summary = (await api.get(f"/api/query/accounts/{account_id}")).json()
    assert (summary["ownerName"], summary["version"]) == (REDACTED, 2)


async def test_the_placeholder_is_refused_as_an_owner_name(api):
    r = await api.post("/api/command/accounts", json={"ownerName": " [redacted] ", "currency": "EUR"})
    assert api.problem(r, 422, "invalid-owner-name")["field"] == "ownerName"


async def logged(api: Any, account_id: str) -> list[Any]:
    """The account stream's stored events as read_all decodes them (a stream read shows none once deleted)."""
    stream = f"account-{account_id}"
    return [e.data async for e in api.services.store.iter_all() if e.stream_id == stream]


@pytest.mark.parametrize("tombstone", [False, True], ids=["soft", "tombstone"])
async def test_erasing_a_deleted_account_destroys_its_key(api, db_url, tombstone):
    """Deleted, then erased: 204, the name in its stored events reads `[redacted]`; nothing is recorded."""
    account_id = await api.open(NAME, "EUR")
    await api.deposit(account_id, "10.00")
    r = await api.client.delete(
        f"/api/store/streams/account-{account_id}", params={"tombstone": str(tombstone).lower()}
    )
    assert r.status_code == 200, r.text
    await api.settled(r.json()["position"])
    assert (await logged(api, account_id))[0].owner_name == NAME  # kept until a scavenge, readable

    erased = await erase(api, account_id)

    assert erased.status_code == 204, erased.text
    events = await logged(api, account_id)
    assert [type(e).__name__ for e in events] == ["AccountOpened", "MoneyDeposited", "StreamDeletedEvent"]
    assert events[0].owner_name == REDACTED
    assert await api.services.store.keys.is_forgotten(f"account-{account_id}")
    assert (await erase(api, account_id)).status_code == 204  # again: nothing more to do
    assert len(await logged(api, account_id)) == 3
    api.problem(await api.get(f"/api/query/accounts/{account_id}"), 404, "account-not-found")
    assert [row for row in raw_rows(api, db_url) if NAME.casefold() in row.casefold()] == []


async def test_an_erased_account_deleted_afterwards_leaves_the_read_models(api, db_url):
    """Erased, then deleted for ever: the account leaves the read models and totals; no row holds the name."""
    account_id = await api.open(NAME, "EUR")
    await api.deposit(account_id, "10.00")
    assert (await erase(api, account_id)).status_code == 204
    await settled(api, account_id)

    r = await api.client.delete(f"/api/store/streams/account-{account_id}", params={"tombstone": "true"})

    assert r.status_code == 200, r.text
    await api.settled(r.json()["position"])
    api.problem(await api.get(f"/api/query/accounts/{account_id}"), 404, "account-not-found")
    assert (await api.get("/api/query/accounts", params={"search": "zelda"})).json()["items"] == []
    [eur] = (await api.get("/api/query/totals")).json()["items"]
    assert (eur["accounts"], eur["openAccounts"], eur["totalBalance"]) == (0, 0, "0.00")
    assert [type(e).__name__ for e in await logged(api, account_id)] == [
        "AccountOpened",
        "MoneyDeposited",
        "PersonalDataErased",
        "StreamDeletedEvent",
    ]
    assert (await erase(api, account_id)).status_code == 204
    assert [row for row in raw_rows(api, db_url) if NAME.casefold() in row.casefold()] == []


@pytest.mark.parametrize("tombstone", [False, True], ids=["soft", "tombstone"])
async def test_erasing_an_account_deleted_by_another_process_destroys_its_key(api, tombstone):
    """Deleted on the store itself (`eventvault streams delete`), its state cached here: 204 all the same."""
    account_id = await api.open(NAME, "EUR")
    await api.deposit(account_id, "10.00")  # the server's repository holds the account's state now
    await api.services.store.delete_stream(f"account-{account_id}", expected_version=2, tombstone=tombstone)

    r = await erase(api, account_id)

    assert r.status_code == 204, r.text
    assert (await logged(api, account_id))[0].owner_name == REDACTED
