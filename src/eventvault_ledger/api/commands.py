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
import json
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any, Final

from fastapi.responses import JSONResponse
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from eventvault import AggregateNotFound, AppendResult, Metadata, StreamDeleted, WrongExpectedVersion
from eventvault_ledger.api.problems import Problem, parse_account_id, problem_from
from eventvault_ledger.api.schemas import PROBLEM_REF, problems
from eventvault_ledger.api.security import Principal, authorize
from eventvault_ledger.api.services import Services, services_of
from eventvault_ledger.currencies import ACTIVE
from eventvault_ledger.domain import (
    MAX_AMOUNT,
    MAX_DESCRIPTION_LENGTH,
    MAX_OWNER_NAME_LENGTH,
    Account,
    parse_amount,
)
from eventvault_ledger.errors import LedgerError, VersionMismatch
from eventvault_ledger.numbers import IF_MATCH_PATTERN, check_expected_version, parse_if_match
from eventvault_ledger.open_limit import open_account as open_limited

__all__ = [
    "KEY_PARAMETER",
    "PREFIX",
    "amount_field",
    "begin_command",
    "command_metadata",
    "command_operation",
    "invalid_request",
    "json_object",
    "money_body",
    "openapi_paths",
    "routes",
    "run_idempotent",
    "text_field",
]

_NAMESPACE: Final = uuid.UUID("6f0c8f7e-3f7b-4c55-9a55-6576656e7476")  # ids derived from idempotency keys
_KEY_PATTERN: Final = r"^[\x21-\x7e]{1,200}$"
_KEY: Final = re.compile(_KEY_PATTERN)
_AMOUNT_TEXT_MAX: Final = 64
# What parse_amount reads, and positive: at least one digit that is not zero. The
# currency's minor units are a rule of the account, checked after (422 invalid-amount).
_AMOUNT_PATTERN: Final = r"^\s*\+?(0*[1-9][0-9]*(\.[0-9]+)?|0+\.[0-9]*[1-9][0-9]*)\s*$"
# How far back in an account's stream a refused, keyed command looks for its own
# event (a first attempt that landed but whose answer was never kept: a crash, or
# a retry that reached another server process meanwhile).
_REPLAY_WINDOW: Final = 1000

PREFIX: Final = "/api/command"

# The commands are plain Starlette routes: each reads its request itself, with the
# one scope check every route uses (security.authorize), the services through the
# function behind every other route's ServicesDep (services.services_of), and no
# dependency solving, which would cost more than the rest of the framework's work on
# a deposit. The OpenAPI document describes them by hand (openapi_paths, at the end).


def _headers(request: Request) -> tuple[str | None, str | None]:
    """The Idempotency-Key and If-Match of a command, each given at most once; 422 otherwise."""
    key: str | None = None
    if_match: str | None = None
    for name, value in request.scope["headers"]:
        if name == b"idempotency-key":
            if key is not None:
                raise invalid_request("send one Idempotency-Key header", parameter="Idempotency-Key")
            key = value.decode("latin-1")
        elif name == b"if-match":
            if if_match is not None:
                raise invalid_request("send one If-Match header", parameter="If-Match")
            if_match = value.decode("latin-1")
    if key is not None and not _KEY.fullmatch(key):
        raise invalid_request(
            "Idempotency-Key must be 1-200 visible ASCII characters (no spaces)", parameter="Idempotency-Key"
        )
    return key, if_match


def begin_command(request: Request) -> tuple[Principal, str | None, str | None]:
    """The caller, who may write, and the command's headers; a command takes no query parameter."""
    principal = authorize(request.scope, "write")
    if request.scope["query_string"]:
        names = sorted({k[:40] for k in request.query_params})
        shown = ", ".join(repr(n) for n in names[:5])
        raise invalid_request(
            f"unknown query parameter(s) {shown}; this route takes: none", parameter=names[0] if names else ""
        )
    key, if_match = _headers(request)
    return principal, key, if_match


# -- request bodies ------------------------------------------------------------------


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


# Every number becomes a Decimal: 0.1 stays 0.1, and a thousand-digit integer is an
# amount that is too large, not a parser error. Built once: json.loads with hooks
# builds a decoder per call.
_DECODER: Final = json.JSONDecoder(parse_float=Decimal, parse_int=Decimal, parse_constant=_no_constants)


