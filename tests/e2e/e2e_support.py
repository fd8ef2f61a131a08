"""What the e2e tests share with their fixtures: the server handle, the console watch, tokens.

A module of its own (not conftest.py), so test modules can import it by name.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from eventvault.testing import eventually

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage

START_DEADLINE = 30.0

# Secrets of a throwaway server that lives for one test module.
READ_TOKEN = "e2e-reader-token-0123456789"  # noqa: S105
ADMIN_TOKEN = "e2e-admin-token-0123456789"  # noqa: S105


def in_ci() -> bool:
    """Whether this is a CI run (CI=true), where a missing e2e prerequisite is a failure."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@dataclass
class Server:
    """A running `eventvault serve`, and an HTTP client playing "another client"."""

    url: str
    token: str | None = None
    db: str | None = None
    """The database URL the server runs on (for a CLI command against the same store)."""

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {}
        if token or self.token:
            headers["Authorization"] = f"Bearer {token or self.token}"
        return httpx.Client(base_url=self.url, headers=headers, timeout=10.0)

    def open_account(self, owner: str, currency: str, *moves: tuple[str, str, str]) -> tuple[str, int]:
        """Open an account and run (kind, amount, description) moves; the id and the last position."""
        with self.client() as http:
            opened = http.post("/api/command/accounts", json={"ownerName": owner, "currency": currency})
            opened.raise_for_status()
            account_id: str = opened.json()["accountId"]
            position: int = opened.json()["position"]
            for kind, amount, description in moves:
                moved = http.post(
                    f"/api/command/accounts/{account_id}/{kind}",
                    json={"amount": amount, "description": description},
                )
                moved.raise_for_status()
                position = moved.json()["position"]
            # The read model has it before any page asks (a fresh page knows no position).
            http.get("/api/query/totals", params={"consistentWith": position}).raise_for_status()
        return account_id, position


_FAILED_LOAD = re.compile(r"status of (\d{3})")
_REFUSED = re.compile(
    r"ERR_CONNECTION_REFUSED|ERR_EMPTY_RESPONSE|ERR_CONNECTION_RESET|ERR_INCOMPLETE_CHUNKED_ENCODING"
)


@dataclass
class ConsoleWatch:
    """Console errors and uncaught exceptions of one page.

    Chromium logs every HTTP error response as a console error ("Failed to load
    resource: ... status of 422"); a test that provokes one on purpose declares it
    with ``allow``. Anything else fails the test.
    """

    errors: list[str] = field(default_factory=list)
    allowed: list[tuple[int, str]] = field(default_factory=list)

    unreachable_ok: bool = False

    def allow(self, status: int, url_part: str) -> None:
        self.allowed.append((status, url_part))

    def allow_unreachable(self) -> None:
        """Connections refused from now on are expected (the test stopped the server)."""
        self.unreachable_ok = True

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        if self.unreachable_ok and _REFUSED.search(message.text):
            return
        url = str(message.location.get("url", ""))
        status = _FAILED_LOAD.search(message.text)
        if status and any(int(status[1]) == s and part in url for s, part in self.allowed):
            return
        self.errors.append(f"{message.text} ({url})")

    def on_page_error(self, error: Any) -> None:
        self.errors.append(f"uncaught: {error}")


# -- the server process ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(tmp: Path, port: int, *extra: str) -> subprocess.Popen[bytes]:
    """`eventvault serve --demo` on ``port`` over tmp/e2e.db, once it answers /healthz."""
    log_path = tmp / "server.log"
    executable = Path(sys.executable).with_name("eventvault")
    command = [str(executable), "serve", "--demo", "--db", db_url(tmp), "--port", str(port), *extra]
    with log_path.open("ab") as log:
        process = subprocess.Popen(command, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    url = f"http://127.0.0.1:{port}"

    # Waiting on another process to listen is inherent: poll /healthz until a deadline.
    def up() -> bool:
        if process.poll() is not None:
            pytest.fail(f"eventvault serve exited with {process.returncode}:\n{log_path.read_text()}")
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
        return False

    try:
        eventually(up, within=START_DEADLINE, what="eventvault serve up")
    except AssertionError as exc:
        stop_server(process)
        pytest.fail(f"{exc}:\n{log_path.read_text()}")
    return process


def stop_server(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def db_url(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'e2e.db'}"


class Restartable:
    """A server a test can stop and start again, on the same port over the same database."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.server = Server(f"http://127.0.0.1:{self.port}", db=db_url(tmp))

    def start(self) -> None:
        self.process = start_server(self.tmp, self.port)

    def stop(self) -> None:
        if self.process is not None:
            stop_server(self.process)
            self.process = None
