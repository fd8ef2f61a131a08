"""The ledger's read models: account summaries, transaction histories, currency totals.

One projection, :class:`AccountsProjection`, owns the three tables::

    account_summary       one row per account: owner, currency, balance, counts, status, version
    account_transactions  one row per deposit or withdrawal, with the balance after it
    currency_totals       one row per currency: money held, accounts, money moved

They are one projection, not three, because each event changes them together:
the running balance of a history row is the summary's balance plus the amount,
and the totals move by what the summary row actually changed. In one projection
the three tables share one transaction and one checkpoint, so a query never
sees a history that is ahead of its summary, and a rebuild swaps all three at once.

Every handler is harmless on replay. The summary row holds the stream version
it has applied; a handler that finds the row at or past its event's version
does nothing, and since all three tables commit together, that one guard
covers them all (history rows are also keyed by ``(account_id, version)`` with
``ON CONFLICT DO NOTHING``, as a second line).

Deposits and withdrawals are applied a batch at a time: the summaries of the
batch's accounts are read in one query before its handlers run, each handler
moves the balance it keeps in the batch's memory, and the changed summaries,
the new history rows and the changed totals are written once, at the end of the
batch (a statement per table, and one per currency for the totals), instead of
five statements per event.
The version guard then runs on the remembered summary, and again in the
UPDATE's ``WHERE``: a summary that does not take its write fails the batch.

Money never goes through float: amounts and balances are stored as exact
decimal text at the currency's scale (``"12.50"``, JPY ``"1250"``), and
arithmetic happens in Python on :class:`~decimal.Decimal`. For the indexed
balance-range query, ``balance_key`` holds the balance scaled to 4 decimals (the
most any currency has) as a 20-digit zero-padded integer: balances are never
negative and at most 10**15, so 10**19 fits, text order equals numeric order,
and every database compares it exactly (BIGINT would overflow at 9.2 * 10**18).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Context, Decimal, DivisionByZero, Inexact, InvalidOperation, Overflow
from typing import Any, Final

from eventvault import REDACTED, EventVaultError, RecordedEvent, StreamDeletedEvent
from eventvault.processes import ProcessManager
from eventvault.projections import Projection, ProjectionRunner, Session, handles
from eventvault_ledger.domain import (
    Account,
    AccountClosed,
    AccountOpened,
    AccountStatus,
    MoneyDeposited,
    MoneyWithdrawn,
    PersonalDataErased,
    TransferReceived,
    TransferRefunded,
    TransferSent,
    format_money,
)
from eventvault_ledger.transfers import (
    TransferCompleted,
    TransferDebited,
    TransferFailed,
    TransferRequested,
    Transfers,
)

__all__ = [
    "BALANCE_KEY_SCALE",
    "BALANCE_KEY_WIDTH",
    "AccountsProjection",
    "ReadModelInconsistency",
    "TransferListProjection",
    "account_id_of",
    "balance_key",
    "format_timestamp",
    "postgres_schema_size",
    "process_managers",
    "projections",
]

BALANCE_KEY_SCALE: Final = 4
"""Decimal places kept by :func:`balance_key`: the most minor units any currency has (CLF, UYW)."""

BALANCE_KEY_WIDTH: Final = 20
"""Digits of a balance key: 10**15 at 4 decimals is 10**19, 20 digits."""

_STREAM_PREFIX: Final = f"{Account.category}-"
_KEY_LIMIT: Final = Decimal(10) ** (BALANCE_KEY_WIDTH - BALANCE_KEY_SCALE)  # the least balance with no key

# Sums of balances stay far below 10**30 with 4 decimals; 34 digits make every sum
# exact whatever the thread's decimal context, and Inexact is trapped so that a
# rounding that should be impossible fails loudly instead of corrupting a total.
_MONEY: Final = Context(prec=34, traps=[InvalidOperation, DivisionByZero, Overflow, Inexact])
_ZERO: Final = Decimal(0)


class ReadModelInconsistency(EventVaultError):
    """The log holds an event the read model cannot place (e.g. a deposit to an account never opened).

    The domain makes this impossible; if it happens, the projection stops on the
    event (visible in its status) rather than guess.
    """


def balance_key(balance: Decimal) -> str:
    """The sortable exact key of a balance: 20 zero-padded digits of the balance * 10**4."""
    scaled = balance.scaleb(BALANCE_KEY_SCALE, context=_MONEY)
    if not scaled.is_finite() or scaled < 0 or scaled != scaled.to_integral_value():
        raise ReadModelInconsistency(f"balance {balance} has no key: it must be >= 0 with at most 4 decimals")
    key = f"{int(scaled):0{BALANCE_KEY_WIDTH}d}"
    if len(key) > BALANCE_KEY_WIDTH:
        raise ReadModelInconsistency(f"balance {balance} is beyond the ledger's maximum balance")
    return key


def format_timestamp(moment: datetime) -> str:
    """An aware datetime as fixed-width ISO 8601 UTC text (``2026-01-31T12:00:00.000000Z``).

    Fixed width (microseconds always present) so that text order is time order.
    """
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class _Summary:
    """An account's summary as a batch has moved it so far (written at the end of the batch)."""

    currency: str
    balance: Decimal
    version: int
    text: str = ""  # the balance as stored, once the batch has moved it
    moved: int = 0  # transactions applied in this batch
    last_at: str | None = None


