"""``eventvault streams delete``, ``streams retention``, ``scavenge`` on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from eventvault_ledger import cli
from eventvault_ledger.cli_ops import EXIT_CONFLICT, EXIT_NOT_FOUND

ENV = {"COLUMNS": "200", "NO_COLOR": "1"}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def demo_db(runner, new_db) -> str:
    """A store of the test's backend holding the demo's three accounts."""
    url: str = new_db()
    result = runner.invoke(cli.app, ["demo", "--db", url], env=ENV)
    assert result.exit_code == 0, result.output
    return url


def invoke(runner: CliRunner, *args: str, stdin: str | None = None):
    return runner.invoke(cli.app, list(args), env=ENV, input=stdin)


def _streams(runner: CliRunner, db: str) -> dict[str, int]:
    result = invoke(runner, "streams", "ls", "--db", db, "--json")
    assert result.exit_code == 0, result.stderr
    return {s["streamId"]: s["version"] for s in json.loads(result.stdout)["streams"]}


def _stored_events(runner: CliRunner, db: str) -> int:
    result = invoke(runner, "db", "status", "--db", db, "--json")
    assert result.exit_code == 0, result.stderr
    return int(json.loads(result.stdout)["events"])


def test_streams_delete_soft_then_for_ever(runner, demo_db):
    """A delete prints where its $StreamDeleted event went; a tombstone then refuses the next with exit 6."""
    streams = _streams(runner, demo_db)
    stream, version = min(streams.items())
    refused = invoke(runner, "streams", "delete", stream, "--db", demo_db, stdin="n\n")
    assert refused.exit_code == 1
    wrong = invoke(runner, "streams", "delete", stream, "--db", demo_db, "--yes", "--expected-version", "99")
    assert wrong.exit_code == EXIT_CONFLICT
    assert f"is at version {version}" in wrong.stderr

    done = invoke(runner, "streams", "delete", stream, "--db", demo_db, "--yes", "--json")
    assert done.exit_code == 0, done.stderr
    doc = json.loads(done.stdout)
    assert (doc["streamId"], doc["version"], doc["tombstone"]) == (stream, version + 1, False)
    read = invoke(runner, "streams", "read", stream, "--db", demo_db)
    assert read.exit_code == EXIT_NOT_FOUND
    again = invoke(runner, "streams", "delete", stream, "--db", demo_db, "--yes")
    assert again.exit_code == EXIT_NOT_FOUND  # nothing left to delete

    closed = invoke(runner, "streams", "delete", stream, "--db", demo_db, "--yes", "--tombstone")
    assert closed.exit_code == 0, closed.stderr
    assert "for ever" in closed.stdout
    after = invoke(runner, "streams", "delete", stream, "--db", demo_db, "--yes", "--tombstone")
    assert after.exit_code == EXIT_CONFLICT
    assert "tombstoned" in after.stderr


def test_streams_retention_sets_and_shows_the_rules(runner, demo_db):
    """--max-count hides all but the latest events from stream reads; --clear shows them again."""
    stream, version = max(_streams(runner, demo_db).items(), key=lambda item: item[1])
    result = invoke(runner, "streams", "retention", stream, "--db", demo_db, "--max-count", "2", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert (doc["maxCount"], doc["firstVersion"], doc["version"]) == (2, version - 1, version)
    read = invoke(runner, "streams", "read", stream, "--db", demo_db, "--json")
    assert [e["streamVersion"] for e in json.loads(read.stdout)["events"]] == [version - 1, version]
    shown = invoke(runner, "streams", "retention", stream, "--db", demo_db, "--truncate-before", "3")
    assert shown.exit_code == 0, shown.stderr
    assert "truncateBefore" in shown.stdout
    cleared = invoke(runner, "streams", "retention", stream, "--db", demo_db, "--clear", "--json")
    assert json.loads(cleared.stdout)["firstVersion"] == 3
    both = invoke(runner, "streams", "retention", stream, "--db", demo_db, "--clear", "--max-count", "1")
    assert both.exit_code == 2


def test_scavenge_removes_the_events_rules_hide(runner, demo_db):
    """`scavenge --json` counts what went; the log then holds each deleted stream's last event only."""
    streams = _streams(runner, demo_db)
    stream, version = min(streams.items())
    assert invoke(runner, "streams", "delete", stream, "--db", demo_db, "--yes").exit_code == 0
    refused = invoke(runner, "scavenge", "--db", demo_db, stdin="n\n")
    assert refused.exit_code == 1
    result = invoke(runner, "scavenge", "--db", demo_db, "--yes", "--json", "--quiet")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"streams": 1, "eventsRemoved": version}
    verified = invoke(runner, "verify", "--db", demo_db, "--quiet")
    assert verified.exit_code == 0, verified.stdout  # a stream starting past version 1 is no gap
    text = invoke(runner, "scavenge", "--db", demo_db, "--yes")
    assert text.exit_code == 0
    assert "0 events removed" in text.stdout


def _process(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(  # noqa: S603 - our interpreter, our code
        [sys.executable, "-m", "eventvault_ledger.cli", *args],
        capture_output=True,
        check=False,
        env={**os.environ, **ENV},
        timeout=120,
    )


def test_delete_retention_and_scavenge_as_processes(runner, demo_db):
    """Real processes: a delete, a rule, then a scavenge with its JSON on stdout and its bar on stderr."""
    streams = _streams(runner, demo_db)
    ruled, version = max(streams.items(), key=lambda item: item[1])
    deleted = min(set(streams) - {ruled})
    gone = _process("streams", "delete", deleted, "--db", demo_db, "--yes", "--json")
    assert gone.returncode == 0, gone.stderr
    assert json.loads(gone.stdout)["streamId"] == deleted
    kept = _process("streams", "retention", ruled, "--db", demo_db, "--max-count", "2", "--json")
    assert kept.returncode == 0, kept.stderr
    assert json.loads(kept.stdout)["firstVersion"] == version - 1
    stored = _stored_events(runner, demo_db)
    done = _process("scavenge", "--db", demo_db, "--yes", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["streams"] == 2
    assert b"scavenging" in done.stderr
    removed = json.loads(done.stdout)["eventsRemoved"]
    assert removed == streams[deleted] + version - 2  # the delete's own event and the last two stay
    assert _stored_events(runner, demo_db) == stored - removed  # those processes worked on this store
