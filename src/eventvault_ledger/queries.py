"""The ledger's queries: what the HTTP API (and anything else) reads.

Read-model queries are plain blocking functions over anything with a
``query(sql, params)`` method (a :class:`~eventvault.projections.ReadModels` or
a :class:`~eventvault.projections.ProjectionRunner`); call them from a worker
thread in async code. Queries of the log itself (the audit trail and the state
at a version or a time) are coroutines over the event store or a repository,
since they replay events rather than read a projection.

Results are frozen dataclasses with snake_case fields; money is an exact
:class:`~decimal.Decimal` at the currency's scale (``str()`` prints it as money).
Lists are pages with an opaque ``next_cursor``: pass it back to continue, None
means the end. Bad arguments raise :class:`InvalidQuery` (an
:class:`~eventvault.errors.InvalidInput`) naming the parameter, or the ledger's
own :class:`~eventvault_ledger.errors.InvalidAccountId` and
:class:`~eventvault_ledger.errors.UnknownCurrency`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any, Final, Generic, Protocol, TypeVar

import msgspec

from eventvault import REDACTED, EventStore, Metadata, RecordedEvent, Repository
from eventvault_ledger.currencies import minor_units
from eventvault_ledger.domain import (
    MAX_BALANCE,
    Account,
    AccountClosed,
    AccountOpened,
    AccountStatus,
    MoneyDeposited,
    MoneyWithdrawn,
    PersonalDataErased,
    TransferReceived,
    TransferRefunded,
    TransferSent,
)
from eventvault_ledger.errors import InvalidAccountId, InvalidQuery
from eventvault_ledger.numbers import MAX_LIMIT, MAX_SQL_INT, check_int, check_limit, parse_whole_number
from eventvault_ledger.read_models import BALANCE_KEY_SCALE, BALANCE_KEY_WIDTH

__all__ = [
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "AccountState",
    "AccountView",
    "AuditEvent",
    "CurrencyTotals",
    "CurrentAccount",
    "InvalidCursor",
    "InvalidQuery",
    "Page",
    "QuerySource",
    "ReadSource",
    "TransactionKind",
    "TransactionView",
    "account_events",
    "caught_up",
    "currency_totals",
    "current_account",
    "current_transactions",
    "get_account",
    "list_accounts",
    "state_at",
    "transactions",
]

T = TypeVar("T")

DEFAULT_LIMIT: Final = 50

_AMOUNT_TEXT: Final = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_MAX_AMOUNT_TEXT: Final = 64
_MAX_CURSOR: Final = 200
_CURSOR_TEXT: Final = re.compile(r"[A-Za-z0-9_-]+")
_KEY: Final = re.compile(rf"[0-9]{{{BALANCE_KEY_WIDTH}}}")
_MAX_KEY: Final = 10**BALANCE_KEY_WIDTH - 1


# -- errors -----------------------------------------------------------------------------


class InvalidCursor(InvalidQuery):
    """A cursor is not one this query handed out (mangled, or from another listing)."""

    code = "invalid-cursor"
    title = "Invalid cursor"


# -- results ----------------------------------------------------------------------------


class QuerySource(Protocol):
    """Where read-model rows come from: ReadModels, a ProjectionRunner, or a test double."""

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query."""
        ...


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing; ``next_cursor`` continues it (None: this is the last page)."""

    items: tuple[T, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class AccountView:
    """An account as the summary read model holds it."""

    account_id: str
    owner_name: str
    currency: str
    balance: Decimal
    transaction_count: int
    last_transaction_at: datetime | None
    """When the last deposit or withdrawal was recorded (None: none yet)."""
    status: AccountStatus
    version: int
    """The stream version the summary reflects (use it for If-Match)."""
    opened_at: datetime


class TransactionKind(enum.StrEnum):
    """Which way money moved."""

    DEPOSIT = "deposit"
    WITHDRAWAL = "withdrawal"
    TRANSFER_OUT = "transfer_out"
    """The debit leg of a transfer to ``counterparty``."""
    TRANSFER_IN = "transfer_in"
    """The credit leg of a transfer from ``counterparty``."""
    TRANSFER_REFUND = "transfer_refund"
    """A transfer to ``counterparty`` that could not land, given back."""


@dataclass(frozen=True, slots=True)
class TransactionView:
    """One deposit or withdrawal, with the balance right after it."""

    account_id: str
    version: int
    kind: TransactionKind
    amount: Decimal
    balance_after: Decimal
    description: str
    recorded_at: datetime
    event_id: uuid.UUID
    position: int
    counterparty: str | None = None
    """The other account of a transfer leg."""
    transfer_id: str | None = None


@dataclass(frozen=True, slots=True)
class CurrencyTotals:
    """Totals of one currency across every account in it."""

    currency: str
    total_balance: Decimal
    accounts: int
    """Accounts ever opened in the currency."""
    open_accounts: int
    total_deposited: Decimal
    total_withdrawn: Decimal
    transaction_count: int


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One stored event of an account, with its whole envelope and metadata.

    ``data`` is the event in its current schema as JSON-ready values (money as
    text); ``schema_version`` is the version it was stored with.
    """

    event_id: uuid.UUID
    stream_id: str
    version: int
    position: int
    checkpoint: str
    event_type: str
    schema_version: int
    occurred_at: datetime
    recorded_at: datetime
    data: dict[str, Any]
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AccountState:
    """An account as it was at a version, replayed from its events."""

    account_id: str
    version: int
    owner_name: str
    currency: str
    balance: Decimal
    status: AccountStatus
    transaction_count: int


