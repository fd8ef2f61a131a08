"""ASGI middleware: request ids, the body size and time limits, security headers, request metrics."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from eventvault_ledger.api.problems import Problem, problem_response
from eventvault_ledger.numbers import parse_whole_number

__all__ = ["BodyLimitMiddleware", "RequestIdMiddleware", "SecurityHeadersMiddleware", "TimingMiddleware"]

_OK_ID: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-")


class RequestIdMiddleware:
    """Give every request an id (the caller's X-Request-ID if sane) and echo it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = ""
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        request_id = given if 0 < len(given) <= 128 and set(given) <= _OK_ID else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        scope["state"]["started"] = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes with 413, and bodies slower than ``timeout`` with 408.

    Nothing over the limit is kept. A body that is refused is still read (and
    dropped) up to :data:`DRAIN_BYTES`, so that the client, still sending it,
    reads the refusal instead of a connection reset; a longer one, or one sent
    with ``Expect: 100-continue`` (the client waits to be asked for it), is
    answered at once and the connection closed.
    """

    def __init__(self, app: ASGIApp, limit: int, timeout: float = 30.0) -> None:
        self.app = app
        self.limit = limit
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = -1
        expects_continue = False
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                length = parse_whole_number(value.decode("latin-1"))
                declared = -1 if length is None else length  # a bad one: the body is counted as it comes
            elif name == b"expect":
                expects_continue = value.lower() == b"100-continue"
        deadline = asyncio.get_running_loop().time() + self.timeout
        if declared > self.limit:
            whole = False if expects_continue else await self._drain(receive, deadline)
            await problem_response(self._too_large(whole), Request(scope))(scope, receive, send)
            return
        received = 0
        done = False

        async def limited_receive() -> Message:
            nonlocal received, done
            if done:  # the body is in: what follows is the wait for a disconnect, which has no deadline
                return await receive()
            message = await self._receive(receive, deadline)
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                done = not message.get("more_body", False)
                if received > self.limit:
                    whole = done or await self._drain(receive, deadline, received)
                    done = True
                    # Raised inside the app's body read: its problem handler answers 413.
                    problem = self._too_large(whole)
                    raise HTTPException(413, problem.detail, problem.headers)
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self, whole: bool) -> Problem:
        # A body not read to its end would be read as the next request: close instead.
        return Problem(
            413,
            "too-large",
            "Request body too large",
            f"the body is larger than {self.limit} bytes",
            {} if whole else {"Connection": "close"},
        )

    async def _receive(self, receive: Receive, deadline: float) -> Message:
        try:
            async with asyncio.timeout_at(deadline):
                return await receive()
        except TimeoutError:
            raise HTTPException(
                408, f"the body did not arrive within {self.timeout:g}s", {"Connection": "close"}
            ) from None

    async def _drain(self, receive: Receive, deadline: float, read: int = 0) -> bool:
        """Read the rest of the body and drop it; whether it ended within the bounds."""
        try:
            while read <= DRAIN_BYTES:
                message = await self._receive(receive, deadline)
                if message["type"] != "http.request":
                    return False
                read += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return True
        except HTTPException:
            pass
        return False


DRAIN_BYTES: Final = 16 * 1024 * 1024
"""How much of a refused body is read (and dropped) so that its sender gets the answer."""

# What the dashboard runs under: its own scripts and styles only, never inline ones,
# and no page may frame it. The API's JSON answers carry it too (nothing to run there).
CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# /docs is the one page built by another hand (Swagger UI): its start-up script is inline.
DOCS_CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_DOCS: Final = frozenset({"/docs", "/docs/oauth2-redirect"})


class SecurityHeadersMiddleware:
    """Send nosniff, a Content-Security-Policy and no-referrer on every answer; keep redirects relative.

    A ``Location`` is never built from the request's Host header: an absolute
    one (the dashboard's files redirect a folder to its trailing slash) becomes
    the path alone, so a forged Host cannot send anyone elsewhere.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        policy = DOCS_CONTENT_SECURITY_POLICY if scope["path"] in _DOCS else CONTENT_SECURITY_POLICY

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Content-Security-Policy", policy)
                headers.setdefault("Referrer-Policy", "no-referrer")
                location = headers.get("location")
                if location is not None:
                    headers["Location"] = relative(location)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def relative(location: str) -> str:
    """``location`` without scheme and host: a path on this server, whatever the Host header said."""
    parts = urlsplit(location)
    path = "/" + parts.path.lstrip("/")  # "//host/x" would name another host again
    return urlunsplit(("", "", path, parts.query, parts.fragment))


class TimingMiddleware:
    """Observe each request's latency by method, route template and status."""

    def __init__(self, app: ASGIApp, observe: Callable[[str, str, int, float], None]) -> None:
        self.app = app
        self.observe = observe

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.observe(scope.get("method", ""), route, status, time.perf_counter() - started)
