"""Errors as ``application/problem+json`` (RFC 9457), with stable ``type`` URIs."""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Sequence
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from eventvault.errors import (
    AggregateNotFound,
    ConcurrencyError,
    EventVaultError,
    InvalidInput,
    StorageFull,
    StoreClosed,
    StoreUnavailable,
    StreamDeleted,
)
from eventvault_ledger.errors import (
    AccountIsClosed,
    AccountNotOpened,
    InvalidAccountId,
    InvalidDescription,
    InvalidOwnerName,
    InvalidQuery,
    LedgerError,
    TooManyOpenAccounts,
    VersionMismatch,
)

__all__ = [
    "PROBLEM_BASE",
    "Problem",
    "install_problem_handlers",
    "known_query_only",
    "problem_response",
    "validation_problem",
]

log = logging.getLogger("eventvault_ledger.api")

PROBLEM_BASE: Final = "https://eventvault.dev/problems/"
MEDIA_TYPE: Final = "application/problem+json"


class Problem(Exception):
    """An HTTP error to answer with a problem document."""

    def __init__(
        self,
        status: int,
        code: str,
        title: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def problem_response(problem: Problem, request: Request | None = None) -> JSONResponse:
    """The problem document of ``problem``."""
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + problem.code,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
        **problem.extra,
    }
    if request is not None:
        body["instance"] = request.url.path
        request_id = getattr(request.state, "request_id", None)
        if request_id:
            body["requestId"] = request_id
    return JSONResponse(body, status_code=problem.status, media_type=MEDIA_TYPE, headers=problem.headers)


_FIELDS: Final[dict[type[LedgerError], str]] = {
    InvalidOwnerName: "ownerName",
    InvalidDescription: "description",
}


def _ledger_status(exc: LedgerError) -> int:
    if isinstance(exc, AccountIsClosed | TooManyOpenAccounts):
        return 409
    if isinstance(exc, AccountNotOpened | InvalidAccountId):
        return 404
    return 422


def problem_from(exc: BaseException) -> Problem:  # noqa: C901, PLR0911, PLR0912 - one branch per error family
    """The problem for an exception raised while serving a request."""
    if isinstance(exc, Problem):
        return exc
    if isinstance(exc, InvalidAccountId | AccountNotOpened):
        return Problem(404, "account-not-found", "Unknown account", "no account has this id")
    if isinstance(exc, LedgerError):
        extra: dict[str, Any] = {}
        for name in ("balance", "requested", "currency"):
            value = getattr(exc, name, None)
            if value is not None:
                extra[name] = str(value)
        if isinstance(exc, TooManyOpenAccounts):
            extra["maxOpenAccounts"] = exc.limit
        field = _FIELDS.get(type(exc))
        if field is not None:
            extra["field"] = field
        return Problem(_ledger_status(exc), exc.code, exc.title, str(exc), **extra)
    if isinstance(exc, AggregateNotFound):
        text = str(exc)
        none = _NO_EVENTS.fullmatch(text)
        detail = f"no account {none[1]}" if none else text.replace("account-", "account ", 1)
        return Problem(404, "account-not-found", "Unknown account", detail)
    if isinstance(exc, VersionMismatch):
        return Problem(
            412,
            "precondition-failed",
            "The account changed",
            f"If-Match asked for version {exc.expected}, but the account is at version {exc.actual}",
            currentVersion=exc.actual,
        )
    if isinstance(exc, ConcurrencyError):
        return Problem(409, "concurrent-modification", "The account changed meanwhile", str(exc))
    if isinstance(exc, StreamDeleted):
        return Problem(
            409, "stream-deleted", "The stream is deleted for ever", str(exc), streamId=exc.stream_id
        )
    if isinstance(exc, InvalidQuery):
        name = camel_name(exc.parameter)
        detail = _PYTHON_NAMES.sub(lambda m: camel_name(m[0]), exc.detail)
        return Problem(422, "validation", "Invalid request", f"{name}: {detail}", parameter=name)
    if isinstance(exc, InvalidInput):
        return Problem(422, "validation", "Invalid request", str(exc))
    if isinstance(exc, StorageFull):
        # 507 with Retry-After: the request was fine and nothing of it was written;
        # the same request succeeds once space is freed (no restart needed).
        return Problem(
            507,
            "storage-full",
            "Insufficient storage",
            "the database's disk is full: nothing was written; retry once space is freed",
            {"Retry-After": "5"},
        )
    if isinstance(exc, StoreClosed):
        # A request still running while the server stops: it may be retried elsewhere or later.
        return Problem(
            503,
            "unavailable",
            "The server is stopping",
            "the server is stopping; retry",
            {"Retry-After": "1"},
        )
    if isinstance(exc, StoreUnavailable):
        # The store's own words name hosts, schemas and driver errors: they go to
        # the log (with the request id), never to the caller.
        return Problem(
            503,
            "unavailable",
            "The store is unavailable",
            "the event store cannot be reached right now; retry after Retry-After seconds "
            "(a command retried with the same Idempotency-Key is applied at most once)",
            {"Retry-After": "1"},
        )
    if isinstance(exc, EventVaultError):
        return Problem(500, "internal", "Internal error", "the server failed; the request id is in the logs")
    return Problem(500, "internal", "Internal error", "the server failed; the request id is in the logs")


