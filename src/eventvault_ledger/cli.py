"""The ``eventvault`` command line.

``eventvault demo`` runs the ledger walk-through, ``serve`` the HTTP API and
dashboard, ``worker`` the projections, ``projections`` and ``rebuild`` look
after them, ``bench`` runs a checkout's benchmarks. Each command is a thin
function here: the work lives in its own module (:mod:`eventvault_ledger.demo`,
:mod:`eventvault_ledger.serving`, the API package).

``--db`` takes a store URL or a plain path to a SQLite file. In a URL,
``sqlite:///ledger.db`` is relative to the current folder and
``sqlite:////var/lib/ev.db`` absolute (the fourth slash starts the path): a
command prints the absolute path it opened, and a folder that does not exist
is an error, never created behind the user's back (except the default's).

Exit codes: 0 success, 1 the command failed, 2 bad usage (including a --db
that names no usable store, or a port already in use). Errors are one line on
stderr, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Final, Literal, NoReturn, get_args
from urllib.parse import urlsplit

import typer
from rich.console import Console

import eventvault
from eventvault import EventStore, EventVaultError, InvalidInput, StoreError, open_store
from eventvault_ledger.demo import DemoReport, run_demo

if TYPE_CHECKING:
    from eventvault_ledger.api.settings import Token

__all__ = ["app", "main"]

SERVE_DB = "sqlite:///var/eventvault.db"
LogLevel = Literal["debug", "info", "warning", "error"]
LOG_LEVELS: Final = get_args(LogLevel)

EXIT_FAILED = 1
EXIT_USAGE = 2

app = typer.Typer(
    name="eventvault",
    help="eventvault: event sourcing and CQRS for Python, with an accounts ledger built on it.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    # Click's plain help: Typer's Rich panels print a "<bool>" type beside every flag.
    rich_markup_mode=None,
    # Rich tracebacks print local variables, which may hold connection strings.
    pretty_exceptions_enable=False,
)

_FILE_FORMS = (
    "a SQLite file as a path (./ledger.db, /var/lib/ev.db) or a URL (sqlite:///relative.db is "
    "under the current folder, sqlite:////absolute.db starts at /)"
)
DemoDbOption = Annotated[
    str | None,
    typer.Option(
        "--db",
        metavar="PATH|URL",
        help=f"The event store: {_FILE_FORMS}, memory://, or postgresql://user@host/db. "
        "Default: a new SQLite file in a fresh temporary folder, so each run starts empty.",
        show_default=False,
    ),
]
DbOption = Annotated[
    str,
    typer.Option(
        "--db",
        metavar="PATH|URL",
        help=f"The event store: {_FILE_FORMS}, or postgresql://user@host/db. Its folder must exist "
        "(the default's is created).",
    ),
]
LogLevelOption = Annotated[
    LogLevel,
    typer.Option(
        "--log-level",
        metavar="LEVEL",
        case_sensitive=False,
        help=f"Log messages of this level and above: {', '.join(LOG_LEVELS)}.",
    ),
]
ServeLogLevelOption = Annotated[
    LogLevel,
    typer.Option(
        "--log-level",
        metavar="LEVEL",
        case_sensitive=False,
        help=f"Log messages of this level and above: {', '.join(LOG_LEVELS)}. At info and below, "
        "also one line per HTTP request with its request id (the access log).",
    ),
]


def _fail(message: str, code: int) -> NoReturn:
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(code)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"eventvault {eventvault.__version__}")
        raise typer.Exit


@app.callback()
def _root(
    _version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_print_version, help="Print the version and exit."),
    ] = False,
) -> None:
    """eventvault: event sourcing and CQRS for Python, with an accounts ledger built on it."""


@app.command()
def demo(db: DemoDbOption = None) -> None:
    """Open accounts, move money, then replay every account from the log and check it."""
    console = Console(highlight=False)
    fresh = db is None
    if db is None:
        db = str(Path(tempfile.mkdtemp(prefix="eventvault-demo-")) / "demo.db")
    try:
        store = _resolve_db(db)
        report = asyncio.run(_demo(store, console))
    except _CannotOpen as exc:
        _fail(str(exc), EXIT_USAGE)
    except EventVaultError as exc:
        _fail(f"the demo failed: {str(exc).replace(db, _redacted(db))}", EXIT_FAILED)
    if not report.ok:
        _fail(f"replayed state differs from live state for {', '.join(report.mismatched)}", EXIT_FAILED)
    if fresh:
        console.print(
            f"The events stay in {store.shown}; `eventvault serve --db {store.shown}` shows them "
            "in the dashboard.",
            markup=False,
            soft_wrap=True,
        )


class _CannotOpen(Exception):
    """The --db names no store this process can open; the message is the whole error line."""


@dataclass(frozen=True, slots=True)
class _Db:
    """The store a --db names."""

    url: str
    """What :func:`eventvault.open_store` opens (a SQLite path made absolute)."""
    shown: str
    """What to print: the file's absolute path, or the URL without its password."""
    shared: bool = True
    """Whether other connections and processes can open it (not so in-memory stores)."""


