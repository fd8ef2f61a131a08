"""Queries over HTTP: the read models, the log behind them, and reading one's own writes."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

ACCOUNT_FIELDS = {
    "accountId",
    "ownerName",
    "currentBalance",
    "currency",
    "transactionCount",
    "lastTransactionDate",
    "status",
    "version",
}


async def test_one_account_shows_every_field_with_money_at_the_currency_scale(api):
    """GET an account: its fields in camelCase, money as a string with the currency's minor units."""
    account_id = await api.open("Ada Lovelace", "EUR")
    r = await api.deposit(account_id, "1")

    summary = await api.account(account_id, r.json()["position"])

    assert set(summary) >= ACCOUNT_FIELDS
    assert summary["accountId"] == account_id
    assert summary["ownerName"] == "Ada Lovelace"
    assert summary["currentBalance"] == "1.00"
    assert summary["currency"] == "EUR"
    assert summary["transactionCount"] == 1
    assert summary["lastTransactionDate"].endswith("Z")
    assert summary["status"] == "open"
    assert summary["version"] == 2


async def test_money_follows_each_currency_minor_units(api):
    """JPY shows no decimals, BHD three, EUR two; a new account shows 0.00 and no transaction date."""
    shown = {}
    for currency, amount in (("JPY", "1500"), ("BHD", "1.5"), ("EUR", "0.5")):
        account_id = await api.open(currency=currency)
        r = await api.deposit(account_id, amount)
        shown[currency] = (await api.account(account_id, r.json()["position"]))["currentBalance"]
    opened = await api.post("/api/command/accounts", json={"ownerName": "New", "currency": "USD"})
    empty = await api.account(opened.json()["accountId"], opened.json()["position"])

    assert shown == {"JPY": "1500", "BHD": "1.500", "EUR": "0.50"}
    assert (empty["currentBalance"], empty["transactionCount"], empty["lastTransactionDate"]) == (
        "0.00",
        0,
        None,
    )


async def _accounts(api) -> dict[str, str]:
    """Four accounts: EUR 5, 10 and 20 and USD 15; their ids by balance and currency."""
    made = {}
    answers = []
    for currency, amount in (("EUR", "5.00"), ("EUR", "10.00"), ("EUR", "20.00"), ("USD", "15.00")):
        account_id = await api.open(currency=currency)
        answers.append(await api.deposit(account_id, amount))
        made[f"{currency} {amount}"] = account_id
    await api.account(made["EUR 5.00"], api.latest(answers))
    return made


async def test_accounts_by_balance_range_and_currency(api):
    """minBalance, maxBalance and currency filter exactly (bounds included), ordered by balance."""
    await _accounts(api)

    async def listed(**params):
        r = await api.get("/api/query/accounts", params=params)
        assert r.status_code == 200, r.text
        assert set(r.json()) == {"items", "nextCursor"}
        return [f"{a['currency']} {a['currentBalance']}" for a in r.json()["items"]]

    assert await listed() == ["EUR 5.00", "EUR 10.00", "USD 15.00", "EUR 20.00"]
    assert await listed(minBalance="10") == ["EUR 10.00", "USD 15.00", "EUR 20.00"]
    assert await listed(minBalance="10.01", maxBalance="20") == ["USD 15.00", "EUR 20.00"]
    assert await listed(maxBalance="9.99") == ["EUR 5.00"]
    assert await listed(currency="EUR", minBalance="6") == ["EUR 10.00", "EUR 20.00"]
    assert await listed(currency="GBP") == []


