"""A full disk under the SQLite store: 507 storage-full and never a 500, reads go on, no restart needed."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

import httpx
import pytest

from eventvault import StorageFull
from eventvault.testing import eventually_async
from eventvault_ledger.api.app import create_app
from eventvault_ledger.api.settings import Settings

PROBLEMS = "https://eventvault.dev/problems/"
DEADLINE = 60.0  # generous for a busy machine; recovery itself waits a backoff of at most 5 s


async def _until(what: str, check: Callable[[], Awaitable[Any]]) -> Any:
    """Poll ``check()`` until it returns something true; that value."""
    return await eventually_async(check, within=DEADLINE, what=what)


class Ledger:
    """A client of the app that counts what each account was acknowledged."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.accounts: list[str] = []
        self.acked: Counter[str] = Counter()  # account id -> deposits of 1.00 acknowledged

    async def open(self, owner: str) -> httpx.Response:
        r = await self.client.post("/api/command/accounts", json={"ownerName": owner, "currency": "EUR"})
        if r.status_code == 201:
            self.accounts.append(r.json()["accountId"])
        return r

    async def deposit(self, account_id: str, key: str | None = None) -> httpx.Response:
        headers = {"Idempotency-Key": key} if key else {}
        r = await self.client.post(
            f"/api/command/accounts/{account_id}/deposit", json={"amount": "1.00"}, headers=headers
        )
        if r.status_code == 200 and r.headers.get("idempotent-replayed") != "true":
            self.acked[account_id] += 1
        return r

    async def overdraw(self, account_id: str) -> httpx.Response:
        return await self.client.post(
            f"/api/command/accounts/{account_id}/withdraw", json={"amount": "1000.00"}
        )

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(path, params=params)


def _kind(r: httpx.Response) -> str:
    if r.headers.get("content-type") == "application/problem+json":
        return f"{r.status_code} {r.json()['type'].removeprefix(PROBLEMS)}"
    return str(r.status_code)


async def _commands_while_full(ledger: Ledger, rounds: int) -> Counter[str]:
    """Opens, overdrafts, and deposits with and without keys; how each kind was answered."""
    answers: Counter[str] = Counter()
    for i in range(rounds):
        account_id = ledger.accounts[i % 3]
        if i % 4 == 0:
            r = await ledger.open(f"Owner {i}")
        elif i % 4 == 1:
            r = await ledger.overdraw(account_id)
        else:
            r = await ledger.deposit(account_id, key=f"full-{i}" if i % 2 else None)
        answers[_kind(r)] += 1
        if r.status_code == 507:
            assert r.headers["retry-after"].isdigit(), r.headers
    return answers


@pytest.mark.slow
async def test_a_full_disk_answers_507_keeps_reads_and_recovers_without_a_restart(small_disk, fill):
    """Filled: commands get 507 storage-full, reads answer; freed: commands land, nothing acked is lost."""
    db = small_disk / "ledger.db"
    app = create_app(Settings(db=f"sqlite:///{db}"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ledger") as client,
    ):
        ledger = Ledger(client)
        for owner in ("Ada", "Grace", "Edsger"):
            assert (await ledger.open(owner)).status_code == 201
            last = await ledger.deposit(ledger.accounts[-1])
        # A listing waits for the read model (a read of one account would not need to).
        r = await ledger.get("/api/query/accounts", consistentWith=last.json()["position"])
        assert r.status_code == 200, r.text

        filler = small_disk / "filler"
        assert fill(filler) > 0
        answers = await _commands_while_full(ledger, 60)
        assert answers["507 storage-full"] > 0, answers
        assert set(answers) <= {"200", "201", "422 insufficient-funds", "507 storage-full"}, answers

        # Reads go on from what is on the disk.
        listing = await ledger.get("/api/query/accounts")
        assert listing.status_code == 200, listing.text
        assert {a["accountId"] for a in listing.json()["items"]} >= set(ledger.accounts[:3])
        for path in (
            "/api/projections",
            "/healthz",
            f"/api/query/accounts/{ledger.accounts[0]}/transactions",
        ):
            r = await ledger.get(path)
            assert r.status_code == 200, (path, r.text)

        # Space comes back: the same server takes commands again, a keyed retry included.
        filler.unlink()
        freed = time.monotonic()

        async def accepted() -> httpx.Response | None:
            r = await ledger.deposit(ledger.accounts[0], key="after-1")
            return None if r.status_code == 507 else r

        first = await _until("a deposit once space is freed", accepted)
        assert first.status_code == 200, first.text
        accepting = time.monotonic() - freed
        again = await ledger.deposit(ledger.accounts[0], key="after-1")
        assert (again.status_code, again.json()) == (200, first.json())
        assert again.headers["idempotent-replayed"] == "true"
        later = [await ledger.deposit(ledger.accounts[i % 3]) for i in range(20)]
        assert [r.status_code for r in later] == [200] * 20, [r.text for r in later if r.status_code != 200]

        # The projection catches up and says so: live, with no error left over.
        r = await ledger.get(
            f"/api/query/accounts/{ledger.accounts[0]}", consistentWith=later[-1].json()["position"]
        )
        assert r.status_code == 200, r.text

        async def live() -> dict[str, Any] | None:
            status = (await ledger.get("/api/projections")).json()["items"][0]
            return status if status["state"] == "live" and status["lagEvents"] == 0 else None

        assert (await _until("the projection live again", live))["lastError"] is None
        caught_up = time.monotonic() - freed

        # Nothing acknowledged is lost, and nothing answered 507 was written.
        for account_id in ledger.accounts[:3]:
            summary = (await ledger.get(f"/api/query/accounts/{account_id}")).json()
            acked = ledger.acked[account_id]
            assert (Decimal(summary["currentBalance"]), summary["version"]) == (Decimal(acked), 1 + acked), (
                summary
            )
            assert len(await app.state.services.store.read_stream(f"account-{account_id}")) == 1 + acked

    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    print(  # noqa: T201 - the figures docs/reliability.md quotes (pytest -s)
        f"\nfigures: while full {dict(answers)}; first command accepted {accepting:.2f}s after space "
        f"was freed, projection live {caught_up:.2f}s after; acknowledged {sum(ledger.acked.values())}"
    )


async def test_a_keyed_command_whose_answer_cannot_be_kept_still_succeeds_and_its_retry_appends_nothing(
    tmp_path, monkeypatch
):
    """The disk fills after the append, before its answer is kept: 200; a retry lands on the same event."""
    app = create_app(Settings(db=f"sqlite:///{tmp_path / 'ledger.db'}"))
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ledger") as client,
    ):
        ledger = Ledger(client)
        assert (await ledger.open("Ada")).status_code == 201
        account_id = ledger.accounts[0]
        idempotency = app.state.services.idempotency
        keep = idempotency._store

        def full(*args: Any) -> None:
            raise StorageFull("the disk is full (test)")

        monkeypatch.setattr(idempotency, "_store", full)
        first = await ledger.deposit(account_id, key="k")
        monkeypatch.setattr(idempotency, "_store", keep)
        retry = await ledger.deposit(account_id, key="k")
        replay = await ledger.deposit(account_id, key="k")

        assert first.status_code == 200, first.text
        assert (retry.status_code, retry.json()) == (200, first.json())
        assert (replay.status_code, replay.json()) == (200, first.json())
        assert replay.headers["idempotent-replayed"] == "true"
        assert len(await app.state.services.store.read_stream(f"account-{account_id}")) == 2
