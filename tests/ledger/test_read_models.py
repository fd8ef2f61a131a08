"""The ledger's read models and queries, written once and run on SQLite and on PostgreSQL.

Every test that takes a ``backend`` (through ``store``, ``repo`` or ``runner``)
runs once per backend: a SQLite file, and a PostgreSQL schema of its own on the
run's server (tests/conftest.py; skipped without one, fatal in CI). The log and
the read models share the database, as in the service. Commands go through the
Repository, as the service's do; the projection runner keeps the read models
current; the queries read them. Every wait is on the runner's own progress
(``wait_for`` a command's checkpoint), never on a clock.
"""

from __future__ import annotations

import random
import re
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg import sql

from eventvault import (
    AggregateNotFound,
    AppendResult,
    InvalidInput,
    Metadata,
    NewEvent,
    RecordedEvent,
    Repository,
    open_store,
)
from eventvault.projections import ProjectionRunner, ReadModels, Session, open_read_models, read_models_for
from eventvault_ledger.domain import Account, AccountStatus, MoneyDeposited
from eventvault_ledger.errors import InvalidAccountId, UnknownCurrency
from eventvault_ledger.queries import (
    AccountView,
    CurrentAccount,
    InvalidCursor,
    InvalidQuery,
    QuerySource,
    TransactionKind,
    account_events,
    currency_totals,
    current_account,
    current_transactions,
    get_account,
    list_accounts,
    state_at,
    transactions,
)
from eventvault_ledger.read_models import (
    AccountsProjection,
    ReadModelInconsistency,
    balance_key,
    format_timestamp,
    projections,
)

WAIT = 60.0  # generous bound; the waits return as soon as the projection gets there
TABLES = AccountsProjection.tables


def held(db: QuerySource, account_id: str | uuid.UUID) -> AccountView:
    """The read model's summary of an account it must hold by now."""
    view = get_account(db, account_id)
    assert view is not None, f"the read model holds no account {account_id}"
    return view


# -- the backends --------------------------------------------------------------------------


@dataclass
class Backend:
    """Where a test's log and read models live, and fresh read-model databases beside them."""

    dialect: str
    url: str
    _fresh: Callable[[], ReadModels]
    made: list[ReadModels] = field(default_factory=list)

    def fresh(self) -> ReadModels:
        """An empty read-model database of the backend (a new file or schema), closed after the test."""
        self.made.append(self._fresh())
        return self.made[-1]


