"""Properties of the Account aggregate over random command sequences.

Each run is checked against a model that keeps balances as ints of minor units,
so the Decimal arithmetic of the aggregate is compared with arithmetic that
cannot round, and every refusal is checked to be the rule the model predicts.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from hypothesis import event, given, settings
from hypothesis import strategies as st

from eventvault import Repository, open_store
from eventvault_ledger.currencies import ACTIVE
from eventvault_ledger.domain import MAX_AMOUNT, MAX_BALANCE, Account, MoneyDeposited, format_money
from eventvault_ledger.errors import (
    AccountIsClosed,
    AccountNotEmpty,
    BalanceLimitExceeded,
    InsufficientFunds,
    InvalidAmount,
    LedgerError,
)

CURRENCIES = ["EUR", "JPY", "BHD", "CLF"]  # 2, 0, 3 and 4 minor units


@dataclass(frozen=True)
class Amount:
    """A generated amount and, if it is valid, its value in minor units."""

    value: Any  # what a caller might send: a Decimal, a str, a float, anything
    minor: int | None


def amounts(units: int) -> st.SearchStrategy[Amount]:
    """Valid amounts (sometimes with extra trailing zeros) and every kind of invalid one."""
    max_minor = int(MAX_AMOUNT) * 10**units
    valid = st.builds(
        lambda n, extra: Amount(Decimal(n * 10**extra).scaleb(-units - extra), n),
        st.one_of(st.integers(1, 10 * 10**units), st.integers(1, max_minor)),
        st.integers(0, 2),
    )
    invalid = st.one_of(
        st.sampled_from(
            [Decimal(0), Decimal("-0"), Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")]
        ),
        st.integers(1, 10**6).map(lambda n: -Decimal(n).scaleb(-units)),
        st.builds(
            lambda n, d: (Decimal(n * 10 + d)).scaleb(-units - 1), st.integers(0, 10**6), st.integers(1, 9)
        ),
        st.integers(1, 10**6).map(lambda n: MAX_AMOUNT + Decimal(n).scaleb(-units)),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-5, 5),
    ).map(lambda v: Amount(v, None))
    return st.one_of(valid, valid, invalid)


def commands(units: int) -> st.SearchStrategy[list[tuple[str, Amount | None]]]:
    command = st.one_of(
        st.tuples(st.just("deposit"), amounts(units)),
        st.tuples(st.just("withdraw"), amounts(units)),
        st.tuples(st.just("withdraw_all"), st.none()),
        st.tuples(st.just("close"), st.none()),
    )
    return st.lists(command, min_size=1, max_size=30)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[str, int, list[tuple[str, Amount | None]]]:
    """A currency, a starting balance in minor units (sometimes close to the cap) and commands."""
    currency = draw(st.sampled_from(CURRENCIES))
    units = ACTIVE[currency]
    cap = int(MAX_BALANCE) * 10**units
    start = draw(
        st.one_of(st.just(0), st.integers(0, 10**6), st.integers(cap - 2 * int(MAX_AMOUNT) * 10**units, cap))
    )
    return currency, start, draw(commands(units))


def minor_to_decimal(minor: int, units: int) -> Decimal:
    return Decimal(minor).scaleb(-units)


def expected_error(name: str, amount: Amount | None, balance: int, closed: bool, cap: int) -> type | None:
    """The error the rules demand for this command in this state (None: it is accepted)."""
    if closed:
        return AccountIsClosed
    if name == "close":
        return AccountNotEmpty if balance else None
    if name == "withdraw_all":
        return InvalidAmount if balance == 0 else None  # withdrawing 0 is not an amount
    assert amount is not None
    if amount.minor is None:
        return InvalidAmount
    if name == "deposit":
        return BalanceLimitExceeded if balance + amount.minor > cap else None
    return InsufficientFunds if amount.minor > balance else None


def run(account: Account, name: str, amount: Amount | None) -> None:
    if name == "deposit":
        assert amount is not None
        account.deposit(amount.value, "in")
    elif name == "withdraw":
        assert amount is not None
        account.withdraw(amount.value, "out")
    elif name == "withdraw_all":
        account.withdraw(min(account.balance, MAX_AMOUNT), "as much as one withdrawal may")
    else:
        account.close()


def play(currency: str, start: int, script: list[tuple[str, Amount | None]]) -> tuple[Account, list[object]]:
    """Run ``script`` on a live account, checking each step against the model; return it and its events."""
    units = ACTIVE[currency]
    cap = int(MAX_BALANCE) * 10**units
    account = Account.open("Property Tester", currency)
    if start:
        # The history the commands start from, as read from the log.
        account.record(MoneyDeposited(minor_to_decimal(start, units)))
    balance, closed = start, False
    for name, amount in script:
        before = (account.state(), account.version, len(account.pending_events))
        wanted = expected_error(name, amount, balance, closed, cap)
        event(f"{name}: {'accepted' if wanted is None else wanted.__name__}")  # --hypothesis-show-statistics
        raised: LedgerError | None = None
        try:
            run(account, name, amount)
        except LedgerError as exc:
            raised = exc
        if raised is not None:
            assert type(raised) is wanted, f"{name} {amount}: raised {raised!r}, expected {wanted}"
            assert (account.state(), account.version, len(account.pending_events)) == before
        else:
            assert wanted is None, f"{name} {amount} was accepted, expected {wanted}"
            assert len(account.pending_events) == before[2] + 1
            if name == "deposit":
                assert amount is not None
                assert amount.minor is not None
                balance += amount.minor
            elif name == "withdraw":
                assert amount is not None
                assert amount.minor is not None
                balance -= amount.minor
            elif name == "withdraw_all":
                balance -= min(balance, int(MAX_AMOUNT) * 10**units)
            else:
                closed = True
        assert account.balance >= 0
        assert account.balance == minor_to_decimal(balance, units)
        assert account.balance <= MAX_BALANCE
    return account, list(account.pending_events)


@settings(max_examples=120, deadline=None)
@given(scenarios())
def test_any_command_sequence_replays_to_the_live_state(scenario):
    """Whatever commands run, refused ones record nothing and replaying the events gives the live state."""
    live, events = play(*scenario)
    replayed = Account.replay(live.id, events)
    assert replayed.state() == live.state()
    assert replayed.version == live.version == len(events)


@settings(max_examples=120, deadline=None)
@given(scenarios())
def test_the_balance_never_goes_negative_and_prints_at_the_currency_scale(scenario):
    """After any sequence the balance is within [0, cap] and prints with the currency's decimals."""
    live, _ = play(*scenario)
    assert 0 <= live.balance <= MAX_BALANCE
    units = ACTIVE[live.currency]
    text = format_money(live.balance, live.currency)
    assert (len(text.partition(".")[2]) if "." in text else 0) == units


