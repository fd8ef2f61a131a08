"""Transfers over HTTP: request one, follow it, list an account's, and watch them live.

- ``POST /api/command/transfers`` appends ``TransferRequested`` (202: the
  transfer runs in the background, on the process workers) and answers the
  transfer's id and the position of its request. ``Idempotency-Key`` is
  honoured as on every command, and also names the transfer: a retry that
  reaches another server lands on the same transfer.
- ``GET /api/query/transfers/{id}``: the transfer as its stream says now
  (state, and each step with its position and time): never stale.
- ``GET /api/query/accounts/{id}/transfers``: the account's transfers, sent and
  received, newest first, from the read model.
- ``GET /api/query/transfers/changes`` and ``.../transfers/{id}/changes``:
  Server-Sent ``transfer`` events, one per change of a transfer, resumable by
  ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from eventvault import AggregateNotFound, Checkpoint, EventVaultError, RecordedEvent
from eventvault_ledger.api import commands
from eventvault_ledger.api.live import EventStream, LastEventIdHeader, LastEventIdQuery, stream_start
from eventvault_ledger.api.problems import Problem, known_query_only, parse_account_id, problem_from
from eventvault_ledger.api.schemas import TransferList, TransferView, problems
from eventvault_ledger.api.security import Reader
from eventvault_ledger.api.services import Services, ServicesDep, services_of
from eventvault_ledger.domain import MAX_DESCRIPTION_LENGTH, Account, format_money, parse_amount
from eventvault_ledger.errors import CurrencyMismatch, InvalidTransfer
from eventvault_ledger.transfers import (
    Transfer,
    TransferCompleted,
    TransferDebited,
    TransferFailed,
    TransferRequested,
)

__all__ = ["command_routes", "openapi_paths", "router"]

_NAMESPACE: Final = uuid.UUID("3b0f2f5e-8d1c-4a8e-9a57-7472616e7366")  # transfer ids from idempotency keys
_STEPS: Final = {
    TransferRequested: "requested",
    TransferDebited: "debited",
    TransferCompleted: "completed",
    TransferFailed: "failed",
}
TRANSFER_EVENTS: Final = ("TransferRequested", "TransferDebited", "TransferCompleted", "TransferFailed")
_PREFIX: Final = "transfer-"
_PAGE: Final = 200

_STREAM_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "description": "A stream of `transfer` events (data: the transfer; id: a checkpoint)",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
}

router = APIRouter(prefix="/api/query", tags=["transfers"], dependencies=[Depends(known_query_only)])


def _iso(e: RecordedEvent) -> str:
    return e.recorded_at.isoformat().replace("+00:00", "Z")


# -- the command ----------------------------------------------------------------------


async def request_transfer(request: Request) -> Response:
    """Request a transfer; 202 with its id and the position of its request. Same currency only."""
    principal, key, if_match = commands.begin_command(request)
    if if_match is not None:
        raise commands.invalid_request("a transfer takes no If-Match", parameter="If-Match")
    services = services_of(request)
    body = await commands.json_object(
        request, frozenset({"sourceAccountId", "targetAccountId", "amount", "description"})
    )
    source_text = commands.text_field(body, "sourceAccountId", required=True)
    target_text = commands.text_field(body, "targetAccountId", required=True)
    raw_amount = commands.amount_field(body)
    description = commands.text_field(body, "description", required=False)
    if len(description) > MAX_DESCRIPTION_LENGTH:
        raise Problem(
            422,
            "invalid-description",
            "Invalid description",
            f"description has at most {MAX_DESCRIPTION_LENGTH} characters",
            field="description",
        )
    source, target = parse_account_id(source_text), parse_account_id(target_text)
    if source == target:
        raise Problem(
            422, InvalidTransfer.code, InvalidTransfer.title, "a transfer needs two different accounts"
        )

    async def handler(keyed: Any) -> JSONResponse:
        started = time.perf_counter()
        try:
            src = await _currency_of_both(services, source, target)
            amount = parse_amount(raw_amount, src.currency)
            transfer_id = None if keyed is None else str(uuid.uuid5(_NAMESPACE, keyed.scoped))
            transfer = Transfer.request(
                source, target, amount, src.currency, description, transfer_id=transfer_id
            )
            metadata = commands.command_metadata(request, principal, None if keyed is None else keyed.key)
            # A new stream: a retry of a keyed request lands on the same ids, which the store keeps once.
            result = await services.repository.save(
                transfer, metadata=metadata, event_ids=None if keyed is None else keyed.event_ids()
            )
        except Exception as exc:
            services.metrics.command("transfer", problem_from(exc).code, time.perf_counter() - started)
            raise
        services.metrics.command("transfer", "ok", time.perf_counter() - started)
        if result is None:  # pragma: no cover - request always records TransferRequested
            raise Problem(500, "internal", "Internal error", "the transfer recorded nothing")
        return JSONResponse(
            {
                "transferId": transfer.id,
                "state": "requested",
                "version": result.stream_version,
                "position": result.positions[-1],
                "checkpoint": str(result.checkpoint),
            },
            status_code=202,
            headers={"Location": f"/api/query/transfers/{transfer.id}"},
        )

    return await commands.run_idempotent(request, principal, key, body, handler)


async def _currency_of_both(services: Services, source: str, target: str) -> Account:
    """The source account, if both exist (404 naming the one that does not) and share its currency (422)."""
    accounts = []
    for aid, field in ((source, "sourceAccountId"), (target, "targetAccountId")):
        try:
            accounts.append(await services.repository.load(Account, aid))
        except AggregateNotFound:
            raise Problem(
                404, "account-not-found", "Unknown account", f"no account {aid}", field=field
            ) from None
    src, dst = accounts
    if src.currency != dst.currency:
        raise CurrencyMismatch(dst.id, dst.currency, src.currency)
    return src


def openapi_paths() -> dict[str, dict[str, Any]]:
    """The transfer command's entry of the OpenAPI document's ``paths``."""
    money = commands.money_body("25.00")
    account = {"type": "string", "format": "uuid", "description": "An account id"}
    body = {
        **money,
        "required": ["sourceAccountId", "targetAccountId", "amount"],
        "properties": {"sourceAccountId": account, "targetAccountId": account, **money["properties"]},
    }
    answer = {
        "description": "Requested: the transfer runs in the background (follow Location)",
        "headers": {"Location": {"description": "The transfer's query path", "schema": {"type": "string"}}},
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["transferId", "state", "version", "position", "checkpoint"],
                    "properties": {
                        "transferId": {"type": "string"},
                        "state": {"type": "string"},
                        "version": {"type": "integer"},
                        "position": {"type": "integer"},
                        "checkpoint": {"type": "string"},
                    },
                }
            }
        },
    }
    return {
        f"{commands.PREFIX}/transfers": {
            "post": commands.command_operation(
                request_transfer,
                "Transfer money between two accounts of one currency",
                [commands.KEY_PARAMETER],
                {"202": answer},
                (401, 403, 404, 408, 413, 415, 422, 503),
                body,
            )
        }
    }


command_routes: Final = [
    Route(f"{commands.PREFIX}/transfers", request_transfer, methods=["POST"], name="request_transfer"),
]
"""The command route, for the app's router."""


