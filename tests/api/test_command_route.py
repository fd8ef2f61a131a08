"""The command routes read their own headers (one auth check, one parse of each), and the account cache."""

from __future__ import annotations

from decimal import Decimal

import pytest

from eventvault import Repository, open_store
from eventvault_ledger.domain import Account


async def test_plain_commands_with_every_header_form(api):
    """Open, deposit, withdraw and close with the header forms the docs promise."""
    account_id = await api.open()
    r = await api.deposit(account_id, "10.00", headers={"Idempotency-Key": "k-1", "If-Match": 'W/"1"'})
    assert r.status_code == 200, r.text
    r = await api.withdraw(account_id, "10.00", headers={"If-Match": " 2 "})
    assert r.status_code == 200, r.text
    r = await api.post(f"/api/command/accounts/{account_id}/close", headers={"If-Match": "*"})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 4


@pytest.mark.parametrize(
    ("query", "headers", "answer", "blamed"),
    [
        ("?x=1", [], (422, "validation"), ("parameter", "x")),
        ("", [("If-Match", "abc")], (422, "validation"), ("parameter", "If-Match")),
        ("", [("If-Match", "null")], (422, "validation"), ("parameter", "If-Match")),
        ("", [("Idempotency-Key", "has space")], (422, "validation"), ("parameter", "Idempotency-Key")),
        ("", [("Idempotency-Key", "k-1"), ("Idempotency-Key", "k-2")], (422, "validation"), None),
        ("", [("If-Match", "1"), ("If-Match", "2")], (422, "validation"), ("parameter", "If-Match")),
        # White space beyond ASCII around a version is white space all the same (version 2).
        ("", [("If-Match", "\u00a01")], (412, "precondition-failed"), None),
    ],
)
async def test_unusual_requests_are_refused_and_record_nothing(api, query, headers, answer, blamed):
    """A query parameter, a malformed or repeated command header: a 422 that names it, nothing appended."""
    account_id = await api.funded("1.00")
    size = await api.log_size()

    r = await api.post(
        f"/api/command/accounts/{account_id}/deposit{query}",
        json={"amount": "1.00"},
        headers=[(k, v.encode("latin-1")) for k, v in headers],
    )

    body = api.problem(r, *answer)
    if blamed is not None:
        assert body[blamed[0]] == blamed[1], body
    assert await api.log_size() == size


async def test_tokens_are_checked_on_commands(make_api, tokens):
    """A writer's token runs the command; a missing, unknown or non-bearer token is 401, a reader's 403."""
    api = await make_api(tokens=("reader", "writer", "admin"))
    writer = {"Authorization": tokens["writer"]}
    account_id = await api.open(headers=writer)

    ok = await api.deposit(account_id, "5.00", headers=writer)
    assert ok.status_code == 200, ok.text
    assert (await api.events(account_id))[-1].metadata.actor == "writer"

    api.problem(await api.deposit(account_id, "5.00"), 401, "unauthorized")
    api.problem(
        await api.deposit(account_id, "5.00", headers={"Authorization": "Bearer not-a-known-token-000"}),
        401,
        "unauthorized",
    )
    api.problem(
        await api.deposit(account_id, "5.00", headers={"Authorization": f"Basic {tokens['writer'][7:]}"}),
        401,
        "unauthorized",
    )
    refused = api.problem(
        await api.deposit(account_id, "5.00", headers={"Authorization": tokens["reader"]}), 403, "forbidden"
    )
    assert "write" in refused["detail"]
    assert await api.version(account_id) == 2


async def test_a_command_sees_what_another_writer_appended_after_the_cached_state(api, db_url):
    """The account cache is a start point: what another process appended is read before a command runs."""
    account_id = await api.funded("10.00")  # the server now holds the account at version 2
    store = await open_store(db_url)
    try:
        await Repository(store).update(Account, account_id, lambda a: a.deposit(Decimal("5.00"), "elsewhere"))
    finally:
        await store.close()

    r = await api.withdraw(account_id, "15.00", headers={"If-Match": "3"})

    assert r.status_code == 200, r.text
    assert r.json()["version"] == 4
    assert (await api.account(account_id, r.json()["checkpoint"]))["currentBalance"] == "0.00"


async def test_without_an_account_cache_commands_replay_the_account(make_api):
    """account_cache=0 keeps no state in memory; commands work the same."""
    api = await make_api(account_cache=0)
    account_id = await api.funded("10.00")

    r = await api.withdraw(account_id, "10.00")

    assert r.status_code == 200, r.text
    assert r.json()["version"] == 3
    assert api.services.repository._cache_size == 0
