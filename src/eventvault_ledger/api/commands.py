"""The command side: open, deposit, withdraw, close. Writes only; answers with a version and a position."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, Final

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from eventvault import AppendResult, Metadata, WrongExpectedVersion
from eventvault_ledger.api.problems import Problem, problem_from
from eventvault_ledger.api.security import Principal, Writer
from eventvault_ledger.api.services import Services
from eventvault_ledger.domain import Account, parse_amount

__all__ = ["router"]

router = APIRouter(prefix="/api/command", tags=["commands"])

_NAMESPACE: Final = uuid.UUID("6f0c8f7e-3f7b-4c55-9a55-6576656e7476")  # ids derived from idempotency keys
_KEY: Final = re.compile(r"[\x21-\x7e]{1,200}")
_IF_MATCH: Final = re.compile(r'\s*(?:W/)?"?(\d{1,18})"?\s*')
_AMOUNT_TEXT_MAX: Final = 64


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


# -- request bodies ------------------------------------------------------------------


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


async def _json_object(request: Request, allowed: frozenset[str]) -> dict[str, Any]:
    """The request body as a JSON object, numbers read exactly (never through float)."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media and media != "application/json" and not media.endswith("+json"):
        raise Problem(415, "unsupported-media-type", "Unsupported media type", "send application/json")
    raw = await request.body()
    try:
        data = json.loads(raw, parse_float=Decimal, parse_constant=_no_constants)
    except (ValueError, RecursionError) as exc:
        raise Problem(422, "validation", "Invalid request", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise Problem(422, "validation", "Invalid request", "the body must be a JSON object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise Problem(422, "validation", "Invalid request", f"unknown field(s): {', '.join(unknown)}")
    return data


def _text(data: dict[str, Any], name: str, *, required: bool) -> str:
    value = data.get(name)
    if value is None:
        if required:
            raise Problem(422, "validation", "Invalid request", f"{name} is required")
        return ""
    if not isinstance(value, str):
        raise Problem(422, "validation", "Invalid request", f"{name} must be a string")
    return value


def _amount(data: dict[str, Any]) -> str | int | Decimal:
    value = data.get("amount")
    if value is None:
        raise Problem(422, "validation", "Invalid request", "amount is required")
    if isinstance(value, bool) or not isinstance(value, str | int | Decimal):
        raise Problem(422, "validation", "Invalid request", "amount must be a decimal string or a number")
    if isinstance(value, str) and len(value) > _AMOUNT_TEXT_MAX:
        raise Problem(422, "invalid-amount", "Invalid amount", "amount is too long")
    return value


def _if_match(request: Request) -> int | None:
    header = request.headers.get("if-match")
    if header is None:
        return None
    m = _IF_MATCH.fullmatch(header)
    if m is None:
        raise Problem(
            422, "validation", "Invalid request", 'If-Match is the account version, e.g. If-Match: "3"'
        )
    return int(m[1])


def _account_id(account_id: str) -> str:
    try:
        return str(uuid.UUID(account_id))
    except ValueError:
        raise Problem(404, "account-not-found", "Unknown account", "no account has this id") from None


def _metadata(request: Request, principal: Principal, key: str | None) -> Metadata:
    request_id = str(request.state.request_id)
    return Metadata(
        actor=principal.actor,
        request_id=request_id,
        correlation_id=request_id,
        extra={"idempotency_key": key} if key else {},
    )


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
    return JSONResponse(body, status_code=status, headers=headers)


# -- idempotency -------------------------------------------------------------------------


async def _idempotent(
    request: Request,
    services: Services,
    body: dict[str, Any],
    handler: Callable[[str | None], Awaitable[JSONResponse]],
) -> JSONResponse:
    """Run ``handler`` once per Idempotency-Key: a retry gets the first answer, nothing more.

    The key also seeds the event ids, so even two retries racing each other
    append once: the store refuses the second copy of the same ids.
    """
    key = request.headers.get("idempotency-key")
    if key is None:
        return await handler(None)
    if not _KEY.fullmatch(key):
        raise Problem(
            422, "validation", "Invalid request", "Idempotency-Key is 1-200 visible ASCII characters"
        )
    canonical = json.dumps(body, sort_keys=True, default=str, separators=(",", ":"))
    fingerprint = hashlib.sha256(f"{request.method} {request.url.path}\n{canonical}".encode()).hexdigest()
    stored = await asyncio.to_thread(services.idempotency.claim, key, fingerprint)
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
        response = await handler(key)
    except Exception as exc:
        problem = problem_from(exc)
        if 400 <= problem.status < 500 and problem.code not in _TRANSIENT:
            await asyncio.to_thread(services.idempotency.remember_problem, key, problem)
        raise
    await asyncio.to_thread(services.idempotency.remember, key, response)
    return response


_TRANSIENT: Final = frozenset({"concurrent-modification", "unauthorized", "forbidden"})


def _ids(key: str | None, count: int) -> list[uuid.UUID] | None:
    return None if key is None else [uuid.uuid5(_NAMESPACE, f"{key}\x00{i}") for i in range(count)]


# -- commands ------------------------------------------------------------------------------


@router.post(
    "/accounts",
    status_code=201,
    summary="Open an account",
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
                            "ownerName": {"type": "string", "maxLength": 200},
                            "currency": {"type": "string", "example": "EUR"},
                        },
                    }
                }
            },
        }
    },
)
async def open_account(request: Request, principal: Writer) -> JSONResponse:
    """Open an account; answers 201 with its id, version 1 and the position of its first event."""
    services = _services(request)
    body = await _json_object(request, frozenset({"ownerName", "currency"}))
    owner = _text(body, "ownerName", required=True)
    currency = _text(body, "currency", required=True)

    async def handler(key: str | None) -> JSONResponse:
        account_id = None if key is None else uuid.uuid5(_NAMESPACE, f"open\x00{key}")
        account = Account.open(owner, currency, account_id=account_id)
        started = time.perf_counter()
        result = await services.repository.save(
            account, metadata=_metadata(request, principal, key), event_ids=_ids(key, 1)
        )
        assert result is not None  # noqa: S101 - open always records AccountOpened
        services.metrics.command("open", "ok", time.perf_counter() - started)
        return _accepted(result, account.id, 201)

    return await _idempotent(request, services, body, handler)


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
                                "oneOf": [{"type": "string", "example": example}, {"type": "number"}],
                                "description": "A positive decimal with at most the currency's minor units",
                            },
                            "description": {"type": "string", "maxLength": 500},
                        },
                    }
                }
            },
        }
    }


