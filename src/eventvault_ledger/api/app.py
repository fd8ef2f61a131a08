"""The FastAPI application: commands and queries on separate paths, operations, the dashboard."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.routing import Match, Mount
from starlette.types import Scope

import eventvault
from eventvault_ledger.api import (
    commands,
    dcb_routes,
    live,
    ops,
    projection_controls,
    query_routes,
    store_admin,
    transfer_routes,
)
from eventvault_ledger.api.metrics import Metrics
from eventvault_ledger.api.middleware import (
    BodyLimitMiddleware,
    RequestIdMiddleware,
    SecurityHeadersMiddleware,
    TimingMiddleware,
)
from eventvault_ledger.api.problems import MEDIA_TYPE, install_problem_handlers
from eventvault_ledger.api.schemas import PROBLEM_REF, CommandResult, ProblemDocument
from eventvault_ledger.api.security import Guard
from eventvault_ledger.api.services import Services
from eventvault_ledger.api.settings import Settings

__all__ = ["begin_stop_threadsafe", "create_app"]

DASHBOARD = Path(__file__).resolve().parent.parent / "web"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ledger's HTTP application for ``settings`` (the store opens when the app starts).

    However it is served (``eventvault serve``, or uvicorn given this factory),
    an app without tokens answers only requests from this machine.
    """
    settings = settings or Settings()
    if settings.metrics_token is not None and not settings.tokens:
        raise ValueError("a metrics token needs tokens: without them every endpoint is open on loopback")
    # Made before the app starts: the timing middleware counts into it from the first request.
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await Services.open(settings, metrics=metrics)  # closes what it opened if it fails
        app.state.services = services
        try:
            yield
        finally:
            await services.stop()

    # Swagger UI at /docs from the assets of the fastapi-offline package: it works without internet.
    app = FastAPIOffline(
        title="eventvault ledger",
        version=eventvault.__version__,
        summary="Bank accounts as event streams: commands append events, queries read projections.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
        static_url="/docs/assets",
        # A redirect to the path with(out) its slash would be built from the Host header.
        redirect_slashes=False,
    )
    app.openapi = _openapi(app, settings)  # type: ignore[method-assign]
    install_problem_handlers(app)

    def observe(method: str, route: str, status: int, seconds: float) -> None:
        metrics.requests.labels(method, route, str(status)).observe(seconds)

    # Outermost last: a request meets the request id, the timing, the security headers,
    # CORS (which answers preflights itself), the guard (loopback without tokens; a
    # token for /api), then the body limits, and only then the routes.
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes, timeout=settings.body_timeout)
    app.add_middleware(Guard, tokens=settings.tokens, metrics_token=settings.metrics_token)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "If-Match", "X-Request-ID"],
            expose_headers=["ETag", "X-Request-ID", "Location", *query_routes.READ_HEADERS],
        )
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(TimingMiddleware, observe=observe)
    app.add_middleware(RequestIdMiddleware)

    app.router.routes.extend(commands.routes)
    app.router.routes.extend(transfer_routes.command_routes)
    app.include_router(transfer_routes.router)  # before the query routes, as live's
    app.include_router(live.router)  # before the query routes: /accounts/changes is not an account id
    app.include_router(query_routes.router)
    app.include_router(ops.router)
    app.include_router(dcb_routes.router)
    app.include_router(projection_controls.router)
    app.include_router(store_admin.router)

    static = settings.static_dir or DASHBOARD
    if (static / "index.html").is_file():
        app.router.routes.append(_Dashboard("/", StaticFiles(directory=static, html=True), name="dashboard"))
    return app


def begin_stop_threadsafe(app: FastAPI) -> None:
    """Tell the app's services, from a signal handler or another thread, that the server stops.

    Live streams end at once. Before the app has started there is nothing to tell:
    its stop comes after its start.
    """
    services: Services | None = getattr(app.state, "services", None)
    if services is not None:
        services.begin_stop_threadsafe()


class _Dashboard(Mount):
    """The built dashboard at /, for reads of anything that is not an API route.

    A plain mount at / matches every path and method, so a POST to a query
    route or a DELETE of a command would reach the files (405 "GET, HEAD", or
    404) instead of the router's own answer for the route they almost matched.
    """

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and (
            scope["method"] not in ("GET", "HEAD") or scope["path"].startswith(_API_PREFIXES)
        ):
            return Match.NONE, {}
        return super().matches(scope)


_API_PREFIXES = ("/api/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs")


def _openapi(app: FastAPI, settings: Settings) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document: every error a problem document, the commands, the bearer scheme if asked."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=DESCRIPTION,
                routes=app.routes,
            )
            document["paths"] = {
                **commands.openapi_paths(),
                **transfer_routes.openapi_paths(),
                **document.get("paths", {}),
            }
            schemas = document.setdefault("components", {}).setdefault("schemas", {})
            for model in (CommandResult, ProblemDocument):
                schemas.setdefault(model.__name__, _schema(model))
            for name, schema in dcb_routes.openapi_schemas().items():
                schemas.setdefault(name, schema)
            for path, operations in document["paths"].items():
                for operation in operations.values():
                    _secure(operation, path, settings)
                    for status, response in operation.get("responses", {}).items():
                        if status[:1] in "45":
                            response["content"] = {MEDIA_TYPE: {"schema": {"$ref": PROBLEM_REF}}}
            if settings.tokens:
                document["components"]["securitySchemes"] = {"bearer": _BEARER}
            app.openapi_schema = document
        return app.openapi_schema

    return openapi


def _schema(model: Any) -> dict[str, Any]:
    schema: dict[str, Any] = model.model_json_schema(
        by_alias=True, ref_template="#/components/schemas/{model}"
    )
    return schema


def _secure(operation: dict[str, Any], path: str, settings: Settings) -> None:
    """Declare the bearer token where the server asks for one, and its refusals; nowhere else."""
    responses = operation.setdefault("responses", {})
    guarded = path.startswith("/api/") or path == "/metrics"
    if settings.tokens and guarded:
        operation["security"] = [{"bearer": []}]
        responses.setdefault("401", {"description": "No or an unknown bearer token (unauthorized)"})
        responses.setdefault("403", {"description": "The token lacks the scope (forbidden)"})
    else:
        # Without tokens nobody is asked for one (everything is open, on loopback only).
        responses.pop("401", None)
        responses.pop("403", None)


_BEARER: Final = {
    "type": "http",
    "scheme": "bearer",
    "description": "A token given to the server with --tokens; its scopes (read, write, admin) decide "
    "what it may do. /metrics takes an admin token or the --metrics-token.",
}

DESCRIPTION = """\
Commands (`/api/command/...`) append events and answer with the account's new
`version` and the event's `position`; queries (`/api/query/...`) read the read
models, which projections keep current. Pass a command's `position` as
`consistentWith` to read your own writes. Errors are `application/problem+json`
(RFC 9457) with stable `type`s. See docs/api.md for idempotency keys, If-Match,
live updates and tokens.
"""
