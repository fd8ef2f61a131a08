"""The ledger's read models and queries on PostgreSQL: the essentials of tests/ledger/test_read_models.py.

The log and the read models share this test's schema. The read models are built
by a ProjectionRunner over ``PostgresReadModels`` (the same handler SQL as on
SQLite); every wait is on the runner's progress, never on a clock.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

import pytest

from eventvault import Repository, default_registry
from eventvault.projections import ProjectionRunner, Session
from eventvault.projections._db import PostgresReadModels
from eventvault.store.records import AppendResult, RecordedEvent
from eventvault_ledger.domain import Account, AccountStatus
from eventvault_ledger.queries import (
    AccountView,
    QuerySource,
    TransactionKind,
    currency_totals,
    get_account,
    list_accounts,
    state_at,
    transactions,
)
from eventvault_ledger.read_models import AccountsProjection, projections

WAIT = 30.0  # generous bound; the waits return as soon as the projection gets there
TABLES = AccountsProjection.tables


def held(db: QuerySource, account_id: str | uuid.UUID) -> AccountView:
    """The read model's summary of an account it must hold by now."""
    view = get_account(db, account_id)
    assert view is not None, f"the read model holds no account {account_id}"
    return view


@pytest.fixture
async def store(open_store):
    """A PostgreSQL store on this test's schema that knows the ledger's events."""
    return await open_store(registry=default_registry, poll_interval=0.05)


@pytest.fixture
def repo(store) -> Repository:
    """A repository over the store."""
    return Repository(store)


@pytest.fixture
def read_models(pg_url, schema):
    """Makes read-model databases in this test's schema; closes them after the test."""
    made: list[PostgresReadModels] = []

    def make() -> PostgresReadModels:
        made.append(PostgresReadModels(pg_url, schema=schema))
        return made[-1]

    yield make
    for db in made:
        db.close()


@pytest.fixture
async def runner(store, read_models):
    """A running ProjectionRunner with the ledger's projections, read models beside the log."""
    async with ProjectionRunner(store, projections(), read_models=read_models(), idle_wait=0.2) as r:
        yield r


async def open_account(repo: Repository, owner: str, currency: str, *moves: str) -> tuple[str, AppendResult]:
    """Open an account, then run ``moves`` ("+12.50" deposits, "-3" withdraws), one append each."""
    account = Account.open(owner, currency)
    result = await repo.save(account)
    assert result is not None
    for move in moves:
        amount = Decimal(move[1:])
        if move[0] == "+":
            account.deposit(amount, f"move {move}")
        else:
            account.withdraw(amount, f"move {move}")
        result = await repo.save(account)
        assert result is not None
    return account.id, result


async def synced(runner: ProjectionRunner, result: AppendResult) -> None:
    """Wait until the projections have applied ``result``."""
    assert await runner.wait_for(result.checkpoint, timeout=WAIT)


