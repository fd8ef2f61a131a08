"""The accounts ledger: its events, the Account aggregate and the rules of money.

Only the standard library and :mod:`eventvault.domain` are used here; storage,
HTTP and the CLI build on this module, never the other way round.

Money is :class:`decimal.Decimal`, never float. An amount must be positive,
finite, at most :data:`MAX_AMOUNT`, and have no more decimal places than its
currency's minor units (``Decimal("1.000")`` is a fine USD amount, since it is
exactly 1.00; ``Decimal("1.001")`` is not). Accepted amounts are recorded at the
currency's scale (``1.00``), so stored events and balances print as money.
"""

from __future__ import annotations

import enum
import hashlib
import re
import unicodedata
import uuid
from dataclasses import dataclass
from decimal import Context, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow
from typing import Final, Self

from eventvault import REDACTED, Aggregate, applies, event, personal, uuid7
from eventvault_ledger.currencies import check_currency, minor_units
from eventvault_ledger.errors import (
    AccountIsClosed,
    AccountNotEmpty,
    AccountNotOpened,
    BalanceLimitExceeded,
    CurrencyMismatch,
    InsufficientFunds,
    InvalidAccountId,
    InvalidAmount,
    InvalidDescription,
    InvalidOwnerName,
    InvalidTransfer,
    LedgerError,
    TransfersInFlight,
    UnknownCurrency,
)

__all__ = [
    "MAX_AMOUNT",
    "MAX_BALANCE",
    "MAX_DESCRIPTION_LENGTH",
    "MAX_OWNER_NAME_LENGTH",
    "Account",
    "AccountClosed",
    "AccountIsClosed",
    "AccountNotEmpty",
    "AccountNotOpened",
    "AccountOpened",
    "AccountStatus",
    "BalanceLimitExceeded",
    "CurrencyMismatch",
    "InsufficientFunds",
    "InvalidAccountId",
    "InvalidAmount",
    "InvalidDescription",
    "InvalidOwnerName",
    "InvalidTransfer",
    "LedgerError",
    "MoneyDeposited",
    "MoneyWithdrawn",
    "PersonalDataErased",
    "TransferReceived",
    "TransferRefunded",
    "TransferSent",
    "TransferSettled",
    "TransfersInFlight",
    "UnknownCurrency",
    "check_amount",
    "currency_tag",
    "format_money",
    "owner_tag",
    "parse_amount",
]

MAX_AMOUNT: Final = Decimal(1_000_000_000)
"""The largest amount one deposit or withdrawal may move."""

MAX_BALANCE: Final = Decimal(10**15)
"""The largest balance an account may hold: with 4 decimals, 20 digits, which every
downstream store (SQLite's and PostgreSQL's numerics, JSON readers using int64 cents)
holds exactly."""

MAX_OWNER_NAME_LENGTH: Final = 200
MAX_DESCRIPTION_LENGTH: Final = 500

# Balances stay below 10**15 with at most 4 decimals (20 digits), so 34 digits make
# every sum exact whatever precision the caller's thread-local decimal context has.
# Inexact is trapped so that a rounding that should be impossible fails loudly.
_MONEY: Final = Context(prec=34, traps=[InvalidOperation, DivisionByZero, Overflow, Inexact])

_AMOUNT_TEXT: Final = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?")
_MAX_AMOUNT_TEXT: Final = 64

# Control characters, lone surrogates (they cannot be encoded as UTF-8), the Unicode
# line and paragraph separators, and format characters (Cf: the bidirectional
# embeddings, overrides and isolates U+202A-U+202E and U+2066-U+2069, the zero-width
# space, joiners and no-break space, the soft hyphen): none belongs in a one-line
# label, and the invisible ones let one name pass for another ("Ada" + U+202E + ...).
_FORBIDDEN_CATEGORIES: Final = frozenset({"Cc", "Cs", "Zl", "Zp", "Cf"})


# -- events ------------------------------------------------------------------


@event("AccountOpened")
@personal("owner_name")  # sealed under the account's own key: forgetting it destroys the key
@dataclass(frozen=True, slots=True)
class AccountOpened:
    """An account was opened for ``owner_name``, holding money in ``currency``.

    ``owner_name`` is personal data of the account (its stream is the subject):
    stored sealed, and read as ``[redacted]`` once the account's personal data
    is erased.
    """

    owner_name: str
    currency: str


@event("MoneyDeposited")
@dataclass(frozen=True, slots=True)
class MoneyDeposited:
    """``amount`` (in the account's currency) was paid into the account."""

    amount: Decimal
    description: str = ""


