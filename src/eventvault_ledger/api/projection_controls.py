"""Operators' controls on a projection: pause, resume, reset its checkpoint (admin scope).

The same controls as ``eventvault projections pause|resume|reset``: they are
kept in the database, so workers in every process obey them, whether this
server runs the projections or not (docs/decisions/0029-projection-pause-and-reset.md).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request

from eventvault import InvalidCheckpoint, InvalidInput
from eventvault_ledger.api.ops import status_json
from eventvault_ledger.api.problems import Problem, known_query_only
from eventvault_ledger.api.schemas import ProjectionStatusDoc, problems
from eventvault_ledger.api.security import Admin
from eventvault_ledger.api.services import Services, ServicesDep

__all__ = ["router"]

router = APIRouter(tags=["operations"])

_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"model": ProjectionStatusDoc, "description": "The projection's status after the change"},
    **problems(401, 403, 404, 409, 413, 422),
}


def _known(services: Services, name: str) -> None:
    if name not in services.runner.projections:
        raise Problem(404, "projection-not-found", "Unknown projection", f"no projection is named {name!r}")


async def _status(services: Services, name: str) -> dict[str, Any]:
    return status_json({s.name: s for s in await services.runner.status()}[name])


@router.post(
    "/api/projections/{name}/pause",
    dependencies=[Depends(known_query_only)],
    summary="Pause a projection",
    response_model=None,
    responses=_ANSWERS,
)
async def pause(name: str, services: ServicesDep, _: Admin) -> dict[str, Any]:
    """Stop ``name`` in every process until resumed; its read model keeps serving as it stands."""
    _known(services, name)
    await services.runner.pause(name)
    return await _status(services, name)


@router.post(
    "/api/projections/{name}/resume",
    dependencies=[Depends(known_query_only)],
    summary="Resume a projection",
    response_model=None,
    responses=_ANSWERS,
)
async def resume(name: str, services: ServicesDep, _: Admin) -> dict[str, Any]:
    """Lift a pause and clear a recorded failure: ``name`` goes on from its checkpoint."""
    _known(services, name)
    await services.runner.resume(name)
    return await _status(services, name)


_RESET_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["to"],
                "properties": {
                    "to": {
                        "type": "string",
                        "description": "A checkpoint (an event's `checkpoint`), at or past the projection's.",
                        "example": "0.20",
                    }
                },
            }
        }
    },
}


async def _reset_target(request: Request) -> str:
    """The ``to`` of a reset's body; malformed JSON is a 422 like any invalid field."""
    try:
        data = json.loads(await request.body())
    except (ValueError, RecursionError):
        detail = "the body is not valid JSON"
        raise Problem(422, "validation", "Invalid request", detail, field="to") from None
    if not isinstance(data, dict) or not isinstance(data.get("to"), str):
        raise Problem(422, "validation", "Invalid request", 'the body is {"to": "<checkpoint>"}', field="to")
    return str(data["to"])


@router.post(
    "/api/projections/{name}/reset",
    dependencies=[Depends(known_query_only)],
    summary="Move a paused projection forward to a checkpoint",
    response_model=None,
    responses=_ANSWERS,
    openapi_extra={"requestBody": _RESET_BODY},
)
async def reset(name: str, request: Request, services: ServicesDep, _: Admin) -> dict[str, Any]:
    """Skip the events before ``to`` (a poison event): only a paused projection, only forward."""
    _known(services, name)
    to = await _reset_target(request)
    try:
        await services.runner.reset(name, to)
    except InvalidCheckpoint as exc:
        raise Problem(422, "validation", "Invalid checkpoint", str(exc), field="to") from exc
    except InvalidInput as exc:
        raise Problem(409, "projection-state-conflict", "The projection refuses this", str(exc)) from exc
    return await _status(services, name)