def invalid_request(detail: str, **extra: Any) -> Problem:
    """A 422 validation problem for the request (``field`` or ``parameter`` in ``extra``)."""
    return Problem(422, "validation", "Invalid request", detail, **extra)


async def json_object(request: Request, allowed: frozenset[str]) -> dict[str, Any]:
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
        raise invalid_request(f"the body is not valid JSON: {reason}") from None
    if not isinstance(data, dict):
        raise invalid_request("the body must be a JSON object")
    unknown = sorted(set(data) - allowed)
    if unknown:
        shown = ", ".join(repr(u[:40]) for u in unknown[:5])
        expected = f"expected {', '.join(sorted(allowed))}" if allowed else "this command takes none"
        raise invalid_request(f"unknown field(s): {shown}; {expected}", field=unknown[0][:40])
    return data


def text_field(data: dict[str, Any], name: str, *, required: bool) -> str:
    """The body's text field ``name`` ("" if absent and not required); a 422 if it is not a string."""
    if name not in data:
        if required:
            raise invalid_request(f"{name} is required", field=name)
        return ""
    value = data[name]
    if not isinstance(value, str):
        raise invalid_request(f"{name} must be a string", field=name)
    return value


def amount_field(data: dict[str, Any]) -> str | Decimal:
    """The body's ``amount``, as sent (text or an exact number); a 422 if missing or of another type."""
    if "amount" not in data:
        raise invalid_request("amount is required", field="amount")
    value = data["amount"]
    if not isinstance(value, str | Decimal):  # bool, null, list, object
        raise invalid_request('amount must be a decimal string ("12.50") or a JSON number', field="amount")
    if isinstance(value, str) and len(value) > _AMOUNT_TEXT_MAX:
        raise Problem(422, "invalid-amount", "Invalid amount", "amount is too long", field="amount")
    return value


def command_metadata(request: Request, principal: Principal, key: str | None) -> Metadata:
    """The metadata a command's events carry: who, the request id, the idempotency key."""
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
        # Scoped per token (its id, derived from the secret, never from its subject or its
        # place in the token file): two callers that happen to pick the same key neither
        # see each other's answers nor have their commands taken for each other's retries.
        # A space joins them: it is in neither a token id nor a key, and unlike NUL
        # PostgreSQL text can hold it.
        self.scoped = f"{principal.key} {key}"

    def event_ids(self, count: int = 1) -> list[uuid.UUID]:
        return [uuid.uuid5(_NAMESPACE, f"{self.scoped}\x00{i}") for i in range(count)]

    def account_id(self) -> uuid.UUID:
        return uuid.uuid5(_NAMESPACE, f"open\x00{self.scoped}")


Handler = Callable[[_Keyed | None], Awaitable[JSONResponse]]
Recover = Callable[[_Keyed], Awaitable[JSONResponse | None]]


