"""The operator's commands of ``eventvault``: look inside the store, and control the projections.

``streams``, ``log``, ``events`` and ``db`` read the store (``streams
delete`` and ``streams retention`` also delete streams and set their
retention rules), ``snapshots`` lists and drops snapshots; ``projections``
shows and controls the read models. Each is a thin layer over the toolkit's
public API (:meth:`EventStore.list_streams`, :meth:`EventStore.read_stream`,
:meth:`EventStore.read_all`, :meth:`EventStore.get_event`,
:meth:`EventStore.counts`, :meth:`EventStore.list_snapshots`,
:meth:`EventStore.drop_snapshots`, :class:`ProjectionRunner`), so a script can do the
same in Python. Every listing takes ``--json`` (one JSON document on stdout);
docs/operations.md lists the commands and their exit codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated, Any, Final, TypeVar

import msgspec
import typer
from rich.console import Console
from rich.table import Table

from eventvault import (
    ANY,
    Checkpoint,
    EventStore,
    InvalidInput,
    RecordedEvent,
    StoreError,
    StreamDeleted,
    StreamLifecycle,
    WrongExpectedVersion,
)
from eventvault.store import schema_version, size_on_disk
from eventvault_ledger.cli import (
    EXIT_FAILED,
    EXIT_USAGE,
    SERVE_DB,
    DbOption,
    _cannot_open,
    _CannotOpen,
    _Db,
    _fail,
    _open,
    _resolve_db,
    _shared_store,
    app,
)

if TYPE_CHECKING:
    from eventvault.projections import ProjectionRunner, ProjectionStatus

__all__ = ["EXIT_CONFLICT", "EXIT_NOT_FOUND", "event_json", "register", "status_json", "with_runner"]

EXIT_NOT_FOUND: Final = 3
EXIT_CONFLICT: Final = 6
"""A delete refused: the stream is not at ``--expected-version``, or it is deleted for ever."""
T = TypeVar("T")

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of a table.")]
LimitOption = Annotated[int, typer.Option("--limit", metavar="N", min=1, max=10_000, help="At most N rows.")]

_GROUP: Final[dict[str, Any]] = {
    "no_args_is_help": True,
    "add_completion": False,
    "context_settings": {"help_option_names": ["-h", "--help"]},
    "rich_markup_mode": None,
    "pretty_exceptions_enable": False,
}
streams_app = typer.Typer(help="List the streams, read one, delete one, set its retention.", **_GROUP)
log_app = typer.Typer(help="Read the global log.", **_GROUP)
events_app = typer.Typer(help="Look at one event.", **_GROUP)
db_app = typer.Typer(help="The store's database: its status, and its schema.", **_GROUP)
snapshots_app = typer.Typer(help="List and drop the aggregates' snapshots.", **_GROUP)


def register(app: typer.Typer) -> None:
    """Add the operator's commands to ``app``."""
    app.add_typer(streams_app, name="streams")
    app.add_typer(log_app, name="log")
    app.add_typer(events_app, name="events")
    app.add_typer(db_app, name="db")
    app.add_typer(snapshots_app, name="snapshots")
    from eventvault_ledger.cli_data import register as register_data  # noqa: PLC0415 - it uses this module

    register_data(app)


# -- running a command against a store ---------------------------------------------------------


def _where(db: str) -> _Db:
    try:
        return _resolve_db(db, default=SERVE_DB)
    except _CannotOpen as exc:
        _fail(str(exc), EXIT_USAGE)


