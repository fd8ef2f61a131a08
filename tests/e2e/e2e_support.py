"""What the e2e tests share with their fixtures: the server handle, the console watch, tokens.

A module of its own (not conftest.py), so test modules can import it by name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from playwright.sync_api import ConsoleMessage

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


@dataclass
class ConsoleWatch:
    """Console errors and uncaught exceptions of one page.

    Chromium logs every HTTP error response as a console error ("Failed to load
    resource: ... status of 422"); a test that provokes one on purpose declares it
    with ``allow``. Anything else fails the test.
    """

    errors: list[str] = field(default_factory=list)
    allowed: list[tuple[int, str]] = field(default_factory=list)

    def allow(self, status: int, url_part: str) -> None:
        self.allowed.append((status, url_part))

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = str(message.location.get("url", ""))
        status = _FAILED_LOAD.search(message.text)
        if status and any(int(status[1]) == s and part in url for s, part in self.allowed):
            return
        self.errors.append(f"{message.text} ({url})")

    def on_page_error(self, error: Any) -> None:
        self.errors.append(f"uncaught: {error}")
