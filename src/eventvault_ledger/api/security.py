"""Bearer tokens with scopes, and the request id carried into event metadata."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any, Final

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from eventvault_ledger.api.problems import Problem
from eventvault_ledger.api.settings import SCOPES, Token

__all__ = ["Admin", "Principal", "Reader", "Writer", "allowed", "require"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, and what they may do."""

    actor: str
    scopes: frozenset[str]


ANONYMOUS: Final = Principal("anonymous", SCOPES)

# Declares the scheme in the OpenAPI document; the checks below are our own, so that
# every refusal is a problem document with the right WWW-Authenticate challenge.
_BEARER: Final = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A token given to the server with --tokens; its scopes (read, write, admin) decide "
    "what it may do. A server started without tokens asks for none (and listens on loopback only).",
)


def _authenticate(tokens: tuple[Token, ...], credential: str) -> Principal:
    if not tokens:
        return ANONYMOUS  # the server then listens on loopback only (checked at start)
    if not credential.strip():
        raise Problem(
            401,
            "unauthorized",
            "Authentication required",
            "send Authorization: Bearer <token>",
            {"WWW-Authenticate": 'Bearer realm="eventvault"'},
        )
    credential = credential.strip()
    for token in tokens:
        # Constant-time comparison: the time taken says nothing about the secret.
        if hmac.compare_digest(token.secret.encode(), credential.encode()):
            return Principal(token.subject, token.scopes)
    raise Problem(
        401,
        "unauthorized",
        "Authentication required",
        "the bearer token is not valid",
        {"WWW-Authenticate": 'Bearer realm="eventvault", error="invalid_token"'},
    )


def require(scope: str) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency: the caller, who must hold ``scope``."""
    if scope not in SCOPES:
        raise ValueError(scope)

    async def dependency(
        request: Request, given: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]
    ) -> Principal:
        principal = _authenticate(
            request.app.state.services.settings.tokens, "" if given is None else given.credentials
        )
        if scope not in principal.scopes:
            raise Problem(
                403,
                "forbidden",
                "Not allowed",
                f"this token lacks the {scope!r} scope",
                {"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
            )
        request.state.actor = principal.actor
        return principal

    return dependency


def allowed(tokens: tuple[Token, ...], authorization: str | None, scope: str) -> Principal | None:
    """The caller of ``authorization`` (the header's value) if it holds ``scope``; None otherwise.

    It accepts exactly what :func:`require` accepts (the header read as HTTPBearer
    reads it) and raises nothing: where it answers None, ``require`` refuses, and
    gives the refusal its problem document.
    """
    if not tokens:
        return ANONYMOUS if scope in ANONYMOUS.scopes else None
    if not authorization:
        return None
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    if not scheme or not credential or scheme.lower() != "bearer":
        return None
    try:
        principal = _authenticate(tokens, credential)
    except Problem:
        return None
    return principal if scope in principal.scopes else None


Reader = Annotated[Principal, Depends(require("read"))]
"""A route parameter: the caller, who may read."""
Writer = Annotated[Principal, Depends(require("write"))]
"""A route parameter: the caller, who may send commands."""
Admin = Annotated[Principal, Depends(require("admin"))]
"""A route parameter: the caller, who may operate the server."""
