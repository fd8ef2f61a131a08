"""The ``eventvault`` command line: the demo on each embedded store, and its errors."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

import eventvault
from eventvault import StoreUnavailable, open_store
from eventvault_ledger import cli, serving
from eventvault_ledger.demo import DemoReport, run_demo
from eventvault_ledger.errors import AccountIsClosed, InsufficientFunds, InvalidAmount
from server_process import stop, wait_healthy

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


def test_demo_without_db_starts_from_a_fresh_file_each_run(runner, tmp_path, monkeypatch):
    """Without --db each run writes a new SQLite file in a new temporary folder and names it."""
    here, temp = tmp_path / "here", tmp_path / "temp"
    here.mkdir()
    temp.mkdir()
    monkeypatch.chdir(here)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))

    first, second = _demo(runner), _demo(runner)

    _assert_demo_output(first)
    _assert_demo_output(second)
    files = sorted(temp.glob("eventvault-demo-*/demo.db"))
    assert len(files) == 2
    for db in files:
        assert len(_count_events(f"sqlite:///{db}")) == EVENTS_PER_RUN
        assert f"`eventvault serve --db {db}`" in first.stdout + second.stdout
    assert first.stdout.splitlines()[0] != second.stdout.splitlines()[0]
    assert list(here.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("foo://x", "unknown store scheme 'foo'"),
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


# --db: plain paths, sqlite:/// and sqlite:////, stores that cannot be shared.


def test_demo_takes_a_plain_relative_path_and_prints_it_absolute(runner, tmp_path, monkeypatch):
    """`--db ./ledger.db` is a SQLite file in the current folder; the demo prints its absolute path."""
    monkeypatch.chdir(tmp_path)
    result = _demo(runner, "--db", "./ledger.db")
    _assert_demo_output(result)
    assert result.stdout.splitlines()[0] == f"eventvault demo, store: {tmp_path / 'ledger.db'}"
    assert len(_count_events(f"sqlite:///{tmp_path / 'ledger.db'}")) == EVENTS_PER_RUN


def test_demo_takes_a_plain_absolute_path(runner, tmp_path):
    """`--db /some/where/ev.db` is that file, whatever the current folder."""
    db = tmp_path / "ev.db"
    _assert_demo_output(_demo(runner, "--db", str(db)))
    assert len(_count_events(f"sqlite:///{db}")) == EVENTS_PER_RUN


def test_three_slashes_are_relative_and_four_absolute(runner, tmp_path, monkeypatch):
    """sqlite:///sub/a.db is under the current folder, sqlite:////abs/b.db at that absolute path."""
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    relative = _demo(runner, "--db", "sqlite:///sub/a.db")
    absolute = _demo(runner, "--db", f"sqlite:///{tmp_path / 'b.db'}")  # tmp_path starts with /
    _assert_demo_output(relative)
    _assert_demo_output(absolute)
    assert f"store: {tmp_path / 'sub' / 'a.db'}" in relative.stdout
    assert f"store: {tmp_path / 'b.db'}" in absolute.stdout
    assert (tmp_path / "sub" / "a.db").is_file()
    assert (tmp_path / "b.db").is_file()


def test_a_missing_folder_is_an_error_that_explains_the_fourth_slash(runner, tmp_path, monkeypatch):
    """sqlite:///tmp/x.db where ./tmp does not exist: exit 2, one line pointing at sqlite:////tmp/x.db."""
    monkeypatch.chdir(tmp_path)
    result = _demo(runner, "--db", "sqlite:///tmp/x.db")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert f"the folder {tmp_path / 'tmp'} does not exist" in result.stderr
    assert "write sqlite:////tmp/x.db or just /tmp/x.db" in result.stderr
    assert list(tmp_path.iterdir()) == []


SHARED = ["serve", "worker", "projections", ["rebuild", "accounts"]]


@pytest.mark.parametrize("command", SHARED, ids=lambda c: c if isinstance(c, str) else c[0])
@pytest.mark.parametrize("url", ["memory://", "sqlite:///:memory:"])
def test_commands_that_share_the_store_refuse_in_memory_stores(runner, command, url):
    """serve, worker, projections and rebuild on an in-memory store: exit 2, one line saying what to pass."""
    args = [command] if isinstance(command, str) else command
    result = runner.invoke(cli.app, [*args, "--db", url], env=ENV)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"error: eventvault {args[0]} cannot use {url}")
    assert "--db ./ledger.db" in result.stderr
    assert "postgresql://" in result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