_URL: Final = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _resolve_db(value: str, *, default: str | None = None) -> _Db:
    """The store ``value`` names: a URL, or a plain path to a SQLite file.

    A SQLite file's folder must exist; only the command's own ``default`` gets
    its folder made, so that it works on a fresh checkout.
    """
    if not _URL.match(value):
        if not value.strip():
            raise _CannotOpen("cannot open the store: --db is empty")
        path, query = Path(value).expanduser(), ""
    else:
        try:
            parts = urlsplit(value)
        except ValueError as exc:
            raise _CannotOpen(_cannot_open(value, exc)) from exc
        scheme = parts.scheme.lower()
        if scheme == "memory" or (scheme == "sqlite" and parts.path == "/:memory:"):
            return _Db(value, value, shared=False)
        if scheme != "sqlite" or parts.netloc or parts.path in ("", "/"):
            # Not a file: the store itself checks the URL (and says what is wrong with it).
            return _Db(value, _redacted(value))
        path, query = Path(parts.path.removeprefix("/")), parts.query
    absolute = path.resolve()
    folder = absolute.parent
    if not folder.is_dir():
        if value == default:
            folder.mkdir(parents=True, exist_ok=True)
        else:
            raise _CannotOpen(_missing_folder(value, path, folder))
    return _Db(f"sqlite:///{absolute}" + (f"?{query}" if query else ""), str(absolute))


def _missing_folder(value: str, path: Path, folder: Path) -> str:
    message = f"cannot open the store {_redacted(value)}: the folder {folder} does not exist"
    if value.startswith("sqlite:///") and not path.is_absolute() and Path("/", path).parent.is_dir():
        # The classic slip: sqlite:///tmp/x.db is tmp/x.db here, not /tmp/x.db.
        message += (
            f"; sqlite:///{path} is relative to the current folder, for /{path} "
            f"write sqlite:////{path} or just /{path}"
        )
    return message


def _shared_store(value: str, command: str, *, default: str | None = SERVE_DB) -> _Db:
    """The store of a command that shares it with other processes and keeps read models beside it."""
    try:
        db = _resolve_db(value, default=default)
    except _CannotOpen as exc:
        _fail(str(exc), EXIT_USAGE)
    if not db.shared:
        _fail(
            f"eventvault {command} cannot use {value}, a store that lives inside one process: "
            f"{_WHY_SHARED[command]}. Pass a SQLite file (--db ./ledger.db) "
            "or a postgresql:// URL",
            EXIT_USAGE,
        )
    return db


_WHY_SHARED: Final = {
    "serve": "the server keeps its read models in a SQL database beside the events",
    "worker": "a worker shares the store with servers and workers in other processes",
    "projections": "the projections keep their read models in a SQL database beside the events",
    "rebuild": "the projections keep their read models in a SQL database beside the events",
    "db": "its status includes the read models, kept in a SQL database beside the events",
}