# -- read-model queries -----------------------------------------------------------------

_SELECT_SUMMARY: Final = (
    "SELECT account_id, owner_name, currency, balance, transaction_count, last_transaction_at, "
    "status, version, opened_at, balance_key FROM account_summary"
)


def get_account(db: QuerySource, account_id: str | uuid.UUID) -> AccountView | None:
    """The summary of one account; None if the read model has no such account (yet)."""
    aid = _account_id(account_id)
    rows = db.query(_SELECT_SUMMARY + " WHERE account_id = ?", (aid,))
    return _account(rows[0]) if rows else None


def list_accounts(  # noqa: PLR0913 - the filters of the listing
    db: QuerySource,
    *,
    min_balance: Decimal | int | str | None = None,
    max_balance: Decimal | int | str | None = None,
    currency: str | None = None,
    search: str | None = None,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    highest_first: bool = False,
) -> Page[AccountView]:
    """Accounts with ``min_balance <= balance <= max_balance``, by balance then account id.

    Bounds are exact decimals (a Decimal, an int or plain text like ``"12.50"``)
    and either may be left out. ``currency`` keeps one currency's accounts.
    ``search`` keeps the accounts whose owner name contains it (ignoring case)
    or whose id starts with it. Lowest balance first, or highest with
    ``highest_first``. Keyset pagination over an index: every page costs the
    same however deep, and a walk over unchanged data sees each matching
    account exactly once (an account whose balance changes during a walk may
    move across the cursor).
    """
    n = check_limit(limit)
    if not isinstance(highest_first, bool):
        raise InvalidQuery("highest_first", f"must be a bool, got {highest_first!r}")
    where: list[str] = []
    params: list[Any] = []
    if search is not None:
        where.append(r"(lower(owner_name) LIKE ? ESCAPE '\' OR account_id LIKE ? ESCAPE '\')")
        params.extend(_search_patterns(search))
    if currency is not None:
        minor_units(currency, allow_withdrawn=True)  # UnknownCurrency, with a clear message
        where.append("currency = ?")
        params.append(currency)
    _balance_range(min_balance, max_balance, where, params)
    # A cursor of one direction is refused by the other ("a" ascending, "d" descending).
    kind = "d" if highest_first else "a"
    if cursor is not None:
        parts = _decode_cursor(cursor, kind)
        if len(parts) != 2 or not _KEY.fullmatch(parts[0]):
            raise _bad_cursor()
        key, after_id = parts
        where.append(f"(balance_key, account_id) {'<' if highest_first else '>'} (?, ?)")
        params.extend((key, _cursor_account_id(after_id)))
    # Only constant fragments are joined here; every value is a parameter.
    sql = _SELECT_SUMMARY
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += (
        " ORDER BY balance_key DESC, account_id DESC"
        if highest_first
        else " ORDER BY balance_key, account_id"
    )
    sql += " LIMIT ?"
    rows = db.query(sql, (*params, n + 1))
    items = tuple(_account(r) for r in rows[:n])
    next_cursor = None
    if len(rows) > n:
        last = rows[n - 1]
        next_cursor = _encode_cursor(kind, str(last[9]), str(last[0]))
    return Page(items, next_cursor)


