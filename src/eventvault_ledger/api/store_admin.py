"""The store seen by an operator: its status, its snapshots, deletes and scavenges (admin scope).

The same figures as ``eventvault db status``, the same snapshot listing and
drop as ``eventvault snapshots ls|drop``, and the same stream deletes and
scavenge as ``eventvault streams delete`` and ``eventvault scavenge``, for the
dashboard's operations page and operators' scripts.
Where the store lives (its URL) stays out of the answers: it may carry a password.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from eventvault import ANY, InvalidInput, StreamDeleted, StreamLifecycle, WrongExpectedVersion
from eventvault.store import schema_version, size_on_disk
from eventvault_ledger.api.problems import Problem, known_query_only
from eventvault_ledger.api.schemas import problems
from eventvault_ledger.api.security import Admin
from eventvault_ledger.api.services import ServicesDep
from eventvault_ledger.read_models import postgres_schema_size

__all__ = [
    "ReadModelLag",
    "RetentionBody",
    "Scavenged",
    "SnapshotDoc",
    "SnapshotList",
    "SnapshotsDropped",
    "StoreStatus",
    "StreamDeletedDoc",
    "StreamLifecycleDoc",
    "router",
]

router = APIRouter(tags=["operations"])


class _Doc(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class ReadModelLag(_Doc):
    """How far one read model is behind the head of the log."""

    name: str
    state: str
    checkpoint: str
    lag_events: int
    lag_seconds: float


class StoreStatus(_Doc):
    """What ``eventvault db status`` shows, without where the store lives."""

    backend: str = Field(description="The store's backend: sqlite, postgresql or memory.")
    schema_version: int | None = Field(description="The event store's schema version; null for memory.")
    events: int = Field(
        description="The events stored: a deleted stream's, and its $StreamDeleted event, until a scavenge."
    )
    streams: int = Field(description="The streams, deleted ones not counted (as `streams ls` lists them).")
    head: str = Field(description="The checkpoint of the last event readers can see.")
    size_bytes: int | None = Field(description="Bytes the store takes on disk; null when unknown (memory).")
    read_models: list[ReadModelLag]


class SnapshotDoc(_Doc):
    """A stored snapshot, without its state."""

    stream_id: str
    type: str = Field(description="The aggregate type: the stream id up to its first '-'.")
    schema_version: int
    stream_version: int = Field(description="The stream version the snapshot was taken at.")
    size: int = Field(description="The length of its state, in bytes.")
    created_at: datetime


class SnapshotList(_Doc):
    """Stored snapshots by stream id, and how many each aggregate type has among them."""

    items: list[SnapshotDoc]
    types: dict[str, int] = Field(description="Aggregate type → how many of the listed snapshots are its.")
    truncated: bool = Field(description="More snapshots match than `limit` listed.")


class SnapshotsDropped(_Doc):
    """How many snapshots a drop deleted."""

    dropped: int


@router.get(
    "/api/store",
    dependencies=[Depends(known_query_only)],
    summary="The store's status",
    response_model=None,
    responses={200: {"model": StoreStatus, "description": "The store's status"}, **problems(401, 403)},
)
async def store_status(services: ServicesDep, _: Admin) -> dict[str, Any]:
    """Schema version, events, streams, head, size on disk, and each read model's lag."""
    store = services.store
    counts = await store.counts()
    statuses = await services.runner.status()
    size = size_on_disk(store)
    if size is None and store.scheme == "postgresql":
        size = await asyncio.to_thread(postgres_schema_size, services.runner)
    doc = StoreStatus(
        backend=store.scheme,
        schema_version=schema_version(store),
        events=counts.events,
        streams=counts.streams,
        head=str(counts.head),
        size_bytes=size,
        read_models=[
            ReadModelLag(
                name=s.name,
                state=s.state,
                checkpoint=s.checkpoint,
                lag_events=s.lag_events,
                lag_seconds=s.lag_seconds,
            )
            for s in statuses
        ],
    )
    return doc.model_dump(mode="json", by_alias=True)


TypeQuery = Annotated[
    str | None,
    Query(
        alias="type",
        min_length=1,
        max_length=200,
        description="Only the snapshots of this aggregate type (its streams are `<type>-...`).",
    ),
]
StreamQuery = Annotated[
    str | None,
    Query(alias="stream", min_length=1, max_length=1000, description="Only this stream's snapshots."),
]

_MAX_LIST = 1000


def _invalid(exc: InvalidInput) -> Problem:
    return Problem(422, "validation", "Invalid request", str(exc))


