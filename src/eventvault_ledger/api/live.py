"""Live updates: Server-Sent Events of account read-model changes, resumable by Last-Event-ID."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Final

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from eventvault import Checkpoint, InvalidCheckpoint
from eventvault_ledger.api.problems import Problem
from eventvault_ledger.api.security import Reader
from eventvault_ledger.api.services import Services

__all__ = ["router"]

router = APIRouter(prefix="/api/query", tags=["live"])

ACCOUNT_EVENTS: Final = ("AccountOpened", "MoneyDeposited", "MoneyWithdrawn", "AccountClosed")
_PREFIX: Final = "account-"


async def _start(services: Services, last_event_id: str | None) -> Checkpoint:
    if not last_event_id:
        return await services.store.head()
    if last_event_id.isdigit() and len(last_event_id) <= 19:
        found = await services.store.checkpoint_at(int(last_event_id))
        if found is None:
            raise Problem(422, "validation", "Invalid request", "Last-Event-ID names no event")
        return found
    try:
        return Checkpoint.parse(last_event_id)
    except InvalidCheckpoint:
        raise Problem(
            422, "validation", "Invalid request", "Last-Event-ID is not an event id of this stream"
        ) from None


async def _changes(
    request: Request, services: Services, start: Checkpoint, account_id: str | None
) -> AsyncIterator[bytes]:
    from eventvault_ledger.api.query_routes import account_json  # noqa: PLC0415

    settings = services.settings
    yield b"retry: 2000\n\n"
    checkpoint = start
    while not await request.is_disconnected():
        page = await services.store.read_all(checkpoint, limit=200, event_types=ACCOUNT_EVENTS)
        if page.checkpoint == checkpoint:
            if not await services.store.wait_for_events(checkpoint, timeout=settings.sse_keepalive):
                yield b": keep-alive\n\n"
            continue
        latest: dict[str, Checkpoint] = {}
        for e in page.events:
            stream_account = e.stream_id.removeprefix(_PREFIX)
            if account_id is None or stream_account == account_id:
                latest[stream_account] = e.checkpoint
        if latest:
            # Show each account as the read model has it once it has passed these events.
            await services.runner.wait_for(page.checkpoint, timeout=settings.consistency_timeout)
            for changed, at in sorted(latest.items(), key=lambda kv: kv[1]):
                view = await account_json(services, changed)
                if view is not None:
                    data = json.dumps(view, separators=(",", ":"))
                    yield f"id: {at}\nevent: account\ndata: {data}\n\n".encode()
        checkpoint = page.checkpoint
        await asyncio.sleep(0)  # let a disconnect be noticed between pages


def _stream(
    request: Request, services: Services, start: Checkpoint, account_id: str | None
) -> StreamingResponse:
    return StreamingResponse(
        _changes(request, services, start, account_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get("/accounts/changes", summary="Live changes of every account (Server-Sent Events)")
async def all_changes(
    request: Request,
    _: Reader,
    last_event_id: Annotated[str | None, Query(alias="lastEventId", max_length=64)] = None,
) -> StreamingResponse:
    """Each change of an account's read model as an ``account`` event; resume with Last-Event-ID."""
    services: Services = request.app.state.services
    start = await _start(services, request.headers.get("last-event-id") or last_event_id)
    return _stream(request, services, start, None)


@router.get("/accounts/{account_id}/changes", summary="Live changes of one account (Server-Sent Events)")
async def account_changes(
    account_id: str,
    request: Request,
    _: Reader,
    last_event_id: Annotated[str | None, Query(alias="lastEventId", max_length=64)] = None,
) -> StreamingResponse:
    """Each change of one account's read model; resume with Last-Event-ID."""
    from eventvault_ledger.api.commands import _account_id  # noqa: PLC0415

    services: Services = request.app.state.services
    start = await _start(services, request.headers.get("last-event-id") or last_event_id)
    return _stream(request, services, start, _account_id(account_id))
