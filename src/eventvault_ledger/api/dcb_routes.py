"""Dynamic consistency boundaries over HTTP: query reads of the log and conditional appends.

``GET /api/dcb/read`` reads the events a query matches (dcb.events); ``POST
/api/dcb/append`` appends events unless an event matching its condition was
stored after the condition's position (409 ``append-condition-failed``).

Events appended here are the caller's own: their types must not be the ledger's
(those are written by its commands, which check its rules), and their data is
stored and read back as the JSON given. On a store without DCB support both
routes answer 501 ``dcb-not-supported``.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Final

import msgspec
from fastapi import APIRouter, Depends, Request
from fastapi import Query as Param
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel
from pydantic.json_schema import models_json_schema

from eventvault import (
    AppendCondition,
    AppendConditionFailed,
    DCBNotSupported,
    EventStore,
    InvalidInput,
    Metadata,
    NewEvent,
    Query,
    QueryItem,
    RawEvent,
    RecordedEvent,
    uuid7,
)
from eventvault_ledger.api.problems import Problem, known_query_only, validation_problem
from eventvault_ledger.api.schemas import ProblemDocument, problems
from eventvault_ledger.api.security import Reader, Writer
from eventvault_ledger.api.services import ServicesDep

__all__ = ["append_events", "openapi_schemas", "read_events", "router"]

router = APIRouter(prefix="/api/dcb", tags=["dcb"], dependencies=[Depends(known_query_only)])

MAX_READ: Final = 1000
MAX_APPEND: Final = 100

_NOT_SUPPORTED: Final[dict[int | str, dict[str, Any]]] = {
    501: {"model": ProblemDocument, "description": "The store has no DCB support (dcb-not-supported)"}
}
_CONFLICT: Final[dict[int | str, dict[str, Any]]] = {
    409: {
        "model": ProblemDocument,
        "description": "An event the condition forbids was stored after its position "
        "(append-condition-failed)",
    }
}


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class QueryItemIn(_Model):
    """One alternative: events of one of ``types`` (any if none) carrying every one of ``tags``."""

    types: list[str] = Field(default_factory=list, max_length=50)
    tags: list[str] = Field(default_factory=list, max_length=50)


class ConditionIn(_Model):
    """Fail if an event matching ``failIfEventsMatch`` was stored after ``after`` (anywhere if absent)."""

    fail_if_events_match: list[QueryItemIn] = Field(min_length=1, max_length=50)
    after: int | None = Field(None, ge=0, le=2**63 - 1)


class EventIn(_Model):
    """An event to append: its type, its data (a JSON object), its tags and, for retries, its id."""

    type: str = Field(min_length=1, max_length=128)
    data: dict[str, Any]
    tags: list[str] = Field(default_factory=list, max_length=100)
    event_id: uuid.UUID | None = Field(None, description="Send the same id again to retry safely.")


class AppendIn(_Model):
    """A conditional append."""

    events: list[EventIn] = Field(min_length=1, max_length=MAX_APPEND)
    condition: ConditionIn | None = None


class AppendedDoc(_Model):
    """Where the append landed."""

    position: int = Field(description="The global position of the last appended event.")


class EventDoc(_Model):
    """A stored event, as a query read returns it."""

    position: int
    event_id: str
    event_type: str
    stream_id: str
    version: int
    tags: list[str]
    data: dict[str, Any] = Field(description="The stored JSON, as written.")
    occurred_at: str
    recorded_at: str


class ReadDoc(_Model):
    """The events the query matched, and the head to pass as a condition's ``after``."""

    events: list[EventDoc]
    head: int


