"""The FastAPI application: commands and queries on separate paths, operations, the dashboard."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.routing import Match, Mount
from starlette.types import Scope

import eventvault
from eventvault_ledger.api import commands, live, ops, query_routes
from eventvault_ledger.api.middleware import BodyLimitMiddleware, RequestIdMiddleware, TimingMiddleware
from eventvault_ledger.api.problems import MEDIA_TYPE, install_problem_handlers
from eventvault_ledger.api.services import Services
from eventvault_ledger.api.settings import Settings

__all__ = ["create_app"]

DASHBOARD = Path(__file__).resolve().parent.parent / "web"


def create_app(settings: Settings | None = None) -> FastAPI:
    """The ledger's HTTP application for ``settings`` (the store opens when the app starts)."""
    settings = settings or Settings()
    services = Services(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            # Inside the try: a start that fails half way still closes what it opened
            # (a pool left running would keep the process from ever exiting).
            await services.start()
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
    )
    app.state.services = services
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    install_problem_handlers(app)

    def observe(method: str, route: str, status: int, seconds: float) -> None:
        services.metrics.requests.labels(method, route, str(status)).observe(seconds)

    app.add_middleware(TimingMiddleware, observe=observe)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "If-Match", "X-Request-ID"],
            expose_headers=["ETag", "X-Request-ID", "Location", *query_routes.READ_HEADERS],
        )
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)

    app.include_router(commands.router)
    app.include_router(live.router)  # before the query routes: /accounts/changes is not an account id
    app.include_router(query_routes.router)
    app.include_router(ops.router)

    static = settings.static_dir or DASHBOARD
    if (static / "index.html").is_file():
        app.router.routes.append(_Dashboard("/", StaticFiles(directory=static, html=True), name="dashboard"))
    return app


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


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document, with every error answered as application/problem+json."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                description=DESCRIPTION,
                routes=app.routes,
            )
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    for status, response in operation.get("responses", {}).items():
                        if status[:1] in "45":
                            response["content"] = {MEDIA_TYPE: {"schema": {"$ref": _PROBLEM_REF}}}
            app.openapi_schema = document
        return app.openapi_schema

    return openapi


_PROBLEM_REF = "#/components/schemas/ProblemDocument"

DESCRIPTION = """\
Commands (`/api/command/...`) append events and answer with the account's new
`version` and the event's `position`; queries (`/api/query/...`) read the read
models, which projections keep current. Pass a command's `position` as
`consistentWith` to read your own writes. Errors are `application/problem+json`
(RFC 9457) with stable `type`s. See docs/api.md for idempotency keys, If-Match,
live updates and tokens.
"""