async def _move_money(request: Request, principal: Principal, account_id: str, kind: str) -> JSONResponse:
    services = _services(request)
    account_id = _account_id(account_id)
    body = await _json_object(request, frozenset({"amount", "description"}))
    raw_amount = _amount(body)
    description = _text(body, "description", required=False)
    if_match = _if_match(request)

    def command(account: Account) -> None:
        amount = parse_amount(raw_amount, account.currency)
        if kind == "deposit":
            account.deposit(amount, description)
        else:
            account.withdraw(amount, description)

    async def handler(key: str | None) -> JSONResponse:
        started = time.perf_counter()
        metadata = _metadata(request, principal, key)
        result = await _execute(services, account_id, command, if_match=if_match, metadata=metadata, key=key)
        services.metrics.command(kind, "ok", time.perf_counter() - started)
        return _accepted(result, account_id)

    return await _idempotent(request, services, body, handler)


async def _execute(
    services: Services,
    account_id: str,
    command: Callable[[Account], None],
    *,
    if_match: int | None,
    metadata: Metadata,
    key: str | None,
) -> AppendResult:
    """Run ``command`` on the account: against If-Match's version, or retried on conflicts."""
    ids = _ids(key, 1)
    async with services.lock_for(account_id):  # one command per account at a time in this process
        if if_match is None:
            _, result = await services.repository.update(
                Account,
                account_id,
                command,
                metadata=metadata,
                event_ids=ids,
                retries=services.settings.command_retries,
            )
        else:
            account = await services.repository.load(Account, account_id)
            if account.version != if_match:
                raise _stale(if_match, account.version)
            command(account)
            try:
                result = await services.repository.save(account, metadata=metadata, event_ids=ids)
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


@router.post("/accounts/{account_id}/deposit", summary="Deposit money", openapi_extra=_money_body("10.00"))
async def deposit(account_id: str, request: Request, principal: Writer) -> JSONResponse:
    """Pay money into an account."""
    return await _move_money(request, principal, account_id, "deposit")


@router.post("/accounts/{account_id}/withdraw", summary="Withdraw money", openapi_extra=_money_body("5.00"))
async def withdraw(account_id: str, request: Request, principal: Writer) -> JSONResponse:
    """Pay money out of an account; 422 insufficient-funds if the balance is smaller."""
    return await _move_money(request, principal, account_id, "withdraw")


@router.post("/accounts/{account_id}/close", summary="Close an account")
async def close(account_id: str, request: Request, principal: Writer) -> JSONResponse:
    """Close an account at a zero balance; 422 account-not-empty otherwise."""
    services = _services(request)
    account_id = _account_id(account_id)
    if_match = _if_match(request)

    async def handler(key: str | None) -> JSONResponse:
        started = time.perf_counter()
        result = await _execute(
            services,
            account_id,
            Account.close,
            if_match=if_match,
            metadata=_metadata(request, principal, key),
            key=key,
        )
        services.metrics.command("close", "ok", time.perf_counter() - started)
        return _accepted(result, account_id)

    return await _idempotent(request, services, {}, handler)