def _with_schema(url: str, schema: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}schema={schema}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request, tmp_path) -> Iterator[Backend]:
    """A SQLite file, or a PostgreSQL schema of this test's own (dropped after it)."""
    if request.param == "sqlite":
        files = iter(range(10**6))
        made = Backend(
            "sqlite",
            f"sqlite:///{tmp_path / 'ledger.db'}",
            lambda: open_read_models(f"sqlite:///{tmp_path / f'fresh-{next(files)}.db'}"),
        )
        yield made
        for db in made.made:
            db.close()
        return
    server = request.getfixturevalue("postgres_server")  # skips, or fails in CI, without a server
    schemas = [f"evt_rm_{uuid.uuid4().hex[:12]}"]

    def fresh() -> ReadModels:
        schemas.append(f"evt_rm_{uuid.uuid4().hex[:12]}")
        return open_read_models(_with_schema(server.url, schemas[-1]))

    made = Backend("postgresql", _with_schema(server.url, schemas[0]), fresh)
    yield made
    for db in made.made:
        db.close()
    with psycopg.connect(server.url, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# -- fixtures and helpers ----------------------------------------------------------------


@pytest.fixture
async def store(backend):
    """An open event store of the backend."""
    options: dict[str, Any] = {"poll_interval": 0.05} if backend.dialect == "postgresql" else {}
    async with open_store(backend.url, **options) as s:
        yield s


@pytest.fixture
def repo(store) -> Repository:
    """A repository over the store."""
    return Repository(store)


@pytest.fixture
async def runner(store):
    """A running ProjectionRunner with the ledger's projections."""
    async with ProjectionRunner(store, projections(), idle_wait=0.2) as r:
        yield r


async def open_account(
    repo: Repository, owner: str = "Ada", currency: str = "EUR", *moves: str, metadata: Metadata | None = None
) -> tuple[str, AppendResult]:
    """Open an account, then run ``moves`` ("+12.50" deposits, "-3" withdraws), one append each."""
    account = Account.open(owner, currency)
    result = await repo.save(account, metadata=metadata)
    assert result is not None
    for move in moves:
        result = await move_money(repo, account.id, move, metadata=metadata)
    return account.id, result


async def move_money(
    repo: Repository, account_id: str, move: str, *, metadata: Metadata | None = None
) -> AppendResult:
    """Deposit ("+x") or withdraw ("-x") on a stored account."""
    amount = Decimal(move[1:])

    def command(a: Account) -> None:
        if move[0] == "+":
            a.deposit(amount, f"move {move}")
        else:
            a.withdraw(amount, f"move {move}")

    _, result = await repo.update(Account, account_id, command, metadata=metadata)
    assert result is not None
    return result


async def empty_and_close(repo: Repository, account_id: str) -> AppendResult:
    """Withdraw whatever the account holds, then close it."""

    def command(a: Account) -> None:
        if a.balance:
            a.withdraw(a.balance)
        a.close()

    _, result = await repo.update(Account, account_id, command)
    assert result is not None
    return result


async def synced(runner: ProjectionRunner, result: AppendResult) -> None:
    """Wait until the projections have applied ``result``."""
    assert await runner.wait_for(result.checkpoint, timeout=WAIT)


def dump(db: Any, names: dict[str, str] | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the three tables (the logical views, or the physical ``names``), in key order."""
    names = names or {t: t for t in TABLES}
    return {t: db.query(f"SELECT * FROM {names[t]} ORDER BY 1, 2") for t in TABLES}  # noqa: S608


async def all_events(store) -> list[RecordedEvent]:
    """The whole global log."""
    return [e async for e in store.iter_all()]


def replay_into(db: ReadModels, names: dict[str, str], events: Sequence[RecordedEvent], times: int) -> None:
    """Apply every event ``times`` times in a row, straight through the handlers, in one transaction."""
    projection = AccountsProjection()
    with db.transaction() as conn:
        session = Session(db, conn, names)
        for e in events:
            handler = AccountsProjection.handler_for(type(e.data))
            assert handler is not None
            for _ in range(times):
                handler(projection, session, e)


def active_names(db: ReadModels) -> dict[str, str]:
    """The physical tables of the generation queries see now."""
    generation = db.query("SELECT generation FROM ev_projection WHERE name = ?", ("accounts",))[0][0]
    return AccountsProjection.physical_names(int(generation))


class Recording:
    """A query source that keeps every statement it runs (to EXPLAIN them afterwards)."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.statements: list[tuple[str, tuple[Any, ...]]] = []

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.statements.append((sql, tuple(params)))
        rows: list[tuple[Any, ...]] = self.db.query(sql, params)
        return rows


class Untouchable:
    """A query source that fails the test if a query reaches it."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        raise AssertionError(f"bad input reached the database: {sql} {params}")


def walk(db: Any, limit: int, **filters: Any) -> list[list[str]]:
    """Every page of list_accounts, as lists of account ids (failing, not looping, on a stuck cursor)."""
    pages: list[list[str]] = []
    cursor = None
    for _ in range(1000):
        page = list_accounts(db, limit=limit, cursor=cursor, **filters)
        pages.append([a.account_id for a in page.items])
        if page.next_cursor is None:
            return pages
        assert page.next_cursor != cursor, "the cursor did not move"
        cursor = page.next_cursor
    raise AssertionError("more than 1000 pages: the walk does not end")


# -- the summary, the history and the totals ----------------------------------------------------


async def test_catch_up_builds_summary_history_and_totals(store, repo):
    """A runner started over an existing log builds every table from it."""
    ada, _ = await open_account(repo, "Ada", "EUR", "+100.00", "-30.50", "+0.25")
    bob, _ = await open_account(repo, "Bob", "JPY", "+1250")
    stream = await store.read_stream(Account.stream_id_for(ada))

    async with ProjectionRunner(store, projections()) as runner:
        assert await runner.catch_up(WAIT)
        view = get_account(runner, ada)
        history = transactions(runner, ada).items
        totals = {t.currency: t for t in currency_totals(runner)}
        bob_view = get_account(runner, bob)

    assert view is not None
    assert (view.account_id, view.owner_name, view.currency) == (ada, "Ada", "EUR")
    assert str(view.balance) == "69.75"
    assert view.transaction_count == 3
    assert view.status is AccountStatus.OPEN
    assert view.version == 4
    assert view.opened_at == stream[0].recorded_at
    assert view.last_transaction_at == stream[-1].recorded_at
    assert [(t.version, t.kind, str(t.amount), str(t.balance_after)) for t in history] == [
        (2, TransactionKind.DEPOSIT, "100.00", "100.00"),
        (3, TransactionKind.WITHDRAWAL, "30.50", "69.50"),
        (4, TransactionKind.DEPOSIT, "0.25", "69.75"),
    ]
    assert [(t.event_id, t.position, t.recorded_at) for t in history] == [
        (e.event_id, e.position, e.recorded_at) for e in stream[1:]
    ]
    assert history[1].description == "move -30.50"
    assert sorted(totals) == ["EUR", "JPY"]
    eur = totals["EUR"]
    assert (str(eur.total_balance), str(eur.total_deposited), str(eur.total_withdrawn)) == (
        "69.75",
        "100.25",
        "30.50",
    )
    assert (eur.accounts, eur.open_accounts, eur.transaction_count) == (1, 1, 3)
    assert str(totals["JPY"].total_balance) == "1250"
    assert bob_view is not None
    assert (str(bob_view.balance), bob_view.currency) == ("1250", "JPY")


async def test_live_updates_are_visible_once_the_runner_passes_the_checkpoint(runner, repo):
    """A query after wait_for(command's checkpoint) sees the command's effect (read-your-writes)."""
    ada, result = await open_account(repo, "Ada", "EUR")
    await synced(runner, result)
    assert str(held(runner, ada).balance) == "0.00"

    result = await move_money(repo, ada, "+12.34")
    await synced(runner, result)
    view = held(runner, ada)
    assert (str(view.balance), view.version, view.transaction_count) == ("12.34", 2, 1)
    assert [str(t.balance_after) for t in transactions(runner, ada).items] == ["12.34"]

    result = await empty_and_close(repo, ada)
    await synced(runner, result)
    view = held(runner, ada)
    assert (view.status, str(view.balance), view.version) == (AccountStatus.CLOSED, "0.00", 4)
    (eur,) = currency_totals(runner)
    assert (eur.accounts, eur.open_accounts, str(eur.total_balance)) == (1, 0, "0.00")


async def test_running_balance_is_exact_decimal_arithmetic(runner, repo):
    """Ten deposits of 0.10 make exactly 1.00, and every row's balance_after is the sum so far."""
    ada, result = await open_account(repo, "Ada", "EUR", *(["+0.10"] * 10), "-0.30", "+1000000000")
    await synced(runner, result)
    rows = transactions(runner, ada, limit=500).items
    assert [str(r.balance_after) for r in rows[:10]] == [f"{n / 10:.2f}" for n in range(1, 11)]
    assert str(rows[9].balance_after) == "1.00"
    assert [str(r.balance_after) for r in rows[10:]] == ["0.70", "1000000000.70"]
    assert str(held(runner, ada).balance) == "1000000000.70"
    assert str(currency_totals(runner)[0].total_balance) == "1000000000.70"


async def test_money_keeps_the_scale_of_its_currency(runner, repo):
    """Balances and amounts print with their currency's minor units: JPY none, BHD three, CLF four."""
    ids = {}
    for currency, move in [("JPY", "+1250"), ("BHD", "+1.5"), ("CLF", "+0.0001")]:
        ids[currency], result = await open_account(repo, "Ada", currency, move)
    await synced(runner, result)
    shown = {c: str(held(runner, i).balance) for c, i in ids.items()}
    assert shown == {"JPY": "1250", "BHD": "1.500", "CLF": "0.0001"}
    assert str(transactions(runner, ids["BHD"]).items[0].amount) == "1.500"


async def test_currency_totals_count_accounts_and_money_moved(runner, repo):
    """Totals sum the balances of a currency's accounts and count opened, open and moved."""
    ada, _ = await open_account(repo, "Ada", "EUR", "+10.00", "-3.00")
    await empty_and_close(repo, ada)
    await open_account(repo, "Bob", "EUR", "+5.05")
    _, result = await open_account(repo, "Cy", "USD", "+7")
    await synced(runner, result)
    totals = {t.currency: t for t in currency_totals(runner)}
    eur, usd = totals["EUR"], totals["USD"]
    assert (eur.accounts, eur.open_accounts) == (2, 1)
    assert (str(eur.total_balance), str(eur.total_deposited), str(eur.total_withdrawn)) == (
        "5.05",
        "15.05",
        "10.00",
    )
    assert eur.transaction_count == 4
    assert (usd.accounts, str(usd.total_balance)) == (1, "7.00")


# -- the balance-range query ---------------------------------------------------------------


BALANCES = {  # several accounts per balance, so pages split ties
    "EUR": ["0", "5.00", "5.00", "5.00", "12.34", "100", "100", "0.01"],
    "USD": ["5.00", "5.00", "12.34", "99.99", "0"],
    "JPY": ["5", "12", "100", "100"],
    "CLF": ["5.0000", "4.9999", "5.0001"],
}


@pytest.fixture
async def many_accounts(runner, repo) -> dict[str, tuple[str, Decimal]]:
    """Twenty accounts over four currencies with tied balances: account id -> (currency, balance)."""
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
    accounts: dict[str, tuple[str, Decimal]],
    low: Decimal | None = None,
    high: Decimal | None = None,
    currency: str | None = None,
) -> list[str]:
    """The ids the range query must return, in its order: by balance, then account id."""
    rows = [
        (balance, account_id)
        for account_id, (cur, balance) in accounts.items()
        if (currency is None or cur == currency)
        and (low is None or balance >= low)
        and (high is None or balance <= high)
    ]
    return [account_id for _, account_id in sorted(rows)]


@pytest.mark.parametrize("limit", [1, 3, 7, 500])
async def test_balance_range_pages_walk_every_match_once_in_order(runner, many_accounts, limit):
    """Walking the pages returns each account in the range exactly once, by balance then id."""
    pages = walk(runner, limit, min_balance="5", max_balance=Decimal("100.00"))
    ids = [i for page in pages for i in page]
    want = expected(many_accounts, Decimal(5), Decimal(100))
    assert ids == want
    assert all(len(page) == limit for page in pages[:-1])
    assert 0 < len(pages[-1]) <= limit
    assert len(pages) == -(-len(want) // limit)


async def test_balance_range_without_bounds_lists_every_account(runner, many_accounts):
    """With no bounds the listing is every account, by balance then id."""
    ids = [i for page in walk(runner, 4) for i in page]
    assert ids == expected(many_accounts)


@pytest.mark.parametrize("limit", [1, 3, 500])
async def test_highest_first_walks_the_same_accounts_in_reverse(runner, many_accounts, limit):
    """highest_first lists the range from the highest balance down (ties by id, reversed), each once."""
    pages = walk(runner, limit, currency="EUR", min_balance="1", highest_first=True)
    ids = [i for page in pages for i in page]
    assert ids == expected(many_accounts, low=Decimal(1), currency="EUR")[::-1]
    ascending = list_accounts(runner, limit=1)
    assert ascending.next_cursor is not None
    with pytest.raises(InvalidCursor):  # a cursor walks only the direction that made it
        list_accounts(runner, cursor=ascending.next_cursor, highest_first=True)


async def test_search_matches_part_of_the_owner_name_or_the_start_of_the_id(runner, repo):
    """Search finds owners by any part of the name in any case, and accounts by an id prefix; % is literal."""
    grace, _ = await open_account(repo, "Grace Hopper", "USD", "+5.00")
    other_grace, _ = await open_account(repo, "grace HOPPER", "EUR")
    _, result = await open_account(repo, "100% Ada", "EUR", "+1.00")
    await synced(runner, result)

    def found(search: str) -> set[str]:
        ids = [i for page in walk(runner, 2, search=search) for i in page]
        return {view.owner_name for view in (get_account(runner, i) for i in ids) if view is not None}

    assert found("hopper") == {"Grace Hopper", "grace HOPPER"}
    assert found("E HO") == {"Grace Hopper", "grace HOPPER"}
    assert found(grace[:-6].upper()) == {"Grace Hopper"}  # v7 ids share their first digits
    assert found(other_grace) == {"grace HOPPER"}
    assert found("0%") == {"100% Ada"}
    assert found("_") == set()
    assert [a.owner_name for a in list_accounts(runner, search="hopper", currency="USD").items] == [
        "Grace Hopper"
    ]


async def test_balance_bounds_are_exact_not_rounded_outwards(runner, many_accounts):
    """A bound between two representable balances excludes the balance just outside it."""
    assert expected(many_accounts, Decimal("4.9999"), Decimal("4.9999")) != []
    above = [i for p in walk(runner, 50, min_balance="5.00001") for i in p]
    below = [i for p in walk(runner, 50, max_balance="4.99999") for i in p]
    assert above == expected(many_accounts, low=Decimal("5.00001"))
    assert below == expected(many_accounts, high=Decimal("4.99999"))
    exact = [i for p in walk(runner, 50, min_balance=5, max_balance=5) for i in p]
    assert exact == expected(many_accounts, Decimal(5), Decimal(5))
    assert len(exact) == 7  # EUR 3, USD 2, JPY 1, CLF 1
    assert [i for p in walk(runner, 50, min_balance="1000000000000000000") for i in p] == []


async def test_currency_filter_keeps_one_currency(runner, many_accounts):
    """A currency filter pages through that currency's accounts only, still by balance."""
    ids = [i for page in walk(runner, 2, currency="USD", min_balance="0.01") for i in page]
    assert ids == expected(many_accounts, low=Decimal("0.01"), currency="USD")
    assert len(ids) == 4
    assert all(held(runner, i).currency == "USD" for i in ids)
    assert [i for p in walk(runner, 5, currency="GBP") for i in p] == []


async def test_range_query_walks_an_index_in_order(runner, store, many_accounts):
    """EXPLAIN: each page is an index search in index order, never a scan of the table or a sort."""
    db = read_models_for(store)
    try:
        if db.dialect == "postgresql":
            db.connection().execute("SET enable_seqscan = off")  # a few rows would otherwise be scanned
        for label, filters in {
            "by_balance": {"min_balance": "5", "max_balance": "100"},
            "by_currency": {"currency": "EUR", "min_balance": "1"},
        }.items():
            recording = Recording(db)
            walk(recording, 2, **filters)
            assert len(recording.statements) > 2  # pages after the first carry a cursor
            for statement, params in recording.statements:
                if db.dialect == "sqlite":
                    rows = db.query("EXPLAIN QUERY PLAN " + statement, params)
                    plan = " | ".join(str(row[-1]) for row in rows)
                    assert re.search(
                        rf"SEARCH account_summary__g\d+ USING (COVERING )?INDEX \S+_{label} ", plan
                    ), plan
                    assert "TEMP B-TREE" not in plan, plan
                else:
                    plan = "\n".join(str(row[0]) for row in db.query("EXPLAIN " + statement, params))
                    assert f"Index Scan using account_summary__g1_{label} " in plan, plan
                    assert "Sort" not in plan, plan
    finally:
        db.close()


# -- replays are harmless ------------------------------------------------------------------


async def test_handling_every_event_again_changes_nothing(runner, repo, store):
    """Running every handler again (twice) on events already applied leaves every table as it was."""
    ada, _ = await open_account(repo, "Ada", "EUR", "+10.00", "-2.50")
    await empty_and_close(repo, ada)
    _, result = await open_account(repo, "Bob", "JPY", "+300")
    await synced(runner, result)
    before = dump(runner)
    assert all(before.values())

    db = read_models_for(store)
    try:
        replay_into(db, active_names(db), await all_events(store), times=2)
    finally:
        db.close()
    assert dump(runner) == before


async def test_each_event_applied_twice_in_a_row_builds_what_the_runner_built(runner, repo, store, backend):
    """Fresh tables fed every event twice in a row end up equal to the runner's tables."""
    await open_account(repo, "Ada", "EUR", "+10.00", "-2.50", "+0.01")
    _, result = await open_account(repo, "Bob", "CLF", "+3.1415", "-0.0001")
    await synced(runner, result)

    fresh, names = fresh_tables(backend)
    replay_into(fresh, names, await all_events(store), times=2)
    assert dump(fresh, names) == dump(runner)


def fresh_tables(backend: Backend) -> tuple[ReadModels, dict[str, str]]:
    """Empty tables of the ledger's projection in a new read-model database of the backend."""
    fresh = backend.fresh()
    names = AccountsProjection.physical_names(1)
    with fresh.transaction() as conn:
        for statement in AccountsProjection.schema:
            fresh.execute(conn, statement.format_map(names))
    return fresh, names


@pytest.mark.parametrize("times", [1, 2])
async def test_the_whole_log_as_one_batch_builds_what_the_runner_built(
    runner, repo, store, backend, times, replay_as_one_batch
):
    """One batch of every event (each once, or twice in a row) equals the runner's tables.

    The log has accounts opened after other accounts' deposits, a close after
    deposits and withdrawals of the same batch, and moves in two currencies.
    """
    ada, _ = await open_account(repo, "Ada", "EUR", "+10.00", "-2.50", "+0.01")
    await open_account(repo, "Bob", "CLF", "+3.1415", "-0.0001")
    await move_money(repo, ada, "+1.00")
    await empty_and_close(repo, ada)
    _, result = await open_account(repo, "Cy", "EUR", "+5.05")
    await synced(runner, result)

    fresh, names = fresh_tables(backend)
    replay_as_one_batch(fresh, names, await all_events(store), times=times)
    assert dump(fresh, names) == dump(runner)


async def test_a_batch_whose_summary_moved_under_it_fails_instead_of_moving_the_totals(
    repo, store, backend, replay_as_one_batch
):
    """end_batch writes a summary only past the version it read; a row moved meanwhile fails the batch."""
    account_id, _ = await open_account(repo, "Ada", "EUR")
    fresh, names = fresh_tables(backend)
    replay_as_one_batch(fresh, names, await all_events(store), times=1)
    await move_money(repo, account_id, "+1.00")
    (moved,) = await store.read_stream(Account.stream_id_for(account_id), from_version=2)
    projection = AccountsProjection()
    handler = AccountsProjection.handler_for(MoneyDeposited)
    assert handler is not None

    def apply_with_the_summary_moved_meanwhile() -> None:
        with fresh.transaction() as conn:
            session = Session(fresh, conn, names)
            projection.begin_batch(session, [moved])
            handler(projection, session, moved)
            conn.execute(f"UPDATE {names['account_summary']} SET version = 5")  # noqa: S608 - a table name
            projection.end_batch(session)

    with pytest.raises(ReadModelInconsistency, match="changed under the batch"):
        apply_with_the_summary_moved_meanwhile()
    assert fresh.query(f"SELECT count(*) FROM {names['account_transactions']}") == [(0,)]  # noqa: S608
    assert fresh.query(f"SELECT balance, version FROM {names['account_summary']}") == [("0.00", 1)]  # noqa: S608


async def test_a_deposit_for_an_account_never_opened_stops_the_handler(store, backend):
    """An event the read model cannot place raises ReadModelInconsistency instead of guessing."""
    stream = Account.stream_id_for(str(uuid.uuid4()))
    await store.append(stream, [NewEvent(MoneyDeposited(Decimal("1.00")))], expected_version=0)
    fresh, names = fresh_tables(backend)
    with pytest.raises(ReadModelInconsistency, match="never opened"):
        replay_into(fresh, names, await all_events(store), times=1)
    assert dump(fresh, names) == {t: [] for t in TABLES}


# -- rebuild -----------------------------------------------------------------------------------


async def test_rebuild_from_the_log_equals_the_live_read_models(runner, repo):
    """A rebuild from position zero swaps in tables equal to the ones built live, which stay live."""
    ada, _ = await open_account(repo, "Ada", "EUR", "+10.00", "-2.50", "+100")
    await open_account(repo, "Bob", "JPY", "+300", "-1")
    _, result = await open_account(repo, "Cy", "USD", "+0.99")
    await synced(runner, result)
    live = dump(runner)

    await runner.rebuild("accounts")
    assert await runner.wait_rebuilt("accounts", timeout=WAIT)
    status = next(s for s in await runner.status() if s.name == "accounts")
    assert status.generation == 2
    assert dump(runner) == live

    result = await move_money(repo, ada, "+1.00")
    await synced(runner, result)
    assert str(held(runner, ada).balance) == "108.50"


async def test_a_deleted_account_leaves_the_read_models_as_if_never_opened(runner, repo, store):
    """Its $StreamDeleted event drops the account and its share of the totals; a rebuild agrees."""
    await open_account(repo, "Bob", "EUR", "+5.00")
    _, kept = await open_account(repo, "Cy", "USD", "+1")
    await synced(runner, kept)
    without = dump(runner)
    ada, _ = await open_account(repo, "Ada", "EUR", "+10.00", "-2.50")
    await move_money(repo, ada, "+3.00")

    deleted = await store.delete_stream(Account.stream_id_for(ada), expected_version=4)
    assert deleted is not None
    await synced(runner, deleted)
    assert dump(runner) == without

    await runner.rebuild("accounts")  # the log still holds Ada's events, then their delete
    assert await runner.wait_rebuilt("accounts", timeout=WAIT)
    assert dump(runner) == without
    assert (await store.scavenge()).events_removed == 4
    await runner.rebuild("accounts")  # now only the delete's event is left of Ada's stream
    assert await runner.wait_rebuilt("accounts", timeout=WAIT)
    assert dump(runner) == without


# -- temporal queries against the history ---------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
async def test_state_replayed_to_each_version_matches_the_history(runner, repo, store, seed):
    """For every version N, the state replayed to N has the balance the history shows after N."""
    rng = random.Random(seed)
    currency = rng.choice(["EUR", "JPY", "BHD", "CLF"])
    scale = {"EUR": 2, "JPY": 0, "BHD": 3, "CLF": 4}[currency]
    account = Account.open("Ada", currency)
    await repo.save(account)
    result = None
    for _ in range(rng.randint(5, 25)):
        amount = Decimal(rng.randint(1, 10**6)).scaleb(-scale)
        if account.balance and rng.random() < 0.4:
            account.withdraw(min(amount, account.balance))
        else:
            account.deposit(amount)
        result = await repo.save(account)  # one append per command: distinct recorded_at
    assert result is not None
    await synced(runner, result)

    history = {t.version: t for t in transactions(runner, account.id, limit=500).items}
    assert sorted(history) == list(range(2, account.version + 1))
    for version in range(1, account.version + 1):
        state = await state_at(repo, account.id, version=version)
        assert state.version == version
        assert state.balance == (history[version].balance_after if version > 1 else 0)
        assert state.transaction_count == version - 1
    now = await state_at(repo, account.id)
    assert now.balance == held(runner, account.id).balance == account.balance

    events = await store.read_stream(account.stream_id)
    for e in events:
        state = await state_at(repo, account.id, as_of=e.recorded_at)
        seen = max(x.stream_version for x in events if x.recorded_at <= e.recorded_at)
        assert state.version == seen
        assert state.balance == (history[seen].balance_after if seen > 1 else 0)


async def test_state_at_refuses_what_is_not_there(runner, repo, store):
    """A version past the end, or a time before the account, is AggregateNotFound; bad input is refused."""
    ada, _ = await open_account(repo, "Ada", "EUR", "+1.00")
    opened = (await store.read_stream(Account.stream_id_for(ada)))[0].recorded_at
    with pytest.raises(AggregateNotFound, match="has no version 3"):
        await state_at(repo, ada, version=3)
    with pytest.raises(AggregateNotFound, match="did not exist"):
        await state_at(repo, ada, as_of=opened - timedelta(microseconds=1))
    with pytest.raises(AggregateNotFound):
        await state_at(repo, str(uuid.uuid4()))
    with pytest.raises(InvalidQuery, match="not both"):
        await state_at(repo, ada, version=1, as_of=opened)
    for bad in (0, -1, True, "2"):
        with pytest.raises(InvalidQuery, match="version: must be an int >= 1"):
            await state_at(repo, ada, version=bad)  # type: ignore[arg-type]  # wrong on purpose
    with pytest.raises(InvalidQuery, match="as_of: must be a timezone-aware datetime"):
        await state_at(repo, ada, as_of=datetime(2030, 1, 1))  # noqa: DTZ001 - the point of the test
    assert (await state_at(repo, ada, as_of=datetime.now(UTC) + timedelta(days=1))).version == 2


# -- the audit trail ---------------------------------------------------------------------------


async def test_account_events_are_the_raw_log_with_envelopes_and_metadata(repo, store):
    """The audit trail lists every stored event of the account with its envelope and metadata, paged."""
    meta = Metadata(actor="teller-7", correlation_id="corr-1", request_id="req-9")
    ada, _ = await open_account(repo, "Ada", "EUR", "+10.00", "-2.50", metadata=meta)
    await open_account(repo, "Bob", "EUR", "+1.00")  # another account's events stay out
    stored = await store.read_stream(Account.stream_id_for(ada))

    first = await account_events(store, ada, limit=2)
    assert first.next_cursor is not None
    rest = await account_events(store, ada, limit=2, cursor=first.next_cursor)
    assert rest.next_cursor is None
    events = [*first.items, *rest.items]
    assert [(e.event_id, e.version, e.position, e.checkpoint) for e in events] == [
        (s.event_id, s.stream_version, s.position, str(s.checkpoint)) for s in stored
    ]
    assert [e.event_type for e in events] == ["AccountOpened", "MoneyDeposited", "MoneyWithdrawn"]
    assert events[0].data == {"owner_name": "Ada", "currency": "EUR"}
    assert events[2].data == {"amount": "2.50", "description": "move -2.50"}
    assert all(e.metadata["actor"] == "teller-7" and e.metadata["correlation_id"] == "corr-1" for e in events)
    assert events[0].metadata["causation_id"] is None
    assert [(e.occurred_at, e.recorded_at) for e in events] == [
        (s.occurred_at, s.recorded_at) for s in stored
    ]
    assert all(e.stream_id == Account.stream_id_for(ada) and e.schema_version == 1 for e in events)
    assert (await account_events(store, str(uuid.uuid4()))).items == ()


async def test_account_events_newest_first_page_back_to_the_opening(repo, store):
    """newest_first lists the same events from the latest down, paged, the last page ending at version 1."""
    ada, _ = await open_account(repo, "Ada", "EUR", "+10.00", "-2.50", "+1.00")
    pages = []
    cursor = None
    while True:
        page = await account_events(store, ada, limit=3, cursor=cursor, newest_first=True)
        pages.append([e.version for e in page.items])
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == [[4, 3, 2], [1]]
    first = await account_events(store, ada, limit=1, newest_first=True)
    with pytest.raises(InvalidCursor):  # a newest-first cursor does not walk oldest first
        await account_events(store, ada, cursor=first.next_cursor)
    assert (await account_events(store, str(uuid.uuid4()), newest_first=True)).items == ()


async def test_transactions_page_in_version_order_both_ways(runner, repo):
    """The history pages oldest first, or newest first, each version exactly once."""
    ada, result = await open_account(repo, "Ada", "EUR", *[f"+{n}.00" for n in range(1, 11)])
    await synced(runner, result)

    def pages(**kw: Any) -> list[int]:
        versions: list[int] = []
        cursor = None
        for _ in range(100):
            page = transactions(runner, ada, limit=3, cursor=cursor, **kw)
            versions += [t.version for t in page.items]
            if page.next_cursor is None:
                return versions
            cursor = page.next_cursor
        raise AssertionError("the history's pages do not end")

    assert pages() == list(range(2, 12))
    assert pages(newest_first=True) == list(range(11, 1, -1))
    assert transactions(runner, str(uuid.uuid4())).items == ()


# -- bad query input ---------------------------------------------------------------------------


def cursor_of(text: str) -> str:
    """A cursor made by hand (as a tampering client would)."""
    import base64  # noqa: PLC0415

    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


GOOD_ID = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
GOOD_KEY = balance_key(Decimal(5))


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"limit": 0}, InvalidQuery, "limit: must be an int from 1 to 500, got 0"),
        ({"limit": 501}, InvalidQuery, "limit: must be an int from 1 to 500, got 501"),
        ({"limit": True}, InvalidQuery, "limit: must be an int"),
        ({"limit": "10"}, InvalidQuery, "limit: must be an int"),
        ({"min_balance": 1.5}, InvalidQuery, "min_balance: .*not a float"),
        ({"max_balance": "12,50"}, InvalidQuery, "max_balance: '12,50' is not an amount"),
        ({"min_balance": "1e3"}, InvalidQuery, "min_balance: '1e3' is not an amount"),
        ({"min_balance": "-1"}, InvalidQuery, "min_balance: '-1' is not an amount"),
        ({"min_balance": Decimal(-1)}, InvalidQuery, "min_balance: must be >= 0"),
        ({"max_balance": Decimal("NaN")}, InvalidQuery, "max_balance: must be a finite amount"),
        ({"max_balance": True}, InvalidQuery, "max_balance: is an amount"),
        ({"min_balance": "9" * 100}, InvalidQuery, "min_balance: .*is not an amount"),
        ({"min_balance": "10", "max_balance": "9.99"}, InvalidQuery, "10 is greater than max_balance 9.99"),
        ({"currency": "eur"}, UnknownCurrency, "upper case"),
        ({"currency": "ZZZ"}, UnknownCurrency, "not an ISO 4217"),
        ({"cursor": ""}, InvalidCursor, "cursor: is not a cursor this listing returned"),
        ({"cursor": "!!!"}, InvalidCursor, "not a cursor"),
        ({"cursor": "abc"}, InvalidCursor, "not a cursor"),
        ({"cursor": "x" * 300}, InvalidCursor, "not a cursor"),
        ({"cursor": 7}, InvalidCursor, "not a cursor"),
        ({"cursor": cursor_of("t|5")}, InvalidCursor, "not a cursor"),
        ({"cursor": cursor_of(f"a|{GOOD_KEY}")}, InvalidCursor, "not a cursor"),
        ({"cursor": cursor_of(f"a|5|{GOOD_ID}")}, InvalidCursor, "not a cursor"),
        ({"cursor": cursor_of(f"a|{GOOD_KEY}|not-a-uuid")}, InvalidCursor, "not a cursor"),
        ({"cursor": cursor_of(f"a|{GOOD_KEY}|{GOOD_ID.upper()}")}, InvalidCursor, "not a cursor"),
        ({"cursor": cursor_of(f"a|{GOOD_KEY}|{GOOD_ID}|x")}, InvalidCursor, "not a cursor"),
        ({"highest_first": "yes"}, InvalidQuery, "highest_first: must be a bool"),
        ({"search": ""}, InvalidQuery, "search: is 1 to 200 characters"),
        ({"search": "x" * 201}, InvalidQuery, "search: is 1 to 200 characters"),
        ({"search": 7}, InvalidQuery, "search: is text"),
        ({"search": "a\x00b"}, InvalidQuery, "search: holds a control character"),
    ],
)
def test_bad_list_arguments_are_refused_before_any_query(kwargs, error, message):
    """Each bad argument of list_accounts raises its specific error naming it, and queries nothing."""
    with pytest.raises(error, match=message):
        list_accounts(Untouchable(), **kwargs)