async def run_idempotent(
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
    services = services_of(request)
    if key is None:
        return await handler(None)
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
                and isinstance(exc, LedgerError | Problem | VersionMismatch)
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


def _limited(value: str, name: str, limit: int, code: str, title: str) -> str:
    # As the OpenAPI document says: the text as sent is at most ``limit`` characters
    # (the account then counts it again, normalised and stripped).
    if len(value) > limit:
        raise Problem(
            422, code, title, f"{name} has at most {limit} characters, got {len(value)}", field=name
        )
    return value


async def open_account(request: Request) -> Response:
    """Open an account; answers 201 with its id, version 1 and the position of its first event."""
    principal, idempotency_key, _ = begin_command(request)
    services = services_of(request)
    body = await json_object(request, frozenset({"ownerName", "currency"}))
    owner = _limited(
        text_field(body, "ownerName", required=True),
        "ownerName",
        MAX_OWNER_NAME_LENGTH,
        "invalid-owner-name",
        "Invalid owner name",
    )
    currency = text_field(body, "currency", required=True)

    async def handler(keyed: _Keyed | None) -> JSONResponse:
        started = time.perf_counter()
        try:
            account = Account.open(owner, currency, account_id=None if keyed is None else keyed.account_id())
            # The owner's open accounts in the currency are decided across accounts (open_limit).
            result = await open_limited(
                services.store,
                account,
                metadata=command_metadata(request, principal, None if keyed is None else keyed.key),
                event_id=None if keyed is None else keyed.event_ids()[0],
            )
        except Exception as exc:
            services.metrics.command("open", problem_from(exc).code, time.perf_counter() - started)
            raise
        services.metrics.command("open", "ok", time.perf_counter() - started)
        return _accepted(result, account.id, 201)

    return await run_idempotent(request, principal, idempotency_key, body, handler)


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
    services = services_of(request)

    async def handler(keyed: _Keyed | None) -> JSONResponse:
        started = time.perf_counter()
        try:
            result = await _execute(
                services,
                account_id,
                command,
                if_match=if_match,
                metadata=command_metadata(request, principal, None if keyed is None else keyed.key),
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

    return await run_idempotent(request, principal, key, body, handler, recover)


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
            check_expected_version(if_match, account.version)
            command(account)
            try:
                result = await services.repository.save(account, metadata=metadata, event_ids=event_ids)
            except WrongExpectedVersion as exc:  # another writer got there between the load and the save
                raise VersionMismatch(if_match, exc.actual) from None
    if result is None:  # pragma: no cover - every command records one event
        raise Problem(500, "internal", "Internal error", "the command recorded nothing")
    return result


async def _move_money(request: Request, kind: str) -> Response:
    principal, key, if_match_header = begin_command(request)
    account_id = parse_account_id(request.path_params["account_id"])
    body = await json_object(request, frozenset({"amount", "description"}))
    raw_amount = amount_field(body)
    description = _limited(
        text_field(body, "description", required=False),
        "description",
        MAX_DESCRIPTION_LENGTH,
        "invalid-description",
        "Invalid description",
    )
    if_match = parse_if_match(if_match_header)

    def command(account: Account) -> None:
        amount = parse_amount(raw_amount, account.currency)
        if kind == "deposit":
            account.deposit(amount, description)
        else:
            account.withdraw(amount, description)

    return await _command(
        request, principal, kind, account_id, command, if_match=if_match, key=key, body=body
    )


async def deposit(request: Request) -> Response:
    """Pay money into an account."""
    return await _move_money(request, "deposit")


async def withdraw(request: Request) -> Response:
    """Pay money out of an account; 422 insufficient-funds if the balance is smaller."""
    return await _move_money(request, "withdraw")


async def close(request: Request) -> Response:
    """Close an account at a zero balance; 422 account-not-empty otherwise, 409 if already closed.

    It takes no body, or an empty JSON object: any field is refused, as on the other commands.
    """
    principal, key, if_match = begin_command(request)
    account_id = parse_account_id(request.path_params["account_id"])
    if (await request.body()).strip():
        await json_object(request, frozenset())
    return await _command(
        request,
        principal,
        "close",
        account_id,
        Account.close,
        if_match=parse_if_match(if_match),
        key=key,
        body={},
    )


async def erase_personal_data(request: Request) -> Response:
    """Erase the owner's personal data (admin scope): the owner name reads as `[redacted]` from now on.

    Appends `PersonalDataErased` to the account (read models re-project the
    owner as the placeholder), then destroys the account's key, so the name
    sealed in its `AccountOpened` can no longer be read by anyone: every
    read, replay and export shows `[redacted]`. The events stay. The account
    keeps working (deposits, withdrawals, transfers, close). 204 each time:
    a second call finds it erased and changes nothing. A deleted account
    (`DELETE /api/store/streams/{id}`, soft or for ever) is erased too, 204:
    its key is destroyed and nothing is recorded (its stream takes no event;
    the read models dropped it at its delete). What is and is not erased
    (backups, replicas, earlier exports): docs/data-protection.md.
    """
    principal = authorize(request.scope, "admin")
    if request.scope["query_string"]:
        raise invalid_request("this route takes no query parameter", parameter=min(request.query_params))
    account_id = parse_account_id(request.path_params["account_id"])
    if (await request.body()).strip():
        await json_object(request, frozenset())
    services = services_of(request)
    stream_id = Account.stream_id_for(account_id)
    started = time.perf_counter()
    try:
        async with services.lock_for(account_id):
            try:
                await services.repository.update(
                    Account,
                    account_id,
                    Account.erase_personal_data,
                    metadata=command_metadata(request, principal, None),
                    retries=services.settings.command_retries,
                )
            except (AggregateNotFound, StreamDeleted):
                # A deleted account takes no event (a tombstone refuses it, and an
                # append would write a soft-deleted stream again), and the read
                # models dropped it at its delete; its events stay stored until a
                # scavenge, and exports and backups hold them: its key still goes.
                if not (await services.store.stream_lifecycle(stream_id)).deleted:
                    raise
        # After the event landed: a failure here leaves the key in place, and the
        # next call (which records nothing more) destroys it.
        await services.store.forget(stream_id)
    except Exception as exc:
        services.metrics.command("erase", problem_from(exc).code, time.perf_counter() - started)
        raise
    services.metrics.command("erase", "ok", time.perf_counter() - started)
    return Response(status_code=204)


routes: Final = [
    Route(f"{PREFIX}/accounts", open_account, methods=["POST"], name="open_account"),
    Route(
        f"{PREFIX}/accounts/{{account_id}}/personal-data",
        erase_personal_data,
        methods=["DELETE"],
        name="erase_personal_data",
    ),
    Route(f"{PREFIX}/accounts/{{account_id}}/deposit", deposit, methods=["POST"], name="deposit"),
    Route(f"{PREFIX}/accounts/{{account_id}}/withdraw", withdraw, methods=["POST"], name="withdraw"),
    Route(f"{PREFIX}/accounts/{{account_id}}/close", close, methods=["POST"], name="close"),
]
"""The command routes, for the app's router."""


# -- the OpenAPI document of the commands ----------------------------------------------------

# What the account refuses in a name or a description (as the domain does, by Unicode
# category: control, line and paragraph separators, format characters), as ranges of
# code points; tests/api check them against unicodedata. Lone surrogates, refused too,
# are left out: they are no characters (UTF-8 cannot carry them) and most regex engines
# cannot name them.
REFUSED_RANGES: Final = (
    (0x0, 0x1F), (0x7F, 0x9F), (0xAD, 0xAD), (0x600, 0x605), (0x61C, 0x61C), (0x6DD, 0x6DD),
    (0x70F, 0x70F), (0x890, 0x891), (0x8E2, 0x8E2), (0x180E, 0x180E), (0x200B, 0x200F),
    (0x2028, 0x202E), (0x2060, 0x2064), (0x2066, 0x206F), (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB), (0x110BD, 0x110BD), (0x110CD, 0x110CD), (0x13430, 0x13438),
    (0x1BCA0, 0x1BCA3), (0x1D173, 0x1D17A), (0xE0001, 0xE0001), (0xE0020, 0xE007F),
)  # fmt: skip
# The white space str.strip() removes that is not refused anyway: a name of only these is blank.
BLANK: Final = r"\u0020\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"


def _char(code: int) -> str:
    # BMP code points as \uXXXX (ECMA-262 and Python read them alike); others as themselves.
    return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)


_REFUSED: Final = "".join(_char(a) if a == b else f"{_char(a)}-{_char(b)}" for a, b in REFUSED_RANGES)
# (?!\n) before the end: Python's $ also matches before a final line break, which
# ECMA-262's does not; with it, both dialects read these patterns alike.
OWNER_NAME_PATTERN: Final = f"^[^{_REFUSED}]*[^{_REFUSED}{BLANK}][^{_REFUSED}]*(?!\\n)$"
DESCRIPTION_PATTERN: Final = f"^[^{_REFUSED}]*(?!\\n)$"


def _result(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"ETag": {"description": "The account's new version", "schema": {"type": "string"}}},
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/CommandResult"}}},
    }