async def _open(db: _Db) -> EventStore:
    try:
        return await open_store(db.url)
    except (InvalidInput, StoreError) as exc:
        raise _CannotOpen(_cannot_open(db.url, exc)) from exc
    except ModuleNotFoundError as exc:
        # A backend whose driver is an optional extra that is not installed.
        raise _CannotOpen(_cannot_open(db.url, _missing_driver(exc))) from exc


def _missing_driver(exc: ModuleNotFoundError) -> str:
    if (exc.name or "").startswith("psycopg"):
        return (
            f"its backend needs {exc.name}, which comes with the postgres extra: "
            "pip install 'eventvault[postgres]'"
        )
    return f"its backend needs the missing module {exc.name!r}"


async def _demo(db: _Db, console: Console) -> DemoReport:
    store = await _open(db)
    try:
        console.print(f"eventvault demo, store: {db.shown}", markup=False)
        return await run_demo(store, console)
    finally:
        await store.close()


def _cannot_open(db: str, exc: BaseException | str) -> str:
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
    int, typer.Option("--port", metavar="PORT", min=0, max=65535, help="Port to listen on (0: any free one).")
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
    projection_workers: Annotated[
        int,
        typer.Option(
            "--projection-workers",
            metavar="N",
            min=0,
            max=64,
            help="Run the projections and transfers in N `eventvault worker` processes that this server "
            "starts, starts again if they die, and stops with it (0: in this process). Leaves this "
            "process to its requests: more of them per second where a core is spare.",
        ),
    ] = 0,
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
    log_level: ServeLogLevelOption = "warning",
) -> None:
    """Serve the ledger's HTTP API and dashboard."""
    # Only the light settings module before the checks: a refusal answers at once.
    try:
        from eventvault_ledger.api.settings import Settings, is_loopback  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        _fail(_needs_server_extra(exc), EXIT_FAILED)

    parsed, scrape_token = _serve_tokens(tokens, metrics_token)
    if not parsed and not is_loopback(host):
        _fail(
            f"refusing to listen on {host} without tokens: anyone who can reach it could move money. "
            "Pass --tokens, or listen on 127.0.0.1",
            EXIT_USAGE,
        )
    if projection_workers and no_projections:
        _fail("--projection-workers runs the projections, --no-projections runs none: pass one", EXIT_USAGE)
    store = _shared_store(db, "serve")
    try:
        eventvault.create_store(store.url)
    except InvalidInput as exc:
        _fail(_cannot_open(store.url, exc), EXIT_USAGE)
    except ModuleNotFoundError as exc:
        _fail(_cannot_open(store.url, _missing_driver(exc)), EXIT_USAGE)
    try:
        import uvicorn  # noqa: F401, PLC0415 - only the server needs these; serving.run uses it

        from eventvault_ledger import serving, worker_processes  # noqa: PLC0415
        from eventvault_ledger.api.app import begin_stop_threadsafe, create_app  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        _fail(_needs_server_extra(exc), EXIT_FAILED)

    settings = Settings(
        db=store.url,
        tokens=parsed,
        run_projections=not (no_projections or projection_workers),
        demo=demo,
        cors_origins=tuple(cors or ()),
        consistency_timeout=consistency_timeout,
        account_cache=account_cache,
        idempotency_ttl=idempotency_ttl,
        metrics_token=scrape_token,
        body_timeout=body_timeout,
    )
    # Bound before the app starts: a port in use is this one line, not a started app that cannot listen.
    try:
        sock = serving.listen(host, port)
    except serving.PortUnavailable as exc:
        _fail(str(exc), EXIT_USAGE)
    with sock:
        shown = f"[{host}]" if ":" in host else host
        typer.echo(f"eventvault ledger on http://{shown}:{sock.getsockname()[1]}/  (store: {store.shown})")
        application = create_app(settings)
        workers = None
        if projection_workers:
            command = worker_processes.worker_command(store.url, log_level=log_level.lower())
            workers = worker_processes.WorkerProcesses(command, projection_workers)
        serving.run(
            application,
            sock,
            log_level=log_level.lower(),
            max_connections=max_connections,
            keep_alive_timeout=keep_alive_timeout,
            workers=workers,
            on_exit=lambda: begin_stop_threadsafe(application),
        )


