"""W8: the ledger's HTTP server under concurrent clients, deposits against its no-op endpoint.

The server is the real one (``eventvault serve``, uvicorn, projections running),
started in a process of its own on a fresh database. The clients are a minimal
HTTP/1.1 keep-alive client on asyncio streams in this process, so that as little
client CPU as possible competes with the server for the machine; both phases
(deposits, then ``GET /healthz``) use the same clients, so what the client
costs weighs on both sides of the ratio alike.

Where wrk is installed, the same server then takes both phases again with the
load from wrk in a process of its own (``benchmarks.wrk``), for a fixed time.
:func:`run_wrk_only` runs those two phases alone against a server started with
more options (W8's second layout: ``--projection-workers 1``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from benchmarks.plan import Timing
from benchmarks.wrk import WrkResult, run_wrk

__all__ = ["HttpResult", "run_http", "run_wrk_only"]

# `eventvault serve` prints this once its socket listens; the app may still be starting.
_READY_MARK = b"eventvault ledger on http://"
_START_TIMEOUT = 60.0


class _Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError):
                await self._writer.wait_closed()

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        reader, writer = self._reader, self._writer
        assert reader is not None  # noqa: S101 - opened first
        assert writer is not None  # noqa: S101
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        writer.write(head.encode("ascii") + body)
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        length = 0
        chunked = False
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if not chunked:
            return status, await reader.readexactly(length)
        parts: list[bytes] = []
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                return status, b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readline()


@dataclass(frozen=True, slots=True)
class HttpResult:
    """W8's measurements: the deposits and the no-op requests, with their latencies."""

    deposits: Timing
    noop: Timing
    wrk_deposits: WrkResult | None = None
    """The deposits with the load from wrk (None without wrk)."""
    wrk_noop: WrkResult | None = None
    """The no-op endpoint with the load from wrk."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _start_server(
    db: str, port: int, log: Path, serve_args: Sequence[str] = ()
) -> asyncio.subprocess.Process:
    """Start ``eventvault serve SERVE_ARGS`` and return once it answers ``/healthz``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "eventvault_ledger.cli",
        "serve",
        "--db",
        db,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *serve_args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    assert proc.stdout is not None  # noqa: S101 - piped above
    seen = bytearray()
    try:
        async with asyncio.timeout(_START_TIMEOUT):
            while _READY_MARK not in seen:
                line = await proc.stdout.readline()
                if not line:
                    break
                seen += line
    except TimeoutError:
        pass
    await asyncio.to_thread(log.write_bytes, bytes(seen))
    if _READY_MARK not in seen or not await _healthy(port):
        await _stop_server(proc)
        tail = bytes(seen[-2000:]).decode(errors="replace")
        raise RuntimeError(f"the ledger server did not start (log: {log}):\n{tail}")
    return proc


async def _healthy(port: int) -> bool:
    """Whether the server answers /healthz. It listens already: the request waits out its startup."""
    probe = _Client("127.0.0.1", port)
    try:
        async with asyncio.timeout(_START_TIMEOUT):
            await probe.open()
            status, _ = await probe.request("GET", "/healthz")
    except (OSError, TimeoutError):
        return False
    finally:
        await probe.close()
    return status == 200


async def _drain(proc: asyncio.subprocess.Process, log: Path) -> None:
    """Keep reading the server's output into its log, so a full pipe never stalls it."""
    assert proc.stdout is not None  # noqa: S101
    with log.open("ab") as out:
        while line := await proc.stdout.readline():
            out.write(line)


