"""Stopping never closes a SQLite connection under a statement another thread is running."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from eventvault.projections import open_read_models

CHURN = Path(__file__).with_name("app_churn.py")
ROUNDS = 200
JOIN = 30.0  # generous: only a deadlock would need it


def test_close_waits_for_a_transaction_running_on_another_thread(tmp_path):
    """ReadModels.close() returns only after a transaction in progress elsewhere has ended, then closes."""
    db = open_read_models(f"sqlite:///{tmp_path / 'rm.db'}")
    inside, release = threading.Event(), threading.Event()
    rows: list[int] = []

    def use() -> None:
        with db.transaction() as conn:
            db.execute(conn, "CREATE TABLE IF NOT EXISTS t (x INTEGER)")
            inside.set()
            release.wait()
            # Had close() gone ahead, this would run on a closed (or freed) connection.
            db.execute(conn, "INSERT INTO t VALUES (1)")
        rows.append(db.query("SELECT count(*) FROM t")[0][0])

    user = threading.Thread(target=use)
    user.start()
    assert inside.wait(JOIN)
    closer = threading.Thread(target=db.close)
    closer.start()
    closer.join(0.2)  # a bounded look: close must still be waiting for the transaction
    assert closer.is_alive(), "close() did not wait for the transaction in progress"
    release.set()
    closer.join(JOIN)
    user.join(JOIN)
    assert not closer.is_alive()
    assert not user.is_alive()
    assert rows == [1]  # the query after the close opened a connection of its own
    db.close()


def test_a_use_that_starts_during_a_close_waits_for_it_and_gets_a_fresh_connection(tmp_path):
    """A query begun while close() waits runs after the close, on a new connection, not a closed one."""
    db = open_read_models(f"sqlite:///{tmp_path / 'rm.db'}")
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.transaction():
            inside.set()
            release.wait()

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(JOIN)
    before = db.connection()  # this thread's connection, closed by the close below
    closer = threading.Thread(target=db.close)
    closer.start()
    answers: list[object] = []
    reader = threading.Thread(target=lambda: answers.append(db.query("SELECT 1")[0][0]))
    reader.start()
    release.set()
    for t in (holder, closer, reader):
        t.join(JOIN)
        assert not t.is_alive()
    assert answers == [1]
    assert db.query("SELECT 2") == [(2,)]
    assert db.connection() is not before
    db.close()


@pytest.mark.slow
def test_the_app_starts_and_stops_200_times_under_sweeps_projections_and_queries(tmp_path):
    """200 starts and stops with the sweep, the runner, queries and commands all busy: the process lives."""
    started = time.monotonic()
    done = subprocess.run(  # noqa: S603 - our own script, fixed arguments
        [sys.executable, str(CHURN), str(tmp_path), str(ROUNDS)],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stderr[-4000:]}"
    assert done.stdout.strip() == f"{ROUNDS} rounds", done.stdout
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    took = time.monotonic() - started
    print(f"\nfigures: {ROUNDS} starts and stops, exit 0, in {took:.0f}s")  # noqa: T201 - docs/reliability.md
