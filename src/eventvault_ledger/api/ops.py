"""Operations: health, readiness, metrics, projection status and rebuild."""

from __future__ import annotations

import contextlib
import logging
import re
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response

from eventvault import EventVaultError
from eventvault.projections import ProjectionStatus, RebuildProgress
from eventvault_ledger.api.problems import Problem, known_query_only
from eventvault_ledger.api.schemas import Health, ProjectionList, Ready, RebuildStarted, problems
from eventvault_ledger.api.security import Admin, Reader
from eventvault_ledger.api.services import ServicesDep

__all__ = ["camel", "router"]

router = APIRouter(tags=["operations"])
log = logging.getLogger("eventvault_ledger.api")

_CAMEL = re.compile(r"_([a-z])")


def camel(value: Any) -> Any:
    """Snake-case keys to camelCase, recursively."""
    if isinstance(value, dict):
        return {_CAMEL.sub(lambda m: m[1].upper(), k): camel(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [camel(v) for v in value]
    return value


def status_json(status: ProjectionStatus) -> dict[str, Any]:
    """A projection's status as the API shows it."""
    return camel(asdict(status))  # type: ignore[no-any-return]


# Probes may ask with HEAD: the same answers, without a body (the routes are the GET ones,
# kept out of the OpenAPI document, which lists each operation once).
@router.head("/healthz", include_in_schema=False)
@router.get("/healthz", summary="The process is up", response_model=None, responses={200: {"model": Health}})
async def healthz() -> dict[str, str]:
    """Always ok while the process serves requests."""
    return {"status": "ok"}


@router.head("/readyz", include_in_schema=False)
@router.get(
    "/readyz",
    summary="The store answers and the projections run",
    response_model=None,
    responses={200: {"model": Ready, "description": "Ready"}, **problems(503)},
)
async def readyz(services: ServicesDep) -> JSONResponse:
    """200 when the store is reachable and (if run here) no projection has stopped; else 503."""
    try:
        head = await services.store.head()
        statuses = await services.runner.status()
    except EventVaultError as exc:
        # What went wrong names hosts and driver errors: the log has it, the caller does not.
        log.warning("readyz: the store is not reachable: %s", exc)
        raise Problem(
            503, "not-ready", "Not ready", "the store is not reachable", {"Retry-After": "1"}
        ) from None
    problems = [
        f"{s.name} is {s.state}"
        for s in statuses
        if s.state == "failed" or (services.settings.run_projections and s.state == "stopped")
    ]
    if problems:
        raise Problem(503, "not-ready", "Not ready", "; ".join(problems), {"Retry-After": "5"})
    return JSONResponse({"status": "ready", "head": str(head), "projections": [s.name for s in statuses]})


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "description": "The text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(services: ServicesDep) -> Response:
    """Appends, command latency, request latency, projection lag and rate.

    With tokens configured it takes an admin token or the metrics token (the guard checks).
    """
    with contextlib.suppress(EventVaultError):  # the scrape answers; the gauges keep their last values
        services.metrics.projections(await services.runner.status())
    return Response(services.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get(
    "/api/projections",
    summary="Status of every projection",
    dependencies=[Depends(known_query_only)],
    response_model=None,
    responses={200: {"model": ProjectionList, "description": "Every projection"}, **problems(401, 403)},
)
async def projections(services: ServicesDep, _: Reader) -> dict[str, Any]:
    """Checkpoint, head, lag in events and seconds, events/s, state and last error of each projection."""
    statuses = await services.runner.status()
    return {"items": [status_json(s) for s in statuses]}


@router.post(
    "/api/projections/{name}/rebuild",
    status_code=202,
    dependencies=[Depends(known_query_only)],
    summary="Rebuild a projection",
    response_model=None,
    responses={
        202: {"model": RebuildStarted, "description": "Started"},
        **problems(401, 403, 404, 413, 422),
    },
)
async def rebuild(name: str, services: ServicesDep, _: Admin) -> JSONResponse:
    """Start rebuilding ``name`` into new tables; the old ones serve until the swap.

    This server builds the new tables itself, whether or not it runs the
    projections: on one started with ``--no-projections`` the workers elsewhere
    keep the old tables current until the swap, then follow it.
    """
    if name not in services.runner.projections:
        raise Problem(404, "projection-not-found", "Unknown projection", f"no projection is named {name!r}")
    progress: RebuildProgress = await services.runner.rebuild(name)
    return JSONResponse(camel(asdict(progress)), status_code=202)
