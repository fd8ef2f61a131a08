"""The composition root: Services.open builds every part finished, or closes what it opened."""

from __future__ import annotations

import sqlite3

import pytest

from eventvault import EventStore, InvalidInput, StoreClosed, open_store
from eventvault.projections import ProjectionRunner, ReadModels
from eventvault_ledger.api import services as services_module
from eventvault_ledger.api.idempotency import IdempotencyStore
from eventvault_ledger.api.metrics import Metrics
from eventvault_ledger.api.services import Services
from eventvault_ledger.api.settings import Settings


async def test_open_returns_every_part_built_and_running(db_url):
    """Once open returns, the store answers, the runner runs, the key table exists; stop ends them."""
    metrics = Metrics()
    services = await Services.open(Settings(db=db_url), metrics=metrics)
    try:
        assert isinstance(services.store, EventStore)
        assert isinstance(services.db, ReadModels)
        assert isinstance(services.runner, ProjectionRunner)
        assert isinstance(services.idempotency, IdempotencyStore)
        assert services.metrics is metrics
        assert services.repository.store is services.store
        assert (await services.store.head()).position == 0
        states = {s.state for s in await services.runner.status()}
        assert states, "no projection"
        assert not states & {"stopped", "failed"}, states  # started: catching up, live or idle
        assert services.idempotency.claim("k", "f").fingerprint == "f"
    finally:
        await services.stop()
    with pytest.raises(StoreClosed):
        await services.store.head()


async def test_a_start_that_fails_half_way_closes_what_it_opened(db_url, monkeypatch):
    """The runner failing to start: open raises that error, and the store it opened is closed."""
    opened: list[EventStore] = []
    real_open_store = open_store

    async def spying_open_store(url: str) -> EventStore:
        store = await real_open_store(url)
        opened.append(store)
        return store

    async def failing_start(self) -> None:
        raise RuntimeError("the runner cannot start")

    monkeypatch.setattr(services_module, "open_store", spying_open_store)
    monkeypatch.setattr(ProjectionRunner, "start", failing_start)
    with pytest.raises(RuntimeError, match="the runner cannot start"):
        await Services.open(Settings(db=db_url))
    (store,) = opened
    with pytest.raises(StoreClosed):
        await store.head()


async def test_a_store_without_a_database_for_read_models_is_refused_and_closed(monkeypatch):
    """memory:// has no SQL database for the read models: open refuses it and closes the store."""
    opened: list[EventStore] = []
    real_open_store = open_store

    async def spying_open_store(url: str) -> EventStore:
        store = await real_open_store(url)
        opened.append(store)
        return store

    monkeypatch.setattr(services_module, "open_store", spying_open_store)
    with pytest.raises(InvalidInput, match="no SQL database for read models"):
        await Services.open(Settings(db="memory://"))
    (store,) = opened
    with pytest.raises(StoreClosed):
        await store.head()


async def test_read_models_apart_serve_queries_and_idempotency_from_their_own_file(tmp_path, make_api_for):
    """sqlite:///ledger.db?read_models=views.db: the account's balance and the keys come from views.db."""
    api = await make_api_for(f"sqlite:///{tmp_path / 'ledger.db'}?read_models=views.db")
    assert api.services.db.path == str(tmp_path / "views.db")
    account_id = await api.open()
    r = await api.deposit(account_id, "12.50", headers={"Idempotency-Key": "k-1"})
    assert r.status_code == 200, r.text
    assert (await api.account(account_id, r.json()["position"]))["currentBalance"] == "12.50"
    again = await api.deposit(account_id, "12.50", headers={"Idempotency-Key": "k-1"})
    assert again.json() == r.json()  # the key's answer, kept in views.db
    with sqlite3.connect(tmp_path / "ledger.db") as log:
        names = {n for (n,) in log.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "events" in names
    assert not [n for n in names if n.startswith(("ev_", "accounts", "idempotency"))], names
