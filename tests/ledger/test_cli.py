"""The ``eventvault`` command line: the demo on each embedded store, and its errors."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys

import pytest
from rich.console import Console
from typer.testing import CliRunner

import eventvault
from eventvault import StoreUnavailable, open_store
from eventvault_ledger import cli
from eventvault_ledger.demo import DemoReport, run_demo
from eventvault_ledger.errors import AccountIsClosed, InsufficientFunds, InvalidAmount

# Wide enough that Rich never wraps or truncates a table cell the tests look for.
ENV = {"COLUMNS": "200", "NO_COLOR": "1"}

EVENTS_PER_RUN = 13 + 4 + 3  # Ada, Grace and Hiro's streams


@pytest.fixture
def runner():
    return CliRunner()


def _demo(runner, *args):
    return runner.invoke(cli.app, ["demo", *args], env=ENV)


def _assert_demo_output(result):
    assert result.exit_code == 0, result.output
    out = result.stdout
    # The state table, replayed from the log.
    assert "Ada Lovelace" in out
    assert "1161.10" in out
    assert "Grace Hopper" in out
    assert "closed" in out
    assert "3800" in out
    # The refused commands, each with the rule's own message.
    assert "insufficient funds: the balance is 1160.10 EUR, less than the 5000.00 EUR asked for" in out
    assert "is closed" in out
    assert "JPY amounts have no decimal places, got 0.5" in out
    # History, the temporal query and the replay check.
    for event_type in ("AccountOpened", "MoneyDeposited", "MoneyWithdrawn", "AccountClosed"):
        assert event_type in out
    assert "At version 2" in out
    assert "balance 1250.00 EUR, 1 transaction(s), open" in out
    assert out.count("Replayed state equals live state.") == 3
    assert "Replay check passed: all 3 accounts replay to their live state." in out
    assert result.stderr == ""


def _count_events(url):
    async def count():
        async with open_store(url) as store:
            return [e.stream_id async for e in store.iter_all()]

    return asyncio.run(count())


def test_demo_runs_on_a_memory_store(runner):
    """`demo --db memory://` shows the replayed state, the refusals and a passing replay check."""
    _assert_demo_output(_demo(runner, "--db", "memory://"))


def test_demo_runs_on_a_sqlite_file_and_can_run_again(runner, tmp_path):
    """The demo writes to a SQLite file; a second run on the same file adds new accounts and passes too."""
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    _assert_demo_output(_demo(runner, "--db", url))
    _assert_demo_output(_demo(runner, "--db", url))
    streams = _count_events(url)
    assert len(streams) == 2 * EVENTS_PER_RUN
    assert len(set(streams)) == 6
    assert all(s.startswith("account-") for s in streams)


def test_demo_defaults_to_a_sqlite_file_in_the_current_directory(runner, tmp_path, monkeypatch):
    """Without --db the demo uses eventvault-demo.db in the working directory."""
    monkeypatch.chdir(tmp_path)
    _assert_demo_output(_demo(runner))
    assert (tmp_path / "eventvault-demo.db").is_file()
    assert len(_count_events("sqlite:///eventvault-demo.db")) == EVENTS_PER_RUN


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("foo://x", "unknown store scheme 'foo'"),
        ("not a url", "unknown store scheme ''"),
        ("memory://?colour=blue", "memory:// takes no options"),
        ("sqlite://", "names no database file"),
    ],
)
def test_demo_with_a_bad_db_url_exits_2_with_one_line(runner, url, message):
    """A --db URL naming no usable store prints one clear error line on stderr and exits 2."""
    result = _demo(runner, "--db", url)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("error: cannot open the store")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_demo_with_an_unopenable_sqlite_path_exits_2(runner, tmp_path):
    """A SQLite file in a directory that does not exist is a bad --db: exit 2, one line."""
    result = _demo(runner, "--db", f"sqlite:///{tmp_path / 'missing' / 'demo.db'}")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: cannot open the store")
    assert result.stderr.count("\n") == 1


def test_demo_never_prints_a_password_from_the_db_url(runner):
    """The error for a bad --db shows the URL with its password masked."""
    result = _demo(runner, "--db", "nosuch://ada:s3cret@db.example/ledger")
    assert result.exit_code == 2
    assert "s3cret" not in result.output
    assert "ada:***@db.example" in result.stderr


def test_demo_that_fails_midway_exits_1_with_one_line(runner, monkeypatch):
    """A store error during the demo is one line on stderr and exit code 1, not a traceback."""

    async def failing(store, console):
        raise StoreUnavailable("the database went away")

    monkeypatch.setattr(cli, "run_demo", failing)
    result = _demo(runner, "--db", "memory://")
    assert result.exit_code == 1
    assert result.stderr == "error: the demo failed: the database went away\n"


def test_demo_exits_1_when_replay_differs_from_live_state(runner, monkeypatch):
    """If any account replays to another state than it had live, the demo fails with exit code 1."""

    async def mismatching(store, console):
        return DemoReport(("a-1",), (), ("a-1",))

    monkeypatch.setattr(cli, "run_demo", mismatching)
    result = _demo(runner, "--db", "memory://")
    assert result.exit_code == 1
    assert "replayed state differs from live state for a-1" in result.stderr


async def test_run_demo_reports_its_accounts_and_refusals():
    """run_demo returns the accounts it opened and the three commands the rules refused."""
    console = Console(file=io.StringIO(), width=200)
    async with open_store("memory://") as store:
        report = await run_demo(store, console)
        assert report.ok
        assert len(report.account_ids) == 3
        assert [type(e) for e in report.refused] == [InsufficientFunds, AccountIsClosed, InvalidAmount]
        for account_id in report.account_ids:
            assert await store.stream_version(f"account-{account_id}") > 0


def test_version_prints_the_package_version(runner):
    """`eventvault version` prints the installed version."""
    result = runner.invoke(cli.app, ["version"])
    assert result.exit_code == 0
    assert result.stdout == f"eventvault {eventvault.__version__}\n"


def test_main_is_the_console_entry_point():
    """The module runs as a program through main(), as the console script does."""
    done = subprocess.run(
        [sys.executable, "-m", "eventvault_ledger.cli", "version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"eventvault {eventvault.__version__}\n"