async def test_accounts_highest_first_and_by_search(api):
    """order=desc lists the highest balance first; search matches the owner's name or an id prefix."""
    made = await _accounts(api)
    opened = await api.opened("Grace Hopper", "EUR")
    owner = opened["accountId"]
    await api.account(owner, opened["position"])  # the listing has it once the read model does

    async def listed(**params):
        r = await api.get("/api/query/accounts", params=params)
        assert r.status_code == 200, r.text
        return [a["accountId"] for a in r.json()["items"]]

    eur = [made["EUR 20.00"], made["EUR 10.00"], made["EUR 5.00"], owner]
    assert await listed(currency="EUR", order="desc") == eur
    assert await listed(search="hopp") == [owner]
    assert await listed(search=made["USD 15.00"][:-4]) == [made["USD 15.00"]]
    assert await listed(search="  ") == await listed()  # blank is no search
    body = api.problem(await api.get("/api/query/accounts", params={"order": "up"}), 422, "validation")
    assert "order" in body["detail"]


async def test_pages_of_accounts_follow_next_cursor_to_the_end(api):
    """Limit and cursor walk every account exactly once, and the last page has nextCursor null."""
    made = await _accounts(api)
    seen: list[str] = []
    params: dict[str, object] = {"limit": 3}
    pages = 0
    while True:
        body = (await api.get("/api/query/accounts", params=params)).json()
        seen += [a["accountId"] for a in body["items"]]
        pages += 1
        if body["nextCursor"] is None:
            break
        params["cursor"] = body["nextCursor"]

    assert pages == 2
    assert sorted(seen) == sorted(made.values())


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"minBalance": "-1"}, "validation"),
        ({"minBalance": "abc"}, "validation"),
        ({"minBalance": "1e3"}, "validation"),
        ({"minBalance": "10", "maxBalance": "5"}, "validation"),
        ({"currency": "eur"}, "unknown-currency"),
        ({"currency": "XYZ"}, "unknown-currency"),
        ({"currency": "EURO"}, "validation"),
        ({"limit": "0"}, "validation"),
        ({"limit": "501"}, "validation"),
        ({"limit": "ten"}, "validation"),
        ({"cursor": "not-a-cursor!"}, "validation"),
        ({"cursor": "dHwz"}, "validation"),
        ({"consistentWith": "soon"}, "validation"),
        ({"consistentWith": "0"}, "validation"),
        ({"consistentWith": "99999999999999999999"}, "validation"),
        ({"consistentWith": "99999999999999999999.1"}, "validation"),
    ],
)
async def test_bad_listing_parameters_are_422(api, params, code):
    """Each bad filter, limit, cursor or consistentWith is a 422 problem naming it, never a 500."""
    body = api.problem(await api.get("/api/query/accounts", params=params), 422, code)
    assert any(name in body["detail"] for name in params), body


async def test_history_has_the_running_balance_and_pages(api):
    """Transactions list each move with balanceAfter, oldest or newest first, in pages."""
    account_id = await api.open()
    answers = [
        await api.deposit(account_id, "10"),
        await api.withdraw(account_id, "3"),
        await api.deposit(account_id, "0.5"),
    ]
    await api.account(account_id, api.latest(answers))
    url = f"/api/query/accounts/{account_id}/transactions"

    first = (await api.get(url, params={"limit": 2})).json()
    rest = (await api.get(url, params={"limit": 2, "cursor": first["nextCursor"]})).json()
    newest = (await api.get(url, params={"order": "desc"})).json()

    items = first["items"] + rest["items"]
    assert [(t["kind"], t["amount"], t["balanceAfter"]) for t in items] == [
        ("deposit", "10.00", "10.00"),
        ("withdrawal", "3.00", "7.00"),
        ("deposit", "0.50", "7.50"),
    ]
    assert [t["version"] for t in items] == [2, 3, 4]
    assert [t["position"] for t in items] == [r.json()["position"] for r in answers]
    assert rest["nextCursor"] is None
    assert [t["version"] for t in newest["items"]] == [4, 3, 2]


