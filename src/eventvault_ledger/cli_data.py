"""Moving, checking and scavenging a store: ``eventvault export``, ``import``, ``verify``, ``scavenge``.

Thin layers over :func:`eventvault.export_events`, :func:`eventvault.import_events`,
:func:`eventvault.verify.verify_store` and :meth:`EventStore.scavenge`. Progress (a
bar) goes to stderr, so ``export --out -`` writes nothing but the JSON Lines to stdout.

Exit codes (docs/operations.md): 0 done; 1 the store failed, or verify found
problems; 2 bad usage or the store cannot be opened; 4 import refused (the
store holds other events; ``--force`` to import anyway); 5 the file is
damaged or not an export (nothing was imported).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Final

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

import eventvault_ledger.domain  # noqa: F401 - registers the ledger's events: verify decodes them
from eventvault import (
    ArchiveError,
    Checkpoint,
    EventStore,
    ExportSummary,
    ImportRefused,
    ImportSummary,
    ScavengeProgress,
    VerifyReport,
    export_events,
    export_keys,
    import_events,
    import_keys,
    verify_store,
)
from eventvault_ledger.cli import EXIT_FAILED, SERVE_DB, DbOption, _fail
from eventvault_ledger.cli_ops import JsonOption, _print_json, _run, _where

__all__ = ["EXIT_CORRUPT", "EXIT_REFUSED", "register"]

EXIT_REFUSED: Final = 4
EXIT_CORRUPT: Final = 5


def register(app: typer.Typer) -> None:
    """Add ``export``, ``import`` and ``verify`` to ``app``."""
    app.command("export")(export_command)
    app.command("import")(import_command)
    app.command("verify")(verify_command)
    app.command("scavenge")(scavenge_command)


@contextmanager
def _bar(what: str, *, quiet: bool = False) -> Iterator[Callable[[int, int | None], None]]:
    """A progress callback drawing a bar with events/s on stderr."""
    if quiet:
        yield lambda _done, _total: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed} events"),
        TextColumn("{task.fields[rate]:.0f} events/s"),
        TimeElapsedColumn(),
    )
    started = time.monotonic()
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task: TaskID = bar.add_task(what, total=None, rate=0.0)

        def update(done: int, total: int | None) -> None:
            elapsed = max(time.monotonic() - started, 1e-6)
            bar.update(task, completed=done, total=total, rate=done / elapsed)

        yield update


def export_command(
    db: DbOption = SERVE_DB,
    out: Annotated[
        str,
        typer.Option("--out", "-o", metavar="FILE|-", help="Where to write (.gz: compressed; -: stdout)."),
    ] = "-",
    after: Annotated[
        str | None,
        typer.Option("--after", metavar="CHECKPOINT", help="Only the events after this checkpoint."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    keys: Annotated[
        Path | None,
        typer.Option(
            "--keys",
            metavar="FILE",
            help="Also write the keys of the personal fields to FILE: as sensitive as the data, "
            "and a copy made before a forget undoes it (docs/data-protection.md).",
        ),
    ] = None,
) -> None:
    """Write the store's events as JSON Lines, with a checksum line at the end.

    Personal fields stay sealed in the file; without ``--keys`` they read as
    ``[redacted]`` wherever it is imported.
    """
    where = _where(db)

    async def work(store: EventStore) -> tuple[ExportSummary, int | None]:
        checkpoint = Checkpoint.parse(after) if after is not None else None
        with _bar("exporting", quiet=quiet) as progress:
            target = sys.stdout.buffer if out == "-" else Path(out)
            summary = await export_events(store, target, after=checkpoint, progress=progress)
        return summary, None if keys is None else await export_keys(store, keys)

    summary, key_rows = _run(where, work)
    if out != "-":
        typer.echo(f"exported {summary.events} events to {out} ({summary.checksum})", err=True)
    if key_rows is not None:
        typer.echo(f"exported {key_rows} subjects' keys to {keys}", err=True)


def import_command(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="An export (.gz: compressed).")],
    db: Annotated[str, typer.Option("--db", metavar="PATH|URL", help="The store to import into.")],
    force: Annotated[
        bool, typer.Option("--force", help="Import into a store that holds other events (after them).")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    keys: Annotated[
        Path | None,
        typer.Option("--keys", metavar="FILE", help="Also take the keys of personal fields (export --keys)."),
    ] = None,
) -> None:
    """Import an export into a store: checked first, resumable, ids, positions and times kept."""
    where = _where(db)
    for given in (file, keys):
        if given is not None and not given.is_file():
            _fail(f"no such file: {given}", 2)

    async def work(store: EventStore) -> tuple[ImportSummary, int | None]:
        with _bar("importing", quiet=quiet) as progress:
            try:
                summary = await import_events(store, file, force=force, progress=progress)
            except ArchiveError as exc:
                _fail(f"{file}: {exc}; nothing was imported", EXIT_CORRUPT)
            except ImportRefused as exc:
                _fail(str(exc), EXIT_REFUSED)
        try:
            return summary, None if keys is None else await import_keys(store, keys)
        except ArchiveError as exc:
            _fail(f"{keys}: {exc}; the events were imported, the keys not all (run it again)", EXIT_CORRUPT)

    summary, key_rows = _run(where, work)
    typer.echo(
        f"imported {summary.imported} events into {where.shown}"
        + (f" ({summary.skipped} were already there)" if summary.skipped else "")
        + ("" if key_rows is None else f", and {key_rows} subjects' keys")
    )


def _print_report(report: VerifyReport) -> None:
    console = Console()
    for p in report.problems:
        console.print(f"[red]✗[/red] {p.what}: {p.where}: {p.detail}", markup=True, highlight=False)
    more = report.problem_count - len(report.problems)
    if more:
        console.print(f"... and {more} more", highlight=False)
    verdict = "ok" if report.ok else f"{report.problem_count} problem(s)"
    console.print(
        f"checked {report.events} events in {report.streams} streams, "
        f"{report.snapshots} snapshots: {verdict}",
        highlight=False,
    )


def verify_command(
    db: DbOption = SERVE_DB,
    as_json: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Check every event decodes, stream versions run 1, 2, 3..., positions rise, snapshots decode."""
    where = _where(db)

    async def work(store: EventStore) -> VerifyReport:
        with _bar("verifying", quiet=quiet) as progress:
            return await verify_store(store, progress=progress)

    report = _run(where, work)
    if as_json:
        _print_json({**asdict(report), "ok": report.ok})
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


@contextmanager
def _streams_bar(*, quiet: bool) -> Iterator[Callable[[ScavengeProgress], None]]:
    """A scavenge's progress callback: a bar of the streams done, and the events removed, on stderr."""
    if quiet:
        yield lambda _progress: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} streams"),
        TextColumn("{task.fields[removed]} events removed"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task: TaskID = bar.add_task("scavenging", total=None, removed=0)

        def update(p: ScavengeProgress) -> None:
            bar.update(task, completed=p.streams_done, total=p.streams_total, removed=p.events_removed)

        yield update


def scavenge_command(
    db: DbOption = SERVE_DB,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Remove for good the events deletes and retention rules hide (not a stream's last, nor a snapshot's)."""
    where = _where(db)
    if not yes and not typer.confirm(f"Remove hidden events for good from {where.shown}?", err=True):
        _fail("nothing removed", EXIT_FAILED)

    async def work(store: EventStore) -> ScavengeProgress:
        with _streams_bar(quiet=quiet) as progress:
            return await store.scavenge(progress=progress)

    done = _run(where, work)
    if as_json:
        _print_json({"streams": done.streams_total, "eventsRemoved": done.events_removed})
        return
    typer.echo(f"scavenged {done.streams_total} streams: {done.events_removed} events removed")
