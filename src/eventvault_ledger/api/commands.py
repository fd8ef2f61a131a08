"""The command side: open, deposit, withdraw, close. Writes only; answers with a version and a position.

Two headers make commands safe to retry and to race:

- ``Idempotency-Key``: the first answer given to a key is kept and given again
  to every retry of the same request (same caller, path, body and If-Match),
  with ``Idempotent-Replayed: true``; the same key on another request is a 422.
  The key also seeds the ids of the events the command records, so the store
  itself refuses to record them twice, whatever process the retry reaches.
- ``If-Match: <version>``: the command runs only if the account is still at
  that version (412 otherwise). Without it, a command that loses a race with
  another writer is run again on the new state, inside the server.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from decimal import Decimal
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.telemetry import get_telemetry_data
from starlette.responses import Response

from eventvault import AppendResult, Metadata, WrongExpectedVersion
from eventvault_ledger.api.problems import Problem, known_query_only, parse_account_id, problem_from
from eventvault_ledger.api.schemas import CommandResult, problems
from eventvault_ledger.api.security import Principal, Writer, allowed
from eventvault_ledger.api.services import Services
from eventvault_ledger.currencies import ACTIVE
from eventvault_ledger.domain import MAX_AMOUNT, Account, parse_amount
from eventvault_ledger.errors import LedgerError

__all__ = ["router"]

_NAMESPACE: Final = uuid.UUID("6f0c8f7e-3f7b-4c55-9a55-6576656e7476")  # ids derived from idempotency keys
_KEY_PATTERN: Final = r"^[\x21-\x7e]{1,200}$"
_KEY: Final = re.compile(_KEY_PATTERN)
_IF_MATCH_PATTERN: Final = r'^\s*(\*|(W/)?"?[0-9]{1,18}"?)\s*$'
_IF_MATCH: Final = re.compile(r'\s*(?:W/)?"?(\d{1,18})"?\s*')
_AMOUNT_TEXT_MAX: Final = 64
_AMOUNT_PATTERN: Final = r"^\s*[+-]?[0-9]+(\.[0-9]+)?\s*$"  # what parse_amount reads; the rules come after
# How far back in an account's stream a refused, keyed command looks for its own
# event (a first attempt that landed but whose answer was never kept: a crash, or
# a retry that reached another server process meanwhile).
_REPLAY_WINDOW: Final = 1000

IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=_KEY_PATTERN,
        description="Makes the command safe to retry: a retry with the same key and body gets the first "
        "answer and records nothing more. 1-200 visible ASCII characters.",
    ),
]
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        pattern=_IF_MATCH_PATTERN,
        description='Run only if the account is at this version (e.g. "3" or 3, as the ETag); '
        "412 otherwise. * means any version.",
    ),
]


class _CommandRoute(APIRoute):
    """A command route that skips FastAPI's dependency solving for the requests it can read alone.

    Solving a command's dependencies (the unknown-query check, the token, two
    validated headers) costs more than the rest of the framework's work on the
    request. A request with no query string, a token allowed to write (or none
    needed), and at most one of each command header, every one of them well
    formed, goes straight to the endpoint with the values the dependencies would
    have given it. Anything else takes FastAPI's own path, so every refusal
    (401, 403, an unknown query parameter, a malformed header) is the one it
    gives. The route's declaration, and so the OpenAPI document, is unchanged.
    Every command takes a Writer, so the token is checked for the write scope;
    with FastAPI's telemetry on, requests take its path, which records them.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        standard = super().get_route_handler()
        endpoint = self.endpoint
        takes = frozenset(inspect.signature(endpoint).parameters)
        if not takes <= _LEAN_PARAMETERS:  # pragma: no cover - every command route takes these only
            return standard

        async def handler(request: Request) -> Response:
            arguments = _lean_arguments(request, takes)
            if arguments is None or get_telemetry_data() is not None:
                return await standard(request)
            response: Response = await endpoint(**arguments)
            return response

        return handler


_LEAN_PARAMETERS: Final = frozenset({"request", "principal", "account_id", "idempotency_key", "if_match"})
_LEAN_HEADERS: Final = frozenset({b"authorization", b"idempotency-key", b"if-match"})
# Well-formed If-Match values, in the ASCII whitespace every regex engine agrees on;
# anything else goes through FastAPI's own validation of _IF_MATCH_PATTERN.
_PLAIN_IF_MATCH: Final = re.compile(r'[ \t]*(?:\*|(?:W/)?"?[0-9]{1,18}"?)[ \t]*')


