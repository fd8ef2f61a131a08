"""``eventvault serve --projection-workers``: worker processes that live and die with their server.

The server runs no projection itself: its read models are the workers' work.
A worker killed is started again, and projects what came meanwhile; a server
stopped stops its workers first; a server killed leaves no worker behind (the
pipe on each worker's stdin closes with it, and the worker stops on that).
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import httpx
from typer.testing import CliRunner

from eventvault.testing import eventually
from eventvault_ledger import cli
from server_process import ServerProcess

DEADLINE = 60.0  # for a loaded machine: each wait ends as soon as its condition holds
STARTED = re.compile(r"projection worker 0 started \(pid (\d+)\)")


def _workers_started(log: Path) -> list[int]:
    """The pids of worker 0, in the order the server started them."""
    return [int(pid) for pid in STARTED.findall(log.read_text())]


def _parent_of(pid: int) -> int | None:
    """The parent pid of a running process; None once it has exited (or is a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    state, parent = stat.rpartition(")")[2].split()[:2]
    return None if state in ("Z", "X") else int(parent)


def _balance_after(client: httpx.Client, account_id: str, amount: str) -> str:
    """Deposit ``amount``; the balance the read model's account list gives once it has the deposit."""
    deposited = client.post(f"/api/command/accounts/{account_id}/deposit", json={"amount": amount})
    assert deposited.status_code == 200, deposited.text
    listed = client.get(
        "/api/query/accounts", params={"consistentWith": deposited.json()["checkpoint"]}, timeout=DEADLINE
    )
    assert listed.status_code == 200, listed.text
    (account,) = listed.json()["items"]
    return str(account["currentBalance"])


def test_a_killed_worker_is_started_again_and_a_stopped_server_stops_its_workers(
    tmp_path, eventvault, port, db_url
):
    """Read models built by the server's worker, a worker killed and replaced, and a stop that ends it."""
    base = f"http://127.0.0.1:{port}"
    command = eventvault(
        *("serve", "--db", db_url, "--port", str(port), "--projection-workers", "1", "--log-level", "info"),
        # The new worker takes the killed one's partitions once its lease (10 s) has run out.
        *("--consistency-timeout", "60"),
    )
    log = tmp_path / "serve.log"
    with ServerProcess(command, base, log, tmp_path) as server, httpx.Client(base_url=base) as client:
        server.start()
        eventually(lambda: _workers_started(log), within=DEADLINE, what=log.read_text)
        (first,) = _workers_started(log)
        assert _parent_of(first) == server.pid
        opened = client.post("/api/command/accounts", json={"ownerName": "Worker Made", "currency": "EUR"})
        account_id = opened.json()["accountId"]

        assert _balance_after(client, account_id, "10.00") == "10.00"
        # The worker took the partitions (its log lines share the server's stderr).
        assert re.search(rf"worker \S+:{first}:\S+: leases of 10s", log.read_text()), log.read_text()

        os.kill(first, signal.SIGKILL)
        eventually(lambda: len(_workers_started(log)) == 2, within=DEADLINE, what=log.read_text)
        second = _workers_started(log)[1]
        assert f"projection worker 0 (pid {first}) killed by signal 9" in log.read_text()
        assert _parent_of(second) == server.pid
        assert _balance_after(client, account_id, "5.50") == "15.50"

        assert server.stop() in (0, -signal.SIGTERM)
        # The server waited for its worker before it exited, and started none again.
        assert _parent_of(second) is None
        assert len(_workers_started(log)) == 2


def test_a_killed_server_leaves_no_worker_running(tmp_path, eventvault, port):
    """SIGKILL of the server: its worker sees its stdin end, gives its partitions back and exits."""
    base = f"http://127.0.0.1:{port}"
    db_url = f"sqlite:///{tmp_path / 'ledger.db'}"
    command = eventvault(
        "serve", "--db", db_url, "--port", str(port), "--projection-workers", "1", "--log-level", "info"
    )
    log = tmp_path / "serve.log"
    with ServerProcess(command, base, log, tmp_path) as server:
        server.start()
        eventually(lambda: "leases of 10s" in log.read_text(), within=DEADLINE, what=log.read_text)
        (worker,) = _workers_started(log)

        server.kill()

        eventually(lambda: _parent_of(worker) is None, within=DEADLINE, what=log.read_text)
        assert re.search(r"worker \S+ stopping", log.read_text()), log.read_text()


def test_projection_workers_and_no_projections_are_one_or_the_other(tmp_path, monkeypatch):
    """Both at once is a usage error: exit 2 and one line, before anything is opened."""
    monkeypatch.chdir(tmp_path)

    r = CliRunner().invoke(
        cli.app, ["serve", "--db", "x.db", "--projection-workers", "2", "--no-projections"]
    )

    assert r.exit_code == 2, r.output
    assert "--projection-workers runs the projections, --no-projections runs none" in r.stderr
    assert not (tmp_path / "x.db").exists()
