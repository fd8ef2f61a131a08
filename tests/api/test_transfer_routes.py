"""Transfers over HTTP: the command, following a transfer to its end, the lists, history legs, live events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import httpx

DEADLINE = 60.0


async def _transfer(api: Any, source: str, target: str, amount: str, **kw: Any) -> httpx.Response:
    body = {"sourceAccountId": source, "targetAccountId": target, "amount": amount, **kw.pop("body", {})}
    response: httpx.Response = await api.post("/api/command/transfers", json=body, **kw)
    return response


async def _ended(api: Any, transfer_id: str) -> dict[str, Any]:
    """The transfer once it has completed or failed (the process runs in the background)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + DEADLINE
    while True:
        r = await api.get(f"/api/query/transfers/{transfer_id}")
        assert r.status_code == 200, r.text
        body = dict(r.json())
        if body["state"] in ("completed", "failed"):
            return body
        assert loop.time() < end, f"transfer {transfer_id} did not end in time: {body}"
        await api.services.runner.catch_up(timeout=1)


async def test_a_transfer_completes_and_moves_the_money(api):
    """202 with the id and position; then completed with its steps, balances moved, legs in the history."""
    ada, bob = await api.funded("100.00"), await api.open("Bob")
    r = await _transfer(api, ada, bob, "30.00", body={"description": "rent"})
    assert r.status_code == 202, r.text
    answer = r.json()
    assert answer["state"] == "requested"
    assert r.headers["location"] == f"/api/query/transfers/{answer['transferId']}"

    done = await _ended(api, answer["transferId"])
    assert done["state"] == "completed"
    assert [s["step"] for s in done["steps"]] == ["requested", "debited", "completed"]
    assert done["steps"][0]["position"] == answer["position"]
    assert (done["sourceAccountId"], done["targetAccountId"], done["amount"]) == (ada, bob, "30.00")

    assert (await api.account(ada))["currentBalance"] == "70.00"
    assert (await api.account(bob))["currentBalance"] == "30.00"
    head = str(await api.head())
    await api.settled(head)
    out = (await api.get(f"/api/query/accounts/{ada}/transactions")).json()["items"][-1]
    into = (await api.get(f"/api/query/accounts/{bob}/transactions")).json()["items"][-1]
    assert (out["kind"], out["amount"], out["counterpartyAccountId"]) == ("transfer_out", "30.00", bob)
    assert (into["kind"], into["balanceAfter"], into["counterpartyAccountId"]) == (
        "transfer_in",
        "30.00",
        ada,
    )
    assert out["transferId"] == into["transferId"] == answer["transferId"]
    [listed] = (await api.get(f"/api/query/accounts/{bob}/transfers")).json()["items"]
    assert (listed["direction"], listed["counterpartyAccountId"], listed["state"]) == ("in", ada, "completed")


async def test_a_refused_debit_ends_failed_with_the_reason(api):
    """Insufficient funds: the transfer fails with the rule's code, and no money moves."""
    ada, bob = await api.funded("10.00"), await api.open("Bob")
    r = await _transfer(api, ada, bob, "30.00")
    assert r.status_code == 202, r.text
    done = await _ended(api, r.json()["transferId"])
    assert done["state"] == "failed"
    assert done["failure"]["code"] == "insufficient-funds"
    assert not done["failure"]["refunded"]
    assert (await api.account(ada))["currentBalance"] == "10.00"


async def test_a_credit_that_cannot_land_is_refunded(api):
    """The target closes before the credit: the source gets the money back, the transfer fails refunded."""
    ada, bob = await api.funded("50.00"), await api.open("Bob")
    closed = await api.post(f"/api/command/accounts/{bob}/close")
    assert closed.status_code == 200, closed.text
    r = await _transfer(api, ada, bob, "20.00")
    assert r.status_code == 202, r.text  # the request checks accounts and currency; the credit, the rest
    done = await _ended(api, r.json()["transferId"])
    assert [s["step"] for s in done["steps"]] == ["requested", "debited", "failed"]
    assert (done["failure"]["code"], done["failure"]["refunded"]) == ("account-closed", True)
    history = (await api.get(f"/api/query/accounts/{ada}/transactions")).json()["items"]
    assert [t["kind"] for t in history[-2:]] == ["transfer_out", "transfer_refund"]
    assert (await api.account(ada))["currentBalance"] == "50.00"


async def test_only_the_same_currency_and_known_accounts(api):
    """Another currency is a clear 422, the same account 422, an unknown one 404: nothing is appended."""
    ada, usd, bob = await api.funded("50.00"), await api.open("Yank", "USD"), await api.open("Bob")
    before = await api.log_size()
    api.problem(await _transfer(api, ada, usd, "1.00"), 422, "currency-mismatch")
    api.problem(await _transfer(api, ada, ada, "1.00"), 422, "invalid-transfer")
    missing = "00000000-0000-7000-8000-000000000999"
    api.problem(await _transfer(api, ada, missing, "1.00"), 404, "account-not-found")
    api.problem(await _transfer(api, ada, bob, "-1"), 422, "invalid-amount")
    api.problem(await _transfer(api, ada, bob, "1.001"), 422, "invalid-amount")
    api.problem(await _transfer(api, ada, "not-an-id", "1.00"), 404, "account-not-found")
    api.problem(await api.post("/api/command/transfers", json={"amount": "1"}), 422, "validation")
    assert await api.log_size() == before
    api.problem(await api.get(f"/api/query/transfers/{missing}"), 404, "transfer-not-found")
    api.problem(await api.get("/api/query/transfers/nope"), 404, "transfer-not-found")


async def test_an_idempotency_key_makes_one_transfer(api):
    """The same key twice: the first answer again, one transfer, the money moved once."""
    ada, bob = await api.funded("100.00"), await api.open("Bob")
    headers = {"Idempotency-Key": "rent-2026-12"}
    first = await _transfer(api, ada, bob, "25.00", headers=headers)
    again = await _transfer(api, ada, bob, "25.00", headers=headers)
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    await _ended(api, first.json()["transferId"])
    assert (await api.account(ada))["currentBalance"] == "75.00"
    api.problem(await _transfer(api, ada, bob, "26.00", headers=headers), 422, "idempotency-key-reused")


async def test_transfer_changes_arrive_live(api, live):
    """The transfer's stream sends one transfer event per step: requested, debited, completed."""
    ada, bob = await api.funded("100.00"), await api.open("Bob")
    r = await _transfer(api, ada, bob, "5.00")
    tid = r.json()["transferId"]
    seen: list[str] = []
    async with (
        httpx.AsyncClient(base_url=live, timeout=DEADLINE) as client,
        client.stream(
            "GET",
            f"/api/query/transfers/{tid}/changes",
            params={"lastEventId": str(r.json()["position"] - 1)},
        ) as response,
    ):
        assert response.status_code == 200
        fields: dict[str, str] = {}
        async with asyncio.timeout(DEADLINE):
            async for line in response.aiter_lines():
                if line:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
                    continue
                if fields.get("event") == "transfer":
                    seen.append(json.loads(fields["data"])["state"])
                    if seen[-1] in ("completed", "failed"):
                        break
                fields = {}
    assert seen == ["requested", "debited", "completed"]
    with contextlib.suppress(Exception):
        await response.aclose()