def test_query_errors_are_invalid_input_naming_the_parameter():
    """InvalidQuery is an InvalidInput (a ValueError) that carries the parameter's name."""
    with pytest.raises(InvalidInput) as caught:
        list_accounts(Untouchable(), limit=0)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, InvalidQuery)
    assert caught.value.parameter == "limit"
    assert InvalidCursor.code == "invalid-cursor"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"limit": 0}, "limit: must be an int from 1"),
        ({"cursor": cursor_of(f"a|{GOOD_KEY}|{GOOD_ID}")}, "not a cursor"),
        ({"cursor": cursor_of("t|0")}, "not a cursor"),
        ({"cursor": cursor_of("t|x")}, "not a cursor"),
        ({"newest_first": "yes"}, "newest_first: must be a bool"),
    ],
)
def test_bad_transaction_arguments_are_refused(kwargs, message):
    """Bad limits, cursors of another listing and non-bool flags are refused before any query."""
    with pytest.raises(InvalidQuery, match=message):
        transactions(Untouchable(), GOOD_ID, **kwargs)


@pytest.mark.parametrize("bad", ["", "42", "account-1", GOOD_ID + "0", 42, None])
def test_a_bad_account_id_is_refused(bad):
    """Every query taking an account id refuses one that is not a UUID."""
    with pytest.raises(InvalidAccountId, match="an account id is a UUID"):
        get_account(Untouchable(), bad)
    with pytest.raises(InvalidAccountId):
        transactions(Untouchable(), bad)


