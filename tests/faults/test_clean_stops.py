"""SIGINT and SIGTERM stop the server and the projection worker cleanly, and quickly."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from eventvault.testing import DEADLINE, eventually  # generous; a wait ends as soon as its condition holds
from server_process import wait_healthy

GRACEFUL = 5.0  # the server's graceful-shutdown bound: a stop held up by open streams takes this long


def _wait(what: str, check: Callable[[], object], process: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until ``check()`` holds; fail at once if ``process`` exits meanwhile."""

    def probe() -> object:
        assert process.poll() is None, f"exited while waiting for {what}:\n{log.read_text()}"
        return check()

    try:
        eventually(probe, within=DEADLINE, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{log.read_text()}") from None


@contextlib.contextmanager
def _started(command: list[str], log: Path, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603 - our own console script, fixed arguments
            command, stdout=sink, stderr=subprocess.STDOUT, cwd=cwd, env={**os.environ, "NO_COLOR": "1"}
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_server_stops_at_once_with_live_streams_open_and_no_traceback(tmp_path, eventvault, port, sig):
    """Three open SSE streams: a signal ends them and the server exits well before the graceful bound."""
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    command = eventvault(
        "serve", "--db", f"sqlite:///{tmp_path / 'ledger.db'}", "--port", str(port), "--log-level", "info"
    )
    with _started(command, log, tmp_path) as server:
        wait_healthy(base, server, log)
        opened: list[str] = []
        ended: list[str] = []

        def listen() -> None:
            try:
                with httpx.stream("GET", f"{base}/api/query/accounts/changes", timeout=DEADLINE) as r:
                    # Appended one by one as they come: the test waits on their count.
                    opened.extend(line for line in r.iter_lines() if line.startswith("retry:"))
                ended.append("ended")
            except httpx.HTTPError as exc:
                ended.append(repr(exc))

        listeners = [threading.Thread(target=listen, daemon=True) for _ in range(3)]
        for t in listeners:
            t.start()
        _wait("three streams open", lambda: len(opened) == 3, server, log)

        started = time.monotonic()
        server.send_signal(sig)
        code = server.wait(timeout=DEADLINE)
        took = time.monotonic() - started
        for t in listeners:
            t.join(DEADLINE)

    output = log.read_text()
    # uvicorn stops gracefully, then raises the signal again: the exit status tells of it.
    assert code == -sig, output
    assert ended == ["ended"] * 3  # each stream came to its end, none was cut off
    assert "Traceback" not in output, output
    assert "CancelledError" not in output, output
    assert "timeout graceful shutdown exceeded" not in output, output
    assert "Application shutdown complete" in output, output
    assert took < GRACEFUL, f"{took:.2f}s\n{output}"
    print(f"\nfigures: {sig.name} with 3 streams open: exited in {took:.2f}s")  # noqa: T201 - docs/reliability.md


def _owner(db: Path) -> str | None:
    with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        row = conn.execute("SELECT owner, expires FROM ev_partition WHERE name = 'accounts'").fetchone()
        if row is not None and row[0] is not None and row[1] > time.time():
            return str(row[0])
    return None


def _workers(db: Path) -> set[str]:
    with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(db, timeout=5)) as conn:
        return {
            str(r[0]) for r in conn.execute("SELECT worker FROM ev_worker WHERE expires > ?", (time.time(),))
        }
    return set()


@pytest.mark.slow
def test_a_worker_stopped_by_sigterm_gives_its_lease_back_and_another_takes_over_at_once(
    tmp_path, eventvault
):
    """With leases of 300 s, the second worker holds the partition well before the first's lease would end."""
    db = tmp_path / "ledger.db"
    url = f"sqlite:///{db}"
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    lease = 300.0
    with _started(
        eventvault("worker", "--db", url, "--lease-seconds", str(lease)), first_log, tmp_path
    ) as first:
        _wait("the first worker holding the partition", lambda: _owner(db), first, first_log)
        holder = _owner(db)
        with _started(
            eventvault("worker", "--db", url, "--lease-seconds", str(lease)), second_log, tmp_path
        ) as second:
            _wait("the second worker announced", lambda: len(_workers(db)) == 2, second, second_log)
            stopped_at = time.time()
            first.send_signal(signal.SIGTERM)
            assert first.wait(timeout=DEADLINE) == 0, first_log.read_text()
            _wait(
                "the second worker holding the partition",
                lambda: _owner(db) not in (None, holder),
                second,
                second_log,
            )
            took_over_in = time.time() - stopped_at
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=DEADLINE) == 0, second_log.read_text()

    first_out, second_out = first_log.read_text(), second_log.read_text()
    assert took_over_in < lease / 10, (took_over_in, second_out)
    assert "giving back partitions [0]" in first_out, first_out
    assert "worker stopped" in first_out, first_out
    assert "took partition 0" in second_out, second_out
    assert "leases of 300s" in second_out, second_out
    for out in (first_out, second_out):
        assert "Traceback" not in out, out
    assert _owner(db) is None  # the second gave it back too
    print(f"\nfigures: taken over {took_over_in:.2f}s after SIGTERM (lease {lease:g}s)")  # noqa: T201 - docs


@pytest.mark.slow
def test_a_worker_killed_outright_is_taken_over_after_its_lease_and_the_takeover_is_logged(
    tmp_path, eventvault
):
    """SIGKILL gives nothing back: the other worker waits out the lease, takes over, and says from whom."""
    db = tmp_path / "ledger.db"
    url = f"sqlite:///{db}"
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    with _started(eventvault("worker", "--db", url, "--lease-seconds", "2"), first_log, tmp_path) as first:
        _wait("the first worker holding the partition", lambda: _owner(db), first, first_log)
        holder = _owner(db)
        with _started(
            eventvault("worker", "--db", url, "--lease-seconds", "2"), second_log, tmp_path
        ) as second:
            _wait("the second worker announced", lambda: len(_workers(db)) == 2, second, second_log)
            killed_at = time.time()
            first.kill()
            first.wait()
            _wait(
                "the second worker holding the partition",
                lambda: _owner(db) not in (None, holder),
                second,
                second_log,
            )
            took_over_in = time.time() - killed_at
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=DEADLINE) == 0, second_log.read_text()

    second_out = second_log.read_text()
    assert f"took partition 0 over from {holder}, whose lease expired" in second_out, second_out
    print(f"\nfigures: taken over {took_over_in:.2f}s after SIGKILL (lease 2s)")  # noqa: T201 - docs
