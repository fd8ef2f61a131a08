"""The rule "at most three open accounts per owner and currency": given events, when opening, then."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from typing import Any

import pytest

from eventvault import ANY, NO_STREAM, STREAM_DELETED, NewEvent, Query, Repository, SequencedEvents
from eventvault.store.sqlite import SQLiteEventStore
from eventvault.testing import given_events
from eventvault_ledger.domain import Account, AccountOpened, owner_tag
from eventvault_ledger.errors import TooManyOpenAccounts
from eventvault_ledger.open_limit import MAX_OPEN_ACCOUNTS, open_account

ADA = [owner_tag("Ada Lovelace"), "currency:EUR"]


def opened(owner: str = "Ada Lovelace", currency: str = "EUR", tags: list[str] | None = None) -> NewEvent:
    return NewEvent(AccountOpened(owner, currency), tags=ADA if tags is None else tags)


def opening(owner: str = "Ada Lovelace", currency: str = "EUR"):
    async def handler(store) -> None:
        await open_account(store, Account.open(owner, currency))

    return handler


def test_owner_tags_normalise_the_name_and_hold_only_its_hash() -> None:
    ada = owner_tag("ada lovelace")
    assert owner_tag("  Ada   LOVELACE ") == ada
    assert ada == "owner-sha256:" + hashlib.sha256(b"ada lovelace").hexdigest()  # the name is not in the tag
    assert owner_tag("\uff21\uff44\uff41") == owner_tag("ada")  # NFKC: full-width letters are the same name
    long = owner_tag("x" * 200)
    assert long.startswith("owner-sha256:")
    assert len(long) <= 200


async def test_an_owner_with_two_open_accounts_opens_a_third_tagged() -> None:
    await (
        given_events(opened(), opened())
        .when(opening(" ada  lovelace"))
        .then(NewEvent(AccountOpened("ada  lovelace", "EUR"), tags=ADA))
    )


async def test_a_fourth_open_account_in_one_currency_is_refused() -> None:
    error = (
        await given_events(opened(), opened(), opened())
        .when(opening())
        .then_raises(TooManyOpenAccounts, match="3 open EUR accounts")
    )
    assert isinstance(error, TooManyOpenAccounts)
    assert error.code == "too-many-open-accounts"


async def test_other_currencies_and_other_owners_do_not_count() -> None:
    others = (
        opened(currency="USD", tags=[owner_tag("Ada Lovelace"), "currency:USD"]),
        opened("Grace Hopper", tags=[owner_tag("Grace Hopper"), "currency:EUR"]),
    )
    await (
        given_events(opened(), opened(), *others)
        .when(opening())
        .then(NewEvent(AccountOpened("Ada Lovelace", "EUR"), tags=ADA))
    )


async def test_accounts_tagged_with_the_name_before_the_hash_still_count() -> None:
    """Accounts opened before the owner tag became a hash carry `owner:<name>`: they still count."""
    old = ["owner:ada lovelace", "currency:EUR"]
    await (
        given_events(opened(tags=old), opened(tags=old), opened())
        .when(opening("Ada  Lovelace"))
        .then_raises(TooManyOpenAccounts, match="3 open EUR accounts")
    )


async def test_untagged_accounts_from_before_the_rule_do_not_count() -> None:
    legacy = [AccountOpened("Ada Lovelace", "EUR") for _ in range(5)]
    await (
        given_events(*legacy, opened(), opened())
        .when(opening())
        .then(NewEvent(AccountOpened("Ada Lovelace", "EUR"), tags=ADA))
    )


async def test_a_closed_account_frees_its_place(tmp_path) -> None:
    """Through the repository (the close command's path): closing tags the event, the count drops."""
    async with SQLiteEventStore(tmp_path / "l.db") as store:
        repo = Repository(store)
        ids = []
        for _ in range(MAX_OPEN_ACCOUNTS):
            account = Account.open("Ada Lovelace", "EUR")
            await open_account(store, account)
            ids.append(account.id)
        with pytest.raises(TooManyOpenAccounts):
            await open_account(store, Account.open("Ada Lovelace", "EUR"))
        await repo.update(Account, ids[0], Account.close)
        [closed] = (await store.read(Query.of(types=["AccountClosed"]))).events
        assert set(closed.tags) == set(ADA)
        await open_account(store, Account.open("Ada Lovelace", "EUR"))
        with pytest.raises(TooManyOpenAccounts):
            await open_account(store, Account.open("Ada Lovelace", "EUR"))


async def test_closing_an_untagged_account_frees_no_place() -> None:
    """A legacy account's close is tagged, but it was never counted: it must not make room."""
    await (
        given_events(
            AccountOpened("Ada Lovelace", "EUR"),
            opened(),
            opened(),
            opened(),
        )
        .when(opening())
        .then_raises(TooManyOpenAccounts)
    )


async def test_eight_concurrent_opens_on_separate_sqlite_connections_land_three(tmp_path) -> None:
    """Eight stores on one file (eight connections), one open each at once: exactly three land."""
    url = tmp_path / "race.db"
    async with SQLiteEventStore(url):
        pass  # create the schema once
    stores = [SQLiteEventStore(url) for _ in range(8)]
    for s in stores:
        await s.open()
    try:
        outcomes = await asyncio.gather(
            *(open_account(s, Account.open("Ada Lovelace", "EUR")) for s in stores), return_exceptions=True
        )
    finally:
        for s in stores:
            await s.close()
    assert sum(not isinstance(o, BaseException) for o in outcomes) == MAX_OPEN_ACCOUNTS, outcomes
    assert all(isinstance(o, TooManyOpenAccounts) for o in outcomes if isinstance(o, BaseException)), outcomes
    async with SQLiteEventStore(url) as store:
        assert len((await store.read(Query.of(types=["AccountOpened"], tags=ADA))).events) == 3


async def test_a_retry_of_the_open_that_took_the_last_place_gets_its_first_result(tmp_path) -> None:
    """The same account id and event id again (an idempotent retry): the first result, not a refusal."""
    event_id = uuid.uuid4()
    async with SQLiteEventStore(tmp_path / "retry.db") as store:
        for _ in range(MAX_OPEN_ACCOUNTS - 1):
            await open_account(store, Account.open("Ada Lovelace", "EUR"))
        account_id = uuid.uuid4()
        first = await open_account(
            store, Account.open("Ada Lovelace", "EUR", account_id=account_id), event_id=event_id
        )
        again = await open_account(
            store, Account.open("Ada Lovelace", "EUR", account_id=account_id), event_id=event_id
        )
        assert again.positions == first.positions
        with pytest.raises(TooManyOpenAccounts):
            await open_account(store, Account.open("Ada Lovelace", "EUR"))


async def _three_open(store: SQLiteEventStore, owner: str = "Ada Lovelace") -> list[Account]:
    accounts = [Account.open(owner, "EUR") for _ in range(MAX_OPEN_ACCOUNTS)]
    for account in accounts:
        await open_account(store, account)
    with pytest.raises(TooManyOpenAccounts):
        await open_account(store, Account.open(owner, "EUR"))
    return accounts


@pytest.mark.parametrize("tombstone", [False, True], ids=["soft", "tombstone"])
async def test_a_deleted_account_frees_its_place(tmp_path, tombstone) -> None:
    """An owner with three open accounts, one of them deleted by an operator, may open another."""
    async with SQLiteEventStore(tmp_path / "l.db") as store:
        accounts = await _three_open(store)
        deleted = await store.delete_stream(accounts[0].stream_id, expected_version=1, tombstone=tombstone)
        assert deleted is not None
        [marker] = (await store.read(Query.of(types=[STREAM_DELETED]))).events
        assert set(marker.tags) == set(ADA)  # the delete carries the tags of the account's opening
        await open_account(store, Account.open("Ada Lovelace", "EUR"))
        with pytest.raises(TooManyOpenAccounts):
            await open_account(store, Account.open("Ada Lovelace", "EUR"))


async def test_a_deleted_account_tagged_with_the_name_before_the_hash_frees_its_place(tmp_path) -> None:
    """An account tagged `owner:<name>` (before the hash), deleted: its delete carries that tag and counts."""
    legacy = ["owner:ada lovelace", "currency:EUR"]
    async with SQLiteEventStore(tmp_path / "l.db") as store:
        streams = [f"account-{uuid.uuid4()}" for _ in range(MAX_OPEN_ACCOUNTS)]
        for stream in streams:
            event = NewEvent(AccountOpened("Ada Lovelace", "EUR"), tags=legacy)
            await store.append_events([event], stream_id=stream, expected_version=NO_STREAM)
        with pytest.raises(TooManyOpenAccounts):
            await open_account(store, Account.open("Ada Lovelace", "EUR"))
        await store.delete_stream(streams[1], expected_version=1)
        await open_account(store, Account.open("Ada Lovelace", "EUR"))


class _DeletesDuringTheDecision(SQLiteEventStore):
    """A store on which one stream is deleted right after the decision's first read (a deterministic race)."""

    victim: str | None = None
    reads = 0

    async def read(self, query: Query, **options: Any) -> SequencedEvents:
        seen = await super().read(query, **options)
        self.reads += 1
        if self.victim is not None:
            victim, self.victim = self.victim, None
            await self.delete_stream(victim, expected_version=ANY)
        return seen


async def test_a_delete_between_the_decision_and_its_append_fails_the_condition_and_is_decided_again(
    tmp_path,
) -> None:
    """Two open accounts read; a delete lands before the append: its condition fails, it is decided again."""
    async with _DeletesDuringTheDecision(tmp_path / "l.db") as store:
        first = Account.open("Ada Lovelace", "EUR")
        await open_account(store, first)
        await open_account(store, Account.open("Ada Lovelace", "EUR"))
        store.reads, store.victim = 0, first.stream_id
        result = await open_account(store, Account.open("Ada Lovelace", "EUR"))
        assert store.reads == 2  # the condition failed on the delete: read and decided again
        [marker] = (await store.read(Query.of(types=[STREAM_DELETED]))).events
        assert result.position > marker.position
        await open_account(store, Account.open("Ada Lovelace", "EUR"))  # two open now: room for a third
        with pytest.raises(TooManyOpenAccounts):
            await open_account(store, Account.open("Ada Lovelace", "EUR"))
