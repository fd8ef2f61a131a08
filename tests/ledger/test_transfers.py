"""Transfers: each step of the process, given/when/then, and a property over random interleavings.

The property runs random deposits, withdrawals, closes and transfers, and
the transfer steps in a random order, some of them delivered twice (as a
crash before a checkpoint would): after every action, money is conserved
per currency (balances + money in flight = deposited - withdrawn), and in
the end every transfer has ended, completed or failed, exactly once, with no
leg recorded twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Sequence
from decimal import Decimal
from operator import methodcaller
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from eventvault import Repository, open_store
from eventvault.processes import ProcessEnded, react
from eventvault.testing import given as given_aggregate
from eventvault.testing.processes import given_process
from eventvault_ledger.domain import (
    Account,
    AccountClosed,
    AccountOpened,
    MoneyDeposited,
    MoneyWithdrawn,
    TransferReceived,
    TransferRefunded,
    TransferSent,
    TransferSettled,
)
from eventvault_ledger.errors import InvalidTransfer, LedgerError, TransfersInFlight
from eventvault_ledger.transfers import (
    Transfer,
    TransferCompleted,
    TransferDebited,
    TransferFailed,
    TransferRequested,
    Transfers,
)

ADA = "00000000-0000-7000-8000-00000000000a"
BOB = "00000000-0000-7000-8000-00000000000b"
CY = "00000000-0000-7000-8000-00000000000c"
T1 = "00000000-0000-4000-8000-000000000001"


def acct(account_id: str) -> str:
    return Account.stream_id_for(account_id)


def eur(text: str) -> Decimal:
    return Decimal(text)


OPEN_ADA = [AccountOpened("Ada", "EUR"), MoneyDeposited(eur("100.00"))]
OPEN_BOB = [AccountOpened("Bob", "EUR")]
REQUEST = TransferRequested(ADA, BOB, eur("30.00"), "EUR", "rent")

# -- the debit step -----------------------------------------------------------------------


def test_a_requested_transfer_debits_the_source() -> None:
    """The source pays: TransferSent on it, TransferDebited (with that event's position) on the transfer."""
    # Positions in the scenario's memory store: Ada's 2 events, Bob's 1, the request, then the debit.
    (
        given_process(Transfers(), T1, streams={acct(ADA): OPEN_ADA, acct(BOB): OPEN_BOB})
        .when(REQUEST, stream_id=f"transfer-{T1}")
        .then(TransferDebited(5), appended={acct(ADA): [TransferSent(T1, BOB, eur("30.00"), "rent")]})
    )


@pytest.mark.parametrize(
    ("source", "code", "reason"),
    [
        (
            [AccountOpened("Ada", "EUR"), MoneyDeposited(eur("10.00"))],
            "insufficient-funds",
            "insufficient funds",
        ),
        ([AccountOpened("Ada", "EUR"), AccountClosed()], "account-closed", "is closed"),
        (
            [AccountOpened("Ada", "USD"), MoneyDeposited(eur("99.00"))],
            "currency-mismatch",
            "holds USD, not EUR",
        ),
        ([], "refused", "has no events"),
    ],
    ids=["insufficient-funds", "source-closed", "currency-mismatch", "no-source"],
)
def test_a_refused_debit_fails_the_transfer_with_the_reason(
    source: list[object], code: str, reason: str
) -> None:
    """A debit the source refuses ends the transfer failed, with the rule's code; no money moves."""
    streams: dict[str, Sequence[object]] = {acct(BOB): OPEN_BOB, **({acct(ADA): source} if source else {})}
    scenario = given_process(Transfers(), T1, streams=streams).when(REQUEST, stream_id=f"transfer-{T1}")
    own, appended = scenario.recorded()
    [failed, ended] = own
    assert isinstance(failed, TransferFailed)
    assert ended == ProcessEnded()
    assert failed.code == code
    assert reason in failed.reason
    assert not failed.refunded
    assert appended == {}


# -- the credit step -----------------------------------------------------------------------

DEBITED = [*OPEN_ADA, TransferSent(T1, BOB, eur("30.00"), "rent")]


def test_a_debited_transfer_credits_the_target_and_settles_the_source() -> None:
    """The target receives, the source settles, the transfer completes (the credit's position)."""
    (
        given_process(Transfers(), T1, streams={acct(ADA): DEBITED, acct(BOB): OPEN_BOB}, history=[REQUEST])
        .when(TransferDebited(3), stream_id=f"transfer-{T1}")
        .then(
            TransferCompleted(7),  # Ada 3 events, Bob 1, the request, the debit, then the credit
            ProcessEnded(),
            appended={
                acct(BOB): [TransferReceived(T1, ADA, eur("30.00"), "rent")],
                acct(ADA): [TransferSettled(T1)],
            },
        )
    )


def test_a_credit_that_cannot_land_refunds_the_source() -> None:
    """The target closed meanwhile: the money goes back to the source and the transfer fails, refunded."""
    closed = [AccountOpened("Bob", "EUR"), AccountClosed()]
    reason = f"account {BOB} is closed"
    (
        given_process(Transfers(), T1, streams={acct(ADA): DEBITED, acct(BOB): closed}, history=[REQUEST])
        .when(TransferDebited(3), stream_id=f"transfer-{T1}")
        .then(
            TransferFailed("account-closed", reason, refunded=True),
            ProcessEnded(),
            appended={acct(ADA): [TransferRefunded(T1, BOB, eur("30.00"), reason)]},
        )
    )


def test_a_debit_delivered_again_after_the_transfer_ended_does_nothing() -> None:
    """Steps are keyed by their event: an event for an ended transfer changes nothing."""
    (
        given_process(
            Transfers(),
            T1,
            streams={acct(ADA): OPEN_ADA, acct(BOB): OPEN_BOB},
            history=[REQUEST, TransferFailed("x", "y"), ProcessEnded()],
        )
        .when(TransferDebited(3), stream_id=f"transfer-{T1}")
        .then_nothing()
    )


# -- the account's side ------------------------------------------------------------------


def send_then_close(a: Account) -> None:
    a.send_transfer(T1, BOB, eur("5.00"), "EUR")
    a.close()


def test_an_account_with_a_transfer_in_flight_cannot_close() -> None:
    """Closing waits until outgoing transfers settle: a refund must always find the source open."""
    (
        given_aggregate(Account, AccountOpened("Ada", "EUR"), MoneyDeposited(eur("5.00")))
        .when(send_then_close)
        .then_raises(TransfersInFlight)
    )
    (
        given_aggregate(Account, *DEBITED[:2], TransferSent(T1, BOB, eur("100.00")), TransferSettled(T1))
        .when(lambda a: a.close())
        .then(AccountClosed())
    )


def test_a_transfer_needs_two_accounts_and_a_valid_amount() -> None:
    """Transfer.request refuses the same account twice and bad amounts, before anything is stored."""
    with pytest.raises(InvalidTransfer, match="two different accounts"):
        Transfer.request(ADA, ADA, eur("1.00"), "EUR")
    with pytest.raises(LedgerError, match="decimal place"):
        Transfer.request(ADA, BOB, eur("1.001"), "EUR")
    t = Transfer.request(ADA, BOB, eur("1.5"), "EUR", transfer_id=T1)
    assert t.pending_events == (TransferRequested(ADA, BOB, eur("1.50"), "EUR", ""),)


# -- the property ----------------------------------------------------------------------------

ACCOUNTS = [ADA, BOB, CY, "00000000-0000-7000-8000-00000000000d"]
CURRENCY = {ADA: "EUR", BOB: "EUR", CY: "EUR", ACCOUNTS[3]: "USD"}
cents = st.integers(1, 3000).map(lambda n: Decimal(n).scaleb(-2))
who = st.sampled_from(ACCOUNTS)
op = st.one_of(
    st.tuples(st.just("deposit"), who, cents),
    st.tuples(st.just("withdraw"), who, cents),
    st.tuples(st.just("close"), who),
    st.tuples(st.just("transfer"), who, who, cents, st.sampled_from([1, 1, 2])),
    st.tuples(st.just("transfer"), who, who, cents, st.just(1)),
    st.tuples(st.just("empty"), who),
    st.tuples(st.just("step"), st.integers(0, 50)),
    st.tuples(st.just("step"), st.integers(0, 50)),
    st.tuples(st.just("again"), st.integers(0, 50)),
)


async def _conserved(store: Any, repo: Repository) -> defaultdict[str, Decimal]:
    """Check balances + in flight == deposited - withdrawn per currency; returns the money in flight."""
    flows: defaultdict[str, Decimal] = defaultdict(Decimal)
    in_flight: defaultdict[str, Decimal] = defaultdict(Decimal)
    page = await store.read_all(None, limit=10_000)
    for e in page.events:
        if not e.stream_id.startswith("account-"):
            continue
        currency = CURRENCY[e.stream_id.removeprefix("account-")]
        d = e.data
        if isinstance(d, MoneyDeposited):
            flows[currency] += d.amount
        elif isinstance(d, MoneyWithdrawn):
            flows[currency] -= d.amount
        elif isinstance(d, TransferSent):
            in_flight[currency] += d.amount
        elif isinstance(d, (TransferReceived, TransferRefunded)):
            in_flight[currency] -= d.amount
    balances: defaultdict[str, Decimal] = defaultdict(Decimal)
    for a in ACCOUNTS:
        balances[CURRENCY[a]] += (await repo.load(Account, a)).balance
    for currency in set(CURRENCY.values()):
        assert balances[currency] + in_flight[currency] == flows[currency], (
            currency,
            balances,
            in_flight,
            flows,
        )
        assert in_flight[currency] >= 0
    return in_flight


async def _run(ops: list[tuple[Any, ...]]) -> None:  # noqa: C901 - one branch per kind of action
    async with open_store("memory://") as store:
        repo = Repository(store)
        manager = Transfers()
        for a in ACCOUNTS:
            account = Account.open(a[-1], CURRENCY[a], account_id=a)
            account.deposit(Decimal(50))
            await repo.save(account)
        pending: list[Any] = []
        ran: list[Any] = []
        cursor = None

        async def collect() -> None:
            nonlocal cursor
            page = await store.read_all(cursor, limit=10_000)
            cursor = page.checkpoint
            pending.extend(e for e in page.events if isinstance(e.data, (TransferRequested, TransferDebited)))

        async def run(e: Any) -> None:
            outcome = await react(manager, repo, e)
            assert outcome is not None
            assert outcome.state != "stopped", outcome.error

        for item in ops:
            kind = item[0]
            try:
                if kind == "deposit":
                    await repo.update(Account, item[1], methodcaller("deposit", item[2]))
                elif kind == "withdraw":
                    await repo.update(Account, item[1], methodcaller("withdraw", item[2]))
                elif kind == "close":
                    await repo.update(Account, item[1], lambda a: a.close())
                elif kind == "empty":  # withdraw everything, then close: closes that can happen
                    await repo.update(
                        Account, item[1], lambda a: a.withdraw(a.balance) if a.balance else None
                    )
                    await repo.update(Account, item[1], lambda a: a.close())
                elif kind == "transfer":
                    # In the source's currency (a mismatch at the credit, if the target is the USD
                    # account), or in the target's (a mismatch at the debit, if the source is).
                    currency = CURRENCY[item[item[4]]]
                    await repo.save(Transfer.request(item[1], item[2], item[3], currency))
            except LedgerError:
                pass
            if kind == "step" and pending:
                e = pending.pop(item[1] % len(pending))
                await run(e)
                ran.append(e)
            elif kind == "again" and ran:
                await run(ran[item[1] % len(ran)])  # delivered twice, as after a crash before a checkpoint
            await collect()
            await _conserved(store, repo)
        while pending:
            e = pending.pop(0)
            await run(e)
            await run(e)
            await collect()
            await _conserved(store, repo)
        assert sum((await _conserved(store, repo)).values()) == 0

        await _every_transfer_ended_once(store, repo)


async def _every_transfer_ended_once(store: Any, repo: Repository) -> None:
    """Every transfer ended exactly once, and no leg was recorded twice."""
    ends: Counter[str] = Counter()
    legs: defaultdict[str, Counter[type]] = defaultdict(Counter)
    page = await store.read_all(None, limit=10_000)
    for e in page.events:
        if e.stream_id.startswith("transfer-") and isinstance(e.data, (TransferCompleted, TransferFailed)):
            ends[e.stream_id.removeprefix("transfer-")] += 1
        elif isinstance(e.data, (TransferSent, TransferReceived, TransferRefunded, TransferSettled)):
            legs[e.data.transfer_id][type(e.data)] += 1
    transfers = {
        e.stream_id.removeprefix("transfer-") for e in page.events if e.stream_id.startswith("transfer-")
    }
    assert all(ends[t] == 1 for t in transfers), ends
    for t in transfers:
        process = await repo.load(Transfer, t)
        event(f"a transfer {process.stage}{' and refunded' if TransferRefunded in legs[t] else ''}")
        assert all(n == 1 for n in legs[t].values()), legs[t]
        if process.stage == "completed":
            assert set(legs[t]) == {TransferSent, TransferReceived, TransferSettled}
        elif process.code and set(legs[t]):
            assert set(legs[t]) == {TransferSent, TransferRefunded}
        else:
            assert process.stage == "failed"
            assert not legs[t]


@settings(max_examples=150, deadline=None)
@given(st.lists(op, max_size=60))
def test_money_is_conserved_and_every_transfer_ends_once(ops: list[tuple[Any, ...]]) -> None:
    """Random actions and step orders, steps delivered twice: conservation always, one end per transfer."""
    asyncio.run(_run(ops))
