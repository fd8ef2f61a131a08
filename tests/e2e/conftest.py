"""End-to-end fixtures: a real `eventvault serve` process and Debian's Chromium, driven by Playwright.

The dashboard is built first (scripts/build-web: quick when nothing changed), the
server runs on a free port with a fresh SQLite file, and each test gets a new
browser context whose console is watched: any error the test did not provoke on
purpose fails it.

Without Chromium (or Node, or the playwright package) these tests skip with a loud
reason; with CI=true they fail instead, so CI can never pass without running them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import httpx
import pytest
from e2e_support import ADMIN_TOKEN, READ_TOKEN, ConsoleWatch, Server, in_ci

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ROOT = Path(__file__).resolve().parents[2]
# Screenshots go to var/screenshots; EVENTVAULT_SCREENSHOTS=docs/img refreshes the ones the docs show.
SCREENSHOTS = Path(os.environ.get("EVENTVAULT_SCREENSHOTS", ROOT / "var" / "screenshots"))
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
START_DEADLINE = 30.0


def _unavailable(reason: str) -> NoReturn:
    """Skip loudly here; in CI a missing prerequisite is a failure, never a silent pass."""
    if in_ci():
        pytest.fail(f"e2e prerequisite missing in CI: {reason}", pytrace=False)
    pytest.skip(f"E2E DASHBOARD TESTS NOT RUN: {reason}")


def _chromium_path() -> str | None:
    for candidate in (os.environ.get("EVENTVAULT_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture(scope="session")
def dashboard_built() -> None:
    """The built dashboard, fresh from web/ (scripts/build-web is a no-op when up to date)."""
    if shutil.which("npm") is None:
        _unavailable("npm is not on PATH, so the dashboard cannot be built (install Node.js 20.19+)")
    result = subprocess.run(  # noqa: S603 - our own script, no input from outside
        [str(ROOT / "scripts" / "build-web")], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"scripts/build-web failed:\n{result.stdout}\n{result.stderr}", pytrace=False)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's Chromium, headless, launched by Playwright (no downloaded browser).

    Module-scoped, not session-scoped: while Playwright's sync API is active its event
    loop counts as running in this thread, and every later asyncio.run() (the CLI
    tests, pytest-asyncio) would fail with "cannot be called from a running event loop".
    """
    executable = _chromium_path()
    if executable is None:
        _unavailable("Chromium is not installed (apt-get install -y chromium, or set EVENTVAULT_CHROMIUM)")
    try:
        from playwright.sync_api import expect, sync_playwright  # noqa: PLC0415
    except ImportError:
        _unavailable("the playwright package is not installed (pip install playwright)")
    expect.set_options(timeout=10_000)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _serve(tmp: Path, *extra: str, token: str | None = None) -> Iterator[Server]:
    port = _free_port()
    db = tmp / "e2e.db"
    log_path = tmp / "server.log"
    executable = Path(sys.executable).with_name("eventvault")
    command = [str(executable), "serve", "--demo", "--db", f"sqlite:///{db}", "--port", str(port), *extra]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=tmp, stdout=log, stderr=subprocess.STDOUT)  # noqa: S603
    url = f"http://127.0.0.1:{port}"
    try:
        # Waiting on another process to listen is inherent: poll /healthz until a deadline.
        deadline = time.monotonic() + START_DEADLINE
        while True:
            if process.poll() is not None:
                pytest.fail(f"eventvault serve exited with {process.returncode}:\n{log_path.read_text()}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"eventvault serve was not up within {START_DEADLINE:g}s:\n{log_path.read_text()}"
                )
            time.sleep(0.05)
        yield Server(url, token)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(scope="module")
def server(dashboard_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`eventvault serve --demo` without tokens (everything allowed, loopback only)."""
    yield from _serve(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def secured_server(dashboard_built: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`eventvault serve --demo --tokens ...`: a read-only token and an admin token."""
    tokens = f"{READ_TOKEN}:read:viewer;{ADMIN_TOKEN}:read,write,admin:operator"
    yield from _serve(tmp_path_factory.mktemp("secured"), "--tokens", tokens, token=ADMIN_TOKEN)


@pytest.fixture
def console() -> ConsoleWatch:
    """What the page under test logs; checked when the test ends."""
    return ConsoleWatch()


def _page(browser: Browser, console: ConsoleWatch, width: int, height: int) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": width, "height": height}, color_scheme="light")
    page = context.new_page()
    page.on("console", console.on_console)
    page.on("pageerror", console.on_page_error)
    try:
        yield page
    finally:
        context.close()
    assert console.errors == [], "the page logged console errors"


@pytest.fixture
def page(browser: Browser, console: ConsoleWatch) -> Iterator[Page]:
    """A fresh desktop-sized page; the test fails if it logs an unexpected console error."""
    yield from _page(browser, console, 1280, 900)


@pytest.fixture
def phone(browser: Browser, console: ConsoleWatch) -> Iterator[Page]:
    """A fresh page as wide as a small phone (360 CSS pixels)."""
    yield from _page(browser, console, 360, 760)


@pytest.fixture(scope="session")
def screenshots() -> Path:
    """Where the run saves its screenshots (docs/img/, shown by the README and docs)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
