"""Demo data for a fresh store: a handful of accounts with some history."""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from eventvault import Checkpoint, Metadata, Repository
from eventvault_ledger.domain import Account

__all__ = ["DEMO_ACCOUNTS", "seed_demo"]

DEMO_ACCOUNTS: Final = (
    ("Ada Lovelace", "GBP", ("1200.00", "-250.40", "80.15")),
    ("Grace Hopper", "USD", ("5000.00", "-1200.00", "-89.99", "310.25")),
    ("Alan Turing", "EUR", ("42.00",)),
    ("Katherine Johnson", "USD", ("750.50", "-20.00")),
    ("Hedy Lamarr", "EUR", ("99.99", "0.01", "-100.00")),
    ("Tsutomu Shimomura", "JPY", ("150000", "-3200")),
)


async def seed_demo(repository: Repository) -> bool:
    """Open the demo accounts if the store holds no event yet; True if it seeded."""
    if await repository.store.head() != Checkpoint.START:
        return False
    meta = Metadata(actor="demo-seed")
    for owner, currency, moves in DEMO_ACCOUNTS:
        account = Account.open(owner, currency)
        for move in moves:
            amount = Decimal(move)
            if amount > 0:
                account.deposit(amount, "demo deposit")
            else:
                account.withdraw(-amount, "demo withdrawal")
        await repository.save(account, metadata=meta)
    return True
