"""``eventvault export``, ``import`` and ``verify`` on SQLite and PostgreSQL: the runner, real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from store_urls import run_sql
from typer.testing import CliRunner

from eventvault_ledger import cli
from eventvault_ledger.cli_data import EXIT_CORRUPT, EXIT_REFUSED

ENV = {"COLUMNS": "200", "NO_COLOR": "1"}


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def demo_db(runner, new_db) -> str:
    """A store of the test's backend holding the demo's accounts."""
    url: str = new_db()
    result = runner.invoke(cli.app, ["demo", "--db", url], env=ENV)
    assert result.exit_code == 0, result.output
    return url


def invoke(runner: CliRunner, *args: str):
    return runner.invoke(cli.app, list(args), env=ENV)


def test_export_to_stdout_is_only_the_json_lines(runner, demo_db, tmp_path):
    """--out - writes the JSON Lines to stdout (progress goes to stderr); the same bytes as a file."""
    result = invoke(runner, "export", "--db", demo_db)
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows[-1]["events"] == len(rows) - 1 > 0
    assert rows[0]["position"] == 1
    out = tmp_path / "log.jsonl"
    result = invoke(runner, "export", "--db", demo_db, "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.stderr
    assert [json.loads(line) for line in out.read_text().splitlines()] == rows


def test_export_then_import_then_verify(runner, demo_db, tmp_path, new_db):
    """A round trip through the commands; a second import finds everything there; verify says ok."""
    out = tmp_path / "log.jsonl.gz"
    assert invoke(runner, "export", "--db", demo_db, "--out", str(out)).exit_code == 0
    target = new_db()
    result = invoke(runner, "import", str(out), "--db", target)
    assert result.exit_code == 0, result.stderr
    assert "imported" in result.stdout
    again = invoke(runner, "import", str(out), "--db", target)
    assert again.exit_code == 0, again.stderr
    assert "imported 0 events" in again.stdout
    checked = invoke(runner, "verify", "--db", target, "--json", "--quiet")
    assert checked.exit_code == 0, checked.stdout
    report = json.loads(checked.stdout)
    assert report["ok"] is True
    assert report["events"] > 0
    assert report["problems"] == []


def test_keys_travel_only_when_asked_for(runner, demo_db, tmp_path, new_db):
    """Without --keys the copy's owners read [redacted]; with them, as in the source."""
    out, keys = tmp_path / "log.jsonl", tmp_path / "keys.jsonl"
    result = invoke(runner, "export", "--db", demo_db, "--out", str(out), "--keys", str(keys), "--quiet")
    assert result.exit_code == 0, result.stderr
    assert "subjects' keys" in result.stderr
    bare, keyed = new_db(), new_db()
    assert invoke(runner, "import", str(out), "--db", bare, "--quiet").exit_code == 0
    result = invoke(runner, "import", str(out), "--db", keyed, "--keys", str(keys), "--quiet")
    assert result.exit_code == 0, result.stderr
    assert "subjects' keys" in result.stdout

    def first_owner(db: str) -> str:
        found = invoke(runner, "streams", "ls", "--db", db, "--json")
        stream = json.loads(found.stdout)["streams"][0]["streamId"]
        doc = json.loads(invoke(runner, "streams", "read", stream, "--db", db, "--json").stdout)
        return str(doc["events"][0]["data"]["owner_name"])

    assert first_owner(bare) == "[redacted]"
    assert first_owner(keyed) == first_owner(demo_db) != "[redacted]"


def test_import_refuses_a_damaged_file_and_a_store_with_other_events(runner, demo_db, tmp_path, new_db):
    """Exit 5 for a damaged file (nothing written), 4 for a store holding other events."""
    out = tmp_path / "log.jsonl"
    assert invoke(runner, "export", "--db", demo_db, "--out", str(out)).exit_code == 0
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_bytes(out.read_bytes().replace(b'"EUR"', b'"USD"', 1))
    target = new_db()
    result = invoke(runner, "import", str(damaged), "--db", target)
    assert result.exit_code == EXIT_CORRUPT
    assert "checksum does not match" in result.stderr
    assert "nothing was imported" in result.stderr
    other = new_db()
    assert invoke(runner, "demo", "--db", other).exit_code == 0
    refused = invoke(runner, "import", str(out), "--db", other)
    assert refused.exit_code == EXIT_REFUSED
    assert "other events" in refused.stderr
    assert invoke(runner, "import", str(tmp_path / "missing.jsonl"), "--db", target).exit_code == 2


def test_verify_reports_a_damaged_copy(runner, demo_db, tmp_path):
    """Bad JSON in one event and a version gap in another: exit 1, each named with where it is."""
    [[(stream, version)]] = run_sql(
        demo_db,
        [
            (
                (
                    "SELECT stream_id, max(stream_version) FROM events WHERE position > 2 "
                    "GROUP BY stream_id ORDER BY stream_id LIMIT 1"
                ),
                (),
            )
        ],
    )
    run_sql(
        demo_db,
        [
            ("UPDATE events SET data = ? WHERE position = 2", (b"{not json",)),
            (
                "UPDATE events SET stream_version = ? WHERE stream_id = ? AND stream_version = ?",
                (version + 5, stream, version),
            ),
        ],
    )
    result = invoke(runner, "verify", "--db", demo_db, "--quiet")
    assert result.exit_code == 1, result.stdout
    assert "event does not decode: position 2" in result.stdout
    assert "stream version a gap: position" in result.stdout
    assert f"stream {stream!r} version {version + 5}" in result.stdout
    assert "2 problem(s)" in result.stdout
    as_json = json.loads(invoke(runner, "verify", "--db", demo_db, "--json", "--quiet").stdout)
    assert as_json["ok"] is False
    assert [p["what"] for p in as_json["problems"]] == ["event does not decode", "stream version a gap"]


def test_export_with_a_bad_checkpoint_is_a_usage_error(runner, demo_db):
    """--after takes a checkpoint token: anything else is exit 2, naming it."""
    result = invoke(runner, "export", "--db", demo_db, "--after", "nope")
    assert result.exit_code == 2
    assert "checkpoint" in result.stderr


# -- as real processes ----------------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(  # noqa: S603 - our interpreter, our code
        [sys.executable, "-m", "eventvault_ledger.cli", *args],
        capture_output=True,
        check=False,
        env={**os.environ, **ENV},
        timeout=120,
    )


def test_the_commands_as_processes(demo_db, tmp_path, new_db):
    """Export to stdout, import from the file, verify: real processes, real exit codes."""
    exported = _cli("export", "--db", demo_db)
    assert exported.returncode == 0, exported.stderr
    out = tmp_path / "log.jsonl"
    out.write_bytes(exported.stdout)
    assert json.loads(exported.stdout.splitlines()[-1])["checksum"].startswith("sha256:")
    keys = tmp_path / "keys.jsonl"
    with_keys = _cli("export", "--db", demo_db, "--out", str(tmp_path / "again.jsonl"), "--keys", str(keys))
    assert with_keys.returncode == 0, with_keys.stderr
    assert keys.read_bytes()
    target = new_db()
    imported = _cli("import", str(out), "--db", target, "--keys", str(keys))
    assert imported.returncode == 0, imported.stderr
    assert b"subjects' keys" in imported.stdout
    verified = _cli("verify", "--db", target)
    assert verified.returncode == 0, verified.stdout
    assert b": ok" in verified.stdout
    again = _cli("export", "--db", target)
    assert again.stdout == exported.stdout
