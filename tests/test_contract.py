"""The event store contract suite, run against each embedded backend.

PostgreSQL runs the same suite from tests/postgres/, where its server fixtures live.
"""

from __future__ import annotations

import pytest_asyncio

from eventvault.store import create_store
from eventvault.store.memory import MemoryEventStore
from eventvault.testing.contract import (
    DCBContract,
    EventStoreContract,
    LifecycleContract,
    PersonalDataContract,
    opened_stores,
)


class TestMemoryStore(EventStoreContract):
    """The contract on memory://: the stores of a test share one in-memory database."""

    dense_versions = True

    @pytest_asyncio.fixture
    async def store_factory(self):  # type: ignore[override] # a fixture overrides by name, not signature
        database = MemoryEventStore()
        async with opened_stores(
            lambda registry: MemoryEventStore(registry=registry, share_with=database)
        ) as factory:
            yield factory


class TestSQLiteStore(EventStoreContract):
    """The contract on sqlite:///: every store of a test opens the same temporary file."""

    @pytest_asyncio.fixture
    async def store_factory(self, tmp_path):  # type: ignore[override] # a fixture overrides by name
        url = "sqlite:///" + str(tmp_path / "contract.db")
        async with opened_stores(lambda registry: create_store(url, registry=registry)) as factory:
            yield factory


class TestMemoryStoreDCB(DCBContract):
    """Dynamic consistency boundaries on memory://."""

    @pytest_asyncio.fixture
    async def store_factory(self):  # type: ignore[override] # a fixture overrides by name, not signature
        database = MemoryEventStore()
        async with opened_stores(
            lambda registry: MemoryEventStore(registry=registry, share_with=database)
        ) as factory:
            yield factory


class TestSQLiteStoreDCB(DCBContract):
    """Dynamic consistency boundaries on sqlite:///, with each writer (the write checks the condition)."""

    @pytest_asyncio.fixture(params=["auto", "thread"])
    async def store_factory(self, request, tmp_path):  # type: ignore[override] # a fixture overrides by name
        url = f"sqlite:///{tmp_path / 'dcb.db'}?writer={request.param}"
        async with opened_stores(lambda registry: create_store(url, registry=registry)) as factory:
            yield factory


class TestMemoryStoreLifecycle(LifecycleContract):
    """Deletes, retention and scavenging on memory://."""

    @pytest_asyncio.fixture
    async def store_factory(self):  # type: ignore[override] # a fixture overrides by name, not signature
        database = MemoryEventStore()
        async with opened_stores(
            lambda registry: MemoryEventStore(registry=registry, share_with=database)
        ) as factory:
            yield factory


class TestSQLiteStoreLifecycle(LifecycleContract):
    """Deletes, retention and scavenging on sqlite:///, with each writer."""

    @pytest_asyncio.fixture(params=["auto", "thread"])
    async def store_factory(self, request, tmp_path):  # type: ignore[override] # a fixture overrides by name
        url = f"sqlite:///{tmp_path / 'lifecycle.db'}?writer={request.param}"
        async with opened_stores(lambda registry: create_store(url, registry=registry)) as factory:
            yield factory


class TestMemoryStorePersonalData(PersonalDataContract):
    """Personal fields on memory://: the stores of a test share one database and its keys."""

    @pytest_asyncio.fixture
    async def store_factory(self):  # type: ignore[override] # a fixture overrides by name, not signature
        database = MemoryEventStore()
        async with opened_stores(
            lambda registry: MemoryEventStore(registry=registry, share_with=database)
        ) as factory:
            yield factory


class TestSQLiteStorePersonalData(PersonalDataContract):
    """Personal fields on sqlite:///: keys in the file's subject_keys table."""

    @pytest_asyncio.fixture
    async def store_factory(self, tmp_path):  # type: ignore[override] # a fixture overrides by name
        url = "sqlite:///" + str(tmp_path / "personal.db")
        async with opened_stores(lambda registry: create_store(url, registry=registry)) as factory:
            yield factory