@event("MoneyWithdrawn")
@dataclass(frozen=True, slots=True)
class MoneyWithdrawn:
    """``amount`` (in the account's currency) was paid out of the account."""

    amount: Decimal
    description: str = ""


@event("AccountClosed")
@dataclass(frozen=True, slots=True)
class AccountClosed:
    """The account was closed at a zero balance; it takes no more commands."""


@event("TransferSent")
@dataclass(frozen=True, slots=True)
class TransferSent:
    """The debit leg of transfer ``transfer_id``: ``amount`` left the account for ``to_account``.

    Until the transfer settles or is refunded, the amount is in flight.
    """

    transfer_id: str
    to_account: str
    amount: Decimal
    description: str = ""


@event("TransferReceived")
@dataclass(frozen=True, slots=True)
class TransferReceived:
    """The credit leg of transfer ``transfer_id``: ``amount`` arrived from ``from_account``."""

    transfer_id: str
    from_account: str
    amount: Decimal
    description: str = ""


@event("TransferRefunded")
@dataclass(frozen=True, slots=True)
class TransferRefunded:
    """Transfer ``transfer_id`` could not land on ``to_account``: its ``amount`` came back."""

    transfer_id: str
    to_account: str
    amount: Decimal
    reason: str


@event("TransferSettled")
@dataclass(frozen=True, slots=True)
class TransferSettled:
    """Transfer ``transfer_id`` landed on its target: it is no longer in flight (no money moves)."""

    transfer_id: str


@event("PersonalDataErased")
@dataclass(frozen=True, slots=True)
class PersonalDataErased:
    """The account's personal data was erased: its owner reads as ``[redacted]`` from here on.

    Appended before the account's key is destroyed, so read models re-project
    the owner as the placeholder. ``owner_tag`` is the (hashed) owner tag the
    account was opened under, which its replayed state can no longer compute
    from the redacted name, so that a later close still frees its place in the
    open-account limit.
    """

    owner_tag: str


# -- the aggregate -----------------------------------------------------------


class AccountStatus(enum.StrEnum):
    """Whether an account still takes commands."""

    OPEN = "open"
    CLOSED = "closed"


