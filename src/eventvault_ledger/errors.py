"""The ledger's errors: a class per business rule, and the two ways a request itself is refused.

All derive from :class:`LedgerError`, itself an :class:`eventvault.DomainError`,
so ``except DomainError`` catches them with the toolkit's own. Each class has a
stable ``code`` (kebab-case; the HTTP API uses it as the problem ``type``) and a
short ``title``; neither may change once published. A refused command records
nothing.

::

    eventvault.DomainError
    └── LedgerError
        ├── InvalidAmount            not a Decimal, not finite, not positive, too many
        │                            decimals for the currency, or above the per-operation maximum
        ├── UnknownCurrency          not an active ISO 4217 code (upper case, 3 letters)
        ├── InvalidOwnerName         empty, too long or holding control characters
        ├── InvalidDescription       too long or holding control characters
        ├── InvalidAccountId         an account id that is not a UUID
        ├── InsufficientFunds        a withdrawal above the balance (carries both)
        ├── BalanceLimitExceeded     a deposit that would take the balance past the cap
        ├── AccountNotOpened         a command on an account that has no AccountOpened yet
        ├── AccountIsClosed          any command on a closed account
        ├── AccountNotEmpty          closing an account whose balance is not zero
        ├── CurrencyMismatch         a transfer between accounts of different currencies
        ├── InvalidTransfer          a transfer to the account it comes from, or an unknown one
        └── TransfersInFlight        closing an account whose outgoing transfers have not settled

    eventvault.InvalidInput
    └── InvalidQuery                 an argument (a query's, a header's) out of range or
                                     malformed; ``parameter`` names it
    eventvault.ConcurrencyError
    └── VersionMismatch              the account is not at the version a command expected
                                     (If-Match); carries both
"""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from eventvault.errors import ConcurrencyError, DomainError, InvalidInput

__all__ = [
    "AccountIsClosed",
    "AccountNotEmpty",
    "AccountNotOpened",
    "BalanceLimitExceeded",
    "CurrencyMismatch",
    "InsufficientFunds",
    "InvalidAccountId",
    "InvalidAmount",
    "InvalidDescription",
    "InvalidOwnerName",
    "InvalidQuery",
    "InvalidTransfer",
    "LedgerError",
    "TooManyOpenAccounts",
    "TransfersInFlight",
    "UnknownCurrency",
    "VersionMismatch",
]


class LedgerError(DomainError):
    """A ledger rule refused a command; nothing was recorded."""

    code: ClassVar[str] = "ledger-error"
    """Stable machine-readable name of the rule (the HTTP problem ``type``)."""
    title: ClassVar[str] = "The ledger refused the command"
    """Short human-readable summary, the same for every instance."""


class InvalidAmount(LedgerError):
    """An amount is not a positive, finite Decimal the currency can hold exactly."""

    code = "invalid-amount"
    title = "Invalid amount"


class UnknownCurrency(LedgerError):
    """A currency is not an active ISO 4217 code."""

    code = "unknown-currency"
    title = "Unknown currency"


class InvalidOwnerName(LedgerError):
    """An owner name is empty, too long or holds control characters."""

    code = "invalid-owner-name"
    title = "Invalid owner name"


class InvalidDescription(LedgerError):
    """A transaction description is too long or holds control characters."""

    code = "invalid-description"
    title = "Invalid description"


class InvalidAccountId(LedgerError):
    """An account id is not a UUID."""

    code = "invalid-account-id"
    title = "Invalid account id"


class InsufficientFunds(LedgerError):
    """A withdrawal asks for more than the balance holds."""

    code = "insufficient-funds"
    title = "Insufficient funds"

    def __init__(self, balance: Decimal, requested: Decimal, currency: str) -> None:
        self.balance = balance
        self.requested = requested
        self.currency = currency
        super().__init__(
            f"insufficient funds: the balance is {balance} {currency}, "
            f"less than the {requested} {currency} asked for"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.balance, self.requested, self.currency))


class BalanceLimitExceeded(LedgerError):
    """A deposit would take the balance above the ledger's cap."""

    code = "balance-limit-exceeded"
    title = "Balance limit exceeded"

    def __init__(self, balance: Decimal, amount: Decimal, limit: Decimal, currency: str) -> None:
        self.balance = balance
        self.amount = amount
        self.limit = limit
        self.currency = currency
        super().__init__(
            f"a deposit of {amount} {currency} would take the balance of {balance} {currency} "
            f"above the limit of {limit} {currency}"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.balance, self.amount, self.limit, self.currency))


class AccountNotOpened(LedgerError):
    """A command reached an account that was never opened."""

    code = "account-not-opened"
    title = "Account not opened"


class TooManyOpenAccounts(LedgerError):
    """The owner holds the most open accounts in this currency an owner may hold."""

    code = "too-many-open-accounts"
    title = "Too many open accounts"

    def __init__(self, owner_name: str, currency: str, limit: int) -> None:
        self.owner_name = owner_name
        self.currency = currency
        self.limit = limit
        super().__init__(
            f"{owner_name} holds {limit} open {currency} accounts already, the most an owner may hold; "
            f"close one first"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.owner_name, self.currency, self.limit))


class AccountIsClosed(LedgerError):
    """The account is closed: it takes no more commands."""

    code = "account-closed"
    title = "Account closed"

    def __init__(self, account_id: str) -> None:
        self.account_id = account_id
        super().__init__(f"account {account_id} is closed")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.account_id,))


class AccountNotEmpty(LedgerError):
    """Only an account with a zero balance can be closed."""

    code = "account-not-empty"
    title = "Account not empty"

    def __init__(self, account_id: str, balance: Decimal, currency: str) -> None:
        self.account_id = account_id
        self.balance = balance
        self.currency = currency
        super().__init__(
            f"account {account_id} still holds {balance} {currency}: "
            "withdraw it all before closing the account"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.account_id, self.balance, self.currency))


class InvalidQuery(InvalidInput):
    """A query argument (or a header) is not acceptable; ``parameter`` names it."""

    code: ClassVar[str] = "invalid-query"
    """Stable machine-readable name (the HTTP problem ``type``)."""
    title: ClassVar[str] = "Invalid query parameter"

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        self.detail = message
        super().__init__(f"{parameter}: {message}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.parameter, self.detail))


class VersionMismatch(ConcurrencyError):
    """A command expected the account at one version and found it at another; nothing was recorded."""

    def __init__(self, expected: int, actual: int) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(f"the command expected the account at version {expected}; it is at version {actual}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.expected, self.actual))


class CurrencyMismatch(LedgerError):
    """A transfer moves money only between accounts of one currency."""

    code = "currency-mismatch"
    title = "Currency mismatch"

    def __init__(self, account_id: str, account_currency: str, currency: str) -> None:
        self.account_id = account_id
        self.account_currency = account_currency
        self.currency = currency
        super().__init__(
            f"account {account_id} holds {account_currency}, not {currency}: "
            "transfers move money between accounts of the same currency only"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.account_id, self.account_currency, self.currency))


class InvalidTransfer(LedgerError):
    """A transfer to the account it comes from, or a leg of a transfer the account does not know."""

    code = "invalid-transfer"
    title = "Invalid transfer"


class TransfersInFlight(LedgerError):
    """An account with outgoing transfers that have not settled cannot close."""

    code = "transfers-in-flight"
    title = "Transfers in flight"

    def __init__(self, account_id: str, count: int) -> None:
        self.account_id = account_id
        self.count = count
        super().__init__(
            f"account {account_id} has {count} outgoing transfer(s) in flight: "
            "close it once they have settled"
        )

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.account_id, self.count))