def test_ten_deposits_of_a_tenth_make_exactly_one():
    """Depositing Decimal('0.1') ten times gives exactly 1.00, shown as '1.00'."""
    account = Account.open("Ada Lovelace", "USD")
    for _ in range(10):
        account.deposit(Decimal("0.1"))
    assert account.balance == Decimal("1.00")
    assert str(account.balance) == "1.00"
    assert format_money(account.balance, "USD") == "1.00"


async def _round_trip(
    currency: str, script: list[tuple[str, Amount | None]], saves: list[bool]
) -> tuple[Account, list[Account], list[Account]]:
    async with open_store("memory://") as store:
        repo = Repository(store)
        snapshotting = Repository(store, snapshot_every={Account: 3})
        account = Account.open("Round Tripper", currency)
        await repo.save(account)
        for (name, amount), save in zip(script, saves, strict=True):
            with contextlib.suppress(LedgerError):  # play() checks the refusals themselves
                run(account, name, amount)
            if save:
                # Saving through the snapshotting repository stores snapshots beside the log.
                await snapshotting.save(account)
        await repo.save(account)
        loaded = [await repo.load(Account, account.id), await snapshotting.load(Account, account.id)]
        stored = [e.data for e in await store.read_stream(account.stream_id)]
        at_versions = []
        for version in range(1, account.version + 1):
            past = await snapshotting.load(Account, account.id, version=version)
            expected = Account.replay(account.id, stored[:version])
            assert past.state() == expected.state(), f"version {version}"
            at_versions.append(past)
        return account, loaded, at_versions


@st.composite
def store_scenarios(draw: st.DrawFn) -> tuple[str, list[tuple[str, Amount | None]], list[bool]]:
    currency = draw(st.sampled_from(CURRENCIES))
    script = draw(commands(ACTIVE[currency]))
    return currency, script, draw(st.lists(st.booleans(), min_size=len(script), max_size=len(script)))


@settings(max_examples=60, deadline=None)
@given(store_scenarios())
def test_a_round_trip_through_a_store_and_repository_gives_the_live_state(scenario):
    """Saving to a memory:// store and loading back, with or without snapshots, gives the live account."""
    live, loaded, at_versions = asyncio.run(_round_trip(*scenario))
    for account in loaded:
        assert account.state() == live.state()
        assert account.version == live.version
    assert [a.version for a in at_versions] == list(range(1, live.version + 1))
