"""The benchmark's domain, written once for each contender: bank accounts, opened then paid into.

The events carry about 200 bytes of JSON each (DESIGN.md §10). eventvault and the
peer (the ``eventsourcing`` library) each get the aggregate their own documentation
recommends; the raw driver (the limit) stores the same JSON the eventvault codec
writes. The values are deterministic, so every contender writes the same data.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Final, Self

from eventsourcing.application import Application
from eventsourcing.domain import Aggregate as PeerAggregate
from eventsourcing.domain import event as peer_event

from eventvault import Aggregate, EventRegistry, applies, event

__all__ = [
    "REGISTRY",
    "AccountArgs",
    "DepositArgs",
    "Deposited",
    "EvAccount",
    "Opened",
    "PeerAccount",
    "PeerBank",
    "account_args",
    "deposit_args",
]

REGISTRY: Final = EventRegistry()
"""The benchmark's own event registry: it never meets the ledger's event names."""


# -- the data every contender writes -------------------------------------------------


@dataclass(frozen=True, slots=True)
class AccountArgs:
    """The arguments of one "open account" command."""

    owner_name: str
    currency: str
    branch: str
    note: str


@dataclass(frozen=True, slots=True)
class DepositArgs:
    """The arguments of one "deposit" command."""

    amount: Decimal
    description: str
    reference: str
    channel: str


def account_args(i: int) -> AccountArgs:
    """The opening of account ``i``."""
    return AccountArgs(
        owner_name=f"Account holder {i:07d}",
        currency="EUR",
        branch=f"Branch {i % 97:02d}, 1 Main Street, Springfield",
        note="standard current account, paper statements monthly, overdraft not agreed",
    )


def deposit_args(i: int, k: int) -> DepositArgs:
    """The ``k``-th deposit (from 1) into account ``i``."""
    cents = (i * 7919 + k * 104_729) % 1_000_000 + 100
    return DepositArgs(
        amount=Decimal(cents).scaleb(-2),
        description=f"incoming transfer {k} for account holder {i:07d}, monthly salary",
        reference=uuid.UUID(int=(i << 32) | k).hex,
        channel="online-banking, SEPA credit transfer",
    )


# -- eventvault -------------------------------------------------------------------------


@event("BenchOpened", registry=REGISTRY)
@dataclass(frozen=True, slots=True)
class Opened:
    """An account was opened."""

    owner_name: str
    currency: str
    branch: str
    note: str


@event("BenchDeposited", registry=REGISTRY)
@dataclass(frozen=True, slots=True)
class Deposited:
    """Money was paid in."""

    amount: Decimal
    description: str
    reference: str
    channel: str


class EvAccount(Aggregate):
    """The eventvault aggregate: commands record events, appliers change state."""

    category = "bench"

    owner_name: str = ""
    currency: str = ""
    balance: Decimal = Decimal(0)
    deposits: int = 0

    @classmethod
    def open(cls, account_id: str, args: AccountArgs) -> Self:
        """Open an account."""
        account = cls(account_id)
        account.record(Opened(args.owner_name, args.currency, args.branch, args.note))
        return account

    def deposit(self, args: DepositArgs) -> None:
        """Pay money in."""
        if args.amount <= 0:
            raise ValueError("a deposit is positive")
        self.record(Deposited(args.amount, args.description, args.reference, args.channel))

    @applies(Opened)
    def _opened(self, e: Opened) -> None:
        self.owner_name = e.owner_name
        self.currency = e.currency

    @applies(Deposited)
    def _deposited(self, e: Deposited) -> None:
        self.balance += e.amount
        self.deposits += 1


# -- the peer: eventsourcing 9.5.6 --------------------------------------------------------


class PeerAccount(PeerAggregate):
    """The same account in the style the eventsourcing docs teach (declarative @event methods)."""

    @peer_event("Opened")
    def __init__(self, owner_name: str, currency: str, branch: str, note: str) -> None:
        self.owner_name = owner_name
        self.currency = currency
        self.branch = branch
        self.note = note
        self.balance = Decimal(0)
        self.deposits = 0

    def deposit(self, args: DepositArgs) -> None:
        """Pay money in."""
        if args.amount <= 0:
            raise ValueError("a deposit is positive")
        self._deposit(args.amount, args.description, args.reference, args.channel)

    @peer_event("Deposited")
    def _deposit(  # the arguments are the event's fields: eventsourcing records them all
        self,
        amount: Decimal,
        description: str,  # noqa: ARG002
        reference: str,  # noqa: ARG002
        channel: str,  # noqa: ARG002
    ) -> None:
        self.balance += amount
        self.deposits += 1


class PeerBank(Application[uuid.UUID]):
    """The peer's application: its repository, recorder and notification log."""

    def open(self, args: AccountArgs) -> PeerAccount:
        """Open an account (not saved yet)."""
        return PeerAccount(args.owner_name, args.currency, args.branch, args.note)


class PeerSnapshottingBank(PeerBank):
    """The same application with snapshots enabled (for W5 with a snapshot)."""

    name = "PeerBank"  # the same tables as PeerBank (PostgreSQL names them after the application)
    is_snapshotting_enabled = True
