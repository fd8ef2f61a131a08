"""POST /api/command/accounts keeps "at most 3 open accounts per owner and currency" (409 beyond)."""

from __future__ import annotations

import asyncio

from eventvault import Query
from eventvault_ledger.domain import owner_tag


async def test_a_fourth_open_account_is_a_409_problem_and_a_close_makes_room(api):
    ids = [await api.open("Ada Lovelace", "EUR") for _ in range(3)]
    await api.open("Ada Lovelace", "USD")  # another currency: its own three
    await api.open("Grace Hopper", "EUR")  # another owner

    refused = await api.post("/api/command/accounts", json={"ownerName": "  ada LOVELACE", "currency": "EUR"})

    body = api.problem(refused, 409, "too-many-open-accounts")
    assert "3 open EUR accounts" in body["detail"]
    assert (body["currency"], body["maxOpenAccounts"]) == ("EUR", 3)
    assert (await api.post(f"/api/command/accounts/{ids[0]}/close")).status_code == 200
    await api.open("ada lovelace", "EUR")


async def test_eight_concurrent_opens_for_one_owner_and_currency_land_exactly_three(api):
    """Run on SQLite and on PostgreSQL (the db_url fixture): the append condition keeps the rule."""
    answers = await asyncio.gather(
        *(
            api.post("/api/command/accounts", json={"ownerName": "Ada Lovelace", "currency": "EUR"})
            for _ in range(8)
        )
    )

    assert sorted(r.status_code for r in answers) == [201] * 3 + [409] * 5, [r.text for r in answers]
    for r in answers:
        if r.status_code == 409:
            api.problem(r, 409, "too-many-open-accounts")
    opened = await api.services.store.read(
        Query.of(types=["AccountOpened"], tags=[owner_tag("Ada Lovelace")])
    )
    assert len(opened.events) == 3


async def test_an_account_deleted_through_the_admin_route_makes_room(api):
    """Three open accounts, one deleted (DELETE /api/store/streams/{id}): the owner may open another."""
    ids = [await api.open("Ada Lovelace", "EUR") for _ in range(3)]
    api.problem(
        await api.post("/api/command/accounts", json={"ownerName": "Ada Lovelace", "currency": "EUR"}),
        409,
        "too-many-open-accounts",
    )

    r = await api.client.delete(f"/api/store/streams/account-{ids[1]}")
    assert r.status_code == 200, r.text

    await api.open("Ada Lovelace", "EUR")
    api.problem(
        await api.post("/api/command/accounts", json={"ownerName": "Ada Lovelace", "currency": "EUR"}),
        409,
        "too-many-open-accounts",
    )