KEY_PARAMETER: Final = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes the command safe to retry: a retry with the same key and body gets the first "
    "answer and records nothing more. 1-200 visible ASCII characters.",
    "schema": {"type": "string", "pattern": _KEY_PATTERN},
}
_IF_MATCH_PARAMETER: Final = {
    "name": "If-Match",
    "in": "header",
    "required": False,
    "description": 'Run only if the account is at this version (e.g. "3" or 3, as the ETag); '
    "412 otherwise. * means any version.",
    "schema": {"type": "string", "pattern": IF_MATCH_PATTERN},
}
_ACCOUNT_PARAMETER: Final = {
    "name": "account_id",
    "in": "path",
    "required": True,
    "description": "The account's id (a UUID)",
    "schema": {"type": "string", "title": "Account Id"},
}


def command_operation(
    endpoint: Callable[..., Any],
    summary: str,
    parameters: list[dict[str, Any]],
    responses: dict[str, Any],
    errors: tuple[int, ...],
    body: dict[str, Any] | None,
) -> dict[str, Any]:
    """The OpenAPI operation of a command route (its body, parameters and answers)."""
    operation: dict[str, Any] = {
        "tags": ["commands"],
        "summary": summary,
        "description": (endpoint.__doc__ or "").strip(),
        "operationId": endpoint.__name__,
        "parameters": parameters,
        "responses": {
            **responses,
            **{
                str(status): {
                    "description": entry["description"],
                    "content": {"application/json": {"schema": {"$ref": PROBLEM_REF}}},
                }
                for status, entry in problems(*errors).items()
            },
        },
    }
    if body is not None:
        operation["requestBody"] = {
            # A body whose fields are all optional may be left out (close takes none).
            "required": bool(body.get("required")),
            "content": {"application/json": {"schema": body}},
        }
    return operation