def openapi_schemas() -> dict[str, Any]:
    """The schemas of the append's body (parsed by the route itself), for the document's components."""
    _, document = models_json_schema(
        [(AppendIn, "validation")], by_alias=True, ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = document["$defs"]
    return schemas


def parse_query(text: str) -> Query:
    """The query of the ``query`` parameter: ``[{"types": [...], "tags": [...]}, ...]``."""
    try:
        value = msgspec.json.decode(text)
    except msgspec.DecodeError:
        raise _invalid("query", 'query is JSON: [{"types": ["..."], "tags": ["..."]}]') from None
    try:
        return Query.from_json(value)
    except InvalidInput as exc:
        raise _invalid("query", f"query: {exc}") from None


def _invalid(parameter: str, detail: str) -> Problem:
    return Problem(422, "validation", "Invalid request", detail, parameter=parameter)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _event_json(e: RecordedEvent) -> dict[str, Any]:
    return {
        "position": e.position,
        "eventId": str(e.event_id),
        "eventType": e.event_type,
        "streamId": e.stream_id,
        "version": e.stream_version,
        "tags": list(e.tags),
        "data": e.data_as_stored(),
        "occurredAt": _iso(e.occurred_at),
        "recordedAt": _iso(e.recorded_at),
    }


def _not_supported(exc: DCBNotSupported) -> Problem:
    return Problem(
        501,
        "dcb-not-supported",
        "Not supported by this store",
        f"the {exc.backend} event store does not support dynamic consistency boundaries yet",
    )


async def read_events(store: EventStore, query: str, after: int, limit: int) -> dict[str, Any]:
    """The answer of ``GET /api/dcb/read`` on ``store`` (Problem on bad input or no DCB)."""
    parsed = parse_query(query)
    try:
        read = await store.read(parsed, after=after, limit=limit)
    except DCBNotSupported as exc:
        raise _not_supported(exc) from None
    return {"events": [_event_json(e) for e in read.events], "head": read.head}


async def append_events(store: EventStore, body: AppendIn, metadata: Metadata) -> dict[str, Any]:
    """The answer of ``POST /api/dcb/append`` on ``store`` (Problem on a conflict, bad input or no DCB)."""
    try:
        events = [
            NewEvent(
                RawEvent(e.type, msgspec.json.encode(e.data)),
                metadata=metadata,
                tags=e.tags,
                event_id=e.event_id or uuid7(),
            )
            for e in body.events
        ]
        condition = None
        if body.condition is not None:
            query = Query(
                [QueryItem(types=i.types, tags=i.tags) for i in body.condition.fail_if_events_match]
            )
            condition = AppendCondition(query, after=body.condition.after)
        result = await store.append_events(events, condition=condition)
    except DCBNotSupported as exc:
        raise _not_supported(exc) from None
    except AppendConditionFailed as exc:
        raise Problem(
            409,
            "append-condition-failed",
            "The append condition failed",
            f"the event at position {exc.position} matches the condition's query and was stored "
            + ("before the append" if exc.after is None else f"after position {exc.after}")
            + ": read again, decide again, retry",
            position=exc.position,
            after=exc.after,
        ) from None
    except InvalidInput as exc:
        raise Problem(422, "validation", "Invalid request", str(exc)) from None
    return {"position": result.position}


@router.get(
    "/read",
    summary="Read the events a query matches",
    response_model=ReadDoc,
    responses={**problems(401, 403, 422), **_NOT_SUPPORTED},
)
async def read(
    services: ServicesDep,
    _: Reader,
    query: Annotated[
        str,
        Param(
            max_length=16_384,
            description='A JSON list of items, [{"types": ["..."], "tags": ["..."]}]: an event matches '
            "an item if its type is one of the item's types (any, if none) and it carries all its tags.",
        ),
    ],
    after: Annotated[int, Param(ge=0, le=2**63 - 1, description="Only events after this position.")] = 0,
    limit: Annotated[int, Param(ge=1, le=MAX_READ, description="At most this many events.")] = 100,
) -> dict[str, Any]:
    """The matching events, oldest first, and ``head``: the after of a condition decided on them."""
    return await read_events(services.store, query, after, limit)


async def parse_append(request: Request) -> AppendIn:
    """The body of an append: JSON (415 if it says it is not, 422 if it is not), shaped as AppendIn."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise Problem(415, "unsupported-media-type", "Unsupported media type", "send application/json")
    try:
        data = msgspec.json.decode(await request.body())
    except msgspec.DecodeError as exc:
        raise Problem(422, "validation", "Invalid request", f"the body is not valid JSON: {exc}") from None
    try:
        return AppendIn.model_validate(data)
    except ValidationError as exc:
        raise validation_problem([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


@router.post(
    "/append",
    summary="Append events unless the condition fails",
    response_model=AppendedDoc,
    responses={**problems(401, 403, 413, 415, 422), **_CONFLICT, **_NOT_SUPPORTED},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/AppendIn"}}},
        }
    },
)
async def append(request: Request, services: ServicesDep, principal: Writer) -> dict[str, Any]:
    """Append atomically; 409 ``append-condition-failed`` if a matching event came after ``after``."""
    body = await parse_append(request)
    request_id = str(request.state.request_id)
    metadata = Metadata(actor=principal.actor, request_id=request_id, correlation_id=request_id)
    return await append_events(services.store, body, metadata)