async def test_events_are_the_raw_audit_log_with_metadata(api):
    """/events shows every stored event with its envelope, its data and who did it, from the log itself."""
    account_id = await api.open("Grace Hopper", "USD", headers={"X-Request-ID": "open-1"})
    await api.deposit(account_id, "12.5", headers={"X-Request-ID": "dep-1"})

    items = (await api.get(f"/api/query/accounts/{account_id}/events")).json()["items"]

    assert [e["eventType"] for e in items] == ["AccountOpened", "MoneyDeposited"]
    assert [e["version"] for e in items] == [1, 2]
    assert items[0]["data"] == {"ownerName": "Grace Hopper", "currency": "USD"}
    assert items[1]["data"] == {"amount": "12.50", "description": ""}
    assert [e["metadata"]["requestId"] for e in items] == ["open-1", "dep-1"]
    assert {e["metadata"]["actor"] for e in items} == {"anonymous"}
    assert all(e["streamId"] == f"account-{account_id}" for e in items)
    assert all(e["recordedAt"].endswith("Z") and e["occurredAt"].endswith("Z") for e in items)
    newest = (await api.get(f"/api/query/accounts/{account_id}/events", params={"order": "desc"})).json()
    assert [e["version"] for e in newest["items"]] == [2, 1]


async def test_state_at_a_version_or_a_time_is_replayed_from_the_log(api):
    """state?version=N and state?asOf=<time> replay the events up to that point."""
    account_id = await api.open()
    await api.deposit(account_id, "10.00")
    await api.withdraw(account_id, "4.00")
    events = (await api.get(f"/api/query/accounts/{account_id}/events")).json()["items"]
    url = f"/api/query/accounts/{account_id}/state"

    at_two = (await api.get(url, params={"version": 2})).json()
    at_one = (await api.get(url, params={"version": 1})).json()
    as_of = (await api.get(url, params={"asOf": events[1]["recordedAt"]})).json()
    now = (await api.get(url)).json()
    spaced = await api.get(url + "?asOf=" + events[1]["recordedAt"].replace("Z", " 00:00"))

    assert (at_two["version"], at_two["currentBalance"], at_two["transactionCount"]) == (2, "10.00", 1)
    assert (at_one["version"], at_one["currentBalance"], at_one["transactionCount"]) == (1, "0.00", 0)
    assert (as_of["version"], as_of["currentBalance"]) == (2, "10.00")
    assert (now["version"], now["currentBalance"]) == (3, "6.00")
    assert spaced.status_code == 200, spaced.text
    assert spaced.json()["version"] == 2


@pytest.mark.parametrize(
    ("params", "status", "code"),
    [
        ({"version": 99}, 404, "account-not-found"),
        ({"asOf": "1999-01-01T00:00:00Z"}, 404, "account-not-found"),
        ({"version": 1, "asOf": "2030-01-01T00:00:00Z"}, 422, "validation"),
        ({"asOf": "2030-01-01T00:00:00"}, 422, "validation"),
        ({"asOf": "yesterday"}, 422, "validation"),
        ({"version": 0}, 422, "validation"),
        ({"version": "two"}, 422, "validation"),
    ],
)
async def test_bad_state_queries_are_refused(api, params, status, code):
    """A version the account never had or a time before it existed is 404; a malformed one is 422."""
    account_id = await api.open()
    api.problem(await api.get(f"/api/query/accounts/{account_id}/state", params=params), status, code)


@pytest.mark.parametrize("suffix", ["", "/transactions", "/events", "/state", "/changes"])
async def test_an_unknown_account_is_404_on_every_query(api, suffix):
    """Any query of an account that does not exist (or an id that is not one) is 404 account-not-found."""
    await api.open()
    for account_id in (str(uuid.uuid4()), "nope"):
        api.problem(await api.get(f"/api/query/accounts/{account_id}{suffix}"), 404, "account-not-found")


# -- read your writes -----------------------------------------------------------------------------


async def test_consistent_with_a_position_shows_the_write(api):
    """A query with the position (or checkpoint) a command returned sees that command's effect."""
    account_id = await api.open()
    for n in range(1, 6):
        r = await api.deposit(account_id, "1.00")
        token = r.json()["position"] if n % 2 else r.json()["checkpoint"]
        summary = await api.account(account_id, token)
        assert (summary["currentBalance"], summary["version"]) == (f"{n}.00", n + 1)