def _lean_arguments(request: Request, takes: frozenset[str]) -> dict[str, Any] | None:
    """The endpoint's arguments, as its dependencies would give them; None to let them decide."""
    scope = request.scope
    if scope.get("query_string"):
        return None  # known_query_only refuses every query parameter of a command
    found: dict[bytes, str] = {}
    for name, value in scope["headers"]:
        if name in _LEAN_HEADERS:
            if name in found:
                return None
            found[name] = value.decode("latin-1")
    principal = allowed(request.app.state.services.settings.tokens, found.get(b"authorization"), "write")
    if principal is None:
        return None
    key = found.get(b"idempotency-key")
    if key is not None and not _KEY.fullmatch(key):
        return None
    arguments: dict[str, Any] = {"request": request, "principal": principal, "idempotency_key": key}
    if "if_match" in takes:
        if_match = found.get(b"if-match")
        if if_match is not None and not _PLAIN_IF_MATCH.fullmatch(if_match):
            return None
        arguments["if_match"] = if_match
    request.state.actor = principal.actor
    if "account_id" in takes:
        arguments["account_id"] = scope["path_params"]["account_id"]
    return arguments


router = APIRouter(
    prefix="/api/command",
    tags=["commands"],
    dependencies=[Depends(known_query_only)],
    route_class=_CommandRoute,
)


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


# -- request bodies ------------------------------------------------------------------


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


# Every number becomes a Decimal: 0.1 stays 0.1, and a thousand-digit integer is an
# amount that is too large, not a parser error. Built once: json.loads with hooks
# builds a decoder per call.
_DECODER: Final = json.JSONDecoder(parse_float=Decimal, parse_int=Decimal, parse_constant=_no_constants)


def _invalid(detail: str, **extra: Any) -> Problem:
    return Problem(422, "validation", "Invalid request", detail, **extra)