def _serve_tokens(tokens: str | None, metrics_token: str | None) -> tuple[tuple[Token, ...], str | None]:
    """The bearer tokens of --tokens and the scrape token of --metrics-token; exit 2 on a bad one."""
    from eventvault_ledger.api.settings import parse_metrics_token, parse_tokens  # noqa: PLC0415

    parsed: tuple[Token, ...] = ()
    if tokens is not None:
        try:
            parsed = parse_tokens(tokens)
        except (InvalidInput, OSError) as exc:
            _fail(str(exc), EXIT_USAGE)
    if metrics_token is None:
        return parsed, None
    if not parsed:
        _fail(
            "--metrics-token needs --tokens: without tokens every endpoint is open (on loopback)", EXIT_USAGE
        )
    try:
        return parsed, parse_metrics_token(metrics_token)
    except (InvalidInput, OSError) as exc:
        _fail(str(exc), EXIT_USAGE)


def _needs_server_extra(exc: ModuleNotFoundError) -> str:
    return (
        f"eventvault serve needs {(exc.name or '').partition('.')[0]}, which comes with the server extra: "
        "pip install 'eventvault[server]'"
    )


LeaseOption = Annotated[
    float,
    typer.Option(
        "--lease-seconds",
        metavar="SECONDS",
        min=1.0,
        max=3600.0,
        help="How long a partition stays this worker's between renewals: another worker takes over a "
        "dead worker's partitions after it (a worker that stops gives them back at once).",
    ),
]


@app.command()
def worker(
    db: DbOption = SERVE_DB,
    lease_seconds: LeaseOption = 10.0,
    log_level: LogLevelOption = "info",
    until_stdin_closes: Annotated[
        bool,
        typer.Option(
            "--until-stdin-closes",
            hidden=True,  # how `serve --projection-workers` ties its workers' lives to its own
            help="Also stop at the end of stdin (the process that started this one closed it, or ended).",
        ),
    ] = False,
) -> None:
    """Run the ledger's projections and transfers (several workers share them) until SIGINT or SIGTERM."""
    from eventvault.processes import ProcessRunner  # noqa: PLC0415
    from eventvault_ledger.read_models import process_managers  # noqa: PLC0415
    from eventvault_ledger.read_models import projections as ledger_projections  # noqa: PLC0415

    where = _shared_store(db, "worker")
    _configure_logging(log_level)

    async def run() -> None:
        store = await _open(where)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            # A stop, not a kill: the runner gives its partitions back, so the other
            # workers take them at once instead of after the lease. (Where the loop
            # takes no signal handlers, Ctrl-C still cancels the run, with the same effect.)
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        if until_stdin_closes:
            threading.Thread(
                target=_stop_at_end_of_stdin, args=(loop, stop), name="eventvault-stdin", daemon=True
            ).start()
        try:
            runner = ProcessRunner(
                store, process_managers(), projections=ledger_projections(), lease_seconds=lease_seconds
            )
            async with runner:
                running = ", ".join(runner.projections)
                typer.echo(f"worker {runner.worker_id} running {running}  (store: {where.shown})")
                _worker_log.info("worker %s: leases of %gs", runner.worker_id, lease_seconds)
                await stop.wait()
                _worker_log.info("worker %s stopping", runner.worker_id)
        finally:
            await store.close()

    try:
        asyncio.run(run())
    except _CannotOpen as exc:
        _fail(str(exc), EXIT_USAGE)
    except KeyboardInterrupt:
        pass
    typer.echo("worker stopped")


