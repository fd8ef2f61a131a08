"""The command routes' own path (no dependency solving) and the account cache: same answers as before."""

from __future__ import annotations

import json
from decimal import Decimal

import fastapi.routing
import pytest

from eventvault import Repository, open_store
from eventvault_ledger.api import commands
from eventvault_ledger.domain import Account


@pytest.fixture
def solved(monkeypatch):
    """How many requests went through FastAPI's dependency solving."""
    calls: list[str] = []
    original = fastapi.routing.solve_dependencies

    async def counting(*args, **kwargs):
        calls.append(kwargs["request"].url.path)
        return await original(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counting)
    return calls


async def test_plain_commands_skip_dependency_solving(api, solved):
    """Open, deposit, withdraw and close with plain headers run without FastAPI solving dependencies."""
    account_id = await api.open()
    r = await api.deposit(account_id, "10.00", headers={"Idempotency-Key": "k-1", "If-Match": 'W/"1"'})
    assert r.status_code == 200, r.text
    r = await api.withdraw(account_id, "10.00", headers={"If-Match": " 2 "})
    assert r.status_code == 200, r.text
    r = await api.post(f"/api/command/accounts/{account_id}/close", headers={"If-Match": "*"})
    assert r.status_code == 200, r.text
    assert r.json()["version"] == 4

    assert [p for p in solved if p.startswith("/api/command/")] == []


@pytest.mark.parametrize(
    ("query", "headers", "answer"),
    [
        ("?x=1", {}, (422, "validation")),
        ("", {"If-Match": "abc"}, (422, "validation")),
        ("", {"Idempotency-Key": "has space"}, (422, "validation")),
        # Whitespace beyond ASCII: FastAPI's header pattern decides (it takes it, for version 1).
        ("", {"If-Match": "\u00a01"}, (412, "precondition-failed")),
    ],
)
async def test_unusual_requests_take_fastapis_path_and_its_refusal(api, solved, query, headers, answer):
    """A query parameter or an unusual header goes through the dependencies, which answer as before."""
    account_id = await api.funded("1.00")
    size = await api.log_size()

    r = await api.post(
        f"/api/command/accounts/{account_id}/deposit{query}",
        json={"amount": "1.00"},
        headers={k: v.encode("latin-1") for k, v in headers.items()},
    )

    api.problem(r, *answer)
    assert f"/api/command/accounts/{account_id}/deposit" in solved
    assert await api.log_size() == size


async def test_a_repeated_command_header_takes_fastapis_path(api, solved):
    """Two Idempotency-Key headers: the route does not pick one itself, FastAPI's reading decides."""
    account_id = await api.funded("1.00")

    r = await api.post(
        f"/api/command/accounts/{account_id}/deposit",
        json={"amount": "1.00"},
        headers=[("Idempotency-Key", "k-1"), ("Idempotency-Key", "k-2")],
    )

    assert r.status_code in (200, 422), r.text
    assert solved == [f"/api/command/accounts/{account_id}/deposit"]


async def test_tokens_are_checked_on_the_commands_own_path(make_api, tokens, solved):
    """A writer's token runs the command there; a missing, unknown or read-only token is refused as before."""
    api = await make_api(tokens=("reader", "writer", "admin"))
    writer = {"Authorization": tokens["writer"]}
    account_id = await api.open(headers=writer)
    solved.clear()

    ok = await api.deposit(account_id, "5.00", headers=writer)
    assert ok.status_code == 200, ok.text
    assert solved == []
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
    assert len(solved) == 4
    assert await api.version(account_id) == 2


async def test_both_paths_give_the_same_answers(make_api, monkeypatch):
    """The same commands through the commands' own path and through FastAPI's answer alike."""

    async def run(api, key: str) -> list[tuple[int, object]]:
        account_id = await api.open()
        answers = [
            await api.deposit(account_id, "10.00"),
            await api.deposit(account_id, "10.00", headers={"Idempotency-Key": key}),
            await api.deposit(account_id, "10.00", headers={"Idempotency-Key": key}),
            await api.deposit(account_id, "20.00", headers={"Idempotency-Key": key}),
            await api.withdraw(account_id, "99.00"),
            await api.deposit(account_id, "1.001"),
            await api.deposit(account_id, "1.00", headers={"If-Match": "1"}),
            await api.post(f"/api/command/accounts/{account_id}/close"),
            await api.deposit("00000000-0000-0000-0000-000000000000", "1.00"),
            await api.withdraw(account_id, "20.00", headers={"If-Match": '"3"'}),
            await api.post(f"/api/command/accounts/{account_id}/close"),
            await api.deposit(account_id, "1.00"),
        ]
        shown: list[tuple[int, object]] = []
        for r in answers:
            body = json.loads(r.text.replace(account_id, "<id>"))
            kept = {
                k: v
                for k, v in body.items()
                if k not in ("accountId", "position", "checkpoint", "instance", "requestId")
            }
            header = {k: r.headers.get(k) for k in ("etag", "idempotent-replayed", "content-type")}
            shown.append((r.status_code, (kept, header)))
        return shown

    own = await run(await make_api(), "key-1")
    monkeypatch.setattr(commands, "_lean_arguments", lambda *_: None)
    standard = await run(await make_api(), "key-2")

    assert own == standard
    assert [status for status, _ in own] == [200, 200, 200, 422, 422, 422, 412, 422, 404, 200, 200, 409]


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