async def test_bad_audit_and_state_arguments_are_refused(store, repo):
    """account_events and state_at refuse bad ids, limits and cursors before reading the log."""
    with pytest.raises(InvalidAccountId):
        await account_events(store, "nope")
    with pytest.raises(InvalidQuery, match="limit"):
        await account_events(store, GOOD_ID, limit=1000)
    with pytest.raises(InvalidCursor):
        await account_events(store, GOOD_ID, cursor=cursor_of("t|3"))
    with pytest.raises(InvalidAccountId):
        await state_at(repo, "nope")


async def test_unknown_account_is_none(runner):
    """get_account of an account the read model does not hold is None."""
    assert get_account(runner, uuid.uuid4()) is None


def test_an_account_id_is_read_in_any_uuid_spelling():
    """Upper case or braced UUIDs name the same account as the canonical spelling."""
    seen: list[tuple[Any, ...]] = []

    class Source:
        def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
            assert "account_id = ?" in sql
            seen.append(tuple(params))
            return []

    get_account(Source(), GOOD_ID.upper())
    get_account(Source(), "{" + GOOD_ID + "}")
    get_account(Source(), uuid.UUID(GOOD_ID))
    assert seen == [(GOOD_ID,)] * 3


# -- the building blocks ---------------------------------------------------------------------------


