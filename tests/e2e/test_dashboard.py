"""The dashboard in a real Chromium against a real `eventvault serve` (see conftest.py).

Each test opens its own accounts, so they pass in any order; waits are Playwright's
auto-retrying expectations, never sleeps.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from e2e_support import READ_TOKEN, ConsoleWatch, Server, in_ci

try:
    from playwright.sync_api import Locator, Page, expect
except ImportError:
    if in_ci():
        raise  # CI must run these tests: a missing package is an error there
    pytest.skip(
        "E2E DASHBOARD TESTS NOT RUN: the playwright package is not installed (pip install playwright)",
        allow_module_level=True,
    )

pytestmark = pytest.mark.slow


def balance(page: Page) -> Locator:
    """The hero card with the account's current balance."""
    return page.locator(".stat-hero")


def account_id_of(page: Page) -> str:
    return page.url.rsplit("/", 1)[-1]


def test_accounts_table_lists_the_accounts_and_goes_live(
    page: Page, server: Server, screenshots: Path
) -> None:
    """The accounts table shows owner, balance, currency, transactions and status, and the stream is live."""
    page.goto(server.url)
    grace = page.get_by_role("row").filter(has=page.get_by_role("link", name="Grace Hopper"))
    expect(grace).to_contain_text("4020.26")
    expect(grace).to_contain_text("USD")
    expect(grace.get_by_role("cell").nth(2)).to_have_text("4")  # transactions
    expect(grace).to_contain_text("Open")
    expect(page.get_by_test_id("live-state")).to_have_text("Live")
    page.screenshot(path=screenshots / "accounts.png")
    page.get_by_label("Currency", exact=True).select_option("USD")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("link", name="Ada Lovelace")).to_have_count(0)  # a GBP account
    page.get_by_role("button", name="Reset").click()
    expect(page.get_by_role("link", name="Ada Lovelace")).to_be_visible()


def test_open_deposit_and_refused_withdrawal(page: Page, server: Server, console: ConsoleWatch) -> None:
    """Open an account, deposit (shown at once via consistentWith), and see insufficient funds explained."""
    console.allow(422, "/withdraw")  # the refusal this test provokes
    page.goto(server.url)
    page.get_by_role("button", name="Open account").click()
    page.get_by_label("Owner name").fill("Marie Curie")
    page.get_by_label("Currency", exact=True).and_(page.locator("input")).fill("EUR")
    page.get_by_role("button", name="Open account").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Marie Curie")
    account_id = account_id_of(page)

    deposit = page.get_by_role("form", name="Deposit")
    deposit.get_by_label("Amount (EUR)").fill("100.00")
    deposit.get_by_label("Description").fill("first deposit")
    # Read-your-writes: the refetch after the command carries the command's position.
    with page.expect_request(re.compile(rf"/api/query/accounts/{account_id}\?consistentWith=\d+")):
        deposit.get_by_role("button", name="Deposit").click()
    expect(deposit.get_by_role("status")).to_have_text("Deposited 100.00 EUR.")
    expect(balance(page)).to_contain_text("100.00 EUR")

    withdraw = page.get_by_role("form", name="Withdraw")
    withdraw.get_by_label("Amount (EUR)").fill("250.00")
    withdraw.get_by_role("button", name="Withdraw").click()
    expect(withdraw.get_by_role("alert")).to_have_text(
        "Insufficient funds: the balance is 100.00 EUR, less than the 250.00 EUR asked for."
    )
    expect(balance(page)).to_contain_text("100.00 EUR")

    withdraw.get_by_label("Amount (EUR)").fill("1.001")  # refused before it is sent
    withdraw.get_by_role("button", name="Withdraw").click()
    expect(withdraw.get_by_role("alert")).to_have_text("EUR amounts have at most 2 decimal places.")


def test_deposit_by_another_client_appears_without_reload(page: Page, server: Server) -> None:
    """A deposit made over HTTP by another client shows on the open page through SSE, with no reload."""
    account_id, _ = server.open_account("Katherine Watcher", "EUR", ("deposit", "10.00", "opening"))
    page.goto(f"{server.url}/#/accounts/{account_id}")
    expect(balance(page)).to_contain_text("10.00 EUR")
    expect(page.get_by_test_id("live-state")).to_have_text("Live")
    page.evaluate("window.__sameDocument = true")

    with server.client() as other:
        other.post(
            f"/api/command/accounts/{account_id}/deposit",
            json={"amount": "25.50", "description": "from elsewhere"},
        ).raise_for_status()

    expect(balance(page)).to_contain_text("35.50 EUR")
    expect(page.get_by_role("table", name=re.compile("Transactions"))).to_contain_text("from elsewhere")
    expect(page.get_by_test_id("live-announcer")).to_have_text("Katherine Watcher: balance now 35.50 EUR.")
    assert page.evaluate("window.__sameDocument") is True, "the page was reloaded"