def _run(where: _Db, work: Callable[[EventStore], Awaitable[T]]) -> T:
    """Open the store, run ``work`` on it, close it; store errors are one line and exit 1 (2: cannot open)."""

    async def run() -> T:
        store = await _open(where)
        try:
            return await work(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except _CannotOpen as exc:
        _fail(str(exc), EXIT_USAGE)
    except InvalidInput as exc:
        _fail(str(exc), EXIT_USAGE)
    except StoreError as exc:
        _fail(_cannot_open(where.url, exc).replace("cannot open the store", "the store failed"), EXIT_FAILED)


def _print_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def _table(*headers: str, show_header: bool = True) -> Table:
    """A table whose cells are printed whole (see :func:`_print_table`)."""
    table = Table(*headers, show_header=show_header)
    for column in table.columns:
        column.no_wrap = True
    return table


def _print_table(table: Table) -> None:
    """Print ``table`` with every cell whole: wider than the terminal if it must be, never cut short."""
    console = _console()
    needed = console.measure(table, options=console.options.update_width(100_000)).maximum
    if needed > console.width:
        console = Console(highlight=False, soft_wrap=False, width=needed)
    console.print(table)


def _console() -> Console:
    return Console(highlight=False, soft_wrap=False)


def event_json(e: RecordedEvent) -> dict[str, Any]:
    """An event as the commands print it in JSON: every envelope field, its data as stored."""
    return {
        "eventId": str(e.event_id),
        "streamId": e.stream_id,
        "streamVersion": e.stream_version,
        "position": e.position,
        "checkpoint": str(e.checkpoint),
        "eventType": e.event_type,
        "schemaVersion": e.schema_version,
        "occurredAt": e.occurred_at.isoformat(),
        "recordedAt": e.recorded_at.isoformat(),
        "data": e.data_as_stored(),
        "metadata": msgspec.to_builtins(e.metadata),
    }


def _events_table(events: list[RecordedEvent]) -> Table:
    table = _table("position", "stream", "version", "type", "recorded", "data")
    for e in events:
        table.add_row(
            str(e.position),
            e.stream_id,
            str(e.stream_version),
            e.event_type,
            e.recorded_at.isoformat(timespec="seconds"),
            msgspec.json.encode(e.data_as_stored()).decode(),
        )
    return table


# -- streams -------------------------------------------------------------------------------------


@streams_app.command("ls")
def streams_ls(
    db: DbOption = SERVE_DB,
    prefix: Annotated[
        str | None, typer.Option("--prefix", metavar="TEXT", help="Only streams whose id starts with TEXT.")
    ] = None,
    after: Annotated[
        str | None, typer.Option("--after", metavar="STREAM", help="Continue after this stream id.")
    ] = None,
    limit: LimitOption = 100,
    as_json: JsonOption = False,
) -> None:
    """List streams in order of their ids: version and when the last event was recorded."""
    where = _where(db)
    found = _run(where, lambda s: s.list_streams(prefix=prefix, after=after, limit=limit))
    if as_json:
        _print_json(
            {
                "streams": [
                    {
                        "streamId": s.stream_id,
                        "version": s.version,
                        "lastPosition": s.last_position,
                        "lastRecordedAt": s.last_recorded_at.isoformat(),
                    }
                    for s in found
                ],
                "next": found[-1].stream_id if len(found) == limit else None,
            }
        )
        return
    table = _table("stream", "version", "last event recorded")
    for s in found:
        table.add_row(s.stream_id, str(s.version), s.last_recorded_at.isoformat(timespec="seconds"))
    _print_table(table)
    if len(found) == limit:
        typer.echo(f"more: --after {found[-1].stream_id}")


@streams_app.command("read")
def streams_read(
    stream: Annotated[str, typer.Argument(metavar="STREAM", help="The stream id.")],
    db: DbOption = SERVE_DB,
    from_version: Annotated[int, typer.Option("--from", metavar="VERSION", min=1, help="First version.")] = 1,
    to_version: Annotated[
        int | None, typer.Option("--to", metavar="VERSION", min=0, help="Last version.")
    ] = None,
    backwards: Annotated[bool, typer.Option("--backwards", help="Newest first.")] = False,
    limit: Annotated[
        int | None, typer.Option("--limit", metavar="N", min=1, help="At most N events.")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Print a stream's events (exit 3 if it has none)."""
    where = _where(db)
    events = _run(
        where,
        lambda s: s.read_stream(
            stream, from_version=from_version, to_version=to_version, backwards=backwards, limit=limit
        ),
    )
    if not events and not _run(where, lambda s: s.stream_version(stream)):
        _fail(f"no stream {stream!r} in {where.shown}", EXIT_NOT_FOUND)
    if as_json:
        _print_json({"streamId": stream, "events": [event_json(e) for e in events]})
        return
    _print_table(_events_table(events))


StreamArgument = Annotated[str, typer.Argument(metavar="STREAM", help="The stream id.")]


@streams_app.command("delete")
def streams_delete(
    stream: StreamArgument,
    db: DbOption = SERVE_DB,
    tombstone: Annotated[
        bool, typer.Option("--tombstone", help="Delete it for ever: no append is ever taken again.")
    ] = False,
    expected: Annotated[
        int | None,
        typer.Option("--expected-version", metavar="V", min=1, help="Only if the stream is at version V."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Delete a stream: stream reads then find none, read models drop it; --tombstone: for ever."""
    where = _where(db)
    how = "for ever (tombstone)" if tombstone else "(it may be written again)"
    if not yes and not typer.confirm(f"Delete stream {stream!r} in {where.shown} {how}?", err=True):
        _fail("nothing deleted", EXIT_FAILED)

    async def work(store: EventStore) -> Any:
        try:
            return await store.delete_stream(
                stream, expected_version=ANY if expected is None else expected, tombstone=tombstone
            )
        except (WrongExpectedVersion, StreamDeleted) as exc:
            _fail(str(exc), EXIT_CONFLICT)

    result = _run(where, work)
    if result is None:
        _fail(
            f"no stream {stream!r} to delete in {where.shown} (no events, or deleted already)", EXIT_NOT_FOUND
        )
    if as_json:
        _print_json(
            {
                "streamId": stream,
                "version": result.stream_version,
                "position": result.positions[0],
                "checkpoint": str(result.checkpoint),
                "tombstone": tombstone,
            }
        )
        return
    typer.echo(
        f"deleted stream {stream!r}{' for ever' if tombstone else ''}: its $StreamDeleted event is "
        f"version {result.stream_version}, at checkpoint {result.checkpoint}"
    )


def lifecycle_json(life: StreamLifecycle) -> dict[str, Any]:
    """A stream's deletes and retention rules, as ``streams retention --json`` prints them."""
    return {
        "streamId": life.stream_id,
        "version": life.visible_version,
        "storedVersion": life.version,
        "deleted": life.deleted,
        "tombstoned": life.tombstoned,
        "deletedVersion": life.deleted_version,
        "truncateBefore": life.truncate_before,
        "maxCount": life.max_count,
        "maxAgeSeconds": None if life.max_age is None else life.max_age.total_seconds(),
        "firstVersion": life.first_version,
    }


@streams_app.command("retention")
def streams_retention(
    stream: StreamArgument,
    db: DbOption = SERVE_DB,
    max_count: Annotated[
        int | None, typer.Option("--max-count", metavar="N", min=1, help="Keep only its N latest events.")
    ] = None,
    max_age: Annotated[
        float | None,
        typer.Option("--max-age", metavar="SECONDS", min=0.000001, help="Keep only events this young."),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove its max count and max age.")] = False,
    truncate_before: Annotated[
        int | None,
        typer.Option("--truncate-before", metavar="V", min=0, help="Hide its versions below V (0: none)."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Set (or show) a stream's retention: --max-count and --max-age together replace its rules.

    Stream reads hide what the rules leave out at once; `eventvault scavenge`
    removes it for good.
    """
    if clear and (max_count is not None or max_age is not None):
        _fail("pass --clear, or --max-count/--max-age, not both", EXIT_USAGE)
    where = _where(db)

    async def work(store: EventStore) -> StreamLifecycle:
        if max_count is not None or max_age is not None or clear:
            age = None if max_age is None else timedelta(seconds=max_age)
            await store.set_retention(stream, max_count=max_count, max_age=age)
        if truncate_before is not None:
            await store.truncate_before(stream, truncate_before)
        return await store.stream_lifecycle(stream)

    life = _run(where, work)
    doc = lifecycle_json(life)
    if as_json:
        _print_json(doc)
        return
    table = _table("", "", show_header=False)
    for key, value in doc.items():
        table.add_row(key, "-" if value is None else str(value))
    _print_table(table)


# -- log -----------------------------------------------------------------------------------------


async def _tail(
    store: EventStore, after: Checkpoint, types: tuple[str, ...] | None, *, follow: bool
) -> AsyncIterator[RecordedEvent]:
    checkpoint = after
    while True:
        page = await store.read_all(checkpoint, limit=1000, event_types=types)
        for e in page.events:
            yield e
        if page.checkpoint == checkpoint:
            if not follow:
                return
            await store.wait_for_events(checkpoint, timeout=1.0)
        checkpoint = page.checkpoint


@log_app.command("tail")
def log_tail(
    db: DbOption = SERVE_DB,
    follow: Annotated[
        bool, typer.Option("-f", "--follow", help="Keep printing new events until Ctrl-C.")
    ] = False,
    event_type: Annotated[
        list[str] | None,
        typer.Option("--type", metavar="TYPE", help="Only events of this type (repeatable)."),
    ] = None,
    after: Annotated[
        str | None,
        typer.Option(
            "--after", metavar="CP", help="Start after this checkpoint (default: the last --limit events)."
        ),
    ] = None,
    limit: Annotated[
        int,
        typer.Option("--limit", metavar="N", min=1, help="Without --after: start with the last N events."),
    ] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line (JSON Lines).")] = False,
) -> None:
    """Print the end of the global log, or everything after --after; with -f, follow it live."""
    where = _where(db)
    try:
        start = None if after is None else Checkpoint.parse(after)
    except InvalidInput as exc:
        _fail(str(exc), EXIT_USAGE)
    types = tuple(event_type) if event_type else None
    console = _console()

    def show(e: RecordedEvent) -> None:
        if as_json:
            _print_json(event_json(e))
        else:
            console.print(
                f"{e.checkpoint}  {e.recorded_at.isoformat(timespec='milliseconds')}  {e.stream_id} "
                f"v{e.stream_version}  {e.event_type}  {msgspec.json.encode(e.data_as_stored()).decode()}",
                markup=False,
                soft_wrap=True,
            )

    async def work(store: EventStore) -> None:
        checkpoint = start
        if checkpoint is None:
            checkpoint = await _start_of_last(store, limit, types)
        async for e in _tail(store, checkpoint, types, follow=follow):
            show(e)

    with contextlib.suppress(KeyboardInterrupt):
        _run(where, work)


async def _start_of_last(store: EventStore, n: int, types: tuple[str, ...] | None) -> Checkpoint:
    """The checkpoint before the last ``n`` events (of ``types``) of the log."""
    if types is None:
        # Straight there by position (on PostgreSQL, gaps in the positions make it about n).
        head = await store.head()
        before = head.position - n
        if before <= 0:
            return Checkpoint.START
        found = await store.checkpoint_at(before)
        if found is not None:
            return found
    last: list[Checkpoint] = [Checkpoint.START]
    async for e in store.iter_all(event_types=types):
        last.append(e.checkpoint)
        if len(last) > n + 1:
            del last[0]
    return last[0] if len(last) <= n else last[-n - 1]


# -- events --------------------------------------------------------------------------------------


@events_app.command("show")
def events_show(
    event_id: Annotated[str, typer.Argument(metavar="EVENT_ID", help="The event's id (a UUID).")],
    db: DbOption = SERVE_DB,
    as_json: JsonOption = False,
) -> None:
    """Print one event with its whole envelope (exit 3 if there is none with this id)."""
    where = _where(db)
    found = _run(where, lambda s: s.get_event(event_id))
    if found is None:
        _fail(f"no event {event_id} in {where.shown}", EXIT_NOT_FOUND)
    doc = event_json(found)
    if as_json:
        _print_json(doc)
        return
    table = _table("field", "value", show_header=False)
    for key, value in doc.items():
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else str(value)
        table.add_row(key, shown)
    _print_table(table)


# -- snapshots -----------------------------------------------------------------------------------

TypeOption = Annotated[
    str | None,
    typer.Option(
        "--type", metavar="T", help="Only the snapshots of aggregate type T (its streams are T-...)."
    ),
]


@snapshots_app.command("ls")
def snapshots_ls(
    db: DbOption = SERVE_DB,
    category: TypeOption = None,
    limit: LimitOption = 1000,
    as_json: JsonOption = False,
) -> None:
    """List the stored snapshots: stream, schema version, stream version, size and when taken."""
    where = _where(db)
    found = _run(where, lambda s: s.list_snapshots(category=category, limit=limit))
    if as_json:
        _print_json(
            {
                "snapshots": [
                    {
                        "streamId": i.stream_id,
                        "schemaVersion": i.schema_version,
                        "streamVersion": i.stream_version,
                        "size": i.size,
                        "createdAt": i.created_at.isoformat(),
                    }
                    for i in found
                ]
            }
        )
        return
    table = _table("stream", "schema", "version", "bytes", "taken")
    for i in found:
        table.add_row(
            i.stream_id,
            str(i.schema_version),
            str(i.stream_version),
            str(i.size),
            i.created_at.isoformat(timespec="seconds"),
        )
    _print_table(table)


@snapshots_app.command("drop")
def snapshots_drop(
    db: DbOption = SERVE_DB,
    category: TypeOption = None,
    stream: Annotated[
        str | None, typer.Option("--stream", metavar="S", help="Only the snapshots of stream S.")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete snapshots (all, one type's or one stream's); aggregates then load by replaying events."""
    if category is not None and stream is not None:
        _fail("pass --type or --stream, not both", EXIT_USAGE)
    where = _where(db)
    which = (
        f"the snapshots of stream {stream!r}"
        if stream is not None
        else f"the snapshots of type {category!r}"
        if category is not None
        else "every snapshot"
    )
    if not yes and not typer.confirm(f"Drop {which} in {where.shown}?", err=True):
        _fail("nothing dropped", EXIT_FAILED)
    dropped = _run(where, lambda s: s.drop_snapshots(category=category, stream_id=stream))
    typer.echo(f"dropped {dropped} snapshot{'' if dropped == 1 else 's'}")


# -- db ------------------------------------------------------------------------------------------


def _ledger_runner(store: EventStore) -> ProjectionRunner:
    """The runner of everything the ledger's workers run: its projections and the transfer process."""
    from eventvault.processes import ProcessRunner  # noqa: PLC0415
    from eventvault_ledger.read_models import process_managers  # noqa: PLC0415
    from eventvault_ledger.read_models import projections as ledger_projections  # noqa: PLC0415

    return ProcessRunner(store, process_managers(), projections=ledger_projections())


def _code_versions(store: EventStore) -> dict[str, int | None]:
    """The schema version of each component this program keeps beside the store (see db migrate)."""
    from eventvault.projections import BOOKKEEPING  # noqa: PLC0415
    from eventvault_ledger.api.idempotency import IDEMPOTENCY  # noqa: PLC0415

    return {
        "store": schema_version(store),
        BOOKKEEPING.name: BOOKKEEPING.version,
        IDEMPOTENCY.name: IDEMPOTENCY.version,
    }


def _components_json(stored: dict[str, int], code: dict[str, int | None]) -> list[dict[str, Any]]:
    """Each component's recorded version beside this code's (None: unknown to it, or not made yet)."""
    names = [*code, *sorted(set(stored) - set(code))]
    return [{"name": n, "version": stored.get(n), "codeVersion": code.get(n)} for n in names]


def _components_line(components: list[dict[str, Any]]) -> str:
    return ", ".join(f"{c['name']} {c['version'] if c['version'] is not None else '-'}" for c in components)


@db_app.command("status")
def db_status(db: DbOption = SERVE_DB, as_json: JsonOption = False) -> None:
    """Schema versions, events, streams, head, size on disk, and each read model's lag."""
    where = _shared_store(db, "db")

    async def work(store: EventStore) -> dict[str, Any]:
        counts = await store.counts()
        runner = _ledger_runner(store)
        await runner.prepare()
        try:
            statuses = await runner.status()
            stored = await asyncio.to_thread(runner.db.schema_versions)
            size = size_on_disk(store)
            if size is None and store.scheme == "postgresql":
                from eventvault_ledger.read_models import postgres_schema_size  # noqa: PLC0415

                size = await asyncio.to_thread(postgres_schema_size, runner)
        finally:
            await runner.stop()
        return {
            "store": where.shown,
            "backend": store.scheme,
            "schemaVersion": schema_version(store),
            "components": _components_json(stored, _code_versions(store)),
            "events": counts.events,
            "streams": counts.streams,
            "head": str(counts.head),
            "sizeBytes": size,
            "readModels": [
                {
                    "name": s.name,
                    "state": s.state,
                    "checkpoint": s.checkpoint,
                    "lagEvents": s.lag_events,
                    "lagSeconds": s.lag_seconds,
                }
                for s in statuses
            ],
        }

    doc = _run(where, work)
    if as_json:
        _print_json(doc)
        return
    console = _console()
    for key in ("store", "backend", "schemaVersion", "events", "streams", "head", "sizeBytes"):
        console.print(f"{key}: {doc[key]}", markup=False, soft_wrap=True)
    schema = _table("component", "schema version", "this code's")
    for c in doc["components"]:
        schema.add_row(c["name"], str(c["version"] or "-"), str(c["codeVersion"] or "-"))
    _print_table(schema)
    table = _table("read model", "state", "checkpoint", "lag (events)", "lag (s)")
    for m in doc["readModels"]:
        table.add_row(m["name"], m["state"], m["checkpoint"], str(m["lagEvents"]), f"{m['lagSeconds']:.1f}")
    _print_table(table)


@db_app.command("migrate")
def db_migrate(db: DbOption = SERVE_DB) -> None:
    """Create the schema, or bring each component to this version's; one already there is left as it is."""
    from eventvault_ledger.api.idempotency import IdempotencyStore  # noqa: PLC0415

    where = _shared_store(db, "db")

    async def work(store: EventStore) -> list[dict[str, Any]]:
        # Opening the store migrated its component; then the read models'
        # bookkeeping and tables, and the idempotency keys kept beside them.
        runner = _ledger_runner(store)
        await runner.prepare()
        try:
            await asyncio.to_thread(IdempotencyStore(runner.db).setup)
            stored = await asyncio.to_thread(runner.db.schema_versions)
        finally:
            await runner.stop()
        return _components_json(stored, _code_versions(store))

    components = _run(where, work)
    typer.echo(f"{where.shown}: schema versions {_components_line(components)}; read models ready")


# -- projections ---------------------------------------------------------------------------------


def status_json(s: ProjectionStatus) -> dict[str, Any]:
    """A projection's status as ``projections status --json`` prints it."""
    doc = asdict(s)
    doc["owned_partitions"] = list(s.owned_partitions)
    doc["workers"] = list(s.workers)
    return doc


def _status_table(statuses: list[ProjectionStatus]) -> Table:
    table = _table(
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
    return table


async def with_runner(store: EventStore, work: Callable[[ProjectionRunner], Awaitable[T]]) -> T:
    """Run ``work`` on a prepared (not started) runner of the ledger's projections."""
    runner = _ledger_runner(store)
    await runner.prepare()
    try:
        return await work(runner)
    finally:
        await runner.stop()


def projections_status(db: str, *, as_json: bool, watch: bool, interval: float) -> None:
    """``eventvault projections status``."""
    where = _shared_store(db, "projections")
    if not watch:
        statuses = _run(where, lambda s: with_runner(s, lambda r: r.status()))
        if as_json:
            _print_json({"store": where.shown, "projections": [status_json(s) for s in statuses]})
            return
        typer.echo(f"store: {where.shown}")
        _print_table(_status_table(statuses))
        return

    async def watching(store: EventStore) -> None:
        from rich.live import Live  # noqa: PLC0415

        async def loop(runner: ProjectionRunner) -> None:
            if as_json:
                while True:
                    _print_json(
                        {"at": time.time(), "projections": [status_json(s) for s in await runner.status()]}
                    )
                    await asyncio.sleep(interval)
            with Live(_status_table(await runner.status()), auto_refresh=False) as live:
                while True:
                    await asyncio.sleep(interval)
                    live.update(_status_table(await runner.status()), refresh=True)

        await with_runner(store, loop)

    with contextlib.suppress(KeyboardInterrupt):
        _run(where, watching)


def projection_control(db: str, name: str, action: str, to: str | None = None) -> None:
    """``eventvault projections pause|resume|reset``."""
    where = _shared_store(db, "projections")

    async def work(runner: ProjectionRunner) -> str:
        if name not in runner.projections:
            raise InvalidInput(f"no projection is named {name!r}; there are {sorted(runner.projections)}")
        if action == "pause":
            changed = await runner.pause(name)
            return f"{name} paused" if changed else f"{name} was already paused"
        if action == "resume":
            await runner.resume(name)
            return f"{name} resumed"
        if to is None:
            raise InvalidInput("reset needs --to CP, the checkpoint to move the projection to")
        moved = await runner.reset(name, to)
        return f"{name} reset to {Checkpoint.parse(to)} ({moved} partition(s) moved); resume it to go on"

    typer.echo(_run(where, lambda s: with_runner(s, work)))


def projections_rebuild(db: str, name: str) -> None:
    """``eventvault projections rebuild`` (and ``eventvault rebuild``): progress, rate and ETA.

    This process builds the new generation, so it stays until the swap.
    """
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn  # noqa: PLC0415

    where = _shared_store(db, "rebuild")
    typer.echo(f"store: {where.shown}")

    async def work(store: EventStore) -> bool:
        async with _ledger_runner(store) as runner:
            if name not in runner.projections:
                raise InvalidInput(f"no projection is named {name!r}; there are {sorted(runner.projections)}")
            progress = await runner.rebuild(name)
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} events"),
                TextColumn("{task.fields[rate]:.0f} events/s"),
                TextColumn("ETA"),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=Console(stderr=True)) as bar:
                task = bar.add_task(f"rebuilding {name}", total=max(progress.total, 1), rate=0.0)
                while not await runner.wait_rebuilt(name, timeout=0.2):
                    status = {s.name: s for s in await runner.status()}[name]
                    rebuild = status.rebuild
                    if rebuild is None or rebuild.state == "failed":
                        return False
                    bar.update(
                        task,
                        completed=rebuild.done,
                        total=max(rebuild.total, 1),
                        rate=rebuild.events_per_second,
                    )
                bar.update(task, completed=bar.tasks[0].total)
            return True

    if not _run(where, work):
        _fail(f"the rebuild of {name} failed: see `eventvault projections status`", EXIT_FAILED)
    typer.echo(f"{name} rebuilt and swapped in")


register(app)
