"""The FastAPI application: commands and queries on separate paths, operations, the dashboard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

import eventvault
from eventvault_ledger.api import commands, live, ops, query_routes
from eventvault_ledger.api.middleware import BodyLimitMiddleware, RequestIdMiddleware, TimingMiddleware
from eventvault_ledger.api.problems import install_problem_handlers
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
        await services.start()
        try:
            yield
        finally:
            await services.stop()

    app = FastAPI(
        title="eventvault ledger",
        version=eventvault.__version__,
        summary="Bank accounts as event streams: commands append events, queries read projections.",
        lifespan=lifespan,
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.services = services
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
            expose_headers=["ETag", "X-Request-ID", "Location"],
        )
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_body_bytes)
    app.add_middleware(RequestIdMiddleware)

    app.include_router(commands.router)
    app.include_router(live.router)  # before the query routes: /accounts/changes is not an account id
    app.include_router(query_routes.router)
    app.include_router(ops.router)

    static = settings.static_dir or DASHBOARD
    if (static / "index.html").is_file():
        app.mount("/", StaticFiles(directory=static, html=True), name="dashboard")
    return app