@pytest.mark.parametrize("command", ["serve", "worker", "projections", "rebuild"])
def test_db_help_offers_only_stores_the_command_can_use(runner, command):
    """The --db help of the commands that share a store offers no memory://; demo's does."""
    result = runner.invoke(cli.app, [command, "--help"], env=ENV)
    assert result.exit_code == 0
    assert "memory://" not in result.stdout
    assert "sqlite:////absolute.db" in result.stdout
    assert "./ledger.db" in result.stdout
    demo_help = runner.invoke(cli.app, ["demo", "--help"], env=ENV).stdout
    assert "memory://" in demo_help


def test_serve_refuses_a_db_whose_folder_does_not_exist(runner, tmp_path, monkeypatch):
    """Serve makes only the default's folder: another missing folder is exit 2, nothing made."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(serving, "run", _must_not_serve)
    result = runner.invoke(cli.app, ["serve", "--db", "sqlite:///tmp/x.db"], env=ENV)
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
    assert "sqlite:////tmp/x.db" in result.stderr
    assert list(tmp_path.iterdir()) == []


# serve: the port, the start line, the log level.


def _must_not_serve(*args, **kwargs):
    raise AssertionError("the server must not start")


def test_serve_on_a_port_in_use_exits_2_with_one_line(runner, tmp_path, monkeypatch):
    """A port some other program listens on is one line and exit 2, before anything starts."""
    monkeypatch.setattr(serving, "run", _must_not_serve)
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = runner.invoke(
            cli.app, ["serve", "--db", str(tmp_path / "x.db"), "--port", str(port)], env=ENV
        )
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"error: port {port} on 127.0.0.1 is already in use: stop the program listening there, "
        "or pass --port with another port (0 picks a free one)\n"
    )
    assert not (tmp_path / "x.db").exists()


def test_serve_prints_the_url_with_the_bound_port_and_the_absolute_store(runner, tmp_path, monkeypatch):
    """Port 0 takes a free port, and the start line names it and the absolute database path."""
    seen: dict[str, Any] = {}

    def fake_run(app, sock, *, log_level, **limits):
        seen.update(port=sock.getsockname()[1], log_level=log_level, listening=sock.fileno() >= 0)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(serving, "run", fake_run)
    args = ["serve", "--db", "ledger.db", "--port", "0", "--log-level", "INFO"]
    result = runner.invoke(cli.app, args, env=ENV)
    assert result.exit_code == 0, result.output
    assert seen["listening"]
    assert seen["port"] > 0
    assert seen["log_level"] == "info"
    assert result.stdout == (
        f"eventvault ledger on http://127.0.0.1:{seen['port']}/  (store: {tmp_path / 'ledger.db'})\n"
    )


def test_serve_refuses_an_unknown_log_level(runner):
    """--log-level takes debug, info, warning or error."""
    result = runner.invoke(cli.app, ["serve", "--log-level", "chatty"], env=ENV)
    assert result.exit_code == 2
    assert "'chatty' is not one of 'debug', 'info', 'warning', 'error'" in result.stderr


# The shared flags: --version, -h, no "<bool>".


def test_version_flag_prints_the_version(runner):
    """`eventvault --version` prints what `eventvault version` does."""
    result = runner.invoke(cli.app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout == f"eventvault {eventvault.__version__}\n"


@pytest.mark.parametrize("args", [[], ["demo"], ["serve"], ["worker"], ["projections"], ["rebuild"]])
def test_every_help_answers_to_h_and_shows_no_type_beside_flags(runner, args):
    """-h is --help, and no flag shows a "<bool>" (or any other) value in the help."""
    short = runner.invoke(cli.app, [*args, "-h"], env=ENV)
    long = runner.invoke(cli.app, [*args, "--help"], env=ENV)
    assert short.exit_code == long.exit_code == 0
    assert short.stdout == long.stdout
    assert "-h, --help" in short.stdout
    assert "<bool>" not in short.stdout
    options = [line for line in short.stdout.splitlines() if line.startswith("  -")]
    assert options
    for line in options:  # Typer's type labels (<int>, <str>, ...) stay out of the options
        assert re.search(r"<[a-z]+>", line) is None, line


def test_bench_help_names_the_command_it_was_run_as(runner):
    """`eventvault bench --help` says `usage: eventvault bench`, not `python -m benchmarks`."""
    result = runner.invoke(cli.app, ["bench", "--help"], env=ENV)
    assert result.exit_code == 0
    assert result.stdout.startswith("usage: eventvault bench ")
    assert "python -m benchmarks" not in result.stdout


# Missing extras: one line naming what to install.


def _run_without(module, *args):
    """The console script with ``module`` impossible to import, as in an install without the extra."""
    code = (
        f"import sys; sys.modules[{module!r}] = None; sys.argv = ['eventvault', *sys.argv[1:]]; "
        "from eventvault_ledger.console import main; main()"
    )
    return subprocess.run(  # noqa: S603 - our interpreter, our code
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("module", ["typer", "rich"])
def test_without_the_cli_extra_the_command_names_it(module):
    """Without typer or rich, `eventvault --help` prints one line naming the cli extra, exit 1."""
    done = _run_without(module, "--help")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f"error: the eventvault command needs {module}, which comes with the cli extra: "
        "pip install 'eventvault[cli]' (or 'eventvault[server]' to serve the ledger too)\n"
    )


@pytest.mark.parametrize("module", ["fastapi", "uvicorn"])
def test_serve_without_the_server_extra_names_it(module, tmp_path):
    """`eventvault serve` without fastapi or uvicorn is one line naming the server extra, exit 1."""
    done = _run_without(module, "serve", "--db", str(tmp_path / "x.db"))
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        f"error: eventvault serve needs {module}, which comes with the server extra: "
        "pip install 'eventvault[server]'\n"
    )


def test_the_demo_runs_without_the_server_extra(tmp_path):
    """The cli extra is enough for the demo."""
    done = _run_without("fastapi", "demo", "--db", "memory://")
    assert done.returncode == 0, done.stderr
    assert "Replay check passed" in done.stdout


def test_the_console_script_runs_the_command_line():
    """The installed `eventvault` script starts at eventvault_ledger.console:main."""
    script = Path(sys.executable).with_name("eventvault")
    if not script.exists():
        pytest.skip("no console script beside this interpreter (not an installed environment)")
    done = subprocess.run(  # noqa: S603 - our console script
        [script, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"eventvault {eventvault.__version__}\n"


# A real server process: the start line, and the access log at each level.


def _command(*args):
    script = Path(sys.executable).with_name("eventvault")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-m", "eventvault_ledger.console", *args]


@pytest.mark.parametrize("level", [None, "info"])
def test_a_real_server_logs_one_line_per_request_only_at_info(tmp_path, level):
    """At --log-level info each request is one log line with its request id; by default none is."""
    args = ["serve", "--db", "ledger.db", "--port", "0", *(["--log-level", level] if level else [])]
    err = tmp_path / "stderr.log"
    with err.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603 - our console script, fixed arguments
            _command(*args), cwd=tmp_path, stdout=subprocess.PIPE, stderr=sink, text=True
        )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()  # printed once the socket is bound, before the app starts
        match = re.fullmatch(r"eventvault ledger on http://127\.0\.0\.1:(\d+)/  \(store: (.+)\)\n", first)
        assert match, (first, err.read_text())
        assert match[2] == str(tmp_path / "ledger.db")
        base = f"http://127.0.0.1:{match[1]}"
        wait_healthy(base, process, err)
        listed = httpx.get(f"{base}/api/query/accounts?limit=5", headers={"X-Request-ID": "list-1"})
        missing = httpx.get(f"{base}/api/query/accounts/nobody", headers={"X-Request-ID": "missing-1"})
    finally:
        stop(process)
        assert process.stdout is not None
        process.stdout.close()
    assert (listed.status_code, missing.status_code) == (200, 404)
    log = err.read_text()
    access = [line for line in log.splitlines() if "eventvault_ledger.access" in line]
    if level is None:
        assert access == []
        assert "INFO" not in log
        return
    [list_line] = [line for line in access if line.endswith(" request list-1")]
    [missing_line] = [line for line in access if line.endswith(" request missing-1")]
    assert '"GET /api/query/accounts?limit=5 HTTP/1.1" 200 ' in list_line
    assert '"GET /api/query/accounts/nobody HTTP/1.1" 404 ' in missing_line
    assert "Application shutdown complete" in log


@pytest.mark.parametrize(
    ("value", "url", "shown"),
    [
        ("ledger.db", "sqlite:///{here}/ledger.db", "{here}/ledger.db"),
        (
            "sqlite:///ledger.db?synchronous=NORMAL",
            "sqlite:///{here}/ledger.db?synchronous=NORMAL",
            "{here}/ledger.db",
        ),
        ("sqlite:////{here}/abs.db", "sqlite:///{here}/abs.db", "{here}/abs.db"),
        ("memory://", "memory://", "memory://"),
        (
            "postgresql://ada:s3cret@db/ledger",
            "postgresql://ada:s3cret@db/ledger",
            "postgresql://ada:***@db/ledger",
        ),
    ],
)
def test_db_values_name_the_store_they_open_and_what_is_printed(tmp_path, monkeypatch, value, url, shown):
    """A plain path or a URL gives the URL the store opens (files made absolute) and the text shown."""
    monkeypatch.chdir(tmp_path)
    here = str(tmp_path).removeprefix("/")
    db = cli._resolve_db(value.format(here=here))
    assert db.url == url.format(here=tmp_path)
    assert db.shown == shown.format(here=tmp_path)


def test_only_the_default_db_gets_its_folder_made(tmp_path, monkeypatch):
    """The default's missing folder is created (a fresh checkout works); any other is an error."""
    monkeypatch.chdir(tmp_path)
    db = cli._resolve_db("sqlite:///var/x.db", default="sqlite:///var/x.db")
    assert db.shown == str(tmp_path / "var" / "x.db")
    assert (tmp_path / "var").is_dir()
    with pytest.raises(cli._CannotOpen, match="does not exist"):
        cli._resolve_db("sqlite:///other/x.db", default="sqlite:///var/x.db")
    assert not (tmp_path / "other").exists()