def _balance_range(min_balance: object, max_balance: object, where: list[str], params: list[Any]) -> None:
    """Add the balance bounds (either may be None) to a listing's WHERE clauses."""
    low = None if min_balance is None else _amount("min_balance", min_balance)
    high = None if max_balance is None else _amount("max_balance", max_balance)
    if low is not None and high is not None and low > high:
        raise InvalidQuery("min_balance", f"{min_balance} is greater than max_balance {max_balance}")
    if low is not None:
        where.append("balance_key >= ?")
        params.append(_key_of_bound(low, ROUND_CEILING))
    if high is not None:
        where.append("balance_key <= ?")
        params.append(_key_of_bound(high, ROUND_FLOOR))


def transactions(  # noqa: PLR0913 - the options of the listing
    db: QuerySource,
    account_id: str | uuid.UUID,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    newest_first: bool = False,
    through_version: int | None = None,
) -> Page[TransactionView]:
    """An account's deposits and withdrawals by version (oldest first unless ``newest_first``).

    ``through_version`` keeps those up to that version of the account. An
    account with no transactions, or unknown to the read model, gives an empty page.
    """
    aid = _account_id(account_id)
    n = check_limit(limit)
    if not isinstance(newest_first, bool):
        raise InvalidQuery("newest_first", f"must be a bool, got {newest_first!r}")
    params: list[Any] = [aid]
    sql = (
        "SELECT account_id, version, kind, amount, balance_after, description, recorded_at, "
        "event_id, position, counterparty, transfer_id FROM account_transactions WHERE account_id = ?"
    )
    if through_version is not None:
        sql += " AND version <= ?"
        params.append(check_int(through_version, "through_version", low=0))
    if cursor is not None:
        sql += " AND version < ?" if newest_first else " AND version > ?"
        params.append(_version_cursor(cursor, "t"))
    sql += f" ORDER BY version {'DESC' if newest_first else 'ASC'} LIMIT ?"
    rows = db.query(sql, (*params, n + 1))
    items = tuple(
        TransactionView(
            account_id=str(r[0]),
            version=int(r[1]),
            kind=TransactionKind(r[2]),
            amount=Decimal(r[3]),
            balance_after=Decimal(r[4]),
            description=str(r[5]),
            recorded_at=datetime.fromisoformat(r[6]),
            event_id=uuid.UUID(r[7]),
            position=int(r[8]),
            counterparty=None if r[9] is None else str(r[9]),
            transfer_id=None if r[10] is None else str(r[10]),
        )
        for r in rows[:n]
    )
    next_cursor = _encode_cursor("t", str(items[-1].version)) if len(rows) > n else None
    return Page(items, next_cursor)


def currency_totals(db: QuerySource) -> list[CurrencyTotals]:
    """Totals per currency, by currency code."""
    rows = db.query(
        "SELECT currency, total_balance, accounts, open_accounts, total_deposited, total_withdrawn, "
        "transaction_count FROM currency_totals ORDER BY currency"
    )
    return [
        CurrencyTotals(
            currency=str(r[0]),
            total_balance=Decimal(r[1]),
            accounts=int(r[2]),
            open_accounts=int(r[3]),
            total_deposited=Decimal(r[4]),
            total_withdrawn=Decimal(r[5]),
            transaction_count=int(r[6]),
        )
        for r in rows
    ]


# -- the read model caught up by the log --------------------------------------------------


class ReadSource(enum.StrEnum):
    """Where an answer about one account came from."""

    READ_MODEL = "read-model"
    """The read model alone: it had the account's latest event."""
    READ_MODEL_AND_LOG = "read-model+log"
    """The read model's rows, then the account's later events replayed from the log."""
    LOG = "log"
    """The log alone: the read model had nothing of the account yet."""


@dataclass(frozen=True, slots=True)
class CurrentAccount:
    """An account as its stream has it now: the read model's summary moved on by the log's later events.

    The read model is a snapshot of the account at ``read_model_version``; the
    events recorded after it are read from the log and applied here, as the
    projection will apply them. So the answer is never older than the stream.
    """

    account: AccountView
    """The summary at the stream's latest version."""
    read_model_version: int
    """The version the read model's summary was at (0: it had no summary of the account)."""
    tail: tuple[TransactionView, ...]
    """The deposits and withdrawals recorded after ``read_model_version``, oldest first."""

    @property
    def stream_version(self) -> int:
        """The account stream's version when it was read (the version of ``account``)."""
        return self.account.version

    @property
    def source(self) -> ReadSource:
        """Where the answer came from."""
        if self.read_model_version >= self.account.version:
            return ReadSource.READ_MODEL
        return ReadSource.READ_MODEL_AND_LOG if self.read_model_version else ReadSource.LOG


