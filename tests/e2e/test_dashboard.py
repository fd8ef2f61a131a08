"""The dashboard in a real Chromium against a real `eventvault serve` (see conftest.py).

Each test opens its own accounts, so they pass in any order; waits are Playwright's
auto-retrying expectations, never sleeps.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_support import READ_TOKEN, ConsoleWatch, Restartable, Server, in_ci

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
    """The accounts table shows owner, id, balance, currency, transactions and status, and goes live."""
    reads: list[str] = []
    page.on("request", lambda r: reads.append(r.url) if "/api/query/" in r.url else None)
    page.goto(server.url)
    grace = page.get_by_role("row").filter(has=page.get_by_role("link", name="Grace Hopper"))
    expect(grace).to_contain_text("4020.26")
    expect(grace).to_contain_text("USD")
    expect(grace.get_by_role("cell").nth(0)).to_have_text(re.compile(r"^[0-9a-f-]{36}$"))  # the id
    expect(grace.get_by_role("cell").nth(3)).to_have_text("4")  # transactions
    expect(grace).to_contain_text("Open")
    expect(page.get_by_test_id("live-state")).to_have_text("Live")
    # No currency chosen: the rows are grouped by currency, never one order across them.
    groups = page.locator("tbody[data-currency]")
    expect(groups.filter(has=page.get_by_role("link", name="Grace Hopper"))).to_have_attribute(
        "data-currency", "USD"
    )
    codes = [g.get_attribute("data-currency") or "" for g in groups.all()]
    assert len(codes) >= 2, codes
    assert codes == sorted(codes), codes
    page.screenshot(path=screenshots / "accounts.png")
    # The first load read the list and the totals once each.
    assert len([u for u in reads if "/api/query/accounts?" in u]) == 1, reads
    assert len([u for u in reads if "/api/query/totals" in u]) == 1, reads

    page.get_by_label("Currency", exact=True).select_option("USD")
    page.get_by_label("Order").select_option("desc")
    page.get_by_role("button", name="Apply").click()
    expect(page.get_by_role("link", name="Ada Lovelace")).to_have_count(0)  # a GBP account
    assert page.url.endswith("#/?currency=USD&order=desc")
    page.reload()  # the filters live in the URL
    expect(page.get_by_label("Currency", exact=True)).to_have_value("USD")
    expect(page.get_by_role("link", name="Ada Lovelace")).to_have_count(0)
    page.get_by_role("button", name="Reset").click()
    expect(page.get_by_role("link", name="Ada Lovelace")).to_be_visible()


def test_search_tells_two_owners_of_one_name_apart(page: Page, server: Server) -> None:
    """Searching by name finds every account of that owner, and the id column tells them apart."""
    first, _ = server.open_account("Hedwig Twin", "EUR")
    second, _ = server.open_account("hedwig twin", "JPY")
    page.goto(f"{server.url}/#/?search=HEDWIG%20T")
    rows = page.get_by_role("row").filter(
        has=page.get_by_role("link", name=re.compile("hedwig twin", re.IGNORECASE))
    )
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text=first)).to_have_count(1)
    expect(rows.filter(has_text=second)).to_have_count(1)
    page.get_by_label("Search").fill(second[:-4])
    page.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(1)
    expect(rows).to_contain_text("JPY")


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
    deposit.get_by_label("Amount (EUR)").fill("100")
    deposit.get_by_label("Description").fill("first deposit")
    reads: list[str] = []
    aborted: list[str] = []
    page.on("request", lambda r: reads.append(r.url) if "/api/query/accounts/" in r.url else None)
    page.on("requestfailed", lambda r: aborted.append(r.url) if "/changes" not in r.url else None)
    deposit.get_by_role("button", name="Deposit").click()
    expect(deposit.get_by_role("status")).to_have_text("Deposited 100.00 EUR.")  # in the currency's format
    expect(balance(page)).to_contain_text("100.00 EUR")
    # The live event of this deposit has arrived too. The command's answer and the event
    # (whichever came first) started one round of reads between them, not two.
    expect(page.get_by_test_id("live-announcer")).to_have_text("Marie Curie: balance now 100.00 EUR.")
    expect(page.get_by_role("table", name=re.compile("Transactions"))).to_contain_text("first deposit")
    assert len([u for u in reads if re.search(rf"/accounts/{account_id}\?", u)]) <= 1, reads
    assert len([u for u in reads if "/transactions?order=desc&limit=25" in u]) == 1, reads
    assert not [u for u in reads if "order=asc" in u], "the chart's whole series was read again"
    assert aborted == [], "a refetch was aborted by a second one"

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

    # Read-your-writes: a read of a read model after the command carries its position.
    with page.expect_request(re.compile(r"/api/query/accounts\?.*consistentWith=\d+")):
        page.get_by_role("link", name="← All accounts").click()


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


def test_time_travel_by_date_csv_and_newest_events_first(
    page: Page, server: Server, console: ConsoleWatch
) -> None:
    """A moment replays the account as it was then; the CSV holds every transaction; newest events first."""
    console.allow(404, "/state?asOf=")  # the moment before the account existed
    account_id, _ = server.open_account(
        "Annie Easley", "EUR", ("deposit", "12.00", 'tea, "green"'), ("withdraw", "2.50", "=1+1")
    )
    page.goto(f"{server.url}/#/accounts/{account_id}")
    expect(balance(page)).to_contain_text("9.50 EUR")
    timeline = page.get_by_role("list", name="Events, newest first")
    expect(timeline.locator(".event-type").first).to_have_text("MoneyWithdrawn")
    expect(timeline.locator(".event-type").last).to_have_text("AccountOpened")

    moment = page.get_by_label("Or go to a moment")
    moment.fill("2001-01-01T00:00:00")
    page.get_by_role("button", name="Go").click()
    expect(page.get_by_test_id("time-travel-when")).to_contain_text("the account did not exist yet")
    # A minute from now, as the local time a datetime-local field holds.
    now = page.evaluate(
        "() => { const d = new Date(Date.now() + 60000);"
        " d.setMinutes(d.getMinutes() - d.getTimezoneOffset()); return d.toISOString().slice(0, 19); }"
    )
    moment.fill(now)
    page.get_by_role("button", name="Go").click()
    expect(page.get_by_test_id("time-travel-when")).to_contain_text("the account was at version 3")
    expect(page.get_by_test_id("time-travel-state")).to_contain_text("9.50 EUR")

    with page.expect_download() as downloading:
        page.get_by_role("button", name="Download CSV").click()
    download = downloading.value
    assert download.suggested_filename == f"transactions-{account_id}.csv"
    lines = Path(download.path()).read_text(encoding="utf-8").splitlines()
    assert lines[0] == "version,recordedAt,kind,amount,currency,balanceAfter,description,eventId,position"
    assert [line.split(",")[:6:3] for line in lines[1:]] == [["2", "12.00"], ["3", "2.50"]]
    assert '"tea, ""green"""' in lines[1]
    assert ",'=1+1," in lines[2]  # a spreadsheet shows it, never runs it


