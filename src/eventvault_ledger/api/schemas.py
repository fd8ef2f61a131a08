"""The shapes of request and response bodies, for the OpenAPI document.

Routes build their JSON by hand (money as exact strings, camelCase names), so
these models are never used to parse or serialize: they describe what the
routes send, and the schemathesis run checks every response against them.
Field names are snake_case in Python and camelCase on the wire (aliases).
"""

from __future__ import annotations

from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = [
    "ERROR_STATUSES",
    "PROBLEM_REF",
    "AccountPage",
    "AccountState",
    "AccountSummary",
    "AuditPage",
    "CommandResult",
    "Health",
    "ProblemDocument",
    "ProjectionErrorDoc",
    "ProjectionList",
    "ProjectionStatusDoc",
    "Ready",
    "RebuildProgress",
    "RebuildStarted",
    "TotalsList",
    "TransactionPage",
    "TransferList",
    "TransferView",
    "problems",
]

MONEY: Final = r"^-?[0-9]+(\.[0-9]+)?$"
PROBLEM_REF: Final = "#/components/schemas/ProblemDocument"


class _Doc(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")


class ProblemDocument(_Doc):
    """An error, as RFC 9457 describes it; ``type`` is stable, ``detail`` is for people."""

    type: str = Field(description="A stable URI naming the kind of problem (see docs/api.md).")
    title: str
    status: int
    detail: str
    instance: str | None = Field(None, description="The path of the request.")
    request_id: str | None = Field(None, description="The request id (also the X-Request-ID header).")


class CommandResult(_Doc):
    """What an accepted command did."""

    account_id: str
    version: int = Field(description="The account's version after the command (use it in If-Match).")
    position: int = Field(description="The global position of the event: pass it as consistentWith.")
    checkpoint: str = Field(
        description="The same place as an opaque token (also accepted by consistentWith)."
    )


class AccountSummary(_Doc):
    """An account as the read model holds it."""

    account_id: str
    owner_name: str
    current_balance: str = Field(pattern=MONEY, description="With the currency's minor units, e.g. 1.00")
    currency: str
    transaction_count: int
    last_transaction_date: str | None
    status: str
    version: int
    opened_at: str


class AccountPage(_Doc):
    """One page of accounts; ``nextCursor`` continues (null: the last page)."""

    items: list[AccountSummary]
    next_cursor: str | None


class Transaction(_Doc):
    """A deposit, a withdrawal or a transfer leg, with the balance right after it."""

    version: int
    kind: str = Field(description="deposit, withdrawal, transfer_out, transfer_in or transfer_refund")
    amount: str = Field(pattern=MONEY)
    balance_after: str = Field(pattern=MONEY)
    description: str
    recorded_at: str
    event_id: str
    position: int
    counterparty_account_id: str | None = Field(
        default=None, description="The other account of a transfer leg"
    )
    transfer_id: str | None = Field(default=None, description="The transfer of a transfer leg")


class TransferFailure(_Doc):
    """Why a transfer failed: the rule's problem code, its reason, and whether the debit was refunded."""

    code: str
    reason: str
    refunded: bool


class TransferStep(_Doc):
    """A step of a transfer, with the position and time its event was stored."""

    step: Literal["requested", "debited", "completed", "failed"]
    position: int
    recorded_at: str
    leg_position: int | None = Field(
        default=None, description="The position of the account event this step recorded (debit or credit)"
    )


class TransferView(_Doc):
    """A transfer as its own stream has it: what was asked, its state, and its steps."""

    transfer_id: str
    source_account_id: str
    target_account_id: str
    amount: str = Field(pattern=MONEY)
    currency: str
    description: str
    state: Literal["requested", "debited", "completed", "failed"]
    version: int
    steps: list[TransferStep]
    failure: TransferFailure | None = None


class TransferListItem(_Doc):
    """One of an account's transfers, as the transfer list read model holds it."""

    transfer_id: str
    direction: Literal["in", "out"]
    counterparty_account_id: str
    source_account_id: str
    target_account_id: str
    amount: str = Field(pattern=MONEY)
    currency: str
    description: str
    state: Literal["requested", "debited", "completed", "failed"]
    failure: TransferFailure | None = None
    requested_at: str
    updated_at: str


class TransferList(_Doc):
    """An account's transfers, newest first."""

    items: list[TransferListItem]


class TransactionPage(_Doc):
    """One page of an account's history."""

    items: list[Transaction]
    next_cursor: str | None


class AuditEvent(_Doc):
    """A stored event with its envelope and metadata, straight from the log."""

    event_id: str
    stream_id: str
    version: int
    position: int
    checkpoint: str
    event_type: str
    schema_version: int
    occurred_at: str
    recorded_at: str
    data: dict[str, Any]
    metadata: dict[str, Any]


class AuditPage(_Doc):
    """One page of an account's events."""

    items: list[AuditEvent]
    next_cursor: str | None


class AccountState(_Doc):
    """An account replayed from its events up to a version or a time."""

    account_id: str
    version: int
    owner_name: str
    currency: str
    current_balance: str = Field(pattern=MONEY)
    status: str
    transaction_count: int
    as_of: str | None


class CurrencyTotal(_Doc):
    """Totals of one currency."""

    currency: str
    total_balance: str = Field(pattern=MONEY)
    accounts: int
    open_accounts: int
    total_deposited: str = Field(pattern=MONEY)
    total_withdrawn: str = Field(pattern=MONEY)
    transaction_count: int


class TotalsList(_Doc):
    """Totals per currency."""

    items: list[CurrencyTotal]


class ProjectionErrorDoc(_Doc):
    """Why a projection stopped or retries; the event fields are null for a database error."""

    message: str
    position: int | None
    checkpoint: str | None
    event_id: str | None
    at: float | None = Field(description="When it happened, in seconds since the epoch.")
    event_type: str | None = None
    stream_id: str | None = None


class RebuildProgress(_Doc):
    """A rebuild's progress: events done of total, rate and time left."""

    generation: int = Field(description="The generation the rebuild builds.")
    state: str = Field(description="running, done or failed.")
    done: int
    total: int
    events_per_second: float
    eta_seconds: float | None
    error: str | None = None


class ProjectionStatusDoc(_Doc):
    """The status of one projection."""

    name: str
    state: str
    generation: int = Field(description="The generation of tables that serves the queries.")
    version: int = Field(description="The projection's schema version.")
    checkpoint: str
    head: str
    lag_events: int
    lag_seconds: float
    events_per_second: float | None
    applied: int = Field(description="Events applied by this process.")
    partitions: int
    owned_partitions: list[int] = Field(description="The partitions this process works on.")
    last_error: ProjectionErrorDoc | None
    rebuild: RebuildProgress | None = Field(description="The latest rebuild, if any.")
    workers: list[str] = Field(
        default_factory=list, description="The workers (in any process) holding a live lease on a partition."
    )
    held_back: dict[str, Any] | None = None
    paused: bool = Field(default=False, description="An operator paused it: no worker applies events.")


class ProjectionList(_Doc):
    """Every projection's status."""

    items: list[ProjectionStatusDoc]


class RebuildStarted(RebuildProgress):
    """A rebuild under way."""


class Health(_Doc):
    """The process answers."""

    status: str


class Ready(_Doc):
    """The store answers and the projections run."""

    status: str
    head: str
    projections: list[str]


_DESCRIPTIONS: Final = {
    401: "No or an unknown bearer token (unauthorized)",
    403: "The token lacks the scope (forbidden)",
    404: "Unknown account or resource",
    408: "The body did not arrive in time (request-timeout)",
    409: (
        "The account is closed or changed too often meanwhile; "
        "or, opening, its owner holds the most open accounts allowed in the currency; "
        "or its stream was deleted for ever (stream-deleted)"
    ),
    412: "If-Match names a version the account is no longer at (precondition-failed)",
    413: "The request body is too large (too-large)",
    415: "The body is not JSON (unsupported-media-type)",
    422: "Invalid input, or a ledger rule refused the command",
    503: "The store or the read model is not ready; see Retry-After",
}

ERROR_STATUSES: Final = tuple(_DESCRIPTIONS)


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` entries of these error statuses, each a problem document."""
    return {status: {"model": ProblemDocument, "description": _DESCRIPTIONS[status]} for status in statuses}