def caught_up(
    view: AccountView | None, account_id: str, events: Sequence[RecordedEvent]
) -> tuple[AccountView | None, list[TransactionView]]:
    """``view`` (None: no summary yet) moved on by the account's later ``events``, oldest first.

    The same fold as the summary projection's, in memory: the summary after the
    last event, and each deposit or withdrawal with the balance right after it.
    Events the summary already holds (a version at or below its own) are skipped.
    """
    moved: list[TransactionView] = []
    for e in events:
        data = e.data
        if view is not None and e.stream_version <= view.version:
            continue
        when = e.recorded_at.astimezone(UTC)
        if isinstance(data, AccountOpened):
            view = AccountView(
                account_id=account_id,
                owner_name=data.owner_name,
                currency=data.currency,
                balance=Decimal(0),
                transaction_count=0,
                last_transaction_at=None,
                status=AccountStatus.OPEN,
                version=e.stream_version,
                opened_at=when,
            )
            continue
        if view is None:
            break  # a stream that does not start with AccountOpened is no account
        leg = _leg(data)
        if leg is not None:
            kind, counterparty, transfer_id, description = leg
            into = kind in (
                TransactionKind.DEPOSIT,
                TransactionKind.TRANSFER_IN,
                TransactionKind.TRANSFER_REFUND,
            )
            balance = view.balance + data.amount if into else view.balance - data.amount
            moved.append(
                TransactionView(
                    account_id=account_id,
                    version=e.stream_version,
                    kind=kind,
                    amount=data.amount,
                    balance_after=balance,
                    description=description,
                    recorded_at=when,
                    event_id=e.event_id,
                    position=e.position,
                    counterparty=counterparty,
                    transfer_id=transfer_id,
                )
            )
            view = replace(
                view,
                balance=balance,
                transaction_count=view.transaction_count + 1,
                last_transaction_at=when,
                version=e.stream_version,
            )
        elif isinstance(data, AccountClosed):
            view = replace(view, status=AccountStatus.CLOSED, version=e.stream_version)
        elif isinstance(data, PersonalDataErased):
            view = replace(view, owner_name=REDACTED, version=e.stream_version)
        else:
            view = replace(view, version=e.stream_version)
    return view, moved


def _leg(data: object) -> tuple[TransactionKind, str | None, str | None, str] | None:
    """What a money-moving event is in the history: kind, other account, transfer, description."""
    if isinstance(data, MoneyDeposited):
        return TransactionKind.DEPOSIT, None, None, data.description
    if isinstance(data, MoneyWithdrawn):
        return TransactionKind.WITHDRAWAL, None, None, data.description
    if isinstance(data, TransferSent):
        return TransactionKind.TRANSFER_OUT, data.to_account, data.transfer_id, data.description
    if isinstance(data, TransferReceived):
        return TransactionKind.TRANSFER_IN, data.from_account, data.transfer_id, data.description
    if isinstance(data, TransferRefunded):
        return TransactionKind.TRANSFER_REFUND, data.to_account, data.transfer_id, data.reason
    return None


async def current_account(
    db: QuerySource, store: EventStore, account_id: str | uuid.UUID
) -> CurrentAccount | None:
    """The account as its stream has it now; None if the log has no such account.

    Reads the read model's summary, then the account's events after its version
    from the log (none, when the read model is current): the read model is never
    waited for, and its lag never shows.
    """
    aid = _account_id(account_id)
    view = await asyncio.to_thread(get_account, db, aid)
    known = 0 if view is None else view.version
    events = await store.read_stream(Account.stream_id_for(aid), from_version=known + 1)
    latest, tail = caught_up(view, aid, events)
    if latest is None:
        return None
    return CurrentAccount(latest, known, tuple(tail))


