"""Live updates: Server-Sent Events of account read-model changes, resumable by Last-Event-ID.

Each ``account`` event carries an account's summary as the read model has it
once it has passed the change; its ``id`` is the checkpoint of the change in the
log. A client that reconnects with ``Last-Event-ID`` (browsers do it by
themselves) gets every change after that one: none missed, none repeated.
Several changes of one account read in the same page of the log arrive as one
event (the latest), since each event is the account's whole current summary.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse

from eventvault import Checkpoint, EventVaultError
from eventvault_ledger.api.problems import Problem, known_query_only, parse_account_id
from eventvault_ledger.api.query_routes import account_json, parse_place
from eventvault_ledger.api.schemas import problems
from eventvault_ledger.api.security import Reader
from eventvault_ledger.api.services import Services, ServicesDep
from eventvault_ledger.domain import Account

__all__ = ["EventStream", "LastEventIdHeader", "LastEventIdQuery", "router", "stream_start"]

router = APIRouter(prefix="/api/query", tags=["live"], dependencies=[Depends(known_query_only)])
log = logging.getLogger("eventvault_ledger.api")

ACCOUNT_EVENTS: Final = (
    "AccountOpened",
    "MoneyDeposited",
    "MoneyWithdrawn",
    "AccountClosed",
    "TransferSent",
    "TransferReceived",
    "TransferRefunded",
    "PersonalDataErased",  # the owner becomes [redacted]
)
_PREFIX: Final = "account-"
_PAGE: Final = 200

LastEventIdHeader = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        max_length=64,
        description="The id of the last event received: the stream resumes right after it.",
    ),
]
LastEventIdQuery = Annotated[
    str | None,
    Query(alias="lastEventId", max_length=64, description="The same as the Last-Event-ID header."),
]


class EventStream(StreamingResponse):
    """A ``text/event-stream`` response."""

    media_type = "text/event-stream"


_STREAM_RESPONSES: Final[dict[int | str, dict[str, Any]]] = {
    200: {
        "description": "A stream of `account` events (data: the account's summary; id: a checkpoint)",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    },
    **problems(401, 403, 404, 422),
}


async def stream_start(services: Services, last_event_id: str | None) -> Checkpoint:
    """Where a live stream starts: after ``Last-Event-ID`` (a checkpoint or an event id), else at the head."""
    if not last_event_id:
        return await services.store.head()
    place = parse_place(last_event_id, "Last-Event-ID")
    if isinstance(place, Checkpoint):
        return place
    found = await services.store.checkpoint_at(place)
    if found is None:
        raise Problem(
            422,
            "validation",
            "Invalid request",
            "Last-Event-ID names no event of this stream",
            parameter="Last-Event-ID",
        )
    return found


async def _changes(
    request: Request, services: Services, start: Checkpoint, account_id: str | None
) -> AsyncIterator[bytes]:
    settings = services.settings
    yield b"retry: 2000\n\n"
    checkpoint = start
    try:
        # The server stopping ends the stream at once (the client reconnects from its
        # last event id): an open stream would otherwise hold the stop up.
        while not services.closing.is_set() and not await request.is_disconnected():
            page = await services.store.read_all(checkpoint, limit=_PAGE, event_types=ACCOUNT_EVENTS)
            if page.checkpoint == checkpoint:
                woken = await services.wait_for_events(checkpoint, timeout=settings.sse_keepalive)
                if not woken and not services.closing.is_set():
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
    except EventVaultError as exc:
        # The store closed under the stream (the server is stopping) or failed: end the
        # stream; the client reconnects from its last event id.
        log.info("event stream ended: %s", exc)


def _stream(request: Request, services: Services, start: Checkpoint, account_id: str | None) -> EventStream:
    return EventStream(
        _changes(request, services, start, account_id),
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


@router.get(
    "/accounts/changes",
    summary="Live changes of every account (Server-Sent Events)",
    response_class=EventStream,
    responses=_STREAM_RESPONSES,
)
async def all_changes(
    request: Request,
    services: ServicesDep,
    _: Reader,
    last_event_id_header: LastEventIdHeader = None,
    last_event_id: LastEventIdQuery = None,
) -> EventStream:
    """Each change of an account's read model as an ``account`` event; resume with Last-Event-ID."""
    start = await stream_start(services, last_event_id_header or last_event_id)
    return _stream(request, services, start, None)


@router.get(
    "/accounts/{account_id}/changes",
    summary="Live changes of one account (Server-Sent Events)",
    response_class=EventStream,
    responses=_STREAM_RESPONSES,
)
async def account_changes(
    account_id: str,
    request: Request,
    services: ServicesDep,
    _: Reader,
    last_event_id_header: LastEventIdHeader = None,
    last_event_id: LastEventIdQuery = None,
) -> EventStream:
    """Each change of one account's read model; resume with Last-Event-ID."""
    aid = parse_account_id(account_id)
    if await services.store.stream_version(Account.stream_id_for(aid)) == 0:
        raise Problem(404, "account-not-found", "Unknown account", f"no account {aid}")
    start = await stream_start(services, last_event_id_header or last_event_id)
    return _stream(request, services, start, aid)