@dataclass(slots=True)
class _Totals:
    """A currency's totals as a batch has moved them so far (written at the end of the batch)."""

    total: Decimal
    deposited: Decimal
    withdrawn: Decimal
    moved: int = 0


# The writes of a batch's end. A summary row: (account_id, balance, balance_key,
# transactions added, last_transaction_at, version); a history row: the columns in order.
_SUMMARY: Final = (
    "UPDATE {account_summary} SET balance = ?, balance_key = ?, "
    "transaction_count = transaction_count + ?, last_transaction_at = ?, version = ? "
    "WHERE account_id = ? AND version < ?"
)
_HISTORY_ROW: Final = (
    "INSERT INTO {account_transactions} (account_id, version, kind, amount, balance_after, "
    "description, recorded_at, event_id, position, counterparty, transfer_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (account_id, version) DO NOTHING"
)
_PG_SUMMARIES: Final = (
    "UPDATE {account_summary} AS s SET balance = r->>1, balance_key = r->>2, "
    "transaction_count = s.transaction_count + (r->>3)::bigint, last_transaction_at = r->>4, "
    "version = (r->>5)::bigint FROM json_array_elements(?::json) AS t(r) "
    "WHERE s.account_id = r->>0 AND s.version < (r->>5)::bigint"
)
_PG_HISTORY: Final = (
    "INSERT INTO {account_transactions} (account_id, version, kind, amount, balance_after, "
    "description, recorded_at, event_id, position, counterparty, transfer_id) "
    "SELECT r->>0, (r->>1)::bigint, r->>2, r->>3, r->>4, r->>5, r->>6, r->>7, (r->>8)::bigint, "
    "r->>9, r->>10 "
    "FROM json_array_elements(?::json) AS t(r) ON CONFLICT (account_id, version) DO NOTHING"
)

_MOVES: Final = (MoneyDeposited, MoneyWithdrawn, TransferSent, TransferReceived, TransferRefunded)
_INTO: Final = frozenset({"deposit", "transfer_in", "transfer_refund"})  # kinds that add to the balance

_ACCOUNTS: Final = "accounts"  # Session.batch keys
_HISTORY: Final = "history"
_TOTALS: Final = "totals"


def account_id_of(stream_id: str) -> str:
    """The account id of an ``account-<id>`` stream."""
    if not stream_id.startswith(_STREAM_PREFIX):
        raise ReadModelInconsistency(f"a ledger event in stream {stream_id!r}, which is not an account's")
    return stream_id[len(_STREAM_PREFIX) :]