def current_transactions(
    db: QuerySource,
    current: CurrentAccount,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    newest_first: bool = False,
) -> Page[TransactionView]:
    """A page of the account's transactions as of ``current``: the read model's, then the log's tail.

    Pages and cursors are those of :func:`transactions`.
    """
    n = check_limit(limit)
    aid = current.account.account_id
    known = current.read_model_version
    after = None if cursor is None else _version_cursor(cursor, "t")
    if not newest_first:
        page = transactions(db, aid, limit=n, cursor=cursor, through_version=known)
        if page.next_cursor is not None or not current.tail:
            return page
        rows = [*page.items, *(t for t in current.tail if after is None or t.version > after)]
        more = len(rows) > n
    else:
        rows = [t for t in reversed(current.tail) if after is None or t.version < after]
        if known:
            # One row more than the page holds when the tail fills it: it tells whether more follow.
            room = max(n - len(rows), 1)
            older = transactions(db, aid, limit=room, cursor=cursor, newest_first=True, through_version=known)
            rows.extend(older.items)
            more = len(rows) > n or older.next_cursor is not None
        else:
            more = len(rows) > n
    items = tuple(rows[:n])
    return Page(items, _encode_cursor("t", str(items[-1].version)) if more else None)


# -- queries of the log -------------------------------------------------------------------


async def account_events(
    store: EventStore,
    account_id: str | uuid.UUID,
    *,
    limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
    newest_first: bool = False,
) -> Page[AuditEvent]:
    """The audit trail: every stored event of the account, from the log itself.

    Oldest first, or newest first with ``newest_first``. An account with no
    events gives an empty page.
    """
    aid = _account_id(account_id)
    n = check_limit(limit)
    if not isinstance(newest_first, bool):
        raise InvalidQuery("newest_first", f"must be a bool, got {newest_first!r}")
    stream = Account.stream_id_for(aid)
    if newest_first:
        before = None if cursor is None else _version_cursor(cursor, "E")
        if before == 1:
            events = []
        else:
            events = await store.read_stream(
                stream, to_version=None if before is None else before - 1, backwards=True, limit=n + 1
            )
    else:
        after = 0 if cursor is None else _version_cursor(cursor, "e")
        events = await store.read_stream(stream, from_version=after + 1, limit=n + 1)
    items = tuple(
        AuditEvent(
            event_id=e.event_id,
            stream_id=e.stream_id,
            version=e.stream_version,
            position=e.position,
            checkpoint=str(e.checkpoint),
            event_type=e.event_type,
            schema_version=e.schema_version,
            occurred_at=e.occurred_at,
            recorded_at=e.recorded_at,
            data=_builtins(e.data),
            metadata=_metadata(e.metadata),
        )
        for e in events[:n]
    )
    next_cursor = (
        _encode_cursor("E" if newest_first else "e", str(items[-1].version)) if len(events) > n else None
    )
    return Page(items, next_cursor)


async def state_at(
    repository: Repository,
    account_id: str | uuid.UUID,
    *,
    version: int | None = None,
    as_of: datetime | None = None,
) -> AccountState:
    """The account replayed from its log: as it is now, at ``version``, or as it was at ``as_of``.

    Raises :class:`~eventvault.errors.AggregateNotFound` if the account has no
    such version, or did not exist yet at ``as_of``.
    """
    aid = _account_id(account_id)
    if version is not None and as_of is not None:
        raise InvalidQuery("version", "give version or as_of, not both")
    if version is not None:
        check_int(version, "version")
    if as_of is not None and (not isinstance(as_of, datetime) or as_of.utcoffset() is None):
        raise InvalidQuery("as_of", f"must be a timezone-aware datetime, got {as_of!r}")
    account = await repository.load(Account, aid, version=version, as_of=as_of)
    return AccountState(
        account_id=account.id,
        version=account.version,
        owner_name=account.owner_name,
        currency=account.currency,
        balance=account.balance,
        status=account.status,
        transaction_count=account.transaction_count,
    )


# -- helpers ------------------------------------------------------------------------------


def _account(r: tuple[Any, ...]) -> AccountView:
    return AccountView(
        account_id=str(r[0]),
        owner_name=str(r[1]),
        currency=str(r[2]),
        balance=Decimal(r[3]),
        transaction_count=int(r[4]),
        last_transaction_at=None if r[5] is None else datetime.fromisoformat(r[5]),
        status=AccountStatus(r[6]),
        version=int(r[7]),
        opened_at=datetime.fromisoformat(r[8]),
    )


def _builtins(value: object) -> dict[str, Any]:
    out = msgspec.to_builtins(value)
    return out if isinstance(out, dict) else {"value": out}


def _metadata(meta: Metadata) -> dict[str, Any]:
    # Every key always present, so readers of the audit trail need no defaults of their own.
    return {
        "correlation_id": meta.correlation_id,
        "causation_id": meta.causation_id,
        "actor": meta.actor,
        "request_id": meta.request_id,
        "extra": dict(meta.extra),
    }


