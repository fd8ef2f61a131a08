"""The ledger's projection applied a batch at a time on PostgreSQL (its rows sent as one JSON parameter).

At the end of a batch the changed summaries and the new history rows go to the
server in one statement each, their values inside a JSON document: every text
must come back exactly, and a batch must build what event-by-event handling builds.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from eventvault import Repository, default_registry
from eventvault.projections import ProjectionRunner
from eventvault.projections._db import PostgresReadModels
from eventvault.store.records import AppendResult
from eventvault_ledger.domain import Account
from eventvault_ledger.queries import currency_totals, get_account, transactions
from eventvault_ledger.read_models import AccountsProjection, projections

WAIT = 30.0  # generous bound; the waits return as soon as the projection gets there
TABLES = AccountsProjection.tables

# Texts that JSON escapes, that SQL or psycopg treat specially, and beyond the BMP.
DESCRIPTIONS = (
    'rent "May" \\ C:\\temp\\x',
    "café, Straße, 東京, emoji 🦀💶",
    "100% of it? yes: 'quoted' %s {x} ->> \\u0000 \\n",
    "",
    "spaced  inside",
)


@pytest.fixture
async def store(open_store):
    """A PostgreSQL store on this test's schema that knows the ledger's events."""
    return await open_store(registry=default_registry, poll_interval=0.05)


@pytest.fixture
def read_models(pg_url):
    """Makes read-model databases (in a schema given, by default the test's); closes them after."""
    made: list[PostgresReadModels] = []

    def make(schema: str) -> PostgresReadModels:
        made.append(PostgresReadModels(pg_url, schema=schema))
        return made[-1]

    yield make
    for db in made:
        db.close()


async def deposit(repo: Repository, account_id: str, amount: str, description: str) -> AppendResult:
    def command(a: Account) -> None:
        a.deposit(Decimal(amount), description)

    _, result = await repo.update(Account, account_id, command)
    assert result is not None
    return result


def dump(db: Any, names: dict[str, str] | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the three tables (the views, or the physical ``names``), in key order."""
    names = names or {t: t for t in TABLES}
    return {t: db.query(f"SELECT * FROM {names[t]} ORDER BY 1, 2") for t in TABLES}  # noqa: S608


async def test_every_text_of_a_batch_comes_back_exactly(store, schema, read_models):
    """Descriptions with quotes, backslashes, placeholders and non-ASCII come back as they were sent."""
    repo = Repository(store)
    ada, bob = Account.open("Ada", "EUR"), Account.open('Bob "B" O\'Neil ✓', "JPY")
    await repo.save(ada)
    await repo.save(bob)
    for i, text in enumerate(DESCRIPTIONS):
        await deposit(repo, ada.id, f"1.0{i}", text)
        await deposit(repo, bob.id, f"{i + 1}", text)
    # All of it is in the log before the runner starts: it catches up in one batch.
    async with ProjectionRunner(
        store, projections(), read_models=read_models(schema), idle_wait=0.2
    ) as runner:
        assert await runner.catch_up(timeout=WAIT)
        assert (await runner.status())[0].applied == 2 + 2 * len(DESCRIPTIONS)
        for account, amounts in (
            (ada, ["1.00", "1.01", "1.02", "1.03", "1.04"]),
            (bob, ["1", "2", "3", "4", "5"]),
        ):
            history = transactions(runner, account.id, limit=100).items
            assert [t.description for t in history] == list(DESCRIPTIONS)
            assert [str(t.amount) for t in history] == amounts
            assert [t.version for t in history] == [2, 3, 4, 5, 6]
        view = get_account(runner, bob.id)
        assert view is not None
        assert (view.owner_name, str(view.balance), view.transaction_count, view.version) == (
            'Bob "B" O\'Neil ✓',
            "15",
            5,
            6,
        )
        totals = {t.currency: t for t in currency_totals(runner)}
        assert (str(totals["EUR"].total_balance), totals["EUR"].transaction_count) == ("5.10", 5)

        # And live, a few events per batch.
        result = await deposit(repo, ada.id, "0.90", DESCRIPTIONS[1])
        assert await runner.wait_for(result.checkpoint, timeout=WAIT)
        last = transactions(runner, ada.id, limit=100).items[-1]
        assert (last.description, str(last.balance_after), last.position) == (
            DESCRIPTIONS[1],
            "6.00",
            result.positions[0],
        )


@pytest.mark.parametrize("times", [1, 2])
async def test_the_whole_log_as_one_batch_builds_what_the_runner_built(
    store, schema, new_schema, read_models, times, replay_as_one_batch
):
    """One batch of every event (each once, or twice in a row) equals the runner's tables."""
    repo = Repository(store)
    async with ProjectionRunner(
        store, projections(), read_models=read_models(schema), idle_wait=0.2
    ) as runner:
        ada = Account.open("Ada", "EUR")
        await repo.save(ada)
        for i, text in enumerate(DESCRIPTIONS):
            await deposit(repo, ada.id, f"2.{i}0", text)

        def empty_and_close(a: Account) -> None:
            a.withdraw(a.balance)
            a.close()

        _, result = await repo.update(Account, ada.id, empty_and_close)
        cy = Account.open("Cy", "CLF")
        await repo.save(cy)
        result = await deposit(repo, cy.id, "3.1415", "after a close")
        assert await runner.wait_for(result.checkpoint, timeout=WAIT)
        live = dump(runner)

        other = new_schema()
        fresh = read_models(other)
        names = AccountsProjection.physical_names(1)
        with fresh.transaction() as conn:
            for statement in AccountsProjection.schema:
                fresh.execute(conn, statement.format_map(names))
        replay_as_one_batch(fresh, names, [e async for e in store.iter_all()], times=times)
        assert dump(fresh, names) == live