@router.get(
    "/api/store/snapshots",
    dependencies=[Depends(known_query_only)],
    summary="List the stored snapshots",
    response_model=None,
    responses={200: {"model": SnapshotList, "description": "The snapshots"}, **problems(401, 403, 422)},
)
async def list_snapshots(
    services: ServicesDep,
    _: Admin,
    category: TypeQuery = None,
    limit: Annotated[int, Query(ge=1, le=_MAX_LIST, description="At most this many.")] = _MAX_LIST,
) -> dict[str, Any]:
    """Stream, type, schema version, stream version, size and when taken, by stream id."""
    try:
        found = await services.store.list_snapshots(category=category, limit=limit + 1)
    except InvalidInput as exc:
        raise _invalid(exc) from exc
    items = [
        SnapshotDoc(
            stream_id=i.stream_id,
            type=i.stream_id.split("-", 1)[0],
            schema_version=i.schema_version,
            stream_version=i.stream_version,
            size=i.size,
            created_at=i.created_at,
        )
        for i in found[:limit]
    ]
    types: dict[str, int] = {}
    for item in items:
        types[item.type] = types.get(item.type, 0) + 1
    doc = SnapshotList(items=items, types=types, truncated=len(found) > limit)
    return doc.model_dump(mode="json", by_alias=True)


@router.delete(
    "/api/store/snapshots",
    dependencies=[Depends(known_query_only)],
    summary="Drop stored snapshots",
    response_model=None,
    responses={200: {"model": SnapshotsDropped, "description": "How many went"}, **problems(401, 403, 422)},
)
async def drop_snapshots(
    services: ServicesDep, _: Admin, category: TypeQuery = None, stream: StreamQuery = None
) -> dict[str, Any]:
    """Delete every snapshot, one type's (`type`) or one stream's (`stream`); aggregates then replay events.

    Only a cache goes: the repository saves new snapshots as it did before.
    """
    if category is not None and stream is not None:
        detail = "pass type or stream, not both"
        raise Problem(422, "validation", "Invalid request", detail, parameter="stream")
    try:
        dropped = await services.store.drop_snapshots(category=category, stream_id=stream)
    except InvalidInput as exc:
        raise _invalid(exc) from exc
    return SnapshotsDropped(dropped=dropped).model_dump(by_alias=True)


class StreamDeletedDoc(_Doc):
    """A stream deleted: where its ``$StreamDeleted`` event went."""

    stream_id: str
    version: int = Field(description="The stream version of its $StreamDeleted event.")
    position: int = Field(description="The global position of that event.")
    checkpoint: str = Field(description="The checkpoint of that event (read models past it have seen it).")
    tombstone: bool = Field(description="True: deleted for ever; false: it may be written again.")


class Scavenged(_Doc):
    """What a scavenge removed for good."""

    streams: int = Field(description="The streams it looked at (those with a delete or a retention rule).")
    events_removed: int


# A stream id: no control characters, no whitespace at either end (what the store accepts).
_STREAM_ID = r"^[^\s\x00-\x1f\x7f-\x9f](?:[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f])?$"
StreamPath = Annotated[
    str,
    Path(
        min_length=1,
        max_length=200,
        pattern=_STREAM_ID,
        description="The stream's id, such as `account-<uuid>`.",
    ),
]


@router.delete(
    "/api/store/streams/{stream_id}",
    dependencies=[Depends(known_query_only)],
    summary="Delete a stream (soft, or for ever)",
    response_model=None,
    responses={
        200: {"model": StreamDeletedDoc, "description": "The stream is deleted"},
        **problems(401, 403, 404, 409, 422),
    },
)
async def delete_stream(
    services: ServicesDep,
    _: Admin,
    stream_id: StreamPath,
    tombstone: Annotated[
        bool, Query(description="Delete it for ever: every later append is refused (stream-deleted).")
    ] = False,
    expected_version: Annotated[
        int | None,
        Query(
            alias="expectedVersion",
            ge=1,
            description="Delete only if the stream is at this version (409 concurrent-modification if not).",
        ),
    ] = None,
) -> dict[str, Any]:
    """Append the stream's `$StreamDeleted` event, so that stream reads see no stream and read models drop it.

    A soft delete lets the stream be written again, its versions continuing;
    a tombstone closes it for ever. The events stay stored until a scavenge
    (`POST /api/store/scavenge`). 404 stream-not-found: the stream has no
    events (or is deleted already); 409 stream-deleted: it is tombstoned.
    """
    try:
        result = await services.store.delete_stream(
            stream_id,
            expected_version=ANY if expected_version is None else expected_version,
            tombstone=tombstone,
        )
    except InvalidInput as exc:
        raise _invalid(exc) from exc
    except WrongExpectedVersion as exc:
        raise Problem(
            409,
            "concurrent-modification",
            "The stream is at another version",
            str(exc),
            currentVersion=exc.actual,
        ) from exc
    except StreamDeleted as exc:
        raise Problem(
            409, "stream-deleted", "The stream is deleted for ever", str(exc), streamId=stream_id
        ) from exc
    services.repository.forget_stream(stream_id)
    if result is None:
        raise Problem(
            404, "stream-not-found", "No such stream", f"stream {stream_id!r} has no events to delete"
        )
    doc = StreamDeletedDoc(
        stream_id=stream_id,
        version=result.stream_version,
        position=result.positions[0],
        checkpoint=str(result.checkpoint),
        tombstone=tombstone,
    )
    return doc.model_dump(by_alias=True)