def test_projections_on_a_file_print_its_path_and_the_table(runner, tmp_path):
    """`eventvault projections --db FILE` names the absolute file, then shows each projection."""
    db = tmp_path / "ledger.db"
    result = runner.invoke(cli.app, ["projections", "--db", str(db)], env=ENV)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"store: {db}"
    assert "accounts" in result.stdout


# The access log, in-process.


async def _answer(scope, receive, send):
    await send({"type": "http.response.start", "status": 201, "headers": [(b"x-request-id", b"rid-7")]})
    await send({"type": "http.response.body", "body": b"hello"})


async def _crash(scope, receive, send):
    raise RuntimeError("boom")


async def _get(app, path):
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://ledger") as http:
        return await http.get(path)


async def test_access_log_writes_one_line_per_request_with_its_id(caplog):
    """At INFO a request is one line: client, request line, status, bytes, time and request id."""
    caplog.set_level(logging.INFO, logger="eventvault_ledger.access")
    answer = await _get(serving.AccessLog(_answer), "/api/query/accounts?limit=2")
    assert answer.status_code == 201
    [record] = [r for r in caplog.records if r.name == "eventvault_ledger.access"]
    line = record.getMessage()
    assert re.fullmatch(
        r'127\.0\.0\.1:\d+ "GET /api/query/accounts\?limit=2 HTTP/1\.1" 201 5B \d+\.\dms request rid-7', line
    ), line


async def test_access_log_counts_an_app_that_raised_as_500(caplog):
    """A request the app failed before answering is logged as the 500 the server sends."""
    caplog.set_level(logging.INFO, logger="eventvault_ledger.access")
    answer = await _get(serving.AccessLog(_crash), "/x")
    assert answer.status_code == 500
    [record] = [r for r in caplog.records if r.name == "eventvault_ledger.access"]
    assert '"GET /x HTTP/1.1" 500 0B' in record.getMessage()
    assert record.getMessage().endswith(" request -")


async def test_access_log_is_silent_above_info(caplog):
    """At WARNING (the default level) the access log writes nothing."""
    caplog.set_level(logging.WARNING, logger="eventvault_ledger.access")
    await _get(serving.AccessLog(_answer), "/")
    assert [r for r in caplog.records if r.name == "eventvault_ledger.access"] == []