async def _json_object(request: Request, allowed: frozenset[str]) -> dict[str, Any]:
    """The request body as a JSON object, numbers read exactly (never through float)."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise Problem(415, "unsupported-media-type", "Unsupported media type", "send application/json")
    raw = await request.body()
    try:
        # As json.loads reads bytes: UTF-8, -16 or -32, told apart by their first bytes.
        data = _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (ValueError, RecursionError) as exc:
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc) or type(exc).__name__
        raise _invalid(f"the body is not valid JSON: {reason}") from None
    if not isinstance(data, dict):
        raise _invalid("the body must be a JSON object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        shown = ", ".join(repr(u[:40]) for u in unknown[:5])
        expected = f"expected {', '.join(sorted(allowed))}" if allowed else "this command takes none"
        raise _invalid(f"unknown field(s): {shown}; {expected}", field=unknown[0][:40])
    return data


def _text(data: dict[str, Any], name: str, *, required: bool) -> str:
    if name not in data:
        if required:
            raise _invalid(f"{name} is required", field=name)
        return ""
    value = data[name]
    if not isinstance(value, str):
        raise _invalid(f"{name} must be a string", field=name)
    return value


def _amount(data: dict[str, Any]) -> str | Decimal:
    if "amount" not in data:
        raise _invalid("amount is required", field="amount")
    value = data["amount"]
    if not isinstance(value, str | Decimal):  # bool, null, list, object
        raise _invalid('amount must be a decimal string ("12.50") or a JSON number', field="amount")
    if isinstance(value, str) and len(value) > _AMOUNT_TEXT_MAX:
        raise Problem(422, "invalid-amount", "Invalid amount", "amount is too long", field="amount")
    return value


def _if_match(header: str | None) -> int | None:
    if header is None or header.strip() == "*":
        return None
    m = _IF_MATCH.fullmatch(header)
    if m is None:
        raise _invalid('If-Match must be a version number like "3", or *', parameter="If-Match")
    return int(m[1])


def _metadata(request: Request, principal: Principal, key: str | None) -> Metadata:
    request_id = str(request.state.request_id)
    return Metadata(
        actor=principal.actor,
        request_id=request_id,
        correlation_id=request_id,
        extra={"idempotency_key": key} if key else {},
    )


# The encoder JSONResponse builds on every call, built once (the same bytes).
_ENCODE: Final = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


class _Answer(JSONResponse):
    """A JSON answer rendered as JSONResponse renders it, without making an encoder per response."""

    def render(self, content: Any) -> bytes:
        return _ENCODE(content).encode("utf-8")


def _accepted(result: AppendResult, account_id: str, status: int = 200) -> JSONResponse:
    body = {
        "accountId": account_id,
        "version": result.stream_version,
        "position": result.positions[-1],
        "checkpoint": str(result.checkpoint),
    }
    headers = {"ETag": f'"{result.stream_version}"'}
    if status == 201:
        headers["Location"] = f"/api/query/accounts/{account_id}"
    return _Answer(body, status_code=status, headers=headers)


# -- idempotency -------------------------------------------------------------------------


class _Keyed:
    """An Idempotency-Key as its caller sent it, scoped to that caller."""

    def __init__(self, principal: Principal, key: str) -> None:
        self.key = key
        # Scoped per caller: two clients that happen to pick the same key neither see
        # each other's answers nor have their commands taken for each other's retries.
        # A space joins them: it is in neither a subject nor a key, and unlike NUL
        # PostgreSQL text can hold it.
        self.scoped = f"{principal.actor} {key}"

    def event_ids(self, count: int = 1) -> list[uuid.UUID]:
        return [uuid.uuid5(_NAMESPACE, f"{self.scoped}\x00{i}") for i in range(count)]

    def account_id(self) -> uuid.UUID:
        return uuid.uuid5(_NAMESPACE, f"open\x00{self.scoped}")


Handler = Callable[[_Keyed | None], Awaitable[JSONResponse]]
Recover = Callable[[_Keyed], Awaitable[JSONResponse | None]]


async def _idempotent(
    request: Request,
    principal: Principal,
    key: str | None,
    body: dict[str, Any],
    handler: Handler,
    recover: Recover | None = None,
) -> JSONResponse:
    """Run ``handler`` once per Idempotency-Key: a retry gets the first answer, nothing more.

    ``recover`` is asked, when a keyed command is refused, whether an earlier
    attempt of it already landed (its answer then is the first one).
    """
    services = _services(request)
    if key is None:
        return await handler(None)
    if not _KEY.fullmatch(key):
        raise _invalid(
            "Idempotency-Key must be 1-200 visible ASCII characters (no spaces)", parameter="Idempotency-Key"
        )
    keyed = _Keyed(principal, key)
    canonical = json.dumps(body, sort_keys=True, default=str, separators=(",", ":"))
    request_text = f"{request.method} {request.url.path}\n{request.headers.get('if-match', '')}\n{canonical}"
    fingerprint = hashlib.sha256(request_text.encode()).hexdigest()
    # Retries racing each other in this process take turns: the later ones then find
    # the first answer on record instead of running the command again.
    async with services.lock_for(f"idempotency {keyed.scoped}"):
        stored = await asyncio.to_thread(services.idempotency.claim, keyed.scoped, fingerprint)
        if stored.fingerprint != fingerprint:
            raise Problem(
                422,
                "idempotency-key-reused",
                "Idempotency key reused",
                "this Idempotency-Key was used for another request; use a new key for a new command",
            )
        if stored.status is not None and stored.body is not None:
            return JSONResponse(
                json.loads(stored.body),
                status_code=stored.status,
                headers={**stored.headers, "Idempotent-Replayed": "true"},
                media_type=stored.media_type,
            )
        try:
            response = await handler(keyed)
        except Exception as exc:
            problem = problem_from(exc)
            landed = None
            if (
                recover is not None
                and isinstance(exc, LedgerError | Problem)
                and problem.status in (409, 412, 422)
            ):
                landed = await recover(keyed)
            if landed is None:
                if 400 <= problem.status < 500 and problem.code not in _TRANSIENT:
                    await asyncio.to_thread(services.idempotency.remember_problem, keyed.scoped, problem)
                raise
            response = landed
        await asyncio.to_thread(services.idempotency.remember, keyed.scoped, response)
        return response


_TRANSIENT: Final = frozenset({"concurrent-modification", "unauthorized", "forbidden"})


async def _landed(services: Services, account_id: str, event_id: uuid.UUID) -> AppendResult | None:
    """Where the event ``event_id`` of the account's stream is, if it is among its latest."""
    stream_id = Account.stream_id_for(account_id)
    for e in await services.store.read_stream(stream_id, backwards=True, limit=_REPLAY_WINDOW):
        if e.event_id == event_id:
            return AppendResult(stream_id, e.stream_version, (e.position,), e.checkpoint)
    return None


