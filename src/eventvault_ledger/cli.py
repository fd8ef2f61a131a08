"""The ``eventvault`` command line.

``eventvault demo [--db URL]`` runs the ledger walk-through against a store;
``eventvault version`` prints the version. Each command is a thin function
here: the work lives in its own module (:mod:`eventvault_ledger.demo`), so a
server command can join them without this module growing.

Exit codes: 0 success, 1 the command failed, 2 bad usage (including a --db
URL that names no usable store). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, NoReturn
from urllib.parse import urlsplit

import typer
from rich.console import Console

import eventvault
from eventvault import EventVaultError, InvalidInput, StoreError, open_store
from eventvault_ledger.demo import DemoReport, run_demo

__all__ = ["app", "main"]

DEFAULT_DB = "sqlite:///eventvault-demo.db"

EXIT_FAILED = 1
EXIT_USAGE = 2

app = typer.Typer(
    name="eventvault",
    help="eventvault: event sourcing and CQRS for Python, with an accounts ledger built on it.",
    no_args_is_help=True,
    add_completion=False,
    # Rich tracebacks print local variables, which may hold connection strings.
    pretty_exceptions_enable=False,
)

DbOption = Annotated[
    str,
    typer.Option(
        "--db",
        metavar="URL",
        help="The event store: sqlite:///path.db, memory:// or postgresql://user@host/db.",
    ),
]


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


@app.command()
def demo(db: DbOption = DEFAULT_DB) -> None:
    """Open accounts, move money, then replay every account from the log and check it."""
    console = Console(highlight=False)
    try:
        report = asyncio.run(_demo(db, console))
    except _CannotOpen as exc:
        _fail(_cannot_open(db, exc), EXIT_USAGE)
    except EventVaultError as exc:
        _fail(f"the demo failed: {str(exc).replace(db, _redacted(db))}", EXIT_FAILED)
    if not report.ok:
        _fail(f"replayed state differs from live state for {', '.join(report.mismatched)}", EXIT_FAILED)


class _CannotOpen(Exception):
    """The --db URL names no store this process can open."""


async def _demo(db: str, console: Console) -> DemoReport:
    try:
        store = await open_store(db)
    except (InvalidInput, StoreError) as exc:
        raise _CannotOpen(str(exc)) from exc
    except ModuleNotFoundError as exc:
        # A backend whose driver is an optional extra that is not installed.
        raise _CannotOpen(f"its backend needs the missing module {exc.name!r}") from exc
    try:
        console.print(f"eventvault demo, store: {_redacted(db)}", markup=False)
        return await run_demo(store, console)
    finally:
        await store.close()


def _cannot_open(db: str, exc: BaseException) -> str:
    # Store errors may quote the URL: show it without its password, and only once.
    text = " ".join(str(exc).split())
    shown = _redacted(db)
    if db and db in text:
        return f"cannot open the store: {text.replace(db, shown)}"
    return f"cannot open the store {shown!r}: {text}"


def _redacted(url: str) -> str:
    """``url`` without its password, fit to print."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}:***@{host}").geturl()


@app.command()
def version() -> None:
    """Print the eventvault version."""
    typer.echo(f"eventvault {eventvault.__version__}")


def main() -> None:
    """Entry point of the ``eventvault`` console script."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