# -- queries -------------------------------------------------------------------------------


def _parse_transfer_id(transfer_id: str) -> str:
    try:
        return str(uuid.UUID(transfer_id))
    except ValueError:
        raise Problem(404, "transfer-not-found", "Unknown transfer", "no transfer has this id") from None


def transfer_json(events: list[RecordedEvent]) -> dict[str, Any]:
    """A transfer as its stream has it: what was asked, its state and its steps."""
    requested: TransferRequested = events[0].data
    out: dict[str, Any] = {
        "transferId": events[0].stream_id.removeprefix(_PREFIX),
        "sourceAccountId": requested.source,
        "targetAccountId": requested.target,
        "amount": format_money(requested.amount, requested.currency),
        "currency": requested.currency,
        "description": requested.description,
        "state": "requested",
        "version": events[-1].stream_version,
        "steps": [],
    }
    for e in events:
        step = _STEPS.get(type(e.data))
        if step is None:
            continue
        out["state"] = step
        entry: dict[str, Any] = {"step": step, "position": e.position, "recordedAt": _iso(e)}
        if isinstance(e.data, TransferDebited | TransferCompleted):
            entry["legPosition"] = e.data.position
        if isinstance(e.data, TransferFailed):
            out.update(failure={"code": e.data.code, "reason": e.data.reason, "refunded": e.data.refunded})
        out["steps"].append(entry)
    return out


async def _transfer(services: Services, transfer_id: str) -> dict[str, Any] | None:
    events = await services.store.read_stream(Transfer.stream_id_for(transfer_id))
    if not events or not isinstance(events[0].data, TransferRequested):
        return None
    return transfer_json(events)


@router.get(
    "/transfers/changes",
    summary="Live changes of every transfer (Server-Sent Events)",
    response_class=EventStream,
    responses={**_STREAM_RESPONSES, **problems(401, 403, 422)},
)
async def all_transfer_changes(
    request: Request,
    _: Reader,
    last_event_id_header: LastEventIdHeader = None,
    last_event_id: LastEventIdQuery = None,
) -> EventStream:
    """Each change of a transfer as a ``transfer`` event (data: the transfer); resume with Last-Event-ID."""
    services = services_of(request)
    start = await stream_start(services, last_event_id_header or last_event_id)
    return _stream(request, services, start, None)


