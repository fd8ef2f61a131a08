"""Transfers between accounts: a process that debits one account and credits another, exactly once.

::

    TransferRequested --debit source--> TransferDebited --credit target--> TransferCompleted
            |                                  |
            | refused (funds, closed,          | refused (target closed meanwhile, ...):
            |  currency)                       |  refund the source
            v                                  v
      TransferFailed                     TransferFailed

Each transfer is a process instance, ``transfer-<uuid>``, whose first event
``TransferRequested`` the API appends. The :class:`Transfers` process manager
runs the two steps: each reacts to one event of the transfer's stream.

Money is conserved at every position of the log: the legs are events of the
accounts (``TransferSent``, ``TransferReceived``, ``TransferRefunded``), each
appended atomically, so at every instant the sum of the balances plus the
money in flight (sent, neither received nor refunded) equals the money
deposited minus the money withdrawn.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Final, Self

from eventvault import applies, event
from eventvault.processes import Process, ProcessManager, Step, reacts_to
from eventvault_ledger.domain import MAX_DESCRIPTION_LENGTH, Account, check_amount
from eventvault_ledger.errors import InvalidTransfer, LedgerError

if TYPE_CHECKING:
    from eventvault import RecordedEvent

__all__ = [
    "Transfer",
    "TransferCompleted",
    "TransferDebited",
    "TransferFailed",
    "TransferRequested",
    "TransferStage",
    "Transfers",
    "failure_code",
]

TransferStage = str
"""``requested``, ``debited``, ``completed`` or ``failed``."""

_PREFIX: Final = "transfer-"


@event("TransferRequested")
@dataclass(frozen=True, slots=True)
class TransferRequested:
    """Move ``amount`` of ``currency`` from ``source`` to ``target``."""

    source: str
    target: str
    amount: Decimal
    currency: str
    description: str = ""


@event("TransferDebited")
@dataclass(frozen=True, slots=True)
class TransferDebited:
    """The source paid: the amount is in flight (the account event at ``position``)."""

    position: int


@event("TransferCompleted")
@dataclass(frozen=True, slots=True)
class TransferCompleted:
    """The target received the amount (the account event at ``position``)."""

    position: int


@event("TransferFailed")
@dataclass(frozen=True, slots=True)
class TransferFailed:
    """The transfer did not happen, for ``reason`` (``code``); ``refunded``: the source got it back."""

    code: str
    reason: str
    refunded: bool = False


def failure_code(error: BaseException) -> str:
    """The stable code of the refusal that failed a transfer (the ledger error's code)."""
    return error.code if isinstance(error, LedgerError) else "refused"


class Transfer(Process):
    """One transfer: what was asked, and how far it got."""

    category = "transfer"

    source: str = ""
    target: str = ""
    amount: Decimal = Decimal(0)
    currency: str = ""
    description: str = ""
    stage: TransferStage = "new"
    reason: str = ""
    code: str = ""

    @classmethod
    def request(  # noqa: PLR0913 - what a transfer is
        cls,
        source: str,
        target: str,
        amount: Decimal,
        currency: str,
        description: str = "",
        *,
        transfer_id: str | None = None,
    ) -> Self:
        """A new transfer (its checks: amount, description, two different accounts)."""
        if source == target:
            raise InvalidTransfer("a transfer needs two different accounts")
        value = check_amount(amount, currency)
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_LENGTH:
            raise InvalidTransfer(f"a description is a str of at most {MAX_DESCRIPTION_LENGTH} characters")
        transfer = cls(transfer_id or str(uuid.uuid4()))
        transfer.record(TransferRequested(source, target, value, currency, description))
        return transfer

    @applies(TransferRequested)
    def _requested(self, e: TransferRequested) -> None:
        self.source, self.target, self.amount, self.currency = e.source, e.target, e.amount, e.currency
        self.description = e.description
        self.stage = "requested"

    @applies(TransferDebited)
    def _debited(self, _e: TransferDebited) -> None:
        self.stage = "debited"

    @applies(TransferCompleted)
    def _completed(self, _e: TransferCompleted) -> None:
        self.stage = "completed"

    @applies(TransferFailed)
    def _failed(self, e: TransferFailed) -> None:
        self.stage, self.code, self.reason = "failed", e.code, e.reason


def _transfer_of(e: RecordedEvent) -> str | None:
    return e.stream_id[len(_PREFIX) :] if e.stream_id.startswith(_PREFIX) else None


class Transfers(ProcessManager[Transfer]):
    """The transfer process: debit the source, credit the target, or give the money back."""

    name = "transfers"
    process = Transfer
    partitions = 4
    retry_delay = 0.1

    @reacts_to(TransferRequested, instance=_transfer_of)
    async def debit(self, step: Step[Transfer], _e: RecordedEvent) -> None:
        """Step 1: the source pays, or the transfer fails (funds, closed, currency)."""
        t = step.process
        if t.stage != "requested":
            return
        sent = await step.command(
            Account,
            t.source,
            lambda a: a.send_transfer(t.id, t.target, t.amount, t.currency, t.description),
        )
        if sent.error is not None:
            t.record(TransferFailed(failure_code(sent.error), str(sent.error)))
            step.end()
            return
        t.record(TransferDebited(sent.result.positions[-1] if sent.result else 0))

    @reacts_to(TransferDebited, instance=_transfer_of)
    async def credit(self, step: Step[Transfer], _e: RecordedEvent) -> None:
        """Step 2: the target receives and the source settles, or the source gets the money back."""
        t = step.process
        if t.stage != "debited":
            return
        received = await step.command(
            Account,
            t.target,
            lambda a: a.receive_transfer(t.id, t.source, t.amount, t.currency, t.description),
        )
        if received.error is None:
            settled = await step.command(Account, t.source, lambda a: a.settle_transfer(t.id))
            if settled.refused:
                raise RuntimeError(f"the source could not settle transfer {t.id}: {settled.error}")
            t.record(TransferCompleted(received.result.positions[-1] if received.result else 0))
        else:
            error = received.error
            # Compensation: the money goes back where it came from.
            refund = await step.command(
                Account, t.source, lambda a: a.refund_transfer(t.id, t.target, str(error))
            )
            if refund.refused:
                raise RuntimeError(f"the source could not take transfer {t.id} back: {refund.error}")
            t.record(TransferFailed(failure_code(error), str(error), refunded=True))
        step.end()