async def _stop_server(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _phase(clients: list[_Client], requests: list[list[tuple[str, str, bytes]]], expect: int) -> Timing:
    """Every client sends its requests one after the other; all clients at once."""
    latencies: list[float] = []
    start = asyncio.Event()

    async def run(client: _Client, mine: list[tuple[str, str, bytes]]) -> None:
        await start.wait()
        for method, path, body in mine:
            t0 = time.perf_counter()
            status, answer = await client.request(method, path, body)
            latencies.append(time.perf_counter() - t0)
            if status != expect:
                raise RuntimeError(f"{method} {path} answered {status}: {answer[:300]!r}")

    tasks = [asyncio.create_task(run(c, r)) for c, r in zip(clients, requests, strict=True)]
    t0 = time.perf_counter()
    start.set()
    await asyncio.gather(*tasks)
    seconds = time.perf_counter() - t0
    return Timing(len(latencies), seconds, latencies)


def _deposits(accounts: list[str], n: int) -> list[list[tuple[str, str, bytes]]]:
    return [
        [
            (
                "POST",
                f"/api/command/accounts/{a}/deposit",
                json.dumps({"amount": f"{10 + k % 90}.{k % 100:02d}", "description": f"bench {k}"}).encode(),
            )
            for k in range(n)
        ]
        for a in accounts
    ]


def _noops(accounts: list[str], n: int) -> list[list[tuple[str, str, bytes]]]:
    return [[("GET", "/healthz", b"")] * n for _ in accounts]


async def _open_accounts(conns: list[_Client]) -> list[str]:
    """One account per client, opened through the API; then both paths warmed up."""
    accounts = []
    for i, c in enumerate(conns):
        await c.open()
        body = json.dumps({"ownerName": f"Bench client {i}", "currency": "EUR"}).encode()
        status, answer = await c.request("POST", "/api/command/accounts", body)
        if status != 201:
            raise RuntimeError(f"opening an account answered {status}: {answer[:300]!r}")
        accounts.append(json.loads(answer)["accountId"])
    # Warm up both paths (connections, imports, caches) before measuring either.
    await _phase(conns, _deposits(accounts, 2), 200)
    await _phase(conns, _noops(accounts, 2), 200)
    return accounts


@contextlib.asynccontextmanager
async def _serving(
    db: str, clients: int, log: Path, serve_args: Sequence[str] = ()
) -> AsyncIterator[tuple[int, list[_Client], list[str]]]:
    """A fresh server on ``db``: its port, ``clients`` connections to it and an account for each.

    The server's output goes to ``log``; at the end the connections are
    closed and the server stopped.
    """
    port = _free_port()
    proc = await _start_server(db, port, log, serve_args)
    drain = asyncio.create_task(_drain(proc, log))
    conns = [_Client("127.0.0.1", port) for _ in range(clients)]
    try:
        yield port, conns, await _open_accounts(conns)
    finally:
        for c in conns:
            await c.close()
        await _stop_server(proc)
        await drain


async def _run_http(  # noqa: PLR0913 - the server's database, the load, and wrk's
    db: str,
    clients: int,
    per_client: int,
    log: Path,
    *,
    noop_first: bool,
    wrk: str | None,
    wrk_seconds: int,
) -> HttpResult:
    async with _serving(db, clients, log) as (port, conns, accounts):
        if noop_first:
            noop = await _phase(conns, _noops(accounts, per_client), 200)
            dep = await _phase(conns, _deposits(accounts, per_client), 200)
        else:
            dep = await _phase(conns, _deposits(accounts, per_client), 200)
            noop = await _phase(conns, _noops(accounts, per_client), 200)
        if wrk is None:
            return HttpResult(dep, noop)
        for c in conns:  # wrk opens its own connections: the server serves only its load
            await c.close()
        wrk_dep, wrk_noop = await _wrk_phases(wrk, port, accounts, wrk_seconds, noop_first=noop_first)
        return HttpResult(dep, noop, wrk_dep, wrk_noop)


async def _run_wrk_only(  # noqa: PLR0913 - the server, its options, and wrk's load
    db: str,
    clients: int,
    log: Path,
    serve_args: Sequence[str],
    *,
    noop_first: bool,
    wrk: str,
    wrk_seconds: int,
) -> tuple[WrkResult, WrkResult]:
    async with _serving(db, clients, log, serve_args) as (port, conns, accounts):
        for c in conns:
            await c.close()
        # Warmed up as W8 wrk's server is by the harness's phases before it: here, by
        # wrk's (a worker process started with the server is up and live by then).
        await _wrk_phases(wrk, port, accounts, min(2, wrk_seconds), noop_first=noop_first)
        return await _wrk_phases(wrk, port, accounts, wrk_seconds, noop_first=noop_first)


_WRK_SLICE_S: Final = 2
"""W8 wrk: each phase runs in slices of this many seconds, the two phases' slices taking turns."""


async def _wrk_phases(
    wrk: str, port: int, accounts: list[str], seconds: int, *, noop_first: bool
) -> tuple[WrkResult, WrkResult]:
    """Deposits and the no-op under wrk's load, in turns of a slice each.

    The machine's speed drifts over tens of seconds (other guests on its host):
    two phases of 10 s one after the other would each meet a different one, and
    their ratio would carry the drift. In turns of 2 s both meet the same.
    The first turn's phase is the one the Python client took first.
    """
    slices = max(1, seconds // _WRK_SLICE_S)
    order = ("noop", "deposit") if noop_first else ("deposit", "noop")
    results: dict[str, list[WrkResult]] = {mode: [] for mode in order}
    for _ in range(slices):
        for mode in order:
            results[mode].append(await run_wrk(wrk, port, mode, accounts, len(accounts), seconds // slices))
    return WrkResult.combined(results["deposit"]), WrkResult.combined(results["noop"])


def run_http(  # noqa: PLR0913
    db: str,
    clients: int,
    per_client: int,
    log: Path,
    *,
    noop_first: bool = False,
    wrk: str | None = None,
    wrk_seconds: int = 10,
) -> HttpResult:
    """W8 against a fresh server on ``db``; then with the load from ``wrk`` (its path) if given."""
    return asyncio.run(
        _run_http(db, clients, per_client, log, noop_first=noop_first, wrk=wrk, wrk_seconds=wrk_seconds)
    )


def run_wrk_only(  # noqa: PLR0913 - the server, its options, and wrk's load
    db: str,
    clients: int,
    log: Path,
    serve_args: Sequence[str],
    *,
    wrk: str,
    wrk_seconds: int = 10,
    noop_first: bool = False,
) -> tuple[WrkResult, WrkResult]:
    """The deposits and the no-op under wrk's load, on a fresh ``eventvault serve SERVE_ARGS`` on ``db``."""
    return asyncio.run(
        _run_wrk_only(db, clients, log, serve_args, noop_first=noop_first, wrk=wrk, wrk_seconds=wrk_seconds)
    )


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, nearest-rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]
