"""Concurrent commands on one account: each lands exactly once, and the money adds up exactly."""

from __future__ import annotations

import asyncio


async def test_fifty_parallel_deposits_all_land_exactly_once(api):
    """50 deposits of 1.00 sent at once: all 200, versions 2..51 each once, balance exactly 50.00."""
    account_id = await api.open()

    answers = await asyncio.gather(*(api.deposit(account_id, "1.00") for _ in range(50)))

    assert [r.status_code for r in answers] == [200] * 50
    assert sorted(r.json()["version"] for r in answers) == list(range(2, 52))
    summary = await api.account(account_id, api.latest(answers))
    assert summary["currentBalance"] == "50.00"
    assert summary["version"] == 51
    assert summary["transactionCount"] == 50
    assert await api.version(account_id) == 51


async def test_parallel_withdrawals_never_overdraw(api):
    """50 withdrawals of 1.00 at once from 25.00: exactly 25 succeed, 25 are refused, 0.00 is left."""
    account_id = await api.funded("25.00")

    answers = await asyncio.gather(*(api.withdraw(account_id, "1.00") for _ in range(50)))

    assert sorted(r.status_code for r in answers) == [200] * 25 + [422] * 25
    for r in answers:
        if r.status_code == 422:
            api.problem(r, 422, "insufficient-funds")
    assert await api.version(account_id) == 2 + 25
    assert (await api.account(account_id, api.latest(answers)))["currentBalance"] == "0.00"


async def test_two_servers_on_one_store_retry_conflicts_inside(make_api):
    """Deposits racing through two servers (no shared lock) all land: conflicts are retried in the server."""
    one = await make_api()
    two = await make_api()
    account_id = await one.open()

    answers = await asyncio.gather(*(server.deposit(account_id, "0.10") for server in [one, two] * 20))

    assert [r.status_code for r in answers] == [200] * 40, [r.text for r in answers if r.status_code != 200]
    assert sorted(r.json()["version"] for r in answers) == list(range(2, 42))
    assert (await two.account(account_id, two.latest(answers)))["currentBalance"] == "4.00"