async def test_consistent_with_on_log_queries_is_checked_but_never_waited_for(make_api):
    """/events and /state read the log: consistentWith is validated there, and answered at once."""
    api = await make_api(run_projections=False, consistency_timeout=0.1)
    account_id = await api.open()
    r = await api.deposit(account_id, "1.00")

    for suffix in ("/events", "/state"):
        url = f"/api/query/accounts/{account_id}{suffix}"
        assert (await api.get(url, params={"consistentWith": r.json()["position"]})).status_code == 200
        api.problem(await api.get(url, params={"consistentWith": "later"}), 422, "validation")


async def test_a_position_the_read_model_has_not_reached_is_503_then_served_once_it_has(make_api):
    """Projections stopped: a listing or totals with consistentWith is 503; once a worker catches up, 200."""
    idle = await make_api(run_projections=False, consistency_timeout=0.2)
    account_id = await idle.open()
    position = (await idle.deposit(account_id, "7.00")).json()["position"]

    for url in ("/api/query/accounts", "/api/query/totals"):
        r = await idle.get(url, params={"consistentWith": position})
        api_problem = idle.problem(r, 503, "not-consistent-yet")
        assert r.headers["retry-after"].isdigit(), r.headers
        assert str(position) in api_problem["detail"]

    await make_api()  # a worker: another server on the same store that runs the projections

    listed = await idle.get("/api/query/accounts", params={"consistentWith": position})
    assert [a["currentBalance"] for a in listed.json()["items"]] == ["7.00"]


SINGLE_ACCOUNT_QUERIES = ("", "/transactions", "/events", "/state")
ALL_QUERIES = (
    *(f"/api/query/accounts/{{id}}{s}" for s in SINGLE_ACCOUNT_QUERIES),
    "/api/query/accounts",
    "/api/query/totals",
)


async def test_a_position_beyond_the_head_of_the_log_is_422_at_once(make_api):
    """No event has such a position, and waiting cannot give it one: 422 at once, not a 503 later."""
    api = await make_api(consistency_timeout=3600)  # a query that waited would hold the test for an hour
    account_id = await api.open()
    head = (await api.deposit(account_id, "1.00")).json()

    async with asyncio.timeout(60):
        for url in ALL_QUERIES:
            for token in (head["position"] + 1_000, f"0.{head['position'] + 1_000}"):
                if api.services.store.scheme == "postgresql" and "." in str(token):
                    continue  # a PostgreSQL checkpoint names a transaction as well: made below
                r = await api.get(url.format(id=account_id), params={"consistentWith": token})
                body = api.problem(r, 422, "validation")
                assert body["parameter"] == "consistentWith", body
                assert f"position {head['position']}" in body["detail"], body
            # A checkpoint of another store: its transaction is not the one of the event at that position.
            tx, position = head["checkpoint"].split(".")
            foreign = f"{int(tx) + 7}.{position}"
            body = api.problem(
                await api.get(url.format(id=account_id), params={"consistentWith": foreign}),
                422,
                "validation",
            )
            assert body["parameter"] == "consistentWith", body


async def test_a_read_of_one_account_is_served_from_the_log_when_the_read_model_has_nothing(make_api):
    """Projections stopped: the account's summary, history, events and state come from its log, marked so."""
    idle = await make_api(run_projections=False, consistency_timeout=0.2)
    account_id = await idle.open()
    await idle.deposit(account_id, "2.50")
    await idle.withdraw(account_id, "1.00")

    summary = await idle.get(f"/api/query/accounts/{account_id}")
    history = await idle.get(f"/api/query/accounts/{account_id}/transactions")

    assert summary.status_code == 200, summary.text
    assert (summary.json()["currentBalance"], summary.json()["version"]) == ("1.50", 3)
    assert summary.json()["transactionCount"] == 2
    assert [t["balanceAfter"] for t in history.json()["items"]] == ["2.50", "1.50"]
    for r in (summary, history):
        assert r.headers["x-read-source"] == "log"
        assert (r.headers["x-account-version"], r.headers["x-read-model-version"]) == ("3", "0")
    for suffix in ("/events", "/state"):
        r = await idle.get(f"/api/query/accounts/{account_id}{suffix}")
        assert (r.status_code, r.headers["x-read-source"], r.headers["x-account-version"]) == (
            200,
            "log",
            "3",
        )
    # consistentWith is checked, and needs no waiting: the answer already holds every write before it.
    checked = await idle.get(f"/api/query/accounts/{account_id}", params={"consistentWith": 1})
    assert checked.json() == summary.json()