def money_body(example: str) -> dict[str, Any]:
    """The OpenAPI schema of a body holding an amount (and an optional description)."""
    return {
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
                "description": "A positive decimal with at most the currency's minor units and at most "
                f"{MAX_AMOUNT:,} per operation, as a string or a JSON number (read exactly, never through "
                "a float)",
            },
            "description": {
                "type": "string",
                "maxLength": MAX_DESCRIPTION_LENGTH,
                "pattern": DESCRIPTION_PATTERN,
                "description": f"At most {MAX_DESCRIPTION_LENGTH} characters; no control, invisible or "
                "text-direction characters",
            },
        },
    }


_MONEY_ERRORS: Final = (401, 403, 404, 408, 409, 412, 413, 415, 422, 503)


def openapi_paths() -> dict[str, dict[str, Any]]:
    """The commands' entries of the OpenAPI document's ``paths``."""
    money = [_ACCOUNT_PARAMETER, KEY_PARAMETER, _IF_MATCH_PARAMETER]
    open_body = {
        "type": "object",
        "required": ["ownerName", "currency"],
        "additionalProperties": False,
        "properties": {
            "ownerName": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_OWNER_NAME_LENGTH,
                "pattern": OWNER_NAME_PATTERN,
                "description": f"1-{MAX_OWNER_NAME_LENGTH} characters, not all blank; no control, "
                "invisible or text-direction characters",
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
    return {
        f"{PREFIX}/accounts": {
            "post": command_operation(
                open_account,
                "Open an account",
                [KEY_PARAMETER],
                {
                    "201": {
                        **_result("Opened"),
                        "links": {
                            name: {
                                "operationId": name,
                                "parameters": {"account_id": "$response.body#/accountId"},
                            }
                            for name in ("deposit", "withdraw", "close")
                        },
                        "headers": {
                            "ETag": {"description": "The account's version", "schema": {"type": "string"}},
                            "Location": {
                                "description": "The account's query path",
                                "schema": {"type": "string"},
                            },
                        },
                    }
                },
                (401, 403, 408, 409, 413, 415, 422, 503),
                open_body,
            )
        },
        f"{PREFIX}/accounts/{{account_id}}/deposit": {
            "post": command_operation(
                deposit,
                "Deposit money",
                money,
                {"200": _result("Deposited")},
                _MONEY_ERRORS,
                money_body("10.00"),
            )
        },
        f"{PREFIX}/accounts/{{account_id}}/withdraw": {
            "post": command_operation(
                withdraw,
                "Withdraw money",
                money,
                {"200": _result("Withdrawn")},
                _MONEY_ERRORS,
                money_body("5.00"),
            )
        },
        f"{PREFIX}/accounts/{{account_id}}/close": {
            "post": command_operation(
                close,
                "Close an account",
                [_ACCOUNT_PARAMETER, KEY_PARAMETER, _IF_MATCH_PARAMETER],
                {"200": _result("Closed")},
                _MONEY_ERRORS,
                {"type": "object", "additionalProperties": False, "maxProperties": 0},
            )
        },
        f"{PREFIX}/accounts/{{account_id}}/personal-data": {
            "delete": command_operation(
                erase_personal_data,
                "Erase the owner's personal data",
                [_ACCOUNT_PARAMETER],
                {"204": {"description": "Erased (now or before): the owner reads as [redacted]"}},
                (401, 403, 404, 408, 413, 415, 422, 503),
                None,
            )
        },
    }
