"""A transfer worker for the crash test: ``python tests/ledger/transfer_worker.py STORE_URL WORKER_ID``.

It runs the ledger's ``Transfers`` process manager until SIGTERM or SIGKILL
(the point of the test).
"""

from __future__ import annotations

import asyncio
import signal
import sys

from eventvault import open_store
from eventvault.processes import ProcessRunner
from eventvault_ledger.transfers import Transfers


async def main(url: str, worker_id: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with (
        open_store(url) as store,
        ProcessRunner(store, [Transfers()], worker_id=worker_id, lease_seconds=2, idle_wait=0.2),
    ):
        print("ready", flush=True)  # noqa: T201 - the test waits for this line
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