def test_balance_keys_sort_as_the_balances_do():
    """Balance keys are fixed width, exact to 4 decimals, and text order is numeric order."""
    values = [Decimal(s) for s in ["0", "0.0001", "0.01", "1", "9.9999", "10", "99.99", "1000000000000000"]]
    keys = [balance_key(v) for v in values]
    assert keys == sorted(keys)
    assert {len(k) for k in keys} == {20}
    assert balance_key(Decimal(10**15)) == "10000000000000000000"
    assert balance_key(Decimal("12.50")) == balance_key(Decimal("12.5000"))
    for bad in (Decimal(-1), Decimal("0.00001"), Decimal("1e16")):
        with pytest.raises(ReadModelInconsistency):
            balance_key(bad)


def test_timestamps_are_fixed_width_utc_text():
    """Stored times are fixed-width UTC ISO 8601, so text order is time order."""
    from datetime import timezone  # noqa: PLC0415

    whole = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert format_timestamp(whole) == "2026-01-02T03:04:05.000000Z"
    shifted = datetime(2026, 1, 2, 5, 4, 5, 7, tzinfo=timezone(timedelta(hours=2)))
    assert format_timestamp(shifted) == "2026-01-02T03:04:05.000007Z"
    assert datetime.fromisoformat(format_timestamp(shifted)) == shifted


