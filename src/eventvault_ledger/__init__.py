"""The accounts ledger: the reference service built on eventvault.

- :mod:`eventvault_ledger.domain` — events, the Account aggregate, money rules.
- :mod:`eventvault_ledger.errors` — one error class per business rule.
- :mod:`eventvault_ledger.currencies` — ISO 4217 codes and minor units.
- :mod:`eventvault_ledger.cli` — the ``eventvault`` command (``demo``, ``serve``, ``worker``, ...);
  :mod:`eventvault_ledger.console` starts it, :mod:`eventvault_ledger.serving` runs the server.
"""

from eventvault_ledger.domain import (
    Account,
    AccountClosed,
    AccountOpened,
    AccountStatus,
    MoneyDeposited,
    MoneyWithdrawn,
    format_money,
    parse_amount,
)
from eventvault_ledger.errors import LedgerError

__all__ = [
    "Account",
    "AccountClosed",
    "AccountOpened",
    "AccountStatus",
    "LedgerError",
    "MoneyDeposited",
    "MoneyWithdrawn",
    "format_money",
    "parse_amount",
]