async def test_a_read_model_that_trails_is_caught_up_from_the_log_and_matches_the_projection(make_api):
    """The read model stopped at version 2: reads add the log's later events, as the projection will."""
    worker = await make_api()
    idle = await make_api(run_projections=False)
    account_id = await worker.open(currency="JPY")
    await worker.settled((await worker.deposit(account_id, "1000")).json()["position"])
    await worker.services.runner.stop()  # the read model holds the account at version 2 from now on
    answers = [
        await idle.deposit(account_id, "500"),
        await idle.withdraw(account_id, "300"),
        await idle.deposit(account_id, "20"),
    ]
    url = f"/api/query/accounts/{account_id}"

    async def reads() -> dict[str, Any]:
        """Everything a client can read of the account, with the transactions in pages both ways."""
        read: dict[str, Any] = {"summary": await idle.get(url)}
        for order in ("asc", "desc"):
            pages, params = [], {"limit": 2, "order": order}
            while True:
                page = await idle.get(url + "/transactions", params=params)
                assert page.status_code == 200, page.text
                pages.append(page)
                if page.json()["nextCursor"] is None:
                    break
                params["cursor"] = page.json()["nextCursor"]
            read[order] = pages
        return read

    trailing = await reads()
    await make_api()  # a worker catches the read model up
    await idle.settled(idle.latest(answers))
    current = await reads()

    summary = trailing["summary"]
    assert (summary.json()["currentBalance"], summary.json()["version"]) == ("1220", 5)
    assert summary.headers["x-read-source"] == "read-model+log"
    assert (summary.headers["x-account-version"], summary.headers["x-read-model-version"]) == ("5", "2")
    assert current["summary"].headers["x-read-source"] == "read-model"
    assert current["summary"].headers["x-read-model-version"] == "5"
    asc = [t for page in trailing["asc"] for t in page.json()["items"]]
    desc = [t for page in trailing["desc"] for t in page.json()["items"]]
    assert [(t["version"], t["balanceAfter"]) for t in asc] == [
        (2, "1000"),
        (3, "1500"),
        (4, "1200"),
        (5, "1220"),
    ]
    assert desc == asc[::-1]
    assert [t["position"] for t in asc[1:]] == [a.json()["position"] for a in answers]
    # What the reads built from the log is what the projection wrote, field by field, page by page.
    assert summary.json() == current["summary"].json()
    for order in ("asc", "desc"):
        assert [p.json() for p in trailing[order]] == [p.json() for p in current[order]]


async def test_empty_query_parameters_are_the_same_as_none(api):
    """?minBalance=&maxBalance=&currency=&cursor=&consistentWith= lists everything; ?asOf= is now."""
    made = await _accounts(api)
    account_id = made["EUR 10.00"]

    listed = await api.get("/api/query/accounts?minBalance=&maxBalance=&currency=&cursor=&consistentWith=")
    state = await api.get(f"/api/query/accounts/{account_id}/state?asOf=&consistentWith=")
    history = await api.get(f"/api/query/accounts/{account_id}/transactions?cursor=")

    assert listed.status_code == 200, listed.text
    assert sorted(a["accountId"] for a in listed.json()["items"]) == sorted(made.values())
    assert (state.status_code, state.json()["currentBalance"]) == (200, "10.00")
    assert [t["balanceAfter"] for t in history.json()["items"]] == ["10.00"]