def test_time_travel_slider_shows_an_older_balance(page: Page, server: Server, screenshots: Path) -> None:
    """Moving the slider back replays the account to that version and shows its balance then."""
    account_id, _ = server.open_account(
        "Mary Jackson",
        "EUR",
        ("deposit", "2500.00", "salary"),
        ("withdraw", "950.00", "rent"),
        ("withdraw", "120.40", "groceries"),
        ("deposit", "2500.00", "salary"),
        ("withdraw", "950.00", "rent"),
        ("withdraw", "310.99", "flight to Lisbon"),
    )
    page.goto(f"{server.url}/#/accounts/{account_id}")
    expect(balance(page)).to_contain_text("2668.61 EUR")
    slider = page.get_by_role("slider", name="Time travel")
    slider.focus()
    page.keyboard.press("Home")  # version 1: just opened
    expect(page.get_by_test_id("time-travel-state")).to_contain_text("0.00 EUR")
    for _ in range(2):
        page.keyboard.press("ArrowRight")
    state = page.get_by_test_id("time-travel-state")
    expect(page.get_by_text("Version 3 of 7: withdrawal of 950.00 EUR")).to_be_visible()
    expect(state).to_contain_text("1550.00 EUR")
    expect(state).to_contain_text("replayed")
    expect(balance(page)).to_contain_text("2668.61 EUR")  # the present is untouched
    expect(page.locator(".chart-selected")).to_have_attribute("data-version", "3")
    page.screenshot(path=screenshots / "account.png", full_page=True)
    page.get_by_role("button", name="Back to now").click()
    expect(state).to_contain_text("2668.61 EUR")


def test_projection_panel_shows_lag_and_rebuilds(page: Page, server: Server, screenshots: Path) -> None:
    """The operations panel shows each projection's lag, rate and state, and a rebuild runs to done."""
    page.goto(f"{server.url}/#/operations")
    card = page.get_by_role("article", name="accounts")
    expect(card.get_by_test_id("lag-events")).to_have_text(re.compile(r"^\d[\d,]* events?$"))
    expect(card).to_contain_text("behind the head")
    expect(card).to_contain_text(re.compile(r"events/s"))
    expect(card.locator(".badge")).to_have_text(re.compile("live|idle|catching up"))
    expect(card).to_contain_text("Last error")
    card.get_by_role("button", name="Rebuild accounts").click()
    progress = card.get_by_test_id("rebuild-accounts")
    expect(progress).to_contain_text(re.compile(r"Rebuild of generation \d+"))
    expect(progress).to_contain_text("done", timeout=20_000)
    page.screenshot(path=screenshots / "operations.png", full_page=True)


def test_keyboard_only_deposit(page: Page, server: Server) -> None:
    """The skip link leads to the content, and a deposit can be made with the keyboard alone."""
    account_id, _ = server.open_account("Dorothy Vaughan", "USD", ("deposit", "5.00", "seed"))
    page.goto(f"{server.url}/#/accounts/{account_id}")
    expect(balance(page)).to_contain_text("5.00 USD")
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.get_by_role("main")).to_be_focused()
    amount = page.get_by_role("form", name="Deposit").get_by_label("Amount (USD)")
    for _ in range(20):  # tab through the page until the deposit amount field has focus
        page.keyboard.press("Tab")
        if amount.evaluate("e => e === document.activeElement"):
            break
    expect(amount).to_be_focused()
    page.keyboard.type("7.25")
    page.keyboard.press("Enter")
    expect(balance(page)).to_contain_text("12.25 USD")


def test_narrow_screen_has_no_sideways_scroll(phone: Page, server: Server, screenshots: Path) -> None:
    """At 360 CSS pixels the accounts list and an account page fit the width, forms included."""
    phone.goto(server.url)
    expect(phone.get_by_role("link", name="Grace Hopper")).to_be_visible()
    assert phone.evaluate("document.documentElement.scrollWidth") <= 360
    phone.screenshot(path=screenshots / "phone.png")
    phone.get_by_role("link", name="Grace Hopper").click()
    expect(phone.get_by_role("form", name="Deposit")).to_be_visible()
    assert phone.evaluate("document.documentElement.scrollWidth") <= 360


def test_token_flow_on_a_secured_server(page: Page, secured_server: Server, console: ConsoleWatch) -> None:
    """Without a token the page asks for one; a read token shows data live; rebuild names the scope."""
    console.allow(401, "/api/")  # the requests made before the token is entered
    console.allow(403, "/rebuild")  # the read token may not rebuild
    page.goto(secured_server.url)
    expect(page.get_by_role("alert").filter(has_text="was started with --tokens")).to_be_visible()
    expect(page.get_by_test_id("live-state")).to_have_text("Token needed")

    page.get_by_role("button", name="Enter token").click()
    page.get_by_label("Bearer token").fill(READ_TOKEN)
    page.get_by_role("button", name="Save token").click()
    expect(page.get_by_role("link", name="Grace Hopper")).to_be_visible()
    expect(page.get_by_test_id("live-state")).to_have_text("Live")
    assert page.evaluate("sessionStorage.getItem('eventvault.token')") == READ_TOKEN

    # Live over the token-carrying stream (fetch, since EventSource cannot send the header).
    secured_server.open_account("Hedy Streamer", "EUR", ("deposit", "1.00", "hello"))
    expect(page.get_by_role("link", name="Hedy Streamer")).to_be_visible()

    page.get_by_role("link", name="Operations").click()
    page.get_by_role("button", name="Rebuild accounts").click()
    expect(page.get_by_role("alert")).to_have_text(
        "Not allowed: this token lacks the 'admin' scope. Use a token with that scope."
    )


def test_the_dashboard_runs_under_its_content_security_policy(page: Page, server: Server) -> None:
    """The served policy allows no inline script and no framing, and the dashboard works under it.

    Chromium reports each blocked script, style or connection as a console error,
    which fails the test (the page fixture's console watch).
    """
    violations: list[str] = []
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    response = page.goto(server.url)

    assert response is not None
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    expect(page.get_by_role("link", name="Grace Hopper").first).to_be_visible()
    expect(page.get_by_test_id("live-state")).to_have_text("Live")
    assert page.evaluate("document.querySelectorAll('script:not([src])').length") == 0
    assert violations == []