# -- commands ------------------------------------------------------------------------------

_COMMAND_ERRORS: Final = problems(401, 403, 404, 409, 412, 413, 415, 422, 503)


@router.post(
    "/accounts",
    status_code=201,
    summary="Open an account",
    response_model=None,
    responses={
        201: {"model": CommandResult, "description": "Opened"},
        **problems(401, 403, 413, 415, 422, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["ownerName", "currency"],
                        "additionalProperties": False,
                        "properties": {
                            "ownerName": {
                                "type": "string",
                                "minLength": 1,
                                "description": "1-200 characters, no control characters",
                                "example": "Ada Lovelace",
                            },
                            "currency": {
                                "type": "string",
                                "enum": sorted(ACTIVE),
                                "description": "An active ISO 4217 code",
                                "example": "EUR",
                            },
                        },
                    }
                }
            },
        }
    },
)
async def open_account(
    request: Request, principal: Writer, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """Open an account; answers 201 with its id, version 1 and the position of its first event."""
    services = _services(request)
    body = await _json_object(request, frozenset({"ownerName", "currency"}))
    owner = _text(body, "ownerName", required=True)
    currency = _text(body, "currency", required=True)

    async def handler(keyed: _Keyed | None) -> JSONResponse:
        started = time.perf_counter()
        try:
            account = Account.open(owner, currency, account_id=None if keyed is None else keyed.account_id())
            result = await services.repository.save(
                account,
                metadata=_metadata(request, principal, None if keyed is None else keyed.key),
                event_ids=None if keyed is None else keyed.event_ids(),
            )
        except Exception as exc:
            services.metrics.command("open", problem_from(exc).code, time.perf_counter() - started)
            raise
        assert result is not None  # noqa: S101 - open always records AccountOpened
        services.metrics.command("open", "ok", time.perf_counter() - started)
        return _accepted(result, account.id, 201)

    return await _idempotent(request, principal, idempotency_key, body, handler)


def _money_body(example: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["amount"],
                        "additionalProperties": False,
                        "properties": {
                            "amount": {
                                "oneOf": [
                                    {
                                        "type": "string",
                                        "pattern": _AMOUNT_PATTERN,
                                        "maxLength": _AMOUNT_TEXT_MAX,
                                        "example": example,
                                    },
                                    {"type": "number", "exclusiveMinimum": 0, "maximum": int(MAX_AMOUNT)},
                                ],
                                "description": "A positive decimal with at most the currency's minor units, "
                                "as a string or a JSON number (read exactly, never through a float)",
                            },
                            "description": {
                                "type": "string",
                                "description": "At most 500 characters, no control characters",
                            },
                        },
                    }
                }
            },
        }
    }


async def _command(
    request: Request,
    principal: Principal,
    kind: str,
    account_id: str,
    command: Callable[[Account], None],
    *,
    if_match: int | None,
    key: str | None,
    body: dict[str, Any],
) -> JSONResponse:
    """Run a command on an existing account, once per key, against If-Match or retried on conflicts."""
    services = _services(request)

    async def handler(keyed: _Keyed | None) -> JSONResponse:
        started = time.perf_counter()
        try:
            result = await _execute(
                services,
                account_id,
                command,
                if_match=if_match,
                metadata=_metadata(request, principal, None if keyed is None else keyed.key),
                event_ids=None if keyed is None else keyed.event_ids(),
            )
        except Exception as exc:
            services.metrics.command(kind, problem_from(exc).code, time.perf_counter() - started)
            raise
        services.metrics.command(kind, "ok", time.perf_counter() - started)
        return _accepted(result, account_id)

    async def recover(keyed: _Keyed) -> JSONResponse | None:
        result = await _landed(services, account_id, keyed.event_ids()[0])
        return None if result is None else _accepted(result, account_id)

    return await _idempotent(request, principal, key, body, handler, recover)