@router.get(
    "/transfers/{transfer_id}",
    summary="A transfer: its state and steps, from the log",
    response_model=None,
    responses={200: {"model": TransferView, "description": "The transfer"}, **problems(401, 403, 404, 422)},
)
async def get_transfer(transfer_id: str, services: ServicesDep, _: Reader) -> dict[str, Any]:
    """The transfer as its stream has it now: state, amount, accounts, and each step's position and time."""
    found = await _transfer(services, _parse_transfer_id(transfer_id))
    if found is None:
        raise Problem(404, "transfer-not-found", "Unknown transfer", f"no transfer {transfer_id}")
    return found


@router.get(
    "/transfers/{transfer_id}/changes",
    summary="Live changes of one transfer (Server-Sent Events)",
    response_class=EventStream,
    responses={**_STREAM_RESPONSES, **problems(401, 403, 404, 422)},
)
async def transfer_changes(
    transfer_id: str,
    request: Request,
    _: Reader,
    last_event_id_header: LastEventIdHeader = None,
    last_event_id: LastEventIdQuery = None,
) -> EventStream:
    """Each change of one transfer; resume with Last-Event-ID."""
    services = services_of(request)
    tid = _parse_transfer_id(transfer_id)
    if await services.store.stream_version(Transfer.stream_id_for(tid)) == 0:
        raise Problem(404, "transfer-not-found", "Unknown transfer", f"no transfer {tid}")
    start = await stream_start(services, last_event_id_header or last_event_id)
    return _stream(request, services, start, tid)


@router.get(
    "/accounts/{account_id}/transfers",
    summary="An account's transfers, sent and received, newest first",
    response_model=None,
    responses={200: {"model": TransferList, "description": "The transfers"}, **problems(401, 403, 404, 422)},
)
async def account_transfers(
    account_id: str,
    services: ServicesDep,
    _: Reader,
    limit: Annotated[int, Query(ge=1, le=500, description="At most this many.")] = 100,
) -> dict[str, Any]:
    """The account's transfers from the read model (each one's latest state: GET /transfers/{id})."""
    aid = parse_account_id(account_id)
    if await services.store.stream_version(Account.stream_id_for(aid)) == 0:
        raise Problem(404, "account-not-found", "Unknown account", "no account has this id")
    rows = await asyncio.to_thread(
        services.db.query,
        "SELECT transfer_id, source, target, amount, currency, description, state, code, reason, refunded, "
        "requested_at, updated_at FROM transfer_list WHERE source = ? OR target = ? "
        "ORDER BY requested_at DESC, transfer_id LIMIT ?",
        (aid, aid, limit),
    )
    return {
        "items": [
            {
                "transferId": r[0],
                "direction": "out" if r[1] == aid else "in",
                "counterpartyAccountId": r[2] if r[1] == aid else r[1],
                "sourceAccountId": r[1],
                "targetAccountId": r[2],
                "amount": r[3],
                "currency": r[4],
                "description": r[5],
                "state": r[6],
                **(
                    {"failure": {"code": r[7], "reason": r[8], "refunded": bool(r[9])}}
                    if r[6] == "failed"
                    else {}
                ),
                "requestedAt": r[10],
                "updatedAt": r[11],
            }
            for r in rows
        ]
    }


# -- live ------------------------------------------------------------------------------------


def _stream(request: Request, services: Services, start: Checkpoint, transfer_id: str | None) -> EventStream:
    return EventStream(
        _changes(request, services, start, transfer_id),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _changes(
    request: Request, services: Services, start: Checkpoint, transfer_id: str | None
) -> AsyncIterator[bytes]:
    yield b"retry: 2000\n\n"
    checkpoint = start
    try:
        while not services.closing.is_set() and not await request.is_disconnected():
            page = await services.store.read_all(checkpoint, limit=_PAGE, event_types=TRANSFER_EVENTS)
            if page.checkpoint == checkpoint:
                woken = await services.wait_for_events(checkpoint, timeout=services.settings.sse_keepalive)
                if not woken and not services.closing.is_set():
                    yield b": keep-alive\n\n"
                continue
            for e in page.events:
                tid = e.stream_id.removeprefix(_PREFIX)
                if transfer_id is not None and tid != transfer_id:
                    continue
                # The transfer as it was at this event (its stream up to it): each step once, in order.
                events = await services.store.read_stream(e.stream_id, to_version=e.stream_version)
                if events and isinstance(events[0].data, TransferRequested):
                    data = json.dumps(transfer_json(events), separators=(",", ":"))
                    yield f"id: {e.checkpoint}\nevent: transfer\ndata: {data}\n\n".encode()
            checkpoint = page.checkpoint
    except EventVaultError:
        return  # the store closed under the stream (the server stops): the client reconnects
