"""Concurrent HTTP clients issuing ledger commands, and the check of what the log holds after a fault.

Every command carries a text of its own (the deposit's or withdrawal's
description, the opened account's owner name), so the log can be searched for
it: an acknowledged command must be there exactly once, at the version and
position its answer gave; a command whose outcome is unknown (the connection
died, or a 503) at most once; and no text twice. A part of the commands carry an
``Idempotency-Key``: those are sent again after the fault, with the same key and
body, and must then answer as the first answer did, or land once if it never came.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from eventvault import open_store
from eventvault_ledger.domain import Account, AccountOpened, MoneyDeposited, MoneyWithdrawn

PROBLEMS = "https://eventvault.dev/problems/"
CLIENTS = 16
ACCOUNTS = 8
KEYED = 1 / 3  # of the commands, sent with an Idempotency-Key
TIMEOUT = 60.0  # per request: generous for a loaded machine


@dataclass
class Command:
    """One command sent, and what became of it."""

    path: str
    body: dict[str, Any]
    text: str  # what of it the log holds: its description, or the opened account's owner name
    key: str | None
    status: int | None = None  # None: no answer (the connection failed)
    answer: dict[str, Any] = field(default_factory=dict)
    sent: bool = True  # False: the connection could not even be made

    @property
    def acknowledged(self) -> bool:
        """Answered 2xx: its events are in the log."""
        return self.status is not None and 200 <= self.status < 300

    @property
    def unknown(self) -> bool:
        """Sent with no answer, or a 503: it may or may not have landed."""
        return self.status is None or self.status == 503

    def headers(self) -> dict[str, str]:
        return {"Idempotency-Key": self.key} if self.key else {}


def _body(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {"text": r.text}
    return body if isinstance(body, dict) else {"json": body}


def kind(r: httpx.Response) -> str:
    """``201``, or ``503 unavailable`` for a problem: how an answer is counted."""
    if r.headers.get("content-type") == "application/problem+json" and "type" in _body(r):
        return f"{r.status_code} {r.json()['type'].removeprefix(PROBLEMS)}"
    return str(r.status_code)


class Load:
    """``CLIENTS`` clients, each on a connection of its own, sending commands until told to stop."""

    def __init__(self, base: str, accounts: list[str], seed: str) -> None:
        self.base = base
        self.accounts = accounts
        self.rng = random.Random(seed)
        self.commands: list[Command] = []
        self.answers: Counter[str] = Counter()
        self.stop = asyncio.Event()
        self.acked = 0
        self._progress = asyncio.Condition()

    def _next(self, client: int, n: int, tag: str) -> Command:
        text = f"{tag} c{client} #{n}"
        key = str(uuid.uuid4()) if self.rng.random() < KEYED else None
        pick = self.rng.random()
        if pick < 0.2:
            return Command("/api/command/accounts", {"ownerName": text, "currency": "EUR"}, text, key)
        account = self.rng.choice(self.accounts)
        verb = "deposit" if pick < 0.65 else "withdraw"
        body = {"amount": "1.00", "description": text}
        return Command(f"/api/command/accounts/{account}/{verb}", body, text, key)

    async def send(self, http: httpx.AsyncClient, command: Command) -> httpx.Response | None:
        """Send ``command`` and note its answer; None if the connection failed."""
        try:
            r = await http.post(command.path, json=command.body, headers=command.headers())
        except httpx.ConnectError:
            command.sent = False
            return None
        except httpx.TransportError:
            return None
        command.status = r.status_code
        command.answer = _body(r)
        self.answers[kind(r)] += 1
        if r.status_code == 503 and not r.headers.get("retry-after", "").isdigit():
            self.answers["503 without Retry-After"] += 1
        if command.acknowledged:
            self.acked += 1
        async with self._progress:
            self._progress.notify_all()
        return r

    async def _client(self, client: int, tag: str, until_dead: bool) -> None:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=self.base, timeout=TIMEOUT, limits=limits) as http:
            n = 0
            while not self.stop.is_set():
                command = self._next(client, n, tag)
                n += 1
                self.commands.append(command)
                if await self.send(http, command) is None and until_dead:
                    return  # the server is gone: this client is done for the round
                if command.status == 503:
                    # As Retry-After says, but a little sooner: the outage is what is measured.
                    await asyncio.sleep(0.1)

    async def until_acked(self, n: int) -> None:
        """Wait until ``n`` commands in all were acknowledged."""
        await self.until(lambda: self.acked >= n)

    async def until(self, condition: Callable[[], bool]) -> None:
        """Wait until ``condition()`` holds, checked after every answer."""
        async with self._progress:
            await self._progress.wait_for(condition)

    def run(self, tag: str, *, until_dead: bool) -> asyncio.Future[list[None]]:
        """Start the clients; ``until_dead``: each stops at its first failed connection."""
        self.stop.clear()
        return asyncio.gather(*(self._client(c, tag, until_dead) for c in range(CLIENTS)))


async def open_accounts(base: str, n: int = ACCOUNTS) -> list[str]:
    """``n`` accounts with money enough for every withdrawal the load makes."""
    ids = []
    async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as http:
        for i in range(n):
            r = await http.post("/api/command/accounts", json={"ownerName": f"Seed {i}", "currency": "EUR"})
            assert r.status_code == 201, r.text
            account = r.json()["accountId"]
            r = await http.post(f"/api/command/accounts/{account}/deposit", json={"amount": "100000.00"})
            assert r.status_code == 200, r.text
            ids.append(account)
    return ids


def _same(first: dict[str, Any], again: dict[str, Any]) -> bool:
    if "accountId" in first:
        return all(first[k] == again.get(k) for k in ("accountId", "version", "position", "checkpoint"))
    return first == again


async def retry_keyed(base: str, commands: list[Command]) -> int:
    """Send every keyed command again (same key, same body), ``CLIENTS`` at a time; how many there were.

    An answered one must answer the same again. One with no answer (or a 503)
    must now be acknowledged, and answer the same to a second retry; it then
    counts as acknowledged.
    """
    keyed = [c for c in commands if c.key and c.sent]
    turns = asyncio.Semaphore(CLIENTS)

    async def retry(http: httpx.AsyncClient, c: Command) -> None:
        async with turns:
            answers = []
            for _ in range(2 if c.unknown else 1):
                r = await http.post(c.path, json=c.body, headers=c.headers())
                answers.append((r.status_code, _body(r)))
        status, answer = answers[0]
        assert all(a[0] == status and _same(answer, a[1]) for a in answers), (c, answers)
        if c.unknown:
            assert 200 <= status < 300, (c, answers)
            c.status, c.answer = status, answer
        else:
            assert status == c.status, (c, answers)
            assert _same(c.answer, answer), (c, answers)

    async with httpx.AsyncClient(base_url=base, timeout=TIMEOUT) as http:
        await asyncio.gather(*(retry(http, c) for c in keyed))
    return len(keyed)


async def assert_in_log_once(url: str, commands: list[Command]) -> dict[str, int]:
    """Every acknowledged command in the log once, where its answer said; no text twice. Figures."""
    places: dict[str, list[tuple[str, int, int]]] = {}
    async with open_store(url) as store:
        async for e in store.iter_all():
            if isinstance(e.data, AccountOpened):
                text = e.data.owner_name
            elif isinstance(e.data, MoneyDeposited | MoneyWithdrawn):
                text = e.data.description
            else:
                continue
            if not text:
                continue  # the seed deposits
            places.setdefault(text, []).append((e.stream_id, e.stream_version, e.position))
    doubled = {t: p for t, p in places.items() if len(p) > 1}
    assert doubled == {}, f"commands recorded twice: {doubled}"
    acked = [c for c in commands if c.acknowledged]
    missing = [c for c in acked if c.text not in places]
    assert missing == [], f"{len(missing)} acknowledged commands missing from the log: {missing[:5]}"
    for c in acked:
        [(stream, version, position)] = places[c.text]
        assert (stream, version, position) == (
            Account.stream_id_for(c.answer["accountId"]),
            c.answer["version"],
            c.answer["position"],
        ), c
    unknown = [c for c in commands if c.unknown and c.sent]
    return {
        "acknowledged": len(acked),
        "unknown": len(unknown),
        "unknown that landed": sum(c.text in places for c in unknown),
    }