async def _execute(
    services: Services,
    account_id: str,
    command: Callable[[Account], None],
    *,
    if_match: int | None,
    metadata: Metadata,
    event_ids: list[uuid.UUID] | None,
) -> AppendResult:
    """Run ``command`` on the account: against If-Match's version, or retried on conflicts."""
    async with services.lock_for(account_id):  # one command per account at a time in this process
        if if_match is None:
            _, result = await services.repository.update(
                Account,
                account_id,
                command,
                metadata=metadata,
                event_ids=event_ids,
                retries=services.settings.command_retries,
            )
        else:
            account = await services.repository.load(Account, account_id)
            if account.version != if_match:
                raise _stale(if_match, account.version)
            command(account)
            try:
                result = await services.repository.save(account, metadata=metadata, event_ids=event_ids)
            except WrongExpectedVersion as exc:
                raise _stale(if_match, exc.actual) from None
    if result is None:  # pragma: no cover - every command records one event
        raise Problem(500, "internal", "Internal error", "the command recorded nothing")
    return result


def _stale(expected: int, actual: int) -> Problem:
    return Problem(
        412,
        "precondition-failed",
        "The account changed",
        f"If-Match asked for version {expected}, but the account is at version {actual}",
        currentVersion=actual,
    )


async def _move_money(
    request: Request,
    principal: Principal,
    account_id: str,
    kind: str,
    if_match_header: str | None,
    key: str | None,
) -> JSONResponse:
    account_id = parse_account_id(account_id)
    body = await _json_object(request, frozenset({"amount", "description"}))
    raw_amount = _amount(body)
    description = _text(body, "description", required=False)
    if_match = _if_match(if_match_header)

    def command(account: Account) -> None:
        amount = parse_amount(raw_amount, account.currency)
        if kind == "deposit":
            account.deposit(amount, description)
        else:
            account.withdraw(amount, description)

    return await _command(
        request, principal, kind, account_id, command, if_match=if_match, key=key, body=body
    )


@router.post(
    "/accounts/{account_id}/deposit",
    summary="Deposit money",
    response_model=None,
    responses={200: {"model": CommandResult, "description": "Deposited"}, **_COMMAND_ERRORS},
    openapi_extra=_money_body("10.00"),
)
async def deposit(
    account_id: str,
    request: Request,
    principal: Writer,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> JSONResponse:
    """Pay money into an account."""
    return await _move_money(request, principal, account_id, "deposit", if_match, idempotency_key)


@router.post(
    "/accounts/{account_id}/withdraw",
    summary="Withdraw money",
    response_model=None,
    responses={200: {"model": CommandResult, "description": "Withdrawn"}, **_COMMAND_ERRORS},
    openapi_extra=_money_body("5.00"),
)
async def withdraw(
    account_id: str,
    request: Request,
    principal: Writer,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> JSONResponse:
    """Pay money out of an account; 422 insufficient-funds if the balance is smaller."""
    return await _move_money(request, principal, account_id, "withdraw", if_match, idempotency_key)


@router.post(
    "/accounts/{account_id}/close",
    summary="Close an account",
    response_model=None,
    responses={200: {"model": CommandResult, "description": "Closed"}, **_COMMAND_ERRORS},
    openapi_extra={
        "requestBody": {
            "required": False,
            "content": {
                "application/json": {
                    "schema": {"type": "object", "additionalProperties": False, "maxProperties": 0}
                }
            },
        }
    },
)
async def close(
    account_id: str,
    request: Request,
    principal: Writer,
    idempotency_key: IdempotencyKey = None,
    if_match: IfMatch = None,
) -> JSONResponse:
    """Close an account at a zero balance; 422 account-not-empty otherwise, 409 if already closed.

    It takes no body, or an empty JSON object: any field is refused, as on the other commands.
    """
    account_id = parse_account_id(account_id)
    if (await request.body()).strip():
        await _json_object(request, frozenset())
    return await _command(
        request,
        principal,
        "close",
        account_id,
        Account.close,
        if_match=_if_match(if_match),
        key=idempotency_key,
        body={},
    )
