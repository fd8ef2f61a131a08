"""The event store contract on postgresql://: every store of a test shares one fresh schema."""

from __future__ import annotations

import pytest_asyncio

from eventvault.store.postgres import PostgresEventStore
from eventvault.testing.contract import (
    DCBContract,
    EventStoreContract,
    LifecycleContract,
    PersonalDataContract,
    opened_stores,
)


class TestPostgresStore(EventStoreContract):
    """The whole contract, on a schema created for each test and dropped after it."""

    @pytest_asyncio.fixture
    async def store_factory(self, pg_url, schema):  # type: ignore[override] # a fixture overrides by name
        async with opened_stores(
            lambda registry: PostgresEventStore(pg_url, registry=registry, schema=schema, pool_max=5)
        ) as factory:
            yield factory


class TestPostgresStoreDCB(DCBContract):
    """Dynamic consistency boundaries on postgresql://, the stores of a test sharing one schema."""

    @pytest_asyncio.fixture
    async def store_factory(self, pg_url, schema):  # type: ignore[override] # a fixture overrides by name
        async with opened_stores(
            lambda registry: PostgresEventStore(pg_url, registry=registry, schema=schema, pool_max=5)
        ) as factory:
            yield factory


class TestPostgresStoreLifecycle(LifecycleContract):
    """Deletes, retention and scavenging on postgresql://, the stores of a test sharing one schema."""

    @pytest_asyncio.fixture
    async def store_factory(self, pg_url, schema):  # type: ignore[override] # a fixture overrides by name
        async with opened_stores(
            lambda registry: PostgresEventStore(pg_url, registry=registry, schema=schema, pool_max=5)
        ) as factory:
            yield factory


class TestPostgresStorePersonalData(PersonalDataContract):
    """Personal fields on postgresql://: keys in the schema's subject_keys table."""

    @pytest_asyncio.fixture
    async def store_factory(self, pg_url, schema):  # type: ignore[override] # a fixture overrides by name
        async with opened_stores(
            lambda registry: PostgresEventStore(pg_url, registry=registry, schema=schema, pool_max=5)
        ) as factory:
            yield factory
