"""Who is calling and what they may do: one authentication at the edge, one scope check per route.

:class:`Guard` runs before routing, on every request. Without tokens it lets
through only requests that arrived from this machine (a server with no tokens
gives everyone every scope). With tokens, every ``/api`` request (and
``/metrics``) must carry a known bearer token, or it is answered 401 there and
then, whatever its path, query string, headers or body: nothing else about it
is looked at first. The caller it finds is kept in the request's state;
:func:`authorize` (the routes' one scope check) reads it from there.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import Depends, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from eventvault_ledger.api.problems import Problem, problem_response
from eventvault_ledger.api.settings import SCOPES, Token, is_loopback

__all__ = ["ANONYMOUS", "Admin", "Guard", "Principal", "Reader", "Writer", "authenticate", "authorize"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, and what they may do."""

    actor: str
    """Who the events this caller records name (the token's subject)."""
    key: str
    """What the server keeps per caller (Idempotency-Keys) is kept under: the token's id."""
    scopes: frozenset[str]


ANONYMOUS: Final = Principal("anonymous", "anonymous", SCOPES)
_METRICS: Final = Principal("metrics", "metrics", frozenset())
_PUBLIC: Final = Principal("public", "public", frozenset())  # what needs no token: no scope

_CHALLENGE: Final = 'Bearer realm="eventvault"'


def _unauthorized(detail: str, challenge: str = _CHALLENGE) -> Problem:
    return Problem(401, "unauthorized", "Authentication required", detail, {"WWW-Authenticate": challenge})


def _credential(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; 401 for anything else."""
    if not authorization:
        raise _unauthorized("send Authorization: Bearer <token>")
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential:
        raise _unauthorized("send Authorization: Bearer <token>")
    return credential


def _matches(secret: str, credential: bytes) -> bool:
    # Constant-time comparison: the time taken says nothing about the secret.
    return hmac.compare_digest(secret.encode(), credential)


def authenticate(tokens: tuple[Token, ...], authorization: str | None) -> Principal:
    """The caller of an Authorization header's value; 401 if it names no token of ``tokens``."""
    credential = _credential(authorization).encode()
    for token in tokens:
        if _matches(token.secret, credential):
            return Principal(token.subject, token.id, token.scopes)
    raise _unauthorized("the bearer token is not valid", f'{_CHALLENGE}, error="invalid_token"')


def authorize(scope: Scope, needed: str) -> Principal:
    """The caller :class:`Guard` found for this request, who must hold ``needed``; 403 otherwise."""
    principal = scope.get("state", {}).get("principal")
    if not isinstance(principal, Principal):  # pragma: no cover - the guard runs before every route
        raise _unauthorized("send Authorization: Bearer <token>")
    if needed not in principal.scopes:
        raise Problem(
            403,
            "forbidden",
            "Not allowed",
            f"this token lacks the {needed!r} scope",
            {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{needed}"'},
        )
    return principal


class Guard:
    """Refuse, before anything else reads the request, what the caller may not send at all.

    - No tokens configured: only requests from a loopback address are served
      (403 ``loopback-only`` otherwise), each as the anonymous caller, who holds
      every scope. A proxy on this machine that forwards others' requests must
      pass their address on (uvicorn reads X-Forwarded-For from 127.0.0.1).
    - Tokens configured: every ``/api`` request needs one (401 otherwise), and
      ``/metrics`` needs the metrics token or an admin token. Everything else
      (the dashboard's files, /healthz, /readyz, the API's documents) is open.
    """

    def __init__(self, app: ASGIApp, tokens: tuple[Token, ...], metrics_token: str | None) -> None:
        self.app = app
        self.tokens = tokens
        self.metrics_token = metrics_token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI call."""
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            principal = self._principal(scope)
        except Problem as problem:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await problem_response(problem, Request(scope))(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)

    def _principal(self, scope: Scope) -> Principal:
        if not self.tokens:
            client = scope.get("client")
            if client is None or not _from_loopback(str(client[0])):
                raise Problem(
                    403,
                    "loopback-only",
                    "Served on this machine only",
                    "this server has no tokens, so it answers only requests from this machine; "
                    "start it with --tokens to serve others",
                )
            return ANONYMOUS
        path: str = scope["path"]
        if path.startswith("/api/") or path == "/api":
            return authenticate(self.tokens, _authorization(scope))
        if path == "/metrics":
            authorization = _authorization(scope)
            if self.metrics_token is not None and _matches(
                self.metrics_token, _credential(authorization).encode()
            ):
                return _METRICS
            return authorize({"state": {"principal": authenticate(self.tokens, authorization)}}, "admin")
        return _PUBLIC


# Most requests come from a few addresses: read each once (bounded, whoever sends them).
_from_loopback: Final = functools.lru_cache(maxsize=1024)(is_loopback)


def _authorization(scope: Scope) -> str | None:
    found: str | None = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            if found is not None:
                raise _unauthorized("send one Authorization header")
            found = value.decode("latin-1")
    return found


def require(scope: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency: the caller, who must hold ``scope``."""
    if scope not in SCOPES:
        raise ValueError(scope)

    async def dependency(request: Request) -> Principal:
        return authorize(request.scope, scope)

    return dependency


Reader = Annotated[Principal, Depends(require("read"))]
"""A route parameter: the caller, who may read."""
Writer = Annotated[Principal, Depends(require("write"))]
"""A route parameter: the caller, who may send commands."""
Admin = Annotated[Principal, Depends(require("admin"))]
"""A route parameter: the caller, who may operate the server."""
