"""A private PostgreSQL stopped and started again under ``eventvault serve`` with 16 clients sending commands.

The server is this test's own (``private_cluster``), stopped as an operator
would (``pg_ctl stop -m fast``) or as a crash would (``-m immediate``) while
the clients send opens, deposits and withdrawals (a third with an
``Idempotency-Key``). While it is down the commands get 503 with
``Retry-After``, never a 500; once it is back the same server process takes
commands again, its projection goes live, and the log holds every acknowledged
command once (see ledger_load.py); a keyed command answered 503 lands once when
sent again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest
from ledger_load import CLIENTS, Load, assert_in_log_once, open_accounts, retry_keyed

from server_process import ServerProcess

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ACKED_BEFORE = 100  # acknowledged before the database stops
ACKED_AFTER = 100  # and after it started again
DEADLINE = 60.0  # for a loaded machine; the waits end as soon as their condition holds


async def _projection_live(base: str) -> dict[str, Any]:
    """Wait until the server's projection is live and caught up; its status."""
    end = time.monotonic() + DEADLINE
    async with httpx.AsyncClient(base_url=base, timeout=DEADLINE) as http:
        while True:
            status = (await http.get("/api/projections")).json()["items"][0]
            if status["state"] == "live" and status["lagEvents"] == 0:
                return dict(status)
            assert time.monotonic() < end, f"the projection is not live again: {status}"
            await asyncio.sleep(0.05)  # polling another process, with a deadline


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_a_database_outage_under_load_answers_503_and_loses_no_acknowledged_command(
    tmp_path, eventvault, port, private_cluster, mode
):
    """Stop and start PostgreSQL mid-load: 503s with Retry-After, no 500, nothing lost, no restart."""
    url = private_cluster.create_database("ledger")
    base = f"http://127.0.0.1:{port}"
    with ServerProcess(
        eventvault("serve", "--db", url, "--port", str(port)), base, tmp_path / "serve.log", tmp_path
    ) as server:
        await asyncio.to_thread(server.start)
        pid = server.pid
        accounts = await open_accounts(base)
        load = Load(base, accounts, seed=f"outage-{mode}")
        clients = load.run("outage", until_dead=False)
        try:
            async with asyncio.timeout(DEADLINE):
                await load.until_acked(ACKED_BEFORE)
                stopped = time.monotonic()
                await asyncio.to_thread(private_cluster.stop, mode)
                # The clients have been told so: as many 503s as there are clients.
                await load.until(lambda: load.answers["503 unavailable"] >= CLIENTS)
                first_503s = time.monotonic() - stopped
                await asyncio.to_thread(private_cluster.start)
                started = time.monotonic()
                acked = load.acked
                await load.until(lambda: load.acked > acked)
                first_ack = time.monotonic() - started
                await load.until_acked(acked + ACKED_AFTER)
        finally:
            load.stop.set()
            async with asyncio.timeout(DEADLINE):
                await clients
        live = await _projection_live(base)
        retried = await retry_keyed(base, load.commands)
        counts = await assert_in_log_once(url, load.commands)
        # The same process throughout: it recovered by itself.
        assert server.running(), server.log.read_text()
        assert server.pid == pid
        server.stop()

    answers = dict(load.answers)
    assert [c for c in load.commands if c.status is None] == []  # the server answered every command
    assert set(answers) <= {"200", "201", "503 unavailable"}, answers  # no 500, no other error
    assert answers["503 unavailable"] >= CLIENTS
    assert live["lastError"] is None, live
    assert "Traceback" not in server.log.read_text(), server.log.read_text()
    print(  # noqa: T201 - the figures docs/reliability.md quotes (pytest -s)
        f"\nfigures: stop -m {mode}: answers {answers}; {CLIENTS} 503s "
        f"{first_503s:.2f}s after the stop began; first command acknowledged {first_ack:.2f}s after the "
        f"server started; {retried} keyed retried; {counts['acknowledged']} acknowledged, 0 lost, 0 doubled; "
        f"{counts['unknown that landed']} of {counts['unknown']} unkeyed 503s had landed"
    )