class Account(Aggregate):
    """A bank account: a balance in one currency, moved by deposits and withdrawals.

    Its stream is ``account-<uuid>``. The state holds only what the events say:
    when a transaction happened is on the event's envelope (``recorded_at``),
    which read models take from there.
    """

    category = "account"

    owner_name: str = ""
    currency: str = ""
    balance: Decimal = Decimal(0)
    status: AccountStatus = AccountStatus.OPEN
    transaction_count: int = 0
    """Deposits, withdrawals and transfer legs recorded so far."""
    transfers_out: dict[str, Decimal] = {}  # noqa: RUF012 - replaced, never changed in place
    """Outgoing transfers in flight: transfer id -> amount (sent, neither settled nor refunded)."""
    owner_tag: str = ""
    """The owner's tag (:func:`owner_tag` of the name as opened): the open-account limit's key."""
    personal_data_erased: bool = False
    """Whether the owner's personal data was erased (the name then reads as ``[redacted]``)."""

    # -- commands ----------------------------------------------------------------

    @classmethod
    def open(cls, owner_name: str, currency: str, *, account_id: str | uuid.UUID | None = None) -> Self:
        """Open an account for ``owner_name`` in ``currency`` (an active ISO 4217 code).

        The id is a new time-ordered UUID unless ``account_id`` is given.
        """
        name = _check_text(
            owner_name, "an owner name", MAX_OWNER_NAME_LENGTH, InvalidOwnerName, allow_empty=False
        )
        if name == REDACTED:
            raise InvalidOwnerName(f"{REDACTED!r} is what an erased owner name reads as, not a name")
        code = check_currency(currency)
        account = cls(_check_account_id(account_id))
        account.record(AccountOpened(name, code))
        return account

    def deposit(self, amount: Decimal, description: str = "") -> None:
        """Pay ``amount`` into the account."""
        self._require_open()
        value = check_amount(amount, self.currency)
        text = _check_text(description, "a description", MAX_DESCRIPTION_LENGTH, InvalidDescription)
        if _MONEY.add(self.balance, value) > MAX_BALANCE:
            raise BalanceLimitExceeded(
                self._show(self.balance), value, self._show(MAX_BALANCE), self.currency
            )
        self.record(MoneyDeposited(value, text))

    def withdraw(self, amount: Decimal, description: str = "") -> None:
        """Pay ``amount`` out of the account; InsufficientFunds if the balance is smaller."""
        self._require_open()
        value = check_amount(amount, self.currency)
        text = _check_text(description, "a description", MAX_DESCRIPTION_LENGTH, InvalidDescription)
        if value > self.balance:
            raise InsufficientFunds(self._show(self.balance), value, self.currency)
        self.record(MoneyWithdrawn(value, text))

    def close(self) -> None:
        """Close the account; it must hold nothing, and have no outgoing transfer in flight."""
        self._require_open()
        if self.balance != 0:
            raise AccountNotEmpty(self.id, self._show(self.balance), self.currency)
        if self.transfers_out:
            raise TransfersInFlight(self.id, len(self.transfers_out))
        self.record(AccountClosed())

    # -- transfers: the legs the transfer process records ---------------------------

    def send_transfer(
        self, transfer_id: str, to_account: str, amount: Decimal, currency: str, description: str = ""
    ) -> None:
        """The debit leg: ``amount`` leaves for ``to_account`` (refused as a withdrawal is, or currency)."""
        self._require_open()
        if currency != self.currency:
            raise CurrencyMismatch(self.id, self.currency, currency)
        if to_account == self.id:
            raise InvalidTransfer(f"account {self.id} cannot transfer to itself")
        value = check_amount(amount, self.currency)
        text = _check_text(description, "a description", MAX_DESCRIPTION_LENGTH, InvalidDescription)
        if transfer_id in self.transfers_out:
            raise InvalidTransfer(f"transfer {transfer_id} has left account {self.id} already")
        if value > self.balance:
            raise InsufficientFunds(self._show(self.balance), value, self.currency)
        self.record(TransferSent(transfer_id, to_account, value, text))

    def receive_transfer(
        self, transfer_id: str, from_account: str, amount: Decimal, currency: str, description: str = ""
    ) -> None:
        """The credit leg: ``amount`` arrives from ``from_account``; refused if closed or another currency."""
        self._require_open()
        if currency != self.currency:
            raise CurrencyMismatch(self.id, self.currency, currency)
        value = check_amount(amount, self.currency)
        text = _check_text(description, "a description", MAX_DESCRIPTION_LENGTH, InvalidDescription)
        if _MONEY.add(self.balance, value) > MAX_BALANCE:
            raise BalanceLimitExceeded(
                self._show(self.balance), value, self._show(MAX_BALANCE), self.currency
            )
        self.record(TransferReceived(transfer_id, from_account, value, text))

    def refund_transfer(self, transfer_id: str, to_account: str, reason: str) -> None:
        """Give back a sent transfer that could not land (the account cannot have closed meanwhile)."""
        amount = self.transfers_out.get(transfer_id)
        if amount is None:
            raise InvalidTransfer(f"transfer {transfer_id} is not in flight from account {self.id}")
        self.record(TransferRefunded(transfer_id, to_account, amount, reason[:MAX_DESCRIPTION_LENGTH]))

    def settle_transfer(self, transfer_id: str) -> None:
        """A sent transfer landed on its target: it is no longer in flight."""
        if transfer_id not in self.transfers_out:
            raise InvalidTransfer(f"transfer {transfer_id} is not in flight from account {self.id}")
        self.record(TransferSettled(transfer_id))

    def erase_personal_data(self) -> None:
        """Record that the owner's personal data is erased (once: a second call records nothing).

        The caller then destroys the account's key (``EventStore.forget``), which
        is what makes the name unreadable in the events already stored.
        """
        if self.version == 0:
            raise AccountNotOpened(f"account {self.id} has not been opened")
        if not self.personal_data_erased:
            self.record(PersonalDataErased(self.owner_tag))

    def tags_of(self, event: object) -> tuple[str, ...]:
        """Opening and closing carry the owner's and the currency's tags (the open-account limit)."""
        if isinstance(event, AccountOpened | AccountClosed):
            return (self.owner_tag, currency_tag(self.currency))
        return ()

    def _require_open(self) -> None:
        if self.version == 0:
            raise AccountNotOpened(f"account {self.id} has not been opened")
        if self.status is AccountStatus.CLOSED:
            raise AccountIsClosed(self.id)

    def _show(self, amount: Decimal) -> Decimal:
        """``amount`` at the currency's scale, for messages (0 shows as 0.00)."""
        return amount.quantize(
            Decimal(1).scaleb(-minor_units(self.currency, allow_withdrawn=True)), context=_MONEY
        )

    # -- appliers: the only place state changes, live and on replay ------------

    @applies(AccountOpened)
    def _opened(self, e: AccountOpened) -> None:
        self.owner_name = e.owner_name
        self.owner_tag = owner_tag(e.owner_name)
        self.currency = e.currency
        self.balance = Decimal(0)
        self.status = AccountStatus.OPEN
        self.transaction_count = 0

    @applies(MoneyDeposited)
    def _deposited(self, e: MoneyDeposited) -> None:
        self.balance = _MONEY.add(self.balance, e.amount)
        self.transaction_count += 1

    @applies(MoneyWithdrawn)
    def _withdrawn(self, e: MoneyWithdrawn) -> None:
        self.balance = _MONEY.subtract(self.balance, e.amount)
        self.transaction_count += 1

    @applies(AccountClosed)
    def _closed(self, _e: AccountClosed) -> None:
        self.status = AccountStatus.CLOSED

    @applies(TransferSent)
    def _sent(self, e: TransferSent) -> None:
        self.balance = _MONEY.subtract(self.balance, e.amount)
        self.transaction_count += 1
        self.transfers_out = {**self.transfers_out, e.transfer_id: e.amount}

    @applies(TransferReceived)
    def _received(self, e: TransferReceived) -> None:
        self.balance = _MONEY.add(self.balance, e.amount)
        self.transaction_count += 1

    @applies(TransferRefunded)
    def _refunded(self, e: TransferRefunded) -> None:
        self.balance = _MONEY.add(self.balance, e.amount)
        self.transaction_count += 1
        self.transfers_out = {k: v for k, v in self.transfers_out.items() if k != e.transfer_id}

    @applies(TransferSettled)
    def _settled(self, e: TransferSettled) -> None:
        self.transfers_out = {k: v for k, v in self.transfers_out.items() if k != e.transfer_id}

    @applies(PersonalDataErased)
    def _erased(self, e: PersonalDataErased) -> None:
        self.owner_name = REDACTED
        self.owner_tag = e.owner_tag
        self.personal_data_erased = True


