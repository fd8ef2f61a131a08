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
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import urlsplit

import typer
from rich.console import Console

import eventvault
from eventvault import EventVaultError, InvalidInput, StoreError, open_store
from eventvault_ledger.demo import DemoReport, run_demo

__all__ = ["app", "main"]

DEFAULT_DB = "sqlite:///eventvault-demo.db"
SERVE_DB = "sqlite:///var/eventvault.db"

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


HostOption = Annotated[str, typer.Option("--host", metavar="HOST", help="Address to listen on.")]
PortOption = Annotated[
    int, typer.Option("--port", metavar="PORT", min=0, max=65535, help="Port to listen on.")
]


@app.command()
def serve(
    db: DbOption = SERVE_DB,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    tokens: Annotated[
        str | None,
        typer.Option(
            "--tokens",
            metavar="FILE|SPEC",
            help="Bearer tokens: a file with one TOKEN:SCOPES[:SUBJECT] per line, or entries separated "
            "by ';'. Scopes: read, write, admin. Without tokens the server only listens on loopback.",
        ),
    ] = None,
    no_projections: Annotated[
        bool, typer.Option("--no-projections", help="Do not run projections here (run `eventvault worker`).")
    ] = False,
    demo: Annotated[bool, typer.Option("--demo", help="Seed demo accounts when the store is empty.")] = False,
    cors: Annotated[
        list[str] | None,
        typer.Option("--cors", metavar="ORIGIN", help="Allow this browser origin (repeatable)."),
    ] = None,
    consistency_timeout: Annotated[
        float,
        typer.Option(
            "--consistency-timeout",
            metavar="SECONDS",
            min=0.0,
            max=60.0,
            help="How long a query with consistentWith waits for the read model before answering 503.",
        ),
    ] = 5.0,
    account_cache: Annotated[
        int,
        typer.Option(
            "--account-cache",
            metavar="N",
            min=0,
            help="Accounts whose latest state this process keeps in memory (0: none); a command then "
            "reads only the events recorded after it.",
        ),
    ] = 10_000,
    idempotency_ttl: Annotated[
        float,
        typer.Option(
            "--idempotency-ttl",
            metavar="SECONDS",
            min=0.0,
            help="How long an Idempotency-Key and its first answer are kept, at least (0: forever).",
        ),
    ] = 86_400.0,
    metrics_token: Annotated[
        str | None,
        typer.Option(
            "--metrics-token",
            metavar="FILE|TOKEN",
            help="A token good for /metrics only (a file holding it, or the token); with --tokens, "
            "/metrics takes it or an admin token.",
        ),
    ] = None,
    max_connections: Annotated[
        int,
        typer.Option(
            "--max-connections",
            metavar="N",
            min=1,
            help="Connections (or requests) served at once, live streams included; beyond, new "
            "requests get 503 (uvicorn's limit_concurrency).",
        ),
    ] = 1000,
    keep_alive_timeout: Annotated[
        int,
        typer.Option(
            "--keep-alive-timeout",
            metavar="SECONDS",
            min=1,
            help="How long an idle connection is kept open between requests.",
        ),
    ] = 5,
    body_timeout: Annotated[
        float,
        typer.Option(
            "--body-timeout",
            metavar="SECONDS",
            min=0.1,
            help="How long a request body may take to arrive whole (408 after that).",
        ),
    ] = 30.0,
) -> None:
    """Serve the ledger's HTTP API and dashboard."""
    # Only the light settings module before the checks: a refusal answers at once.
    from eventvault_ledger.api.settings import (  # noqa: PLC0415
        Settings,
        Token,
        is_loopback,
        parse_metrics_token,
        parse_tokens,
    )

    parsed: tuple[Token, ...] = ()
    if tokens is not None:
        try:
            parsed = parse_tokens(tokens)
        except (InvalidInput, OSError) as exc:
            _fail(str(exc), EXIT_USAGE)
    scrape_token: str | None = None
    if metrics_token is not None:
        if not parsed:
            _fail(
                "--metrics-token needs --tokens: without tokens every endpoint is open (on loopback)",
                EXIT_USAGE,
            )
        try:
            scrape_token = parse_metrics_token(metrics_token)
        except (InvalidInput, OSError) as exc:
            _fail(str(exc), EXIT_USAGE)
    if not parsed and not is_loopback(host):
        _fail(
            f"refusing to listen on {host} without tokens: anyone who can reach it could move money. "
            "Pass --tokens, or listen on 127.0.0.1",
            EXIT_USAGE,
        )
    _prepare_sqlite_dir(db)
    try:
        eventvault.create_store(db)
    except (InvalidInput, ModuleNotFoundError) as exc:
        _fail(_cannot_open(db, exc), EXIT_USAGE)
    import uvicorn  # noqa: PLC0415 - only the server needs it

    from eventvault_ledger.api.app import create_app  # noqa: PLC0415

    settings = Settings(
        db=db,
        tokens=parsed,
        run_projections=not no_projections,
        demo=demo,
        cors_origins=tuple(cors or ()),
        consistency_timeout=consistency_timeout,
        account_cache=account_cache,
        idempotency_ttl=idempotency_ttl,
        metrics_token=scrape_token,
        body_timeout=body_timeout,
    )
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"eventvault ledger on http://{shown}:{port}/  (store: {_redacted(db)})")
    uvicorn.run(
        create_app(settings),
        host=host,
        port=port,
        log_level="info",
        access_log=False,
        # Live-update streams never end by themselves: without a bound, a stop would
        # wait for every open dashboard to go away.
        timeout_graceful_shutdown=5,
        # Bounded work per caller: connections at once and idle time between requests
        # (the body's size and time limits are the app's own).
        limit_concurrency=max_connections,
        timeout_keep_alive=keep_alive_timeout,
    )