def test_an_unknown_account_is_asked_for_once(page: Page, server: Server, console: ConsoleWatch) -> None:
    """A link to an account that does not exist says so, after one request for it and none for its panels."""
    console.allow(404, "/api/query/accounts/")
    missing = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
    reads: list[str] = []
    page.on("request", lambda r: reads.append(r.url) if f"/accounts/{missing}" in r.url else None)
    page.goto(f"{server.url}/#/accounts/{missing}")
    expect(page.get_by_role("heading", level=1)).to_have_text("No such account")
    expect(page.get_by_test_id("live-state")).to_have_text("Live")
    assert len(reads) == 1, reads


def test_closing_needs_an_empty_account_and_leaves_no_dead_forms(page: Page, server: Server) -> None:
    """The close button waits, with its reason, until the balance is zero; a closed account has no forms."""
    account_id, _ = server.open_account("Evelyn Boyd", "USD", ("deposit", "3.00", "seed"))
    page.goto(f"{server.url}/#/accounts/{account_id}")
    close = page.get_by_role("button", name="Close account…")
    expect(close).to_be_disabled()
    expect(close).to_have_accessible_description(re.compile("still holds 3.00 USD: withdraw it all first"))
    withdraw = page.get_by_role("form", name="Withdraw")
    withdraw.get_by_label("Amount (USD)").fill("3")
    withdraw.get_by_role("button", name="Withdraw").click()
    expect(withdraw.get_by_role("status")).to_have_text("Withdrew 3.00 USD.")
    expect(close).to_be_enabled()
    close.click()
    page.get_by_role("button", name="Yes, close it").click()
    expect(
        page.get_by_text("This account is closed: it takes no more deposits or withdrawals.")
    ).to_be_visible()
    expect(page.get_by_role("form", name="Withdraw")).to_have_count(0)
    expect(page.get_by_role("form", name="Deposit")).to_have_count(0)
    expect(page.get_by_text("Withdrew 3.00 USD.")).to_have_count(0)
    expect(page.locator("h1 .badge")).to_have_text("Closed")


