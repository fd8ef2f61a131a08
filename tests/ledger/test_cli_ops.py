"""The operator's commands (streams, log, events, db, projections, snapshots) on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from eventvault import ANY, Snapshot, open_store
from eventvault.projections import ProjectionRunner
from eventvault.store.sqlite import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from eventvault.testing import eventually, eventually_async
from eventvault_ledger import cli
from eventvault_ledger.domain import AccountOpened, MoneyDeposited
from eventvault_ledger.read_models import projections as ledger_projections

ENV = {"COLUMNS": "200", "NO_COLOR": "1"}
DEMO_STREAMS = {13, 4, 3}  # the versions of Ada's, Grace's and Hiro's streams after the demo


def _with_schema(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = f"{parts.query}&schema={schema}" if parts.query else f"schema={schema}"
    return urlunsplit(parts._replace(query=query))


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request, tmp_path) -> Iterator[str]:
    """A fresh store: a SQLite file of this test, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.db'}"
        return
    server = request.getfixturevalue("postgres_server")  # skips, or fails in CI, without a server
    schema = f"evt_ops_{uuid.uuid4().hex[:12]}"
    yield _with_schema(server.url, schema)
    with psycopg.connect(server.url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def runner():
    return CliRunner()


@pytest.fixture
def demo_db(runner, db_url):
    """A store holding the demo's three accounts (20 events)."""
    result = runner.invoke(cli.app, ["demo", "--db", db_url], env=ENV)
    assert result.exit_code == 0, result.output
    return db_url


def _ok(runner, *args: str):
    result = runner.invoke(cli.app, list(args), env=ENV)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result.stdout


def _json(runner, *args: str):
    return json.loads(_ok(runner, *args, "--json"))


def _streams(runner, db: str, *args: str):
    return _json(runner, "streams", "ls", "--db", db, *args)["streams"]


# -- streams -------------------------------------------------------------------------------------


def test_streams_ls_lists_every_stream_with_its_version_in_id_order(runner, demo_db):
    """`streams ls --json` gives each stream's id, version and last event time, sorted by id."""
    streams = _streams(runner, demo_db)
    assert {s["version"] for s in streams} == DEMO_STREAMS
    ids = [s["streamId"] for s in streams]
    assert ids == sorted(ids)
    assert all(i.startswith("account-") for i in ids)
    assert all(s["lastRecordedAt"].endswith("+00:00") for s in streams)
    assert _streams(runner, demo_db, "--prefix", "nothing-") == []
    assert len(_streams(runner, demo_db, "--prefix", "account-")) == 3


def test_streams_ls_pages_with_limit_and_after(runner, demo_db):
    """--limit cuts the listing and names where to go on; --after goes on from there."""
    everything = [s["streamId"] for s in _streams(runner, demo_db)]
    first = _json(runner, "streams", "ls", "--db", demo_db, "--limit", "2")
    assert [s["streamId"] for s in first["streams"]] == everything[:2]
    assert first["next"] == everything[1]
    rest = _streams(runner, demo_db, "--after", first["next"])
    assert [s["streamId"] for s in rest] == everything[2:]
    table = _ok(runner, "streams", "ls", "--db", demo_db, "--limit", "2")
    assert f"more: --after {everything[1]}" in table
    assert everything[0] in table  # the whole id, not cut short


def test_streams_ls_and_db_status_leave_deleted_streams_out(runner, demo_db):
    """A stream deleted (soft, or for ever) is not listed nor counted as a stream; its events still are."""
    first, second, third = [s["streamId"] for s in _streams(runner, demo_db)]
    _ok(runner, "streams", "delete", first, "--db", demo_db, "--yes")
    _ok(runner, "streams", "delete", third, "--db", demo_db, "--yes", "--tombstone")

    assert [s["streamId"] for s in _streams(runner, demo_db)] == [second]
    paged = _json(runner, "streams", "ls", "--db", demo_db, "--limit", "1")
    assert ([s["streamId"] for s in paged["streams"]], paged["next"]) == ([second], second)
    assert _streams(runner, demo_db, "--after", second) == []
    doc = _json(runner, "db", "status", "--db", demo_db)
    assert (doc["events"], doc["streams"]) == (22, 1)  # the demo's 20 and the two deletes' events


def test_streams_read_honours_from_to_backwards_and_limit(runner, demo_db):
    """`streams read` returns the versions asked for, in the order asked for."""
    ada = next(s["streamId"] for s in _streams(runner, demo_db) if s["version"] == 13)

    def versions(*args: str) -> list[int]:
        doc = _json(runner, "streams", "read", ada, "--db", demo_db, *args)
        return [e["streamVersion"] for e in doc["events"]]

    assert versions() == list(range(1, 14))
    assert versions("--from", "3", "--to", "5") == [3, 4, 5]
    assert versions("--backwards", "--limit", "2") == [13, 12]
    first = _json(runner, "streams", "read", ada, "--db", demo_db, "--limit", "1")["events"][0]
    assert first["eventType"] == "AccountOpened"
    assert first["data"] == {"owner_name": "Ada Lovelace", "currency": "EUR"}
    assert set(first) >= {"eventId", "position", "checkpoint", "occurredAt", "recordedAt", "metadata"}


def test_streams_read_of_an_unknown_stream_exits_3(runner, demo_db):
    """A stream with no events is exit 3 and one line on stderr."""
    result = runner.invoke(cli.app, ["streams", "read", "account-none", "--db", demo_db], env=ENV)
    assert result.exit_code == 3
    assert result.stderr.startswith("error: no stream 'account-none'")


# -- log and events ------------------------------------------------------------------------------


def _lines(text: str):
    return [json.loads(line) for line in text.splitlines()]


def test_log_tail_prints_the_last_events_or_those_after_a_checkpoint(runner, demo_db):
    """Without --after the last --limit events; with it, every event after it; --type filters."""
    everything = _lines(_ok(runner, "log", "tail", "--db", demo_db, "--limit", "100", "--json"))
    assert len(everything) == 20
    assert [e["position"] for e in everything] == sorted(e["position"] for e in everything)
    last3 = _lines(_ok(runner, "log", "tail", "--db", demo_db, "--limit", "3", "--json"))
    assert last3 == everything[-3:]
    after = everything[15]["checkpoint"]
    assert _lines(_ok(runner, "log", "tail", "--db", demo_db, "--after", after, "--json")) == everything[16:]
    opened = _lines(_ok(runner, "log", "tail", "--db", demo_db, "--type", "AccountOpened", "--json"))
    assert [e["eventType"] for e in opened] == ["AccountOpened"] * 3


def test_log_tail_refuses_a_bad_checkpoint(runner, demo_db):
    """--after that is not a checkpoint token: exit 2, one line."""
    result = runner.invoke(cli.app, ["log", "tail", "--db", demo_db, "--after", "yesterday"], env=ENV)
    assert result.exit_code == 2
    assert "is not a checkpoint token" in result.stderr


def test_events_show_prints_the_whole_envelope(runner, demo_db):
    """`events show ID --json` is the event as the log has it; the table shows the same fields."""
    last = _lines(_ok(runner, "log", "tail", "--db", demo_db, "--limit", "1", "--json"))[0]
    assert _json(runner, "events", "show", last["eventId"], "--db", demo_db) == last
    table = _ok(runner, "events", "show", last["eventId"], "--db", demo_db)
    assert last["streamId"] in table
    assert last["checkpoint"] in table


def test_events_show_exits_3_for_no_such_event_and_2_for_a_bad_id(runner, demo_db):
    """An id that is stored nowhere is exit 3; text that is no UUID is exit 2."""
    missing = runner.invoke(cli.app, ["events", "show", str(uuid.uuid4()), "--db", demo_db], env=ENV)
    assert missing.exit_code == 3
    assert "no event" in missing.stderr
    bad = runner.invoke(cli.app, ["events", "show", "nope", "--db", demo_db], env=ENV)
    assert bad.exit_code == 2
    assert "is not an event id" in bad.stderr


# -- db ------------------------------------------------------------------------------------------


def test_db_status_counts_events_and_streams_and_shows_the_read_models(runner, demo_db):
    """`db status --json`: schema version, 20 events in 3 streams, the head, a size, the read models."""
    doc = _json(runner, "db", "status", "--db", demo_db)
    assert doc["events"] == 20
    assert doc["streams"] == 3
    assert doc["schemaVersion"] >= 1
    assert doc["sizeBytes"] > 0
    assert (
        doc["head"]
        == _lines(_ok(runner, "log", "tail", "--db", demo_db, "--limit", "1", "--json"))[0]["checkpoint"]
    )
    [accounts] = [r for r in doc["readModels"] if r["name"] == "accounts"]
    assert accounts["lagEvents"] == 20  # nothing has run the projections yet
    assert "accounts" in _ok(runner, "db", "status", "--db", demo_db)


def test_db_migrate_is_explicit_and_idempotent(runner, db_url):
    """`db migrate` on an empty store creates every component's schema; run again, it changes nothing."""
    first = _ok(runner, "db", "migrate", "--db", db_url)
    assert "schema versions store " in first
    assert ", projections 1, idempotency 1; read models ready" in first
    assert _ok(runner, "db", "migrate", "--db", db_url) == first
    doc = _json(runner, "db", "status", "--db", db_url)
    assert doc["events"] == 0
    assert [(c["name"], c["version"] == c["codeVersion"]) for c in doc["components"]] == [
        ("store", True),
        ("projections", True),
        ("idempotency", True),
    ]


def test_db_status_shows_a_component_not_made_yet_and_one_newer_than_the_code(runner, tmp_path):
    """A component the database lacks shows no version; a newer one shows it, and db migrate refuses it."""
    path = tmp_path / "versions.db"
    url = f"sqlite:///{path}"
    _ok(runner, "db", "status", "--db", url)  # the store and the bookkeeping, not the idempotency keys
    doc = _json(runner, "db", "status", "--db", url)
    assert {c["name"]: c["version"] for c in doc["components"]} == {
        "store": SQLITE_SCHEMA_VERSION,
        "projections": 1,
        "idempotency": None,
    }
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("INSERT INTO eventvault_schema VALUES ('idempotency', 7), ('elsewhere', 3)")
    doc = _json(runner, "db", "status", "--db", url)
    assert doc["components"][2:] == [
        {"name": "idempotency", "version": 7, "codeVersion": 1},
        {"name": "elsewhere", "version": 3, "codeVersion": None},
    ]
    refused = runner.invoke(cli.app, ["db", "migrate", "--db", url], env=ENV)
    assert refused.exit_code == 1
    assert "idempotency key schema version 7, newer than the 1 this code knows" in refused.stderr


# -- projections ---------------------------------------------------------------------------------


def _status(runner, db: str):
    [accounts] = [
        p
        for p in _json(runner, "projections", "status", "--db", db)["projections"]
        if p["name"] == "accounts"
    ]
    return accounts


def test_projections_pause_reset_resume(runner, demo_db):
    """Pause shows as paused; reset moves a paused projection forward only; resume lifts the pause."""
    assert _status(runner, demo_db)["paused"] is False
    assert _ok(runner, "projections", "pause", "accounts", "--db", demo_db).strip() == "accounts paused"
    assert "already paused" in _ok(runner, "projections", "pause", "accounts", "--db", demo_db)
    status = _status(runner, demo_db)
    assert (status["state"], status["paused"]) == ("paused", True)
    head = status["head"]
    assert "0 partition(s)" not in _ok(
        runner, "projections", "reset", "accounts", "--to", head, "--db", demo_db
    )
    assert _status(runner, demo_db)["checkpoint"] == head
    back = runner.invoke(
        cli.app, ["projections", "reset", "accounts", "--to", "0.0", "--db", demo_db], env=ENV
    )
    assert back.exit_code == 2
    assert "only moves forward" in back.stderr
    _ok(runner, "projections", "resume", "accounts", "--db", demo_db)
    status = _status(runner, demo_db)
    assert (status["paused"], status["checkpoint"]) == (False, head)
    running = runner.invoke(
        cli.app, ["projections", "reset", "accounts", "--to", head, "--db", demo_db], env=ENV
    )
    assert running.exit_code == 2
    assert "pause accounts before resetting" in running.stderr


def test_projections_controls_refuse_an_unknown_name(runner, demo_db):
    """A projection name that does not exist: exit 2, naming the ones there are."""
    result = runner.invoke(cli.app, ["projections", "pause", "nope", "--db", demo_db], env=ENV)
    assert result.exit_code == 2
    assert "'accounts'" in result.stderr


def test_projections_rebuild_swaps_in_and_the_status_shows_full_names(runner, demo_db):
    """`projections rebuild` returns once swapped in; the status table shows whole names and checkpoints."""
    out = _ok(runner, "projections", "rebuild", "accounts", "--db", demo_db)
    assert "accounts rebuilt and swapped in" in out
    status = _status(runner, demo_db)
    assert status["generation"] == 2
    assert status["checkpoint"] == status["head"]
    result = runner.invoke(cli.app, ["projections", "status", "--db", demo_db], env={"COLUMNS": "40"})
    assert result.exit_code == 0
    assert "accounts" in result.stdout
    assert "…" not in result.stdout


async def test_a_pause_stops_a_running_worker_and_resume_brings_it_back(db_url):
    """A worker in another runner gives its partitions up on pause; after resume it catches up."""
    async with (
        open_store(db_url) as store,
        ProjectionRunner(store, ledger_projections(), lease_seconds=2.0) as worker,
    ):
        control = ProjectionRunner(store, ledger_projections())
        await control.prepare()
        try:

            async def accounts():
                return {s.name: s for s in await control.status()}["accounts"]

            await eventually_async(accounts, lambda s: s.workers == (worker.worker_id,))
            assert await control.pause("accounts")
            await eventually_async(accounts, lambda s: s.state == "paused" and not s.workers)
            stream = f"account-{uuid.uuid4()}"
            done = await store.append(stream, [AccountOpened("Ada", "EUR")], expected_version=ANY)
            assert not await worker.wait_for(done.checkpoint, timeout=0)
            await control.resume("accounts")
            assert await worker.wait_for(done.checkpoint, timeout=60)
            assert (await accounts()).state != "paused"
        finally:
            await control.stop()


# -- snapshots ------------------------------------------------------------------------------------


def _save_snapshots(db: str, *stream_ids: str) -> None:
    async def save() -> None:
        async with open_store(db) as store:
            for n, stream_id in enumerate(stream_ids, start=1):
                await store.save_snapshot(Snapshot(stream_id, n, 1, b"{}" * n, datetime.now(UTC)))

    asyncio.run(save())


def _snapshot_ids(runner, db: str, *args: str) -> list[str]:
    return [i["streamId"] for i in _json(runner, "snapshots", "ls", "--db", db, *args)["snapshots"]]


def test_snapshots_ls_lists_every_snapshot_or_one_types(runner, db_url):
    """`snapshots ls` lists stream, schema and stream version, size and time; --type keeps one type."""
    assert _snapshot_ids(runner, db_url) == []
    _save_snapshots(db_url, "account-2", "account-1", "accounting-1", "transfer-1")
    listed = _json(runner, "snapshots", "ls", "--db", db_url)["snapshots"]
    assert [(i["streamId"], i["streamVersion"], i["size"]) for i in listed] == [
        ("account-1", 2, 4),
        ("account-2", 1, 2),
        ("accounting-1", 3, 6),
        ("transfer-1", 4, 8),
    ]
    assert {i["schemaVersion"] for i in listed} == {1}
    assert _snapshot_ids(runner, db_url, "--type", "account") == ["account-1", "account-2"]
    table = _ok(runner, "snapshots", "ls", "--db", db_url, "--type", "transfer")
    assert "transfer-1" in table
    assert "account-1" not in table


def test_snapshots_drop_by_type_or_stream_and_only_when_confirmed(runner, db_url):
    """`snapshots drop` asks first (--yes does not), and deletes one stream's, one type's or all snapshots."""
    _save_snapshots(db_url, "account-1", "account-2", "transfer-1")
    refused = runner.invoke(cli.app, ["snapshots", "drop", "--db", db_url], input="n\n", env=ENV)
    assert refused.exit_code == 1, refused.output
    assert "nothing dropped" in refused.stderr
    assert len(_snapshot_ids(runner, db_url)) == 3
    both = runner.invoke(
        cli.app, ["snapshots", "drop", "--db", db_url, "--type", "a", "--stream", "b"], env=ENV
    )
    assert both.exit_code == 2
    assert "not both" in both.stderr
    assert "dropped 1 snapshot\n" in _ok(
        runner, "snapshots", "drop", "--db", db_url, "--stream", "account-2", "--yes"
    )
    assert _snapshot_ids(runner, db_url) == ["account-1", "transfer-1"]
    assert "dropped 1 snapshot" in _ok(
        runner, "snapshots", "drop", "--db", db_url, "--type", "account", "--yes"
    )
    confirmed = runner.invoke(cli.app, ["snapshots", "drop", "--db", db_url], input="y\n", env=ENV)
    assert confirmed.exit_code == 0, confirmed.output
    assert "dropped 1 snapshot" in confirmed.stdout
    assert _snapshot_ids(runner, db_url) == []


# -- as real processes ----------------------------------------------------------------------------


def _cli(*args: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our interpreter, our code
        [sys.executable, "-m", "eventvault_ledger.cli", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **ENV},
        timeout=120,
        **kwargs,
    )


@pytest.fixture
def sqlite_demo(tmp_path) -> str:
    db = str(tmp_path / "ledger.db")
    result = _cli("demo", "--db", db)
    assert result.returncode == 0, result.stderr
    return db


def test_every_command_runs_as_a_real_process(sqlite_demo):
    """Each operator command, run as `python -m eventvault_ledger.cli`, answers with its exit code."""
    db = sqlite_demo
    streams = json.loads(_cli("streams", "ls", "--db", db, "--json").stdout)["streams"]
    assert {s["version"] for s in streams} == DEMO_STREAMS
    ada = next(s["streamId"] for s in streams if s["version"] == 13)
    read = json.loads(_cli("streams", "read", ada, "--db", db, "--json", "--limit", "2").stdout)
    assert [e["streamVersion"] for e in read["events"]] == [1, 2]
    last = json.loads(_cli("log", "tail", "--db", db, "--json", "--limit", "1").stdout)
    assert json.loads(_cli("events", "show", last["eventId"], "--db", db, "--json").stdout) == last
    assert _cli("events", "show", str(uuid.uuid4()), "--db", db).returncode == 3
    assert json.loads(_cli("db", "status", "--db", db, "--json").stdout)["events"] == 20
    assert _cli("db", "migrate", "--db", db).returncode == 0
    assert _cli("projections", "pause", "accounts", "--db", db).returncode == 0
    status = json.loads(_cli("projections", "status", "--db", db, "--json").stdout)
    assert {p["name"]: p["state"] for p in status["projections"]}["accounts"] == "paused"
    assert _cli("projections", "reset", "accounts", "--to", last["checkpoint"], "--db", db).returncode == 0
    assert _cli("projections", "resume", "accounts", "--db", db).returncode == 0
    rebuilt = _cli("projections", "rebuild", "accounts", "--db", db)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert "events/s" in rebuilt.stderr  # the progress bar, with its rate
    _save_snapshots(f"sqlite:///{db}", "account-1", "transfer-1")
    snapshots = json.loads(_cli("snapshots", "ls", "--db", db, "--type", "account", "--json").stdout)
    assert [i["streamId"] for i in snapshots["snapshots"]] == ["account-1"]
    dropped = _cli("snapshots", "drop", "--db", db, "--yes")
    assert (dropped.returncode, dropped.stdout) == (0, "dropped 2 snapshots\n")
    assert (
        _cli("snapshots", "drop", "--db", db, stdin=subprocess.DEVNULL).returncode == 1
    )  # no answer: no drop


def test_log_tail_follow_prints_new_events_live_and_stops_cleanly_on_ctrl_c(sqlite_demo):
    """`log tail -f` prints an event appended by another process, then exits 0 on SIGINT."""
    with subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
        [sys.executable, "-m", "eventvault_ledger.cli", "log", "tail", "-f", "--json", "--db", sqlite_demo],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **ENV},
    ) as proc:
        assert proc.stdout is not None
        lines: list[Any] = []

        def read() -> None:
            assert proc.stdout is not None
            lines.extend(json.loads(line) for line in proc.stdout)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            eventually(lambda: len(lines) >= 20, what="the last 20 events")
            stream = f"account-{uuid.uuid4()}"

            async def append() -> None:
                async with open_store(f"sqlite:///{sqlite_demo}") as store:
                    await store.append(
                        stream, [MoneyDeposited(Decimal("7.00"), "live")], expected_version=ANY
                    )

            asyncio.run(append())
            eventually(lambda: any(e["streamId"] == stream for e in lines), what="the new event")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        reader.join(timeout=60)
        assert proc.stderr is not None
        assert "Traceback" not in proc.stderr.read()


def test_projections_status_watch_prints_a_line_each_refresh_and_stops_on_ctrl_c(sqlite_demo):
    """`projections status --watch --json` prints a status line per refresh until SIGINT, then exits 0."""
    args = ["projections", "status", "--watch", "--json", "--interval", "0.1", "--db", sqlite_demo]
    with subprocess.Popen(  # noqa: S603 - our interpreter, fixed arguments
        [sys.executable, "-m", "eventvault_ledger.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **ENV},
    ) as proc:
        assert proc.stdout is not None
        try:
            first = json.loads(proc.stdout.readline())
            second = json.loads(proc.stdout.readline())
            assert "accounts" in [p["name"] for p in first["projections"]]
            assert second["at"] >= first["at"]
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()


def test_the_operations_page_names_every_command():
    """docs/operations.md documents every command group and subcommand the CLI has."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text(encoding="utf-8")
    for command in (
        "streams ls",
        "streams read",
        "log tail",
        "events show",
        "db status",
        "db migrate",
        "projections status",
        "projections pause",
        "projections resume",
        "projections reset",
        "projections rebuild",
        "snapshots ls",
        "snapshots drop",
    ):
        assert f"eventvault {command}" in text, command