_NO_EVENTS: Final = re.compile(r"account-(\S+) has no events")
# The queries' Python parameters that their messages name; the API spells them in camelCase.
_PYTHON_NAMES: Final = re.compile(r"\b(?:min_balance|max_balance|as_of|newest_first|through_version)\b")


def camel_name(name: str) -> str:
    """A snake_case name in camelCase, as the API's JSON and parameters spell it."""
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


_CANONICAL_ID: Final = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def parse_account_id(account_id: str) -> str:
    """The canonical form of an account id from a path; 404 if it cannot be one."""
    if _CANONICAL_ID.fullmatch(account_id):
        return account_id  # already what str(uuid.UUID(...)) gives
    try:
        return str(uuid.UUID(account_id))
    except ValueError:
        raise Problem(404, "account-not-found", "Unknown account", "no account has this id") from None


_HTTP_CODES: Final = {
    400: ("bad-request", "Bad request"),
    401: ("unauthorized", "Authentication required"),
    403: ("forbidden", "Not allowed"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    408: ("request-timeout", "Request timeout"),
    413: ("too-large", "Request body too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def install_problem_handlers(app: FastAPI) -> None:
    """Answer every error with a problem document; never leak a stack trace."""

    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return problem_response(validation_problem(exc.errors()), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code, title = _HTTP_CODES.get(exc.status_code, ("http-error", "HTTP error"))
        headers = dict(exc.headers or {})
        return problem_response(Problem(exc.status_code, code, title, str(exc.detail), headers), request)

    @app.exception_handler(EventVaultError)
    async def _eventvault(request: Request, exc: EventVaultError) -> JSONResponse:
        problem = problem_from(exc)
        if isinstance(exc, StoreUnavailable | StoreClosed):
            # Known conditions (an unreachable database, a full disk, a server stopping),
            # not bugs: one line with the request id (and the store's words), no stack.
            log.warning("request %s refused: %s", getattr(request.state, "request_id", "?"), exc)
        elif problem.status >= 500:
            log.error("request %s failed", getattr(request.state, "request_id", "?"), exc_info=exc)
        return problem_response(problem, request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("request %s failed", getattr(request.state, "request_id", "?"), exc_info=exc)
        return problem_response(problem_from(exc), request)


# What a parameter whose form is checked by a pattern must look like, in words.
_FORMS: Final = {
    "If-Match": 'If-Match must be a version number like "3" (3 and W/"3" work too), or *',
    "Idempotency-Key": "Idempotency-Key must be 1-200 visible ASCII characters (no spaces)",
    "order": "order must be asc or desc",
}
_KINDS: Final = {"query": "parameter", "header": "parameter", "path": "parameter", "cookie": "parameter"}


def validation_problem(errors: Sequence[Any]) -> Problem:
    """The problem of FastAPI's validation errors, in words, naming what is to blame.

    Each error becomes a sentence about the parameter (a query parameter, a
    header, a path segment) or body field by its name in the API, never a
    regular expression; ``parameter`` or ``field`` names the first one.
    """
    described: list[dict[str, str]] = []
    for error in errors:
        location = tuple(str(p) for p in error.get("loc", ()))
        kind = location[0] if location else "body"
        name = ".".join(location[1:]) or kind
        member = _KINDS.get(kind, "field")
        described.append({"location": kind, member: name, "message": _sentence(name, error)})
    detail = "; ".join(e["message"] for e in described) or "invalid request"
    problem = Problem(422, "validation", "Invalid request", detail, errors=described)
    if described:  # the first one to blame, as on every other validation problem
        problem.extra.update((k, v) for k, v in described[0].items() if k in ("parameter", "field"))
    return problem


def _sentence(name: str, error: Any) -> str:  # noqa: PLR0911 - one sentence per kind of error
    kind = str(error.get("type", ""))
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return f"{name} is required"
    if kind == "string_pattern_mismatch":
        return _FORMS.get(name, f"{name} is not in the form this API takes (see /openapi.json)")
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{name} must be a whole number"
    if kind == "greater_than_equal":
        return f"{name} must be at least {ctx.get('ge')}"
    if kind == "less_than_equal":
        return f"{name} must be at most {ctx.get('le')}"
    if kind == "string_too_long":
        return f"{name} must be at most {ctx.get('max_length')} characters"
    if kind == "string_too_short":
        return f"{name} must be at least {ctx.get('min_length')} characters"
    message = str(error.get("msg", "is invalid"))
    return f"{name}: {message[:1].lower()}{message[1:]}"


_QUERY_NAMES: dict[int, frozenset[str]] = {}


async def known_query_only(request: Request) -> None:
    """A dependency: refuse query parameters the route does not take.

    A misspelt filter (``min_balance`` for ``minBalance``) would otherwise be
    ignored, and the answer would look right while being the wrong one.
    """
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:  # pragma: no cover - every API route has one
        return
    names = _QUERY_NAMES.get(id(route))
    if names is None:
        names = _QUERY_NAMES[id(route)] = frozenset(_query_names(dependant))
    unknown = sorted({k for k in request.query_params if k not in names})
    if unknown:
        shown = ", ".join(repr(u[:40]) for u in unknown[:5])
        expected = ", ".join(sorted(names)) or "none"
        raise Problem(
            422,
            "validation",
            "Invalid request",
            f"unknown query parameter(s) {shown}; this route takes: {expected}",
            parameter=unknown[0][:40],
        )


def _query_names(dependant: Any) -> set[str]:
    """The query parameters a route takes, its dependencies' included."""
    names = {str(p.alias) for p in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names