_worker_log = logging.getLogger("eventvault_ledger.worker")


def _stop_at_end_of_stdin(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """Read stdin to its end (its writer closed it, or ended), then set ``stop`` on ``loop``."""
    with contextlib.suppress(OSError, ValueError):
        while sys.stdin.buffer.read(4096):
            pass
    with contextlib.suppress(RuntimeError):  # the loop has closed: the worker stopped already
        loop.call_soon_threadsafe(stop.set)


projections_app = typer.Typer(
    help="Show and control the ledger's projections (without a command: their status).",
    invoke_without_command=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
app.add_typer(projections_app, name="projections")

NameArgument = Annotated[
    str,
    typer.Argument(metavar="NAME", help="The projection (`eventvault projections` lists them)."),
]
ProjectionsJsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document instead of a table.")
]


@projections_app.callback()
def projections(ctx: typer.Context, db: DbOption = SERVE_DB, as_json: ProjectionsJsonOption = False) -> None:
    """Show each projection's checkpoint, lag, rate, state and last error."""
    if ctx.invoked_subcommand is None:
        cli_ops.projections_status(db, as_json=as_json, watch=False, interval=1.0)


@projections_app.command("status")
def projections_status(
    db: DbOption = SERVE_DB,
    as_json: ProjectionsJsonOption = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh until Ctrl-C (with --json: a line each time).")
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", metavar="SECONDS", min=0.1, help="How often --watch refreshes.")
    ] = 1.0,
) -> None:
    """Show each projection's full name, state, checkpoint, head, lag, and last error."""
    cli_ops.projections_status(db, as_json=as_json, watch=watch, interval=interval)


@projections_app.command("pause")
def projections_pause(name: NameArgument, db: DbOption = SERVE_DB) -> None:
    """Stop a projection in every process (its read model stays as it is) until resumed."""
    cli_ops.projection_control(db, name, "pause")


@projections_app.command("resume")
def projections_resume(name: NameArgument, db: DbOption = SERVE_DB) -> None:
    """Run a paused or failed projection again, from its checkpoint."""
    cli_ops.projection_control(db, name, "resume")


@projections_app.command("reset")
def projections_reset(
    name: NameArgument,
    to: Annotated[
        str, typer.Option("--to", metavar="CP", help="The checkpoint to move to (as `log tail` prints them).")
    ],
    db: DbOption = SERVE_DB,
) -> None:
    """Move a paused projection forward to a checkpoint, skipping the events before it (a poison event)."""
    cli_ops.projection_control(db, name, "reset", to)


@projections_app.command("rebuild")
def projections_rebuild(name: NameArgument, db: DbOption = SERVE_DB) -> None:
    """Rebuild a projection into new tables, with progress, events/s and ETA; returns once swapped in."""
    cli_ops.projections_rebuild(db, name)


@app.command()
def rebuild(name: NameArgument, db: DbOption = SERVE_DB) -> None:
    """Rebuild a projection from the start into new tables, then swap them in."""
    cli_ops.projections_rebuild(db, name)


def _configure_logging(level: str) -> None:
    import logging.config  # noqa: PLC0415

    from eventvault_ledger.serving import logging_config  # noqa: PLC0415

    logging.config.dictConfig(logging_config(level.lower()))


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
    raise typer.Exit(run_bench(ctx.args, prog="eventvault bench"))


@app.command()
def version() -> None:
    """Print the eventvault version."""
    typer.echo(f"eventvault {eventvault.__version__}")


# The operator's commands live in their own module, which uses this one's helpers and
# adds its commands to `app` when imported (whichever of the two is imported first).
from eventvault_ledger import cli_ops  # noqa: E402


def main() -> None:
    """Entry point of the ``eventvault`` console script."""
    app()


if __name__ == "__main__":  # pragma: no cover
    # Run as `python -m`: the package's own copy of this module is the one cli_ops completes.
    from eventvault_ledger.cli import main as _main

    _main()