# -- the read model caught up by the log ---------------------------------------------------------


class Renamed:
    """A query source over the physical tables of ``names`` (queries name the logical ones)."""

    def __init__(self, db: ReadModels, names: dict[str, str]) -> None:
        self.db = db
        self.names = names

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        for logical, physical in self.names.items():
            sql = re.sub(rf"\b{logical}\b", physical, sql)
        return self.db.query(sql, params)


def walk_history(db: Any, current: CurrentAccount, *, limit: int, newest_first: bool) -> list[Any]:
    """Every transaction of ``current``, page by page."""
    seen: list[Any] = []
    cursor = None
    while True:
        page = current_transactions(db, current, limit=limit, cursor=cursor, newest_first=newest_first)
        assert len(page.items) <= limit
        seen += page.items
        if page.next_cursor is None:
            return seen
        cursor = page.next_cursor


async def test_an_account_caught_up_from_any_version_of_its_read_model_is_what_the_projection_writes(
    store, repo, backend
):
    """With the read model at each version of the account in turn, the summary and every page equal it all."""
    account_id, _ = await open_account(repo, "Ada", "CLF", "+3.1415", "-0.0001", "+10", "-13.1414", "+2")
    await empty_and_close(repo, account_id)
    events = await store.read_stream(Account.stream_id_for(account_id))
    full, names = fresh_tables(backend)
    replay_into(full, names, events, times=1)
    expected = get_account(Renamed(full, names), account_id)
    history = list(transactions(Renamed(full, names), account_id, limit=500).items)
    assert expected is not None
    assert (expected.status, expected.version, len(history)) == (AccountStatus.CLOSED, len(events), 6)

    for held in range(len(events) + 1):
        part, names = fresh_tables(backend)
        replay_into(part, names, events[:held], times=1)
        db = Renamed(part, names)
        current = await current_account(db, store, account_id)
        assert current is not None
        assert current.account == expected, held
        assert current.read_model_version == held
        assert current.source == (
            "read-model" if held == len(events) else "read-model+log" if held else "log"
        )
        for limit in (1, 2, 4, 500):
            assert walk_history(db, current, limit=limit, newest_first=False) == history, (held, limit)
            assert walk_history(db, current, limit=limit, newest_first=True) == history[::-1], (
                held,
                limit,
            )
    assert await current_account(Renamed(part, names), store, str(uuid.uuid4())) is None


# -- durability --------------------------------------------------------------------------------


@pytest.mark.parametrize("durable", [False, True], ids=["derived", "durable"])
def test_read_models_wait_for_the_disk_only_when_durable(backend, durable):
    """Derived data commits without waiting for the disk by default; durable=True waits for it."""
    db = backend.fresh() if not durable else open_read_models(backend.url, durable=True)
    try:
        if backend.dialect == "sqlite":
            assert db.query("PRAGMA synchronous") == [(2 if durable else 1,)]  # FULL, NORMAL
        else:
            assert db.query("SHOW synchronous_commit") == [("on" if durable else "off",)]
    finally:
        db.close()