class AccountsProjection(Projection):
    """Account summaries, per-account histories with running balances, and totals per currency."""

    name = "accounts"
    version = 2  # 2: transfer legs in the history, with the other account
    tables = ("account_summary", "account_transactions", "currency_totals")
    # currency_totals rows are shared by every account: one partition keeps a single
    # writer per generation, so the read-modify-write of a total never races.
    partitions = 1
    schema = (
        """CREATE TABLE {account_summary} (
            account_id          TEXT PRIMARY KEY,
            owner_name          TEXT NOT NULL,
            currency            TEXT NOT NULL,
            balance             TEXT NOT NULL,
            balance_key         TEXT NOT NULL,
            transaction_count   BIGINT NOT NULL,
            last_transaction_at TEXT,
            status              TEXT NOT NULL,
            version             BIGINT NOT NULL,
            opened_at           TEXT NOT NULL
        )""",
        # The balance-range query walks this index in order: the range is a prefix
        # scan and (balance_key, account_id) is also the keyset of its pagination.
        "CREATE INDEX {account_summary}_by_balance ON {account_summary} (balance_key, account_id)",
        # The same walk within one currency.
        "CREATE INDEX {account_summary}_by_currency ON {account_summary} (currency, balance_key, account_id)",
        """CREATE TABLE {account_transactions} (
            account_id    TEXT NOT NULL,
            version       BIGINT NOT NULL,
            kind          TEXT NOT NULL,
            amount        TEXT NOT NULL,
            balance_after TEXT NOT NULL,
            description   TEXT NOT NULL,
            recorded_at   TEXT NOT NULL,
            event_id      TEXT NOT NULL,
            position      BIGINT NOT NULL,
            counterparty  TEXT,
            transfer_id   TEXT,
            PRIMARY KEY (account_id, version)
        )""",
        """CREATE TABLE {currency_totals} (
            currency          TEXT PRIMARY KEY,
            total_balance     TEXT NOT NULL,
            accounts          BIGINT NOT NULL,
            open_accounts     BIGINT NOT NULL,
            total_deposited   TEXT NOT NULL,
            total_withdrawn   TEXT NOT NULL,
            transaction_count BIGINT NOT NULL
        )""",
    )

    @handles(AccountOpened)
    def _opened(self, db: Session, e: RecordedEvent) -> None:
        data: AccountOpened = e.data
        account_id = account_id_of(e.stream_id)
        zero = format_money(_ZERO, data.currency)
        inserted = db.execute(
            "INSERT INTO {account_summary} (account_id, owner_name, currency, balance, balance_key, "
            "transaction_count, last_transaction_at, status, version, opened_at) "
            "VALUES (?, ?, ?, ?, ?, 0, NULL, ?, ?, ?) ON CONFLICT (account_id) DO NOTHING",
            (
                account_id,
                data.owner_name,
                data.currency,
                zero,
                balance_key(_ZERO),
                AccountStatus.OPEN.value,
                e.stream_version,
                format_timestamp(e.recorded_at),
            ),
        )
        if inserted != 1:
            return  # a replay: the account and its share of the totals are already counted
        db.execute(
            "INSERT INTO {currency_totals} (currency, total_balance, accounts, open_accounts, "
            "total_deposited, total_withdrawn, transaction_count) VALUES (?, ?, 1, 1, ?, ?, 0) "
            "ON CONFLICT (currency) DO UPDATE SET accounts = {currency_totals}.accounts + 1, "
            "open_accounts = {currency_totals}.open_accounts + 1",
            (data.currency, zero, zero, zero),
        )

    @handles(MoneyDeposited)
    def _deposited(self, db: Session, e: RecordedEvent) -> None:
        data: MoneyDeposited = e.data
        self._moved(db, e, "deposit", data.amount, data.description)

    @handles(MoneyWithdrawn)
    def _withdrawn(self, db: Session, e: RecordedEvent) -> None:
        data: MoneyWithdrawn = e.data
        self._moved(db, e, "withdrawal", data.amount, data.description)

    @handles(TransferSent)
    def _sent(self, db: Session, e: RecordedEvent) -> None:
        data: TransferSent = e.data
        self._moved(db, e, "transfer_out", data.amount, data.description, (data.to_account, data.transfer_id))

    @handles(TransferReceived)
    def _received(self, db: Session, e: RecordedEvent) -> None:
        data: TransferReceived = e.data
        leg = (data.from_account, data.transfer_id)
        self._moved(db, e, "transfer_in", data.amount, data.description, leg)

    @handles(TransferRefunded)
    def _refunded(self, db: Session, e: RecordedEvent) -> None:
        data: TransferRefunded = e.data
        self._moved(db, e, "transfer_refund", data.amount, data.reason, (data.to_account, data.transfer_id))

    def begin_batch(self, db: Session, events: Sequence[RecordedEvent]) -> None:
        """Read, in one query, the summaries of the accounts the batch moves money in."""
        ids = sorted(
            {
                e.stream_id[len(_STREAM_PREFIX) :]
                for e in events
                if isinstance(e.data, _MOVES) and e.stream_id.startswith(_STREAM_PREFIX)
            }
        )
        accounts: dict[str, _Summary] = {}
        db.batch[_ACCOUNTS] = accounts
        db.batch[_HISTORY] = []
        db.batch[_TOTALS] = {}
        if not ids:
            return
        if db.dialect == "postgresql":
            rows = db.fetchall(
                "SELECT account_id, currency, balance, version FROM {account_summary} "
                "WHERE account_id = ANY(?)",
                (ids,),
            )
        else:
            rows = db.fetchall(
                "SELECT account_id, currency, balance, version FROM {account_summary} "
                "WHERE account_id IN (SELECT value FROM json_each(?))",
                (json.dumps(ids),),
            )
        for account_id, currency, balance, version in rows:
            accounts[str(account_id)] = _Summary(str(currency), Decimal(str(balance)), int(version))

    def _summary(self, db: Session, account_id: str) -> _Summary | None:
        """The account's summary as this batch has it (read now if the batch has not yet)."""
        accounts: dict[str, _Summary] = db.batch.setdefault(_ACCOUNTS, {})
        summary = accounts.get(account_id)
        if summary is None:
            # Opened in this batch, after begin_batch read the others (or never opened).
            row = db.fetchone(
                "SELECT currency, balance, version FROM {account_summary} WHERE account_id = ?", (account_id,)
            )
            if row is None:
                return None
            summary = accounts[account_id] = _Summary(str(row[0]), Decimal(str(row[1])), int(row[2]))
        return summary

    def _totals(self, db: Session, currency: str, stream_id: str) -> _Totals:
        totals: dict[str, _Totals] = db.batch.setdefault(_TOTALS, {})
        found = totals.get(currency)
        if found is None:
            row = db.fetchone(
                "SELECT total_balance, total_deposited, total_withdrawn FROM {currency_totals} "
                "WHERE currency = ?",
                (currency,),
            )
            if row is None:
                raise ReadModelInconsistency(f"no {currency} totals row although {stream_id} was opened")
            found = totals[currency] = _Totals(
                Decimal(str(row[0])), Decimal(str(row[1])), Decimal(str(row[2]))
            )
        return found

    def _moved(  # noqa: PLR0913, PLR0917 - an event, and what it moves
        self,
        db: Session,
        e: RecordedEvent,
        kind: str,
        amount: Decimal,
        description: str,
        leg: tuple[str, str] | None = None,
    ) -> None:
        if _ACCOUNTS in db.batch:
            self._move(db, e, kind, amount, description, leg)
            return
        # Called outside a runner's batch (begin_batch never ran): write at once.
        try:
            self._move(db, e, kind, amount, description, leg)
            self.end_batch(db)
        finally:
            db.batch.clear()

    def _move(  # noqa: PLR0913, PLR0917 - an event, and what it moves
        self,
        db: Session,
        e: RecordedEvent,
        kind: str,
        amount: Decimal,
        description: str,
        leg: tuple[str, str] | None,
    ) -> None:
        account_id = account_id_of(e.stream_id)
        summary = self._summary(db, account_id)
        if summary is None:
            raise ReadModelInconsistency(
                f"{e.event_type} v{e.stream_version} of {e.stream_id} for an account never opened"
            )
        currency = summary.currency
        if summary.version >= e.stream_version:
            return  # a replay: summary, history and totals already hold this event
        deposit = kind in _INTO
        old = summary.balance
        new = _MONEY.add(old, amount) if deposit else _MONEY.subtract(old, amount)
        if new < 0:
            raise ReadModelInconsistency(
                f"{e.event_type} v{e.stream_version} of {e.stream_id} takes the balance below zero "
                f"({old} - {amount} {currency})"
            )
        if new >= _KEY_LIMIT:
            balance_key(new)  # raises, on this event: beyond the ledger's maximum balance
        totals = self._totals(db, currency, e.stream_id)
        balance = format_money(new, currency)
        when = format_timestamp(e.recorded_at)
        history: list[tuple[Any, ...]] = db.batch.setdefault(_HISTORY, [])
        history.append(
            (
                account_id,
                e.stream_version,
                kind,
                format_money(amount, currency),
                balance,
                description,
                when,
                str(e.event_id),
                e.position,
                None if leg is None else leg[0],
                None if leg is None else leg[1],
            )
        )
        summary.balance, summary.text, summary.version, summary.last_at = new, balance, e.stream_version, when
        summary.moved += 1
        # Transfers move a currency's total (money in flight is in no account) but are
        # neither deposits nor withdrawals.
        totals.total = _MONEY.add(totals.total, amount) if deposit else _MONEY.subtract(totals.total, amount)
        if kind == "deposit":
            totals.deposited = _MONEY.add(totals.deposited, amount)
        elif kind == "withdrawal":
            totals.withdrawn = _MONEY.add(totals.withdrawn, amount)
        totals.moved += 1

    def end_batch(self, db: Session) -> None:
        """Write the summaries, history rows and totals the batch's deposits and withdrawals moved."""
        accounts: dict[str, _Summary] = db.batch.get(_ACCOUNTS, {})
        summaries = [
            (a, s.text, balance_key(s.balance), s.moved, s.last_at, s.version)
            for a, s in accounts.items()
            if s.moved
        ]
        history: list[tuple[Any, ...]] = db.batch.get(_HISTORY, [])
        if db.dialect == "postgresql":
            # One statement each, the rows as one JSON parameter: a statement per row,
            # even pipelined, costs this process several times more.
            changed = db.execute(_PG_SUMMARIES, (json.dumps(summaries),)) if summaries else 0
            if history:
                db.execute(_PG_HISTORY, (json.dumps(history),))
        else:
            changed = db.executemany(_SUMMARY, [(*r[1:], r[0], r[5]) for r in summaries])
            db.executemany(_HISTORY_ROW, history)
        if changed != len(summaries):
            # Only this batch writes these rows (one partition, fenced): cannot happen, and
            # the totals must not move for a summary that did not.
            raise ReadModelInconsistency(
                f"{len(summaries) - changed} account summaries changed under the batch"
            )
        for s in accounts.values():
            s.moved = 0
        db.batch[_HISTORY] = []
        totals: dict[str, _Totals] = db.batch.get(_TOTALS, {})
        for currency, t in totals.items():
            if t.moved:
                db.execute(
                    "UPDATE {currency_totals} SET total_balance = ?, total_deposited = ?, "
                    "total_withdrawn = ?, transaction_count = transaction_count + ? WHERE currency = ?",
                    (
                        format_money(t.total, currency),
                        format_money(t.deposited, currency),
                        format_money(t.withdrawn, currency),
                        t.moved,
                        currency,
                    ),
                )
                t.moved = 0

    @handles(AccountClosed)
    def _closed(self, db: Session, e: RecordedEvent) -> None:
        account_id = account_id_of(e.stream_id)
        # What the batch has moved so far is written first: the close then reads and
        # guards on the account's latest version, and a later event of the batch
        # reads the account again.
        self.end_batch(db)
        db.batch.get(_ACCOUNTS, {}).pop(account_id, None)
        row = db.fetchone("SELECT currency FROM {account_summary} WHERE account_id = ?", (account_id,))
        if row is None:
            raise ReadModelInconsistency(f"AccountClosed of {e.stream_id} for an account never opened")
        changed = db.execute(
            "UPDATE {account_summary} SET status = ?, version = ? WHERE account_id = ? AND version < ?",
            (AccountStatus.CLOSED.value, e.stream_version, account_id, e.stream_version),
        )
        if changed == 1:
            db.execute(
                "UPDATE {currency_totals} SET open_accounts = open_accounts - 1 WHERE currency = ?",
                (str(row[0]),),
            )

    @handles(StreamDeletedEvent)
    def _stream_deleted(self, db: Session, e: RecordedEvent) -> None:
        """An account's stream deleted (``eventvault streams delete``): the account leaves every table.

        Its share of the totals goes too (its balance, deposits, withdrawals and
        transactions), so the read model is the one a rebuild after a scavenge,
        which sees none of its events, would make.
        """
        if not e.stream_id.startswith(_STREAM_PREFIX):
            return
        account_id = e.stream_id[len(_STREAM_PREFIX) :]
        self.end_batch(db)  # what the batch moved so far is written first, as for a close
        db.batch.get(_ACCOUNTS, {}).pop(account_id, None)
        row = db.fetchone(
            "SELECT currency, balance, status FROM {account_summary} WHERE account_id = ?", (account_id,)
        )
        if row is None:
            return  # never opened, or a replay of this delete
        currency, balance, status = str(row[0]), Decimal(str(row[1])), str(row[2])
        moves = db.fetchall(
            "SELECT kind, amount FROM {account_transactions} WHERE account_id = ?", (account_id,)
        )
        deposited = sum((Decimal(str(a)) for k, a in moves if k == "deposit"), _ZERO)
        withdrawn = sum((Decimal(str(a)) for k, a in moves if k == "withdrawal"), _ZERO)
        db.execute("DELETE FROM {account_transactions} WHERE account_id = ?", (account_id,))
        db.execute("DELETE FROM {account_summary} WHERE account_id = ?", (account_id,))
        db.batch.get(_TOTALS, {}).pop(currency, None)  # read again by the batch's later events
        totals = db.fetchone(
            "SELECT total_balance, total_deposited, total_withdrawn FROM {currency_totals} "
            "WHERE currency = ?",
            (currency,),
        )
        if totals is None:
            raise ReadModelInconsistency(f"no {currency} totals row although {e.stream_id} was opened")
        db.execute(
            "UPDATE {currency_totals} SET total_balance = ?, total_deposited = ?, total_withdrawn = ?, "
            "accounts = accounts - 1, open_accounts = open_accounts - ?, "
            "transaction_count = transaction_count - ? WHERE currency = ?",
            (
                format_money(_MONEY.subtract(Decimal(str(totals[0])), balance), currency),
                format_money(_MONEY.subtract(Decimal(str(totals[1])), deposited), currency),
                format_money(_MONEY.subtract(Decimal(str(totals[2])), withdrawn), currency),
                1 if status == AccountStatus.OPEN.value else 0,
                len(moves),
                currency,
            ),
        )

    @handles(PersonalDataErased)
    def _erased(self, db: Session, e: RecordedEvent) -> None:
        """The owner becomes the placeholder (the name in the log is unreadable once the key goes)."""
        account_id = account_id_of(e.stream_id)
        self.end_batch(db)  # as for a close: the batch's moves first, then this guard on the version
        db.batch.get(_ACCOUNTS, {}).pop(account_id, None)
        db.execute(
            "UPDATE {account_summary} SET owner_name = ?, version = ? WHERE account_id = ? AND version < ?",
            (REDACTED, e.stream_version, account_id, e.stream_version),
        )