def _account_id(account_id: object) -> str:
    """The canonical text of an account id (a UUID), else InvalidAccountId."""
    if isinstance(account_id, uuid.UUID):
        return str(account_id)
    if not isinstance(account_id, str):
        raise InvalidAccountId(f"an account id is a UUID, got {type(account_id).__name__}")
    try:
        return str(uuid.UUID(account_id))
    except ValueError:
        shown = repr(account_id) if len(account_id) <= 40 else f"{account_id[:40]!r}..."
        raise InvalidAccountId(f"an account id is a UUID, got {shown}") from None


_MAX_SEARCH: Final = 200
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_LIKE_SPECIAL: Final = re.compile(r"([\\%_])")


def _search_patterns(search: object) -> tuple[str, str]:
    """LIKE patterns for ``search``: anywhere in the owner name (lower-cased), at the start of the id."""
    if not isinstance(search, str):
        raise InvalidQuery("search", f"is text, got {type(search).__name__}")
    text = search.strip()
    if not text or len(text) > _MAX_SEARCH:
        raise InvalidQuery("search", f"is 1 to {_MAX_SEARCH} characters of an owner name or an account id")
    if _CONTROL.search(text):
        raise InvalidQuery("search", "holds a control character; no owner name or account id has one")
    escaped = _LIKE_SPECIAL.sub(r"\\\1", text)
    return f"%{escaped.lower()}%", f"{escaped.lower()}%"


def _amount(parameter: str, value: object) -> Decimal:
    """A balance bound read exactly (never through float): >= 0, finite."""
    if isinstance(value, float):
        raise InvalidQuery(
            parameter, f"is a Decimal, an int or text like 12.50, not a float ({value!r}): floats are inexact"
        )
    if isinstance(value, bool):
        raise InvalidQuery(parameter, f"is an amount, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        if len(text) > _MAX_AMOUNT_TEXT or not _AMOUNT_TEXT.fullmatch(text):
            shown = repr(text) if len(text) <= _MAX_AMOUNT_TEXT else f"{text[:_MAX_AMOUNT_TEXT]!r}..."
            raise InvalidQuery(
                parameter, f"{shown} is not an amount: write a number >= 0 like 12.50 (no sign or exponent)"
            )
        return Decimal(text)
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        amount = value
    else:
        raise InvalidQuery(parameter, f"is a Decimal, an int or text like 12.50, got {type(value).__name__}")
    if not amount.is_finite():
        raise InvalidQuery(parameter, f"must be a finite amount, got {amount}")
    if amount < 0:
        raise InvalidQuery(parameter, f"must be >= 0 (balances are never negative), got {amount}")
    return amount


def _key_of_bound(amount: Decimal, rounding: str) -> str:
    """The balance key of a bound, rounded inwards: a minimum up, a maximum down."""
    if amount > MAX_BALANCE:  # beyond every balance; also keeps the key at its fixed width
        return f"{_MAX_KEY:0{BALANCE_KEY_WIDTH}d}"
    scaled = amount.scaleb(BALANCE_KEY_SCALE).to_integral_value(rounding=rounding)
    return f"{int(scaled):0{BALANCE_KEY_WIDTH}d}"


def _encode_cursor(kind: str, *parts: str) -> str:
    raw = "|".join((kind, *parts)).encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _bad_cursor() -> InvalidCursor:
    return InvalidCursor("cursor", "is not a cursor this listing returned; start again without one")


def _decode_cursor(cursor: object, kind: str) -> list[str]:
    """The parts of a cursor of ``kind``, else InvalidCursor."""
    if not isinstance(cursor, str) or not cursor or len(cursor) > _MAX_CURSOR:
        raise _bad_cursor()
    if not _CURSOR_TEXT.fullmatch(cursor):
        raise _bad_cursor()
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise _bad_cursor() from None
    parts = raw.split("|")
    if parts[0] != kind or len(parts) < 2:
        raise _bad_cursor()
    return parts[1:]


def _cursor_account_id(text: str) -> str:
    try:
        canonical = str(uuid.UUID(text))
    except ValueError:
        raise _bad_cursor() from None
    if canonical != text:
        raise _bad_cursor()
    return canonical


def _version_cursor(cursor: object, kind: str) -> int:
    parts = _decode_cursor(cursor, kind)
    version = parse_whole_number(parts[0]) if len(parts) == 1 else None
    if version is None or not 1 <= version <= MAX_SQL_INT:
        raise _bad_cursor()
    return version