def dump(db: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the three read-model views, in key order."""
    return {t: db.query(f"SELECT * FROM {t} ORDER BY 1, 2") for t in TABLES}  # noqa: S608


def walk(db: Any, limit: int, **filters: Any) -> list[str]:
    """The account ids of every page of list_accounts, in order (failing on a stuck cursor)."""
    ids: list[str] = []
    cursor = None
    for _ in range(1000):
        page = list_accounts(db, limit=limit, cursor=cursor, **filters)
        assert len(page.items) <= limit
        ids += [a.account_id for a in page.items]
        if page.next_cursor is None:
            return ids
        cursor = page.next_cursor
    raise AssertionError("more than 1000 pages: the walk does not end")


async def test_catch_up_and_live_updates(store, repo, runner):
    """Summary, history with running balance and totals follow the log, caught up and then live."""
    ada, _ = await open_account(repo, "Ada", "EUR", *(["+0.10"] * 10), "-0.25")
    _, result = await open_account(repo, "Bob", "JPY", "+1250")
    await synced(runner, result)
    stream = await store.read_stream(Account.stream_id_for(ada))
    view = get_account(runner, ada)
    assert view is not None
    assert (str(view.balance), view.transaction_count, view.version) == ("0.75", 11, 12)
    assert (view.opened_at, view.last_transaction_at) == (stream[0].recorded_at, stream[-1].recorded_at)
    history = transactions(runner, ada, limit=500).items
    assert str(history[9].balance_after) == "1.00"
    assert (history[-1].kind, str(history[-1].balance_after)) == (TransactionKind.WITHDRAWAL, "0.75")
    assert [(t.event_id, t.position) for t in history] == [(e.event_id, e.position) for e in stream[1:]]

    def close(a: Account) -> None:
        a.withdraw(a.balance)
        a.close()

    _, result = await repo.update(Account, ada, close)
    assert result is not None
    await synced(runner, result)
    view = get_account(runner, ada)
    assert view is not None
    assert (view.status, str(view.balance), view.version) == (AccountStatus.CLOSED, "0.00", 14)
    totals = {t.currency: t for t in currency_totals(runner)}
    eur = totals["EUR"]
    assert (eur.accounts, eur.open_accounts, eur.transaction_count) == (1, 0, 12)
    assert (str(eur.total_balance), str(eur.total_deposited), str(eur.total_withdrawn)) == (
        "0.00",
        "1.00",
        "1.00",
    )
    assert str(totals["JPY"].total_balance) == "1250"


BALANCES = {
    "EUR": ["0", "5.00", "5.00", "5.00", "12.34", "100", "0.01"],
    "USD": ["5.00", "5.00", "99.99"],
    "CLF": ["5.0000", "4.9999", "5.0001"],
}


@pytest.fixture
async def many_accounts(runner, repo) -> dict[str, tuple[str, Decimal]]:
    """Accounts over three currencies with tied balances: account id -> (currency, balance)."""
    accounts: dict[str, tuple[str, Decimal]] = {}
    result = None
    for currency, balances in BALANCES.items():
        for i, balance in enumerate(balances):
            moves = [f"+{balance}"] if Decimal(balance) else []
            account_id, result = await open_account(repo, f"{currency} {i}", currency, *moves)
            accounts[account_id] = (currency, Decimal(balance))
    assert result is not None
    await synced(runner, result)
    return accounts


def expected(
    accounts: dict[str, tuple[str, Decimal]], low: Decimal, high: Decimal, currency: str | None = None
):
    """The ids the range query must return, by balance then account id."""
    rows = sorted(
        (balance, account_id)
        for account_id, (cur, balance) in accounts.items()
        if low <= balance <= high and currency in (None, cur)
    )
    return [account_id for _, account_id in rows]


async def test_balance_range_pages_walk_every_match_once_in_order(runner, many_accounts):
    """Pages of the range query return each match exactly once, by balance then id, with exact bounds."""
    for limit in (1, 2, 5):
        assert walk(runner, limit, min_balance="5", max_balance="100") == expected(
            many_accounts, Decimal(5), Decimal(100)
        )
    assert walk(runner, 2, min_balance="5.00001") == expected(
        many_accounts, Decimal("5.00001"), Decimal(10**15)
    )
    assert walk(runner, 2, max_balance="4.99999") == expected(many_accounts, Decimal(0), Decimal("4.99999"))
    assert walk(runner, 2, currency="USD") == expected(many_accounts, Decimal(0), Decimal(10**15), "USD")
    everything = expected(many_accounts, Decimal(0), Decimal(10**15))
    assert walk(runner, 2, highest_first=True) == everything[::-1]
    # Search: part of the owner's name in any case ("EUR 1" is an owner here), or an id prefix.
    assert walk(runner, 2, search="eur 1") == [i for i in everything if i in _owned(runner, "EUR 1")]
    some = everything[0]
    assert walk(runner, 2, search=some[:-3].upper()) == [some]
    assert walk(runner, 2, search="%") == []


def _owned(db: Any, owner: str) -> set[str]:
    return {
        str(r[0]) for r in db.query("SELECT account_id FROM account_summary WHERE owner_name = ?", (owner,))
    }


async def test_range_query_uses_the_indexes(runner, many_accounts, read_models):
    """EXPLAIN: with sequential scans discouraged, each page is an index scan on the balance index."""
    db = read_models()
    db.connection().execute("SET enable_seqscan = off")  # a few rows would otherwise always be scanned

    class Recording:
        def __init__(self) -> None:
            self.statements: list[tuple[str, tuple[Any, ...]]] = []

        def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
            self.statements.append((sql, tuple(params)))
            rows: list[tuple[Any, ...]] = db.query(sql, params)
            return rows

    for index, filters in {
        "by_balance": {"min_balance": "5", "max_balance": "100"},
        "by_currency": {"currency": "EUR", "min_balance": "1"},
    }.items():
        recording = Recording()
        walk(recording, 1, **filters)
        assert len(recording.statements) > 2
        for sql, params in recording.statements:
            plan = "\n".join(str(r[0]) for r in db.query("EXPLAIN " + sql, params))
            assert f"Index Scan using account_summary__g1_{index} " in plan, plan
            assert "Sort" not in plan, plan


async def test_handling_every_event_again_changes_nothing(runner, repo, store, read_models):
    """Running every handler twice more on events already applied leaves every table as it was."""
    await open_account(repo, "Ada", "EUR", "+10.00", "-2.50")
    _, result = await open_account(repo, "Bob", "CLF", "+3.1415", "-0.0001")
    await synced(runner, result)
    before = dump(runner)
    assert all(before.values())

    db = read_models()
    generation = int(db.query("SELECT generation FROM ev_projection WHERE name = 'accounts'")[0][0])
    events: list[RecordedEvent] = [e async for e in store.iter_all()]
    projection = AccountsProjection()
    with db.transaction() as conn:
        session = Session(db, conn, AccountsProjection.physical_names(generation))
        for e in events:
            handler = AccountsProjection.handler_for(type(e.data))
            assert handler is not None
            handler(projection, session, e)
            handler(projection, session, e)
    assert dump(runner) == before


async def test_rebuild_from_the_log_equals_the_live_read_models(runner, repo):
    """A rebuild swaps in tables equal to the live ones, and live updates go on after it."""
    ada, _ = await open_account(repo, "Ada", "EUR", "+10.00", "-2.50")
    _, result = await open_account(repo, "Bob", "JPY", "+300", "-1")
    await synced(runner, result)
    live = dump(runner)

    await runner.rebuild("accounts")
    assert await runner.wait_rebuilt("accounts", timeout=WAIT)
    (status,) = await runner.status()
    assert status.generation == 2
    assert dump(runner) == live

    _, result = await open_account(repo, "Cy", "EUR", "+1.00")
    await synced(runner, result)
    assert str(held(runner, ada).balance) == "7.50"
    assert str({t.currency: t for t in currency_totals(runner)}["EUR"].total_balance) == "8.50"


async def test_state_replayed_to_each_version_matches_the_history(runner, repo):
    """For every version N, the state replayed to N has the balance the history shows after N."""
    rng = random.Random(7)
    account = Account.open("Ada", "BHD")
    await repo.save(account)
    result = None
    for _ in range(15):
        amount = Decimal(rng.randint(1, 10**6)).scaleb(-3)
        if account.balance and rng.random() < 0.4:
            account.withdraw(min(amount, account.balance))
        else:
            account.deposit(amount)
        result = await repo.save(account)
    assert result is not None
    await synced(runner, result)
    history = {t.version: t.balance_after for t in transactions(runner, account.id, limit=500).items}
    for version in range(1, account.version + 1):
        state = await state_at(repo, account.id, version=version)
        assert state.balance == history.get(version, 0)
    assert held(runner, account.id).balance == account.balance


@pytest.mark.parametrize(("durable", "setting"), [(False, "off"), (True, "on")])
def test_postgres_read_models_wait_for_the_wal_flush_only_when_durable(pg_url, schema, durable, setting):
    """Derived data commits asynchronously by default; durable=True waits for the flush."""
    db = PostgresReadModels(pg_url, schema=schema, durable=durable)
    try:
        assert db.query("SHOW synchronous_commit") == [(setting,)]
    finally:
        db.close()