class TransferListProjection(Projection):
    """Every transfer with its state, by source and by target account (the accounts' transfer lists)."""

    name = "transfer_list"
    tables = ("transfer_list",)
    schema = (
        """CREATE TABLE {transfer_list} (
            transfer_id  TEXT PRIMARY KEY,
            source       TEXT NOT NULL,
            target       TEXT NOT NULL,
            amount       TEXT NOT NULL,
            currency     TEXT NOT NULL,
            description  TEXT NOT NULL,
            state        TEXT NOT NULL,
            code         TEXT,
            reason       TEXT,
            refunded     INTEGER NOT NULL,
            requested_at TEXT NOT NULL,
            updated_at   TEXT NOT NULL,
            version      BIGINT NOT NULL
        )""",
        "CREATE INDEX {transfer_list}_by_source ON {transfer_list} (source, requested_at)",
        "CREATE INDEX {transfer_list}_by_target ON {transfer_list} (target, requested_at)",
    )

    @handles(TransferRequested)
    def _requested(self, db: Session, e: RecordedEvent) -> None:
        d: TransferRequested = e.data
        when = format_timestamp(e.recorded_at)
        db.execute(
            "INSERT INTO {transfer_list} (transfer_id, source, target, amount, currency, description, state, "
            "code, reason, refunded, requested_at, updated_at, version) "
            "VALUES (?, ?, ?, ?, ?, ?, 'requested', NULL, NULL, 0, ?, ?, ?) "
            "ON CONFLICT (transfer_id) DO NOTHING",
            (
                e.stream_id.removeprefix("transfer-"),
                d.source,
                d.target,
                format_money(d.amount, d.currency),
                d.currency,
                d.description,
                when,
                when,
                e.stream_version,
            ),
        )

    @handles(TransferDebited, TransferCompleted, TransferFailed)
    def _moved_on(self, db: Session, e: RecordedEvent) -> None:
        d = e.data
        state = {TransferDebited: "debited", TransferCompleted: "completed"}.get(type(d), "failed")
        failed = isinstance(d, TransferFailed)
        db.execute(
            "UPDATE {transfer_list} SET state = ?, code = ?, reason = ?, refunded = ?, updated_at = ?, "
            "version = ? WHERE transfer_id = ? AND version < ?",
            (
                state,
                d.code if failed else None,
                d.reason if failed else None,
                1 if failed and d.refunded else 0,
                format_timestamp(e.recorded_at),
                e.stream_version,
                e.stream_id.removeprefix("transfer-"),
                e.stream_version,
            ),
        )


def projections() -> list[Projection]:
    """The ledger's projections, as a ProjectionRunner takes them."""
    return [AccountsProjection(), TransferListProjection()]


def process_managers() -> list[ProcessManager[Any]]:
    """The ledger's process managers (transfers), as a ProcessRunner takes them."""
    return [Transfers()]


def postgres_schema_size(runner: ProjectionRunner) -> int | None:
    """Bytes the tables of the read models' PostgreSQL schema take (the store's schema, too, when shared).

    Blocking: call it off the event loop.
    """
    rows = runner.query(
        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')"
    )
    return int(rows[0][0]) if rows else None