@app.command()
def worker(db: DbOption = SERVE_DB) -> None:
    """Run the ledger's projections (several workers share them) until interrupted."""
    from eventvault.projections import ProjectionRunner  # noqa: PLC0415
    from eventvault_ledger.read_models import projections as ledger_projections  # noqa: PLC0415

    async def run() -> None:
        try:
            store = await open_store(db)
        except (InvalidInput, StoreError) as exc:
            raise _CannotOpen(str(exc)) from exc
        try:
            async with ProjectionRunner(store, ledger_projections()) as runner:
                typer.echo(f"worker {runner.worker_id} running {', '.join(runner.projections)}")
                await asyncio.Event().wait()  # until Ctrl-C / SIGTERM cancels the run
        finally:
            await store.close()

    try:
        asyncio.run(run())
    except _CannotOpen as exc:
        _fail(_cannot_open(db, exc), EXIT_USAGE)
    except KeyboardInterrupt:
        typer.echo("worker stopped")


@app.command()
def projections(db: DbOption = SERVE_DB) -> None:
    """Show each projection's checkpoint, lag, rate, state and last error."""
    from rich.table import Table  # noqa: PLC0415

    from eventvault.projections import ProjectionRunner  # noqa: PLC0415
    from eventvault_ledger.read_models import projections as ledger_projections  # noqa: PLC0415

    async def run() -> list[Any]:
        store = await open_store(db)
        try:
            runner = ProjectionRunner(store, ledger_projections())
            await runner.prepare()
            try:
                return await runner.status()
            finally:
                await runner.stop()
        finally:
            await store.close()

    try:
        statuses = asyncio.run(run())
    except (InvalidInput, StoreError) as exc:
        _fail(_cannot_open(db, exc), EXIT_USAGE)
    table = Table(
        "projection", "state", "checkpoint", "head", "lag (events)", "lag (s)", "applied", "last error"
    )
    for s in statuses:
        error = "" if s.last_error is None else s.last_error.message
        table.add_row(
            s.name,
            s.state,
            s.checkpoint,
            s.head,
            str(s.lag_events),
            f"{s.lag_seconds:.1f}",
            str(s.applied),
            error,
        )
    Console().print(table)


@app.command()
def rebuild(
    name: Annotated[str, typer.Argument(help="The projection to rebuild.")],
    db: DbOption = SERVE_DB,
) -> None:
    """Rebuild a projection from the start into new tables, then swap them in."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn  # noqa: PLC0415

    from eventvault.projections import ProjectionRunner  # noqa: PLC0415
    from eventvault_ledger.read_models import projections as ledger_projections  # noqa: PLC0415

    async def run() -> bool:
        store = await open_store(db)
        try:
            async with ProjectionRunner(store, ledger_projections()) as runner:
                if name not in runner.projections:
                    raise InvalidInput(
                        f"no projection is named {name!r}; there are {sorted(runner.projections)}"
                    )
                progress = await runner.rebuild(name)
                columns = (
                    TextColumn("{task.description}"),
                    BarColumn(),
                    TextColumn("{task.completed}/{task.total}"),
                    TimeRemainingColumn(),
                )
                with Progress(*columns) as bar:
                    task = bar.add_task(f"rebuilding {name}", total=max(progress.total, 1))
                    while not await runner.wait_rebuilt(name, timeout=0.2):
                        status = {s.name: s for s in await runner.status()}[name]
                        if status.rebuild is None or status.rebuild.state == "failed":
                            return False
                        bar.update(task, completed=status.rebuild.done, total=max(status.rebuild.total, 1))
                    bar.update(task, completed=bar.tasks[0].total)
                return True
        finally:
            await store.close()

    try:
        ok = asyncio.run(run())
    except (InvalidInput, StoreError) as exc:
        _fail(str(exc), EXIT_USAGE)
    if not ok:
        _fail(f"the rebuild of {name} failed: see `eventvault projections`", EXIT_FAILED)
    typer.echo(f"{name} rebuilt and swapped in")


def _prepare_sqlite_dir(db: str) -> None:
    """Create the folder of a sqlite:/// file, so the default path works on a fresh clone."""
    parts = urlsplit(db)
    if parts.scheme == "sqlite" and parts.path not in ("", "/", "/:memory:"):
        Path(parts.path[1:]).parent.mkdir(parents=True, exist_ok=True)


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    add_help_option=False,
)
def bench(ctx: typer.Context) -> None:
    """Benchmark against eventsourcing and the raw driver (a checkout's benchmarks/; --help for options)."""
    import sys  # noqa: PLC0415

    # The harness lives in the checkout, beside src/, not in the installed package.
    checkout = str(Path(__file__).resolve().parents[2])
    if Path(checkout, "benchmarks", "__init__.py").is_file() and checkout not in sys.path:
        sys.path.append(checkout)
    try:
        from benchmarks.cli import main as run_bench  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        if exc.name == "benchmarks":
            _fail("the benchmarks live in the eventvault repository: run this from a checkout", EXIT_USAGE)
        _fail(f"the benchmarks need {exc.name!r}: pip install -e '.[bench]'", EXIT_USAGE)
    raise typer.Exit(run_bench(ctx.args))


@app.command()
def version() -> None:
    """Print the eventvault version."""
    typer.echo(f"eventvault {eventvault.__version__}")


def main() -> None:
    """Entry point of the ``eventvault`` console script."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
