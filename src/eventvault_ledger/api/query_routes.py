"""The query side: reads of the read models (and of the log for audit and time travel)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from eventvault import Checkpoint, InvalidCheckpoint
from eventvault_ledger import queries
from eventvault_ledger.api.problems import Problem
from eventvault_ledger.api.security import Reader
from eventvault_ledger.api.services import Services
from eventvault_ledger.domain import format_money

__all__ = ["account_json", "router"]

router = APIRouter(prefix="/api/query", tags=["queries"])

ConsistentWith = Annotated[
    str | None,
    Query(
        alias="consistentWith",
        max_length=64,
        description="A position (or checkpoint) a command returned: wait until the read model has passed it.",
    ),
]
Limit = Annotated[int, Query(ge=1, le=500, description="Items per page.")]
Cursor = Annotated[str | None, Query(max_length=512, description="nextCursor of the previous page.")]


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


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


async def _consistent(services: Services, token: str | None) -> None:
    """Wait (bounded) until the read models have passed ``token``; 503 if they have not."""
    if token is None:
        return
    checkpoint: Checkpoint | None
    if token.isdigit() and len(token) <= 19:
        checkpoint = await services.store.checkpoint_at(int(token))
        if checkpoint is None:
            raise Problem(
                422, "validation", "Invalid request", f"consistentWith={token} names no event in the log"
            )
    else:
        try:
            checkpoint = Checkpoint.parse(token)
        except InvalidCheckpoint:
            raise Problem(
                422, "validation", "Invalid request", "consistentWith is a position a command returned"
            ) from None
    timeout = services.settings.consistency_timeout
    if not await services.runner.wait_for(checkpoint, timeout=timeout):
        raise Problem(
            503,
            "not-consistent-yet",
            "The read model has not caught up",
            f"the read model has not reached position {token} within {timeout:g}s; retry shortly",
            {"Retry-After": "1"},
        )


def _account_id(account_id: str) -> str:
    try:
        return str(uuid.UUID(account_id))
    except ValueError:
        raise Problem(404, "account-not-found", "Unknown account", "no account has this id") from None


async def _existing(services: Services, account_id: str) -> dict[str, Any]:
    view = await account_json(services, account_id)
    if view is None:
        raise Problem(404, "account-not-found", "Unknown account", f"no account {account_id}")
    return view


@router.get("/accounts", summary="Accounts by balance range, paginated")
async def list_accounts(
    request: Request,
    _: Reader,
    min_balance: Annotated[str | None, Query(alias="minBalance", max_length=40)] = None,
    max_balance: Annotated[str | None, Query(alias="maxBalance", max_length=40)] = None,
    currency: Annotated[str | None, Query(max_length=3)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
    consistent_with: ConsistentWith = None,
) -> dict[str, Any]:
    """Accounts with minBalance <= balance <= maxBalance (exact decimals), by balance, keyset-paginated."""
    services = _services(request)
    await _consistent(services, consistent_with)
    page = await asyncio.to_thread(
        queries.list_accounts,
        services.db,
        min_balance=min_balance,
        max_balance=max_balance,
        currency=currency,
        limit=limit,
        cursor=cursor,
    )
    return {"items": [_account(v) for v in page.items], "nextCursor": page.next_cursor}


@router.get("/accounts/{account_id}", summary="One account")
async def get_account(
    account_id: str, request: Request, _: Reader, consistent_with: ConsistentWith = None
) -> dict[str, Any]:
    """The account's summary from the read model."""
    services = _services(request)
    await _consistent(services, consistent_with)
    return await _existing(services, _account_id(account_id))


@router.get("/accounts/{account_id}/transactions", summary="An account's history with running balance")
async def get_transactions(
    account_id: str,
    request: Request,
    _: Reader,
    limit: Limit = 100,
    cursor: Cursor = None,
    order: Annotated[str, Query(pattern="^(asc|desc)$")] = "asc",
    consistent_with: ConsistentWith = None,
) -> dict[str, Any]:
    """Deposits and withdrawals by version, each with the balance right after it."""
    services = _services(request)
    await _consistent(services, consistent_with)
    account = await _existing(services, _account_id(account_id))
    currency = account["currency"]
    page = await asyncio.to_thread(
        queries.transactions,
        services.db,
        account["accountId"],
        limit=limit,
        cursor=cursor,
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
            }
            for t in page.items
        ],
        "nextCursor": page.next_cursor,
    }


@router.get("/accounts/{account_id}/events", summary="An account's raw events (the audit log)")
async def get_events(
    account_id: str, request: Request, _: Reader, limit: Limit = 100, cursor: Cursor = None
) -> dict[str, Any]:
    """Every stored event of the account with its envelope and metadata, from the log itself."""
    services = _services(request)
    page = await queries.account_events(services.store, _account_id(account_id), limit=limit, cursor=cursor)
    if not page.items and cursor is None:
        raise Problem(404, "account-not-found", "Unknown account", f"no account {account_id}")
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
                "data": {_camel(k): v for k, v in e.data.items()},
                "metadata": {_camel(k): v for k, v in e.metadata.items()},
            }
            for e in page.items
        ],
        "nextCursor": page.next_cursor,
    }


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


@router.get("/accounts/{account_id}/state", summary="An account replayed to a version or a time")
async def get_state(
    account_id: str,
    request: Request,
    _: Reader,
    version: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    as_of: Annotated[
        str | None, Query(alias="asOf", max_length=64, description="ISO 8601 with offset")
    ] = None,
) -> dict[str, Any]:
    """The account as it was at ``version``, or at ``asOf``, replayed from its events (not the read model)."""
    services = _services(request)
    when = None
    if as_of is not None:
        try:
            when = datetime.fromisoformat(as_of)
        except ValueError:
            raise Problem(
                422, "validation", "Invalid request", "asOf is an ISO 8601 time, e.g. 2026-01-02T03:04:05Z"
            ) from None
        if when.utcoffset() is None:
            raise Problem(
                422, "validation", "Invalid request", "asOf needs a UTC offset, e.g. ...Z or +02:00"
            )
    state = await queries.state_at(services.repository, _account_id(account_id), version=version, as_of=when)
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


@router.get("/totals", summary="Totals per currency")
async def get_totals(request: Request, _: Reader, consistent_with: ConsistentWith = None) -> dict[str, Any]:
    """Total balance, accounts and flows per currency."""
    services = _services(request)
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
