"""The query side: reads of the read models (and of the log for audit and time travel)."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Query, Response

from eventvault import Checkpoint, EventStore, InvalidCheckpoint
from eventvault_ledger import queries
from eventvault_ledger.api.problems import Problem, camel_name, known_query_only, parse_account_id
from eventvault_ledger.api.schemas import (
    AccountPage,
    AccountState,
    AccountSummary,
    AuditPage,
    TotalsList,
    TransactionPage,
    problems,
)
from eventvault_ledger.api.security import Reader
from eventvault_ledger.api.services import Services, ServicesDep
from eventvault_ledger.domain import Account, format_money
from eventvault_ledger.numbers import MAX_LIMIT, MAX_SQL_INT, MAX_VERSION_ASKED, parse_position

__all__ = ["READ_HEADERS", "account_json", "parse_account_id", "parse_place", "router"]

router = APIRouter(prefix="/api/query", tags=["queries"], dependencies=[Depends(known_query_only)])

# A position (1 to 10^18 - 1) or a checkpoint token (two such numbers), or nothing (the same
# as no parameter): what parse_place takes, in the OpenAPI document too (FastAPI does not
# check it: parse_place does, in words). (?!\n): Python's $ also matches before a final
# line break, ECMA-262's does not.
PLACE_PATTERN: Final = r"^(\s*(0*[1-9][0-9]{0,17}|(0|[1-9][0-9]{0,17})\.(0|[1-9][0-9]{0,17}))\s*)?(?!\n)$"
_PLACE: Final = re.compile(PLACE_PATTERN)

ConsistentWith = Annotated[
    str | None,
    Query(
        alias="consistentWith",
        max_length=64,
        json_schema_extra={"pattern": PLACE_PATTERN},
        description="A position (or checkpoint) a command returned. Listings and totals wait (bounded) "
        "until the read model has passed it, else answer 503 with Retry-After; reads of one account, "
        "never older than its stream, only check it. One that names no event is 422.",
    ),
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Items per page.")]
Cursor = Annotated[str | None, Query(max_length=512, description="nextCursor of the previous page.")]


def _money(amount: Decimal, currency: str) -> str:
    return format_money(amount, currency)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


def _account(view: queries.AccountView) -> dict[str, Any]:
    return {
        "accountId": view.account_id,
        "ownerName": view.owner_name,
        "currentBalance": _money(view.balance, view.currency),
        "currency": view.currency,
        "transactionCount": view.transaction_count,
        "lastTransactionDate": _iso(view.last_transaction_at),
        "status": str(view.status),
        "version": view.version,
        "openedAt": _iso(view.opened_at),
    }


async def account_json(services: Services, account_id: str) -> dict[str, Any] | None:
    """The summary of one account as the API shows it; None if unknown."""
    view = await asyncio.to_thread(queries.get_account, services.db, account_id)
    return None if view is None else _account(view)


def _invalid(name: str, detail: str) -> Problem:
    return Problem(422, "validation", "Invalid request", detail, parameter=name)


def parse_place(token: str, name: str) -> int | Checkpoint:
    """A place in the log as a client names it: a position (an int) or a checkpoint token."""
    if not token or not _PLACE.fullmatch(token):
        raise _invalid(name, f"{name} is a position (or checkpoint) a command returned")
    token = token.strip()
    position = parse_position(token, name)
    if position is not None:
        return position
    try:
        checkpoint = Checkpoint.parse(token)
    except InvalidCheckpoint:
        raise _invalid(name, f"{name} is a position (or checkpoint) a command returned") from None
    if max(checkpoint.tx, checkpoint.position) > MAX_SQL_INT:
        raise _invalid(name, f"{name} is not a checkpoint of this store")
    return checkpoint


async def _place(services: Services, token: str) -> tuple[int, Checkpoint | None]:
    """The position and checkpoint of the event ``token`` names (None: committed, not readable yet).

    422 if no event has it and waiting cannot give it one: a position beyond the
    head of the log (or between two events), or a checkpoint of another store.
    On PostgreSQL a committed event becomes readable only once the transactions
    before it end: while some are pending, a position ahead of the head may be one.
    """
    place = parse_place(token, "consistentWith")
    position = place if isinstance(place, int) else place.position
    store = services.store
    found = await store.checkpoint_at(position)
    if found is None and not await _pending(store):
        found = await store.checkpoint_at(position)  # it may have become readable meanwhile
        if found is None:
            head = await store.head()
            raise _invalid(
                "consistentWith",
                f"consistentWith {token} names no event: the log's head is at position {head.position}; "
                "pass the position or checkpoint a command returned",
            )
    if found is not None and isinstance(place, Checkpoint) and found != place:
        raise _invalid("consistentWith", f"consistentWith {token} is not a checkpoint of this store")
    return position, found


async def _pending(store: EventStore) -> bool:
    """Whether the store holds committed events that readers cannot see yet (PostgreSQL's horizon)."""
    horizon_lag = getattr(store, "read_horizon_lag", None)
    if horizon_lag is None:
        return False  # the other stores make an event readable as they commit it
    lag = await horizon_lag()
    return int(lag.pending_events) > 0


async def _consistent(services: Services, token: str | None) -> None:
    """Wait (bounded) until the read models have passed ``token``; 503 if they have not."""
    if not token:
        return
    position, checkpoint = await _place(services, token)
    timeout = services.settings.consistency_timeout
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    store = services.store
    while checkpoint is None:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise _not_consistent(token, timeout)
        await store.wait_for_events(await store.head(), timeout=remaining)
        checkpoint = await store.checkpoint_at(position)
    remaining = max(0.0, deadline - loop.time())
    if not await services.runner.wait_for(checkpoint, timeout=remaining):
        raise _not_consistent(token, timeout)


def _not_consistent(token: str, timeout: float) -> Problem:
    return Problem(
        503,
        "not-consistent-yet",
        "The read model has not caught up",
        f"the read model has not reached position {token} within {timeout:g}s; retry shortly",
        {"Retry-After": "1"},
    )


async def _checked(services: Services, token: str | None) -> None:
    """Check consistentWith on a read of one account, never waiting for it.

    Such a read reflects the account's stream as it is when it is made, so any
    place a command returned before it has been passed already.
    """
    if token:
        await _place(services, token)


def _unknown(account_id: str) -> Problem:
    return Problem(404, "account-not-found", "Unknown account", f"no account {account_id}")


async def _current(services: Services, account_id: str, response: Response) -> queries.CurrentAccount:
    """The account as its stream has it now, with the headers that say where it came from.

    The read model's summary, moved on by the account's events it does not have
    yet, read from the log: never older than the stream, never a false 404.
    """
    current = await queries.current_account(services.db, services.store, account_id)
    if current is None:
        raise _unknown(account_id)
    _source(response, current.source, current.stream_version, current.read_model_version)
    return current


def _source(
    response: Response, source: str, stream_version: int, read_model_version: int | None = None
) -> None:
    response.headers[READ_SOURCE] = source
    response.headers[ACCOUNT_VERSION] = str(stream_version)
    if read_model_version is not None:
        response.headers[READ_MODEL_VERSION] = str(read_model_version)


READ_SOURCE: Final = "X-Read-Source"
"""Where a read of one account came from: read-model, read-model+log or log."""
ACCOUNT_VERSION: Final = "X-Account-Version"
"""The account stream's version when the read was made."""
READ_MODEL_VERSION: Final = "X-Read-Model-Version"
"""The version the read model had of the account (0: none yet)."""
READ_HEADERS: Final = (READ_SOURCE, ACCOUNT_VERSION, READ_MODEL_VERSION)
"""The headers that say where a read of one account came from (exposed to cross-origin dashboards)."""

_FROM_LOG: Final = {
    READ_SOURCE: {"description": "log: read from the event log itself", "schema": {"type": "string"}},
    ACCOUNT_VERSION: {
        "description": "The account stream's version when the read was made",
        "schema": {"type": "integer"},
    },
}
_FROM_READ_MODEL: Final = {
    READ_SOURCE: {
        "description": "read-model (it had the account's latest event), read-model+log (its rows, then "
        "the account's later events replayed from the log) or log (it had none of the account yet)",
        "schema": {"type": "string", "enum": [str(s) for s in queries.ReadSource]},
    },
    ACCOUNT_VERSION: _FROM_LOG[ACCOUNT_VERSION],
    READ_MODEL_VERSION: {
        "description": "The version the read model had of the account (0: none yet); below "
        "X-Account-Version, the rest came from the log",
        "schema": {"type": "integer"},
    },
}


@router.get(
    "/accounts",
    summary="Accounts by balance range, paginated",
    response_model=None,
    responses={200: {"model": AccountPage, "description": "One page"}, **problems(401, 403, 422, 503)},
)
async def list_accounts(
    services: ServicesDep,
    _: Reader,
    min_balance: Annotated[str | None, Query(alias="minBalance", max_length=40)] = None,
    max_balance: Annotated[str | None, Query(alias="maxBalance", max_length=40)] = None,
    currency: Annotated[str | None, Query(max_length=3)] = None,
    search: Annotated[
        str | None,
        Query(max_length=200, description="Part of the owner's name (any case), or the start of the id."),
    ] = None,
    order: Annotated[
        str, Query(pattern="^(asc|desc)$", description="By balance: lowest or highest first.")
    ] = "asc",
    limit: Limit = 50,
    cursor: Cursor = None,
    consistent_with: ConsistentWith = None,
) -> dict[str, Any]:
    """Accounts with minBalance <= balance <= maxBalance (exact decimals), by balance, keyset-paginated."""
    await _consistent(services, consistent_with)
    page = await asyncio.to_thread(
        queries.list_accounts,
        services.db,
        # An empty parameter (?minBalance=&currency=) is the same as none.
        min_balance=min_balance or None,
        max_balance=max_balance or None,
        currency=currency or None,
        search=(search or "").strip() or None,
        limit=limit,
        cursor=cursor or None,
        highest_first=order == "desc",
    )
    return {"items": [_account(v) for v in page.items], "nextCursor": page.next_cursor}


@router.get(
    "/accounts/{account_id}",
    summary="One account",
    response_model=None,
    responses={
        200: {"model": AccountSummary, "description": "The account", "headers": _FROM_READ_MODEL},
        **problems(401, 403, 404, 422, 503),
    },
)
async def get_account(
    account_id: str,
    services: ServicesDep,
    response: Response,
    _: Reader,
    consistent_with: ConsistentWith = None,
) -> dict[str, Any]:
    """The account's summary: the read model's, moved on by any later events of the account from the log."""
    await _checked(services, consistent_with)
    current = await _current(services, parse_account_id(account_id), response)
    return _account(current.account)


@router.get(
    "/accounts/{account_id}/transactions",
    summary="An account's history with running balance",
    response_model=None,
    responses={
        200: {"model": TransactionPage, "description": "One page", "headers": _FROM_READ_MODEL},
        **problems(401, 403, 404, 422, 503),
    },
)
async def get_transactions(
    account_id: str,
    services: ServicesDep,
    _: Reader,
    response: Response,
    limit: Limit = 100,
    cursor: Cursor = None,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc",
    consistent_with: ConsistentWith = None,
) -> dict[str, Any]:
    """Deposits and withdrawals by version, each with the balance right after it.

    The read model's rows, then those of any later events of the account, from the log.
    """
    await _checked(services, consistent_with)
    current = await _current(services, parse_account_id(account_id), response)
    currency = current.account.currency
    page = await asyncio.to_thread(
        queries.current_transactions,
        services.db,
        current,
        limit=limit,
        cursor=cursor or None,
        newest_first=order == "desc",
    )
    return {
        "items": [
            {
                "version": t.version,
                "kind": str(t.kind),
                "amount": _money(t.amount, currency),
                "balanceAfter": _money(t.balance_after, currency),
                "description": t.description,
                "recordedAt": _iso(t.recorded_at),
                "eventId": str(t.event_id),
                "position": t.position,
                **(
                    {}
                    if t.transfer_id is None
                    else {"counterpartyAccountId": t.counterparty, "transferId": t.transfer_id}
                ),
            }
            for t in page.items
        ],
        "nextCursor": page.next_cursor,
    }


@router.get(
    "/accounts/{account_id}/events",
    summary="An account's raw events (the audit log)",
    response_model=None,
    responses={
        200: {"model": AuditPage, "description": "One page", "headers": _FROM_LOG},
        **problems(401, 403, 404, 422),
    },
)
async def get_events(
    account_id: str,
    services: ServicesDep,
    response: Response,
    _: Reader,
    limit: Limit = 100,
    cursor: Cursor = None,
    order: Annotated[str, Query(pattern="^(asc|desc)$", description="Oldest or newest first.")] = "asc",
    consistent_with: ConsistentWith = None,
) -> dict[str, Any]:
    """Every stored event of the account with its envelope and metadata, from the log itself.

    The log is always current: consistentWith is checked but never waited for.
    """
    await _checked(services, consistent_with)
    aid = parse_account_id(account_id)
    page = await queries.account_events(
        services.store, aid, limit=limit, cursor=cursor or None, newest_first=order == "desc"
    )
    stream_version = await services.store.stream_version(Account.stream_id_for(aid))
    if not stream_version:
        raise _unknown(aid)
    _source(response, queries.ReadSource.LOG, stream_version)
    return {
        "items": [
            {
                "eventId": str(e.event_id),
                "streamId": e.stream_id,
                "version": e.version,
                "position": e.position,
                "checkpoint": e.checkpoint,
                "eventType": e.event_type,
                "schemaVersion": e.schema_version,
                "occurredAt": _iso(e.occurred_at),
                "recordedAt": _iso(e.recorded_at),
                "data": {camel_name(k): v for k, v in e.data.items()},
                "metadata": {camel_name(k): v for k, v in e.metadata.items()},
            }
            for e in page.items
        ],
        "nextCursor": page.next_cursor,
    }


# An unencoded "+" in a query string arrives as a space: "...T10:00:00 02:00".
_SPACED_OFFSET: Final = re.compile(r"(T[0-9:.,]+) ([0-9]{2}(?::?[0-9]{2})?)$")


def _moment(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(_SPACED_OFFSET.sub(r"\1+\2", text.strip()))
    except ValueError:
        raise _invalid("asOf", "asOf is an ISO 8601 time, e.g. 2026-01-02T03:04:05Z") from None
    if when.utcoffset() is None:
        raise _invalid("asOf", "asOf needs a UTC offset, e.g. ...Z or +02:00")
    return when


@router.get(
    "/accounts/{account_id}/state",
    summary="An account replayed to a version or a time",
    response_model=None,
    responses={
        200: {"model": AccountState, "description": "The replayed state", "headers": _FROM_LOG},
        **problems(401, 403, 404, 422),
    },
)
async def get_state(
    account_id: str,
    services: ServicesDep,
    response: Response,
    _: Reader,
    version: Annotated[int | None, Query(ge=1, le=MAX_VERSION_ASKED)] = None,
    as_of: Annotated[
        str | None,
        Query(
            alias="asOf", max_length=64, description="ISO 8601 with a UTC offset, e.g. 2026-01-02T03:04:05Z"
        ),
    ] = None,
    consistent_with: ConsistentWith = None,
) -> dict[str, Any]:
    """The account as it was at ``version``, or at ``asOf``, replayed from its events (not the read model).

    The log is always current: consistentWith is checked but never waited for.
    """
    await _checked(services, consistent_with)
    when = _moment(as_of) if as_of else None
    aid = parse_account_id(account_id)
    state = await queries.state_at(services.repository, aid, version=version, as_of=when)
    stream_version = await services.store.stream_version(Account.stream_id_for(aid))
    _source(response, queries.ReadSource.LOG, max(stream_version, state.version))
    return {
        "accountId": state.account_id,
        "version": state.version,
        "ownerName": state.owner_name,
        "currency": state.currency,
        "currentBalance": _money(state.balance, state.currency),
        "status": str(state.status),
        "transactionCount": state.transaction_count,
        "asOf": as_of,
    }


@router.get(
    "/totals",
    summary="Totals per currency",
    response_model=None,
    responses={200: {"model": TotalsList, "description": "Totals"}, **problems(401, 403, 422, 503)},
)
async def get_totals(
    services: ServicesDep, _: Reader, consistent_with: ConsistentWith = None
) -> dict[str, Any]:
    """Total balance, accounts and flows per currency."""
    await _consistent(services, consistent_with)
    totals = await asyncio.to_thread(queries.currency_totals, services.db)
    return {
        "items": [
            {
                "currency": t.currency,
                "totalBalance": _money(t.total_balance, t.currency),
                "accounts": t.accounts,
                "openAccounts": t.open_accounts,
                "totalDeposited": _money(t.total_deposited, t.currency),
                "totalWithdrawn": _money(t.total_withdrawn, t.currency),
                "transactionCount": t.transaction_count,
            }
            for t in totals
        ]
    }
