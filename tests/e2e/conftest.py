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
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest
from e2e_support import (
    ADMIN_TOKEN,
    READ_TOKEN,
    ConsoleWatch,
    Restartable,
    Server,
    db_url,
    free_port,
    in_ci,
    start_server,
    stop_server,
)

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ROOT = Path(__file__).resolve().parents[2]
# Screenshots go to var/screenshots (not under version control); EVENTVAULT_SCREENSHOTS=docs/img
# refreshes the ones the docs show.
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


def _serve(tmp: Path, *extra: str, token: str | None = None) -> Iterator[Server]:
    port = free_port()
    process = start_server(tmp, port, *extra)
    try:
        yield Server(f"http://127.0.0.1:{port}", token, db=db_url(tmp))
    finally:
        stop_server(process)


@pytest.fixture
def restartable(dashboard_built: None, tmp_path: Path) -> Iterator[Restartable]:
    """A server of this test's own, which the test may stop and start again."""
    handle = Restartable(tmp_path)
    handle.start()
    try:
        yield handle
    finally:
        handle.stop()


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
    """Where the run saves its screenshots: var/screenshots/, or $EVENTVAULT_SCREENSHOTS (docs/img/)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