def test_an_unreachable_server_is_said_and_the_page_recovers_by_itself(
    page: Page, restartable: Restartable, console: ConsoleWatch, screenshots: Path
) -> None:
    """With the server gone the page says so over the data it has; once back, it is live again unaided."""
    server = restartable.server
    account_id, _ = server.open_account("Mae Jemison", "EUR", ("deposit", "1.00", "before"))
    page.goto(f"{server.url}/#/accounts/{account_id}")
    expect(page.get_by_test_id("live-state")).to_have_text("Live")
    expect(balance(page)).to_contain_text("1.00 EUR")

    # Chromium logs each refused connection as a console error: expected while the server is down.
    console.allow_unreachable()
    restartable.stop()
    expect(page.get_by_test_id("live-state")).to_have_text("Server unreachable, retrying", timeout=30_000)
    expect(page.get_by_test_id("unreachable")).to_contain_text("The server cannot be reached.")
    expect(balance(page)).to_contain_text("1.00 EUR")  # what it had, still shown
    page.screenshot(path=screenshots / "unreachable.png")

    restartable.start()
    with server.client() as http:
        http.post(
            f"/api/command/accounts/{account_id}/deposit", json={"amount": "2.00", "description": "after"}
        ).raise_for_status()
    expect(page.get_by_test_id("live-state")).to_have_text("Live", timeout=30_000)
    expect(page.get_by_test_id("unreachable")).to_have_count(0)
    expect(balance(page)).to_contain_text("3.00 EUR")


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
    label = progress.locator(".rebuild-label").inner_text()
    generation = re.search(r"generation (\d+)", label)
    assert generation is not None, label
    expect(card).to_contain_text(f"{generation[1]} (schema v")  # the generation that serves
    finished = progress.locator(".hint").inner_text()
    # A finished rebuild's figures stay put while the log grows.
    server.open_account("Rebuild Watcher", "EUR", ("deposit", "1.00", "after the rebuild"))
    expect(card.locator("dd.mono").nth(1)).not_to_have_text(card.locator("dd.mono").nth(1).inner_text())
    expect(progress.locator(".hint")).to_have_text(finished)
    page.screenshot(path=screenshots / "operations.png", full_page=True)

    # A rebuild by the CLI, in another process: the panel shows the generation it made.
    cli = Path(sys.executable).with_name("eventvault")
    done = subprocess.run(  # noqa: S603 - our own CLI
        [str(cli), "rebuild", "accounts", "--db", str(server.db)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    expect(card).to_contain_text(f"{int(generation[1]) + 1} (schema v", timeout=20_000)
    expect(progress).to_have_count(0)


def test_pause_then_resume_a_projection_from_the_operations_page(page: Page, server: Server) -> None:
    """Paused from the page, a projection stops applying events; resumed, it catches up to the head."""
    page.goto(f"{server.url}/#/operations")
    card = page.get_by_role("article", name="accounts")
    card.get_by_role("button", name="Pause accounts").click()
    expect(card.locator(".badge")).to_have_text("paused")
    expect(card.get_by_test_id("paused-accounts")).to_contain_text("Paused")
    expect(card.get_by_role("button", name="Reset accounts")).to_be_enabled()

    # Written while paused: the read model does not apply it, so the lag shows it.
    with server.client() as http:  # not open_account: it waits for the read model, which is paused
        http.post(
            "/api/command/accounts", json={"ownerName": "Paused Observer", "currency": "EUR"}
        ).raise_for_status()
    expect(card.get_by_test_id("lag-events")).not_to_have_text("0 events", timeout=20_000)

    card.get_by_role("button", name="Resume accounts").click()
    expect(card.get_by_role("button", name="Pause accounts")).to_be_visible()
    expect(card.get_by_role("button", name="Reset accounts")).to_be_disabled()
    expect(card.get_by_test_id("lag-events")).to_have_text("0 events", timeout=20_000)
    expect(card.locator(".badge")).not_to_have_text("paused")
    store = page.get_by_test_id("store-panel")
    expect(store.get_by_role("row", name=re.compile("accounts"))).to_contain_text("0 events", timeout=20_000)


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
    """At 360 CSS pixels the accounts list, an account page and the operations page fit the width."""
    phone.goto(server.url)
    expect(phone.get_by_role("link", name="Grace Hopper")).to_be_visible()
    assert phone.evaluate("document.documentElement.scrollWidth") <= 360
    phone.screenshot(path=screenshots / "phone.png")
    phone.get_by_role("link", name="Grace Hopper").click()
    expect(phone.get_by_role("form", name="Deposit")).to_be_visible()
    assert phone.evaluate("document.documentElement.scrollWidth") <= 360
    phone.goto(f"{server.url}/#/operations")
    expect(phone.get_by_role("button", name="Pause accounts")).to_be_visible()
    expect(phone.get_by_test_id("store-panel")).to_contain_text("Size on disk")
    assert phone.evaluate("document.documentElement.scrollWidth") <= 360


def test_token_flow_on_a_secured_server(page: Page, secured_server: Server, console: ConsoleWatch) -> None:
    """Without a token the page asks for one; a read token shows data live; rebuild names the scope."""
    console.allow(401, "/api/")  # the requests made before the token is entered
    console.allow(403, "/rebuild")  # the read token may not rebuild
    console.allow(403, "/api/store")  # nor read the store's status and snapshots
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
    refused = "Not allowed: this token lacks the 'admin' scope. Use a token with that scope."
    expect(page.get_by_test_id("store-panel").get_by_role("alert")).to_have_text(refused)
    card = page.get_by_role("article", name="accounts")
    card.get_by_role("button", name="Rebuild accounts").click()
    expect(card.get_by_role("alert")).to_have_text(refused)


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


def test_a_transfer_from_the_account_page(page: Page, server: Server) -> None:
    """Find the target by owner, send, watch the transfer end, and see the leg in the history."""
    ada, _ = server.open_account("Ada Transfer", "EUR", ("deposit", "100.00", "salary"))
    bob, _ = server.open_account("Bob Receiver", "EUR")
    page.goto(f"{server.url}/#/accounts/{ada}")
    form = page.get_by_role("form", name="Transfer")
    form.get_by_label("Find the account (owner or id)").fill("Bob Receiver")
    form.get_by_role("button", name=re.compile("Bob Receiver")).click()
    expect(form.get_by_label("To account")).to_have_value(bob)
    form.get_by_label("Amount (EUR)").fill("12.50")
    form.get_by_role("button", name="Send").click()
    expect(form.get_by_text("Sent 12.50 EUR.")).to_be_visible()
    expect(balance(page)).to_contain_text("87.50 EUR")
    expect(page.get_by_role("table", name=re.compile("Transactions"))).to_contain_text("Transfer to")