@router.post(
    "/api/store/scavenge",
    dependencies=[Depends(known_query_only)],
    summary="Remove for good what deletes and retention rules hide",
    response_model=None,
    responses={200: {"model": Scavenged, "description": "What went"}, **problems(401, 403)},
)
async def scavenge(services: ServicesDep, _: Admin) -> dict[str, Any]:
    """Remove the events of deleted streams and those past their streams' retention rules.

    Keeps each stream's last event and every event a snapshot still needs;
    read models continue from any checkpoint (`eventvault scavenge` does the same).
    """
    done = await services.store.scavenge()
    return Scavenged(streams=done.streams_total, events_removed=done.events_removed).model_dump(by_alias=True)


class StreamLifecycleDoc(_Doc):
    """A stream's deletes and retention rules, and what stream reads show of it."""

    stream_id: str
    version: int = Field(description="Its version for appends: 0 while deleted (or never written).")
    stored_version: int = Field(description="The version of its last stored event, hidden or not.")
    deleted: bool
    tombstoned: bool
    deleted_version: int = Field(description="The version of its latest $StreamDeleted event (0: none).")
    truncate_before: int = Field(description="Versions below this one are hidden (0: none).")
    max_count: int | None = Field(description="Only this many of its latest events are shown.")
    max_age_seconds: float | None = Field(description="Only events recorded this long ago or less are shown.")
    first_version: int = Field(description="The first version stream reads show (before maxAgeSeconds).")


class RetentionBody(BaseModel):
    """A stream's retention rules: maxCount and maxAgeSeconds together replace its rules."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    max_count: int | None = Field(None, ge=1, le=2**53, description="Keep only its N latest events.")
    max_age_seconds: float | None = Field(
        None, gt=0, le=10**11, description="Keep only the events recorded within this many seconds."
    )
    truncate_before: int | None = Field(
        None, ge=0, le=2**53, description="Hide its versions below this one (0: none); omitted: unchanged."
    )


def _lifecycle_doc(life: StreamLifecycle) -> dict[str, Any]:
    doc = StreamLifecycleDoc(
        stream_id=life.stream_id,
        version=life.visible_version,
        stored_version=life.version,
        deleted=life.deleted,
        tombstoned=life.tombstoned,
        deleted_version=life.deleted_version,
        truncate_before=life.truncate_before,
        max_count=life.max_count,
        max_age_seconds=None if life.max_age is None else life.max_age.total_seconds(),
        first_version=life.first_version,
    )
    return doc.model_dump(by_alias=True)


@router.get(
    "/api/store/streams/{stream_id}/retention",
    dependencies=[Depends(known_query_only)],
    summary="A stream's deletes and retention rules",
    response_model=None,
    responses={
        200: {"model": StreamLifecycleDoc, "description": "The stream's rules"},
        **problems(401, 403, 422),
    },
)
async def stream_retention(services: ServicesDep, _: Admin, stream_id: StreamPath) -> dict[str, Any]:
    """Whether it is deleted, its retention rules, and the first version stream reads show."""
    try:
        return _lifecycle_doc(await services.store.stream_lifecycle(stream_id))
    except InvalidInput as exc:
        raise _invalid(exc) from exc


async def _retention_body(request: Request) -> RetentionBody:
    """The body of a retention PUT; malformed JSON is a 422 like any invalid field."""
    try:
        data = json.loads(await request.body())
    except (ValueError, RecursionError):
        raise Problem(422, "validation", "Invalid request", "the body is not valid JSON") from None
    try:
        return RetentionBody.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"])
        if not field:  # the body as a whole: not an object
            raise Problem(422, "validation", "Invalid request", str(first["msg"])) from None
        raise Problem(422, "validation", "Invalid request", f"{field}: {first['msg']}", field=field) from None


@router.put(
    "/api/store/streams/{stream_id}/retention",
    dependencies=[Depends(known_query_only)],
    summary="Set a stream's retention rules",
    response_model=None,
    responses={
        200: {"model": StreamLifecycleDoc, "description": "The stream's rules"},
        **problems(401, 403, 422),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": RetentionBody.model_json_schema(by_alias=True)}},
        }
    },
)
async def set_stream_retention(
    services: ServicesDep, _: Admin, stream_id: StreamPath, request: Request
) -> dict[str, Any]:
    """Replace its max count and max age (both omitted: no rules), and set its truncation if given.

    Stream reads apply them at once; `POST /api/store/scavenge` removes what they hide.
    """
    body = await _retention_body(request)
    store = services.store
    age = None if body.max_age_seconds is None else timedelta(seconds=body.max_age_seconds)
    try:
        await store.set_retention(stream_id, max_count=body.max_count, max_age=age)
        if body.truncate_before is not None:
            await store.truncate_before(stream_id, body.truncate_before)
        return _lifecycle_doc(await store.stream_lifecycle(stream_id))
    except InvalidInput as exc:
        raise _invalid(exc) from exc