# -- tags ----------------------------------------------------------------------


def owner_tag(owner_name: str) -> str:
    """The tag of an owner: ``owner-sha256:`` and the SHA-256 of the name normalised.

    The name is NFKC-normalised, case-folded and its runs of spaces collapsed,
    so "Ada  Lovelace" and "ada lovelace" are one owner. Tags are stored in the
    clear and never rewritten, so the tag holds a hash, not the name: erasing
    an account's personal data must not leave the name in the log
    (docs/data-protection.md says what a hash of a name still is).
    """
    name = " ".join(unicodedata.normalize("NFKC", owner_name).casefold().split())
    return f"owner-sha256:{hashlib.sha256(name.encode()).hexdigest()}"


_LEGACY_TAG_LIMIT: Final = 200  # the longest tag the store takes (MAX_TAG_LENGTH)


def legacy_owner_tag(owner_name: str) -> str | None:
    """The owner tag accounts were opened with before the tag became a hash (decision 33), if any.

    ``owner:`` and the normalised name, for a name short enough for a tag;
    longer names were tagged by their hash then too (:func:`owner_tag`). Only
    read, never written: the open-account limit still counts those accounts.
    """
    name = " ".join(unicodedata.normalize("NFKC", owner_name).casefold().split())
    tag = f"owner:{name}"
    return tag if len(tag) <= _LEGACY_TAG_LIMIT else None


def currency_tag(currency: str) -> str:
    """The tag of a currency: ``currency:EUR``."""
    return f"currency:{currency}"


# -- money -------------------------------------------------------------------


def check_amount(amount: object, currency: str) -> Decimal:
    """``amount`` at ``currency``'s scale, if it is a valid amount; else InvalidAmount.

    Valid: a finite Decimal, greater than zero, at most :data:`MAX_AMOUNT`, with
    no non-zero digit beyond the currency's minor units.
    """
    units = minor_units(currency, allow_withdrawn=True)
    if isinstance(amount, float):
        raise InvalidAmount(
            f"an amount is a Decimal, not a float ({amount!r}): a float cannot hold most "
            "decimal fractions exactly; pass a Decimal, or text through parse_amount"
        )
    if not isinstance(amount, Decimal):
        raise InvalidAmount(f"an amount is a Decimal, got {type(amount).__name__}")
    if not amount.is_finite():
        raise InvalidAmount(f"an amount must be a finite number, got {amount}")
    if amount <= 0:
        raise InvalidAmount(f"an amount must be greater than zero, got {_short(amount)}")
    if amount > MAX_AMOUNT:
        raise InvalidAmount(f"an amount is at most {MAX_AMOUNT} per operation, got {_short(amount)}")
    if not _fits(amount, units):
        raise InvalidAmount(f"{currency} amounts have {_places(units)}, got {_short(amount)}")
    return amount.quantize(Decimal(1).scaleb(-units), context=_MONEY)


