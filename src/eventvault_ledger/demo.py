"""The ``eventvault demo`` walk-through: commands in, events stored, state replayed.

It opens three accounts, moves money (with a few commands the rules refuse),
closes one, and then forgets everything it knew: each account is rebuilt from
its stream in the log, shown with its history and an earlier version of itself,
and compared with the state the live commands produced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal

from rich.console import Console
from rich.table import Table
from rich.text import Text

from eventvault import EventStore, RecordedEvent, Repository
from eventvault_ledger.domain import (
    Account,
    AccountClosed,
    AccountOpened,
    MoneyDeposited,
    MoneyWithdrawn,
    format_money,
    parse_amount,
)
from eventvault_ledger.errors import LedgerError

__all__ = ["DemoReport", "run_demo"]

EARLIER_VERSION = 2
"""The version the temporal query rebuilds: just after each account's first deposit."""


@dataclass(frozen=True, slots=True)
class DemoReport:
    """What a demo run did: the accounts it opened and the commands refused."""

    account_ids: tuple[str, ...]
    refused: tuple[LedgerError, ...]
    mismatched: tuple[str, ...]
    """Accounts whose replayed state differs from their live state (none, if all is well)."""

    @property
    def ok(self) -> bool:
        """Whether every account replayed to exactly its live state."""
        return not self.mismatched


class _Script:
    """Runs commands on live aggregates, saves what they record and narrates it."""

    def __init__(self, repo: Repository, console: Console) -> None:
        self.repo = repo
        self.console = console
        self.refused: list[LedgerError] = []

    async def open(self, owner_name: str, currency: str) -> Account:
        account = Account.open(owner_name, currency)
        await self.repo.save(account)
        self._say("ok", f"opened {currency} account {account.id} for {owner_name}")
        return account

    async def run(self, account: Account, what: str, command: Callable[[Account], None]) -> None:
        try:
            command(account)
        except LedgerError as exc:
            self.refused.append(exc)
            self._say("refused", f"{what} ({account.owner_name}): {exc}")
            return
        result = await self.repo.save(account)
        at = "" if result is None else f" -> version {result.stream_version}"
        self._say("ok", f"{what} ({account.owner_name}){at}")

    def _say(self, outcome: str, message: str) -> None:
        style = "green" if outcome == "ok" else "bold red"
        self.console.print(Text.assemble((f"  {outcome.upper():<8}", style), message))


async def run_demo(store: EventStore, console: Console) -> DemoReport:
    """Run the demo against an open ``store``, printing to ``console``."""
    repo = Repository(store)
    script = _Script(repo, console)

    console.rule("Commands")
    ada = await script.open("Ada Lovelace", "EUR")
    await script.run(ada, "deposit 1250.00 EUR salary", lambda a: a.deposit(Decimal("1250.00"), "salary"))
    await script.run(ada, "withdraw 89.90 EUR groceries", lambda a: a.withdraw(Decimal("89.90"), "groceries"))
    await script.run(ada, "withdraw 5000.00 EUR rent", lambda a: a.withdraw(Decimal("5000.00"), "rent"))
    for _ in range(10):
        # Ten deposits of 0.10 make exactly 1.00: money is Decimal, never float.
        await script.run(ada, "deposit 0.10 EUR round-up", lambda a: a.deposit(Decimal("0.10"), "round-up"))

    grace = await script.open("Grace Hopper", "USD")
    await script.run(
        grace, "deposit 300.00 USD", lambda a: a.deposit(parse_amount("300.00", "USD"), "cheque")
    )
    await script.run(
        grace, "withdraw 300.00 USD", lambda a: a.withdraw(parse_amount("300", "USD"), "move out")
    )
    await script.run(grace, "close the account", lambda a: a.close())
    await script.run(grace, "deposit 5.00 USD", lambda a: a.deposit(Decimal("5.00"), "late refund"))

    hiro = await script.open("Hiro Nakamura", "JPY")
    await script.run(hiro, "deposit 5000 JPY gift", lambda a: a.deposit(parse_amount("5000", "JPY"), "gift"))
    await script.run(
        hiro, "withdraw 1200 JPY", lambda a: a.withdraw(parse_amount("1200", "JPY"), "train pass")
    )
    await script.run(hiro, "deposit 0.5 JPY", lambda a: a.deposit(parse_amount("0.5", "JPY"), "coin"))

    live = {account.id: account for account in (ada, grace, hiro)}
    replayed = {account_id: await repo.load(Account, account_id) for account_id in live}

    console.rule("State, replayed from the log")
    console.print(_state_table(replayed.values()))

    mismatched: list[str] = []
    for account_id, account in replayed.items():
        console.rule(Text(f"{account.owner_name} ({account_id})"))
        history = await store.read_stream(account.stream_id)
        console.print(_history_table(history, account.currency))
        earlier = await repo.load(Account, account_id, version=EARLIER_VERSION)
        console.print(
            f"At version {EARLIER_VERSION} (a temporal query, replayed up to that event): "
            f"balance {format_money(earlier.balance, earlier.currency)} {earlier.currency}, "
            f"{earlier.transaction_count} transaction(s), {earlier.status}",
            markup=False,
            highlight=False,
        )
        same = account.state() == live[account_id].state() and account.version == live[account_id].version
        if not same:
            mismatched.append(account_id)
        console.print(
            Text("Replayed state equals live state.", style="green")
            if same
            else Text(f"MISMATCH: replayed {account!r} but live is {live[account_id]!r}", style="bold red")
        )

    console.rule("Replay check")
    if mismatched:
        console.print(
            Text(f"Replay check FAILED for {len(mismatched)} of {len(live)} accounts.", style="bold red")
        )
    else:
        console.print(
            Text(f"Replay check passed: all {len(live)} accounts replay to their live state.", style="green")
        )
    return DemoReport(tuple(live), tuple(script.refused), tuple(mismatched))


def _state_table(accounts: Iterable[Account]) -> Table:
    table = Table(title="Accounts")
    table.add_column("account", overflow="fold")  # an id cut short with an ellipsis is no id
    table.add_column("owner")
    table.add_column("currency")
    for name in ("balance", "status", "transactions", "version"):
        table.add_column(name, justify="left" if name == "status" else "right")
    for account in accounts:
        table.add_row(
            account.id,
            Text(account.owner_name),
            account.currency,
            format_money(account.balance, account.currency),
            str(account.status),
            str(account.transaction_count),
            str(account.version),
        )
    return table


def _history_table(events: list[RecordedEvent], currency: str) -> Table:
    table = Table(title="Event history")
    table.add_column("version", justify="right")
    table.add_column("type")
    table.add_column("amount", justify="right")
    table.add_column("details")
    table.add_column("recorded at (UTC)")
    for e in events:
        data = e.data
        amount = ""
        details = ""
        if isinstance(data, MoneyDeposited | MoneyWithdrawn):
            sign = "+" if isinstance(data, MoneyDeposited) else "-"
            amount = f"{sign}{format_money(data.amount, currency)}"
            details = data.description
        elif isinstance(data, AccountOpened):
            details = f"for {data.owner_name}, in {data.currency}"
        elif isinstance(data, AccountClosed):
            details = "at a zero balance"
        table.add_row(
            str(e.stream_version),
            e.event_type,
            amount,
            Text(details),
            e.recorded_at.isoformat(sep=" ", timespec="milliseconds"),
        )
    return table