def parse_amount(value: str | int | Decimal, currency: str) -> Decimal:
    """Read an amount from text (``"12.50"``), an int or a Decimal, exactly; then check it.

    Text is plain decimal notation only (digits, an optional sign and fraction):
    no exponents, separators, ``NaN`` or ``Infinity``. It becomes a Decimal
    directly, never through float. Returns the amount at the currency's scale.
    """
    amount: object
    if isinstance(value, str):
        text = value.strip()
        if len(text) > _MAX_AMOUNT_TEXT or not _AMOUNT_TEXT.fullmatch(text):
            shown = repr(text) if len(text) <= _MAX_AMOUNT_TEXT else f"{text[:_MAX_AMOUNT_TEXT]!r}..."
            raise InvalidAmount(f"{shown} is not an amount: write it like 12.50")
        amount = Decimal(text)
    elif isinstance(value, bool):
        raise InvalidAmount(f"an amount is a number, got {value!r}")
    elif isinstance(value, int):
        amount = Decimal(value)
    else:
        amount = value
    return check_amount(amount, currency)


def format_money(amount: Decimal | int, currency: str) -> str:
    """``amount`` with exactly ``currency``'s minor units: ``"1.00"``, JPY ``"100"``.

    Never rounds: an amount with non-zero digits beyond the currency's minor
    units raises InvalidAmount.
    """
    units = minor_units(currency, allow_withdrawn=True)
    if isinstance(amount, bool) or not isinstance(amount, Decimal | int):
        raise InvalidAmount(f"format_money takes a Decimal, got {type(amount).__name__}")
    value = Decimal(amount)
    if not value.is_finite():
        raise InvalidAmount(f"cannot format {value} as money")
    if not _fits(value, units):
        raise InvalidAmount(f"{_short(value)} has more decimal places than {currency}'s {units}")
    if value == 0:
        value = value.copy_abs()  # no "-0.00"
    # The 'f' format pads or drops only zero digits here (checked above), so it is exact.
    return format(value, f".{units}f")


def _fits(amount: Decimal, units: int) -> bool:
    """Whether ``amount`` (finite) has no non-zero digit beyond ``units`` decimal places."""
    _, digits, exponent = amount.as_tuple()
    if not isinstance(exponent, int):  # NaN or Infinity: the callers refuse those first
        return False
    excess = -units - exponent
    return excess <= 0 or not any(digits[-excess:])


def _places(units: int) -> str:
    if units == 0:
        return "no decimal places"
    return f"at most {units} decimal place{'s' if units > 1 else ''}"


def _short(amount: Decimal) -> str:
    text = str(amount)
    return text if len(text) <= 40 else f"{text[:40]}..."


# -- names and descriptions ---------------------------------------------------


def _check_text(
    value: object,
    what: str,
    max_length: int,
    error: type[LedgerError],
    *,
    allow_empty: bool = True,
) -> str:
    """``value`` stripped and NFC-normalised, if it is an acceptable one-line label."""
    if not isinstance(value, str):
        raise error(f"{what} is a str, got {type(value).__name__}")
    for ch in value:
        if unicodedata.category(ch) in _FORBIDDEN_CATEGORIES:
            raise error(
                f"{what} must not hold control, invisible or text-direction characters, "
                f"or line breaks; found U+{ord(ch):04X}"
            )
    # NFC first, so that equal-looking names are equal strings and the length
    # limit counts what a reader sees rather than how it happened to be typed.
    text = unicodedata.normalize("NFC", value).strip()
    if not text and not allow_empty:
        raise error(f"{what} must not be empty or blank")
    if len(text) > max_length:
        raise error(f"{what} has at most {max_length} characters, got {len(text)}")
    return text


def _check_account_id(account_id: object) -> str:
    if account_id is None:
        return str(uuid7())
    if isinstance(account_id, uuid.UUID):
        return str(account_id)
    if not isinstance(account_id, str):
        raise InvalidAccountId(f"an account id is a UUID, got {type(account_id).__name__}")
    try:
        return str(uuid.UUID(account_id))
    except ValueError:
        shown = repr(account_id) if len(account_id) <= 40 else f"{account_id[:40]!r}..."
        raise InvalidAccountId(f"an account id is a UUID, got {shown}") from None
