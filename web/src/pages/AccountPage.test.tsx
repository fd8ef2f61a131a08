import { act, fireEvent, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";

import { AccountPage } from "./AccountPage";
import type { Account } from "../api/types";
import { ACCOUNT_ID, FakeEventSource, account, fakeApi, json, problem, transaction } from "../test/fakeApi";
import { renderApp } from "../test/render";

/** A small in-memory ledger behind the fake API: commands change what queries answer. */
function ledger(start: Partial<Account> = {}, readHeaders: Record<string, string> = {}) {
  let state = account(start);
  let position = 20;
  const history = [transaction()];
  const move = (kind: "deposit" | "withdraw", amount: string) => {
    const cents = Math.round(Number(amount) * 100);
    const balance = Math.round(Number(state.currentBalance) * 100);
    if (kind === "withdraw" && cents > balance) {
      return problem(422, "insufficient-funds", "Insufficient funds", "insufficient funds", {
        balance: state.currentBalance,
        requested: amount,
        currency: state.currency,
      });
    }
    const after = ((kind === "deposit" ? balance + cents : balance - cents) / 100).toFixed(2);
    position += 1;
    state = {
      ...state,
      currentBalance: after,
      version: state.version + 1,
      transactionCount: state.transactionCount + 1,
    };
    history.push(
      transaction({
        version: state.version,
        kind: kind === "deposit" ? "deposit" : "withdrawal",
        amount,
        balanceAfter: after,
        position,
      }),
    );
    return json({ accountId: ACCOUNT_ID, version: state.version, position, checkpoint: `0.${position}` });
  };
  const api = fakeApi({
    "GET /api/query/accounts/:id": () =>
      new Response(JSON.stringify(state), {
        headers: { "content-type": "application/json", ...readHeaders },
      }),
    "GET /api/query/accounts/:id/transactions": (call) =>
      json({
        items: call.query.get("order") === "desc" ? [...history].reverse() : history,
        nextCursor: null,
      }),
    "GET /api/query/accounts/:id/events": () =>
      json({
        items: [
          {
            eventId: "e-1",
            streamId: `account-${ACCOUNT_ID}`,
            version: 1,
            position: 10,
            checkpoint: "0.10",
            eventType: "AccountOpened",
            schemaVersion: 1,
            occurredAt: "2026-01-01T09:00:00Z",
            recordedAt: "2026-01-01T09:00:00Z",
            data: { ownerName: "Alan Turing", currency: "EUR" },
            metadata: {
              actor: "alice",
              requestId: "req-7",
              correlationId: "req-7",
              causationId: null,
              extra: {},
            },
          },
        ],
        nextCursor: null,
      }),
    "GET /api/query/accounts/:id/state": (call) => {
      const asOf = call.query.get("asOf");
      if (asOf !== null && asOf < (state.openedAt ?? "")) {
        return problem(404, "account-not-found", "Unknown account", "no account then");
      }
      // A moment lands on version 2 (the deposit) in this ledger.
      const version = call.query.get("version") ?? "2";
      return json({
        accountId: ACCOUNT_ID,
        version: Number(version),
        ownerName: "Alan Turing",
        currency: "EUR",
        currentBalance: version === "1" ? "0.00" : "42.00",
        status: "open",
        transactionCount: Number(version) - 1,
        asOf,
      });
    },
    "POST /api/command/accounts/:id/deposit": (call) =>
      move("deposit", (call.body as { amount: string }).amount),
    "POST /api/command/accounts/:id/withdraw": (call) =>
      move("withdraw", (call.body as { amount: string }).amount),
    "POST /api/command/accounts/:id/close": () => {
      if (Number(state.currentBalance) !== 0) {
        return problem(422, "account-not-empty", "Account not empty", "still holds money", {
          balance: state.currentBalance,
          currency: state.currency,
        });
      }
      position += 1;
      state = { ...state, status: "closed", version: state.version + 1 };
      return json({ accountId: ACCOUNT_ID, version: state.version, position, checkpoint: `0.${position}` });
    },
  });
  return { api, current: () => state, history };
}

function balanceCard(): HTMLElement {
  return screen.getByText("Balance", { selector: ".stat-label" }).closest("li") as HTMLElement;
}

function form(name: string): HTMLElement {
  return screen.getByRole("form", { name });
}

beforeEach(() => FakeEventSource.install());

describe("AccountPage", () => {
  it("shows the balance and the account's stats", async () => {
    ledger();
    renderApp(<AccountPage id={ACCOUNT_ID} />);
    expect(await screen.findByRole("heading", { level: 1, name: /Alan Turing/ })).toBeInTheDocument();
    expect(balanceCard()).toHaveTextContent("42.00 EUR");
    expect(screen.getByText("Transactions", { selector: ".stat-label" }).nextSibling).toHaveTextContent("1");
  });

  it("says plainly when the read model trails the account", async () => {
    ledger(
      { version: 5 },
      { "X-Read-Source": "read-model+log", "X-Account-Version": "5", "X-Read-Model-Version": "2" },
    );
    renderApp(<AccountPage id={ACCOUNT_ID} />);
    expect(await screen.findByTestId("catching-up", {}, { timeout: 10_000 })).toHaveTextContent(
      "Catching up: the read model has this account at version 2; version 5 is shown",
    );
  });

  it("shows no catching-up notice for an account the read model has", async () => {
    ledger({}, { "X-Read-Source": "read-model", "X-Account-Version": "3", "X-Read-Model-Version": "3" });
    renderApp(<AccountPage id={ACCOUNT_ID} />);
    await screen.findByRole("heading", { level: 1, name: /Alan Turing/ }, { timeout: 10_000 });
    expect(screen.queryByTestId("catching-up")).toBeNull();
  });

  it("deposits, then shows the new balance by reading at the command's position", async () => {
    const { api } = ledger();
    const user = userEvent.setup();
    renderApp(<AccountPage id={ACCOUNT_ID} />);
    await screen.findByRole("heading", { level: 1, name: /Alan Turing/ });
    const deposit = form("Deposit");
    await user.type(within(deposit).getByLabelText("Amount (EUR)"), "10.50");
    await user.type(within(deposit).getByLabelText(/Description/), "birthday");
    await user.click(within(deposit).getByRole("button", { name: "Deposit" }));
    expect(await within(deposit).findByRole("status")).toHaveTextContent("Deposited 10.50 EUR.");
    expect(balanceCard()).toHaveTextContent("52.50 EUR");
    expect(api.find("POST", /deposit$/)[0]?.body).toEqual({ amount: "10.50", description: "birthday" });
    const reads = api.find("GET", `/api/query/accounts/${ACCOUNT_ID}`);
    expect(reads.at(-1)?.query.get("consistentWith")).toBe("21");
    expect(within(deposit).getByLabelText("Amount (EUR)")).toHaveValue("");
  });

  it("shows insufficient funds from the API and leaves the balance as it was", async () => {
    ledger();
    const user = userEvent.setup();
    renderApp(<AccountPage id={ACCOUNT_ID} />);
    await screen.findByRole("heading", { level: 1, name: /Alan Turing/ });
    const withdraw = form("Withdraw");
    await user.type(within(withdraw).getByLabelText("Amount (EUR)"), "100.00");
    await user.click(within(withdraw).getByRole("button", { name: "Withdraw" }));
    expect(await within(withdraw).findByRole("alert")).toHaveTextContent(
      "Insufficient funds: the balance is 42.00 EUR, less than the 100.00 EUR asked for.",
    );
    expect(balanceCard()).toHaveTextContent("42.00 EUR");
  });

  it("checks the amount before sending: too many decimals never reach the API", async () => {
    const { api } = ledger();
    const user = userEvent.setup();
    renderApp(<AccountPage id={ACCOUNT_ID} />);
    await screen.findByRole("heading", { level: 1, name: /Alan Turing/ });
    const deposit = form("Deposit");
    await user.type(within(deposit).getByLabelText("Amount (EUR)"), "1.001");
    await user.click(within(deposit).getByRole("button", { name: "Deposit" }));
    const amount = within(deposit).getByLabelText("Amount (EUR)");
    expect(within(deposit).getByRole("alert")).toHaveTextContent(
      "EUR amounts have at most 2 decimal places.",
    );
    expect(amount).toHaveAttribute("aria-invalid", "true");
    expect(amount).toHaveFocus();
    expect(api.find("POST", /deposit$/)).toHaveLength(0);
  });

  it("shows a closed account without forms that could not be used", async () => {
    ledger({ status: "closed", currentBalance: "0.00" });
    renderApp(<AccountPage id={ACCOUNT_ID} />);
    await screen.findByRole("heading", { level: 1, name: /Alan Turing/ });
    expect(screen.getByText(/This account is closed: it takes no more/)).toBeInTheDocument();
    expect(screen.queryByRole("form", { name: "Deposit" })).not.toBeInTheDocument();
    expect(screen.queryByRole("form", { name: "Withdraw" })).not.toBeInTheDocument();
    expect(screen.queryByRole("button", { name: /Close account/ })).not.toBeInTheDocument();
  });

  it("echoes an amount in the currency's format", async () => {
    ledger();
    const user = userEvent.setup();
    renderApp(<AccountPage id={ACCOUNT_ID} />);
    await screen.findByRole("heading", { level: 1, name: /Alan Turing/ });
    const deposit = form("Deposit");
    await user.type(within(deposit).getByLabelText("Amount (EUR)"), "10");
    await user.click(within(deposit).getByRole("button", { name: "Deposit" }));
    expect(await within(deposit).findByRole("status")).toHaveTextContent("Deposited 10.00 EUR.");
  });

  it("draws the balance over time and moves the time-travel slider to an older version", async () => {
    const { api } = ledger({ version: 3, transactionCount: 2, currentBalance: "52.00" });
    renderApp(<AccountPage id={ACCOUNT_ID} />);
    const chart = await screen.findByRole("img", { name: /Balance over time/ });
    expect(chart).toHaveAttribute("data-points", "2"); // opened at zero, then the deposit
    const slider = screen.getByRole("slider", { name: "Time travel" });
    expect(slider).toHaveAttribute("max", "3");
    fireEvent.change(slider, { target: { value: "1" } });
    const state = await screen.findByTestId("time-travel-state");
    await waitFor(() => expect(state).toHaveTextContent("0.00 EUR"));
    expect(state).toHaveTextContent("replayed");
    expect(screen.getByText(/Version 1 of 3: account opened/)).toBeInTheDocument();
    expect(api.find("GET", /\/state$/)[0]?.query.get("version")).toBe("1");
    await userEvent.setup().click(screen.getByRole("button", { name: "Back to now" }));
    expect(screen.getByTestId("time-travel-state")).toHaveTextContent("52.00 EUR");
  });

  it("lists the transactions and the raw events with their metadata", async () => {
    ledger();
    renderApp(<AccountPage id={ACCOUNT_ID} />);
    const history = await screen.findByRole("table", { name: /Transactions/ });
    expect(within(history).getByText("salary")).toBeInTheDocument();
    const timeline = await screen.findByRole("list", { name: /Events/ });
    expect(timeline).toHaveTextContent("AccountOpened");
    expect(timeline).toHaveTextContent("alice");
    expect(timeline).toHaveTextContent("metadata.requestId");
    expect(timeline).toHaveTextContent("req-7");
  });

  it("keeps the close button disabled, with the reason, while money remains", async () => {
    const { api } = ledger();
    renderApp(<AccountPage id={ACCOUNT_ID} />);
    const close = await screen.findByRole("button", { name: "Close account…" });
    expect(close).toBeDisabled();
    expect(close).toHaveAccessibleDescription(
      "The account still holds 42.00 EUR: withdraw it all first, since the ledger closes only empty accounts.",
    );
    expect(api.find("POST", /close$/)).toHaveLength(0);
  });

  it("withdraws the rest, asks before closing, then shows the account closed with no forms left", async () => {
    const { api } = ledger();
    const user = userEvent.setup();
    renderApp(<AccountPage id={ACCOUNT_ID} />);
    await screen.findByRole("heading", { level: 1, name: /Alan Turing/ });
    const withdraw = form("Withdraw");
    await user.type(within(withdraw).getByLabelText("Amount (EUR)"), "42");
    await user.click(within(withdraw).getByRole("button", { name: "Withdraw" }));
    expect(await within(withdraw).findByRole("status")).toHaveTextContent("Withdrew 42.00 EUR.");
    const close = await screen.findByRole("button", { name: "Close account…" });
    await waitFor(() => expect(close).toBeEnabled());
    await user.click(close);
    await user.click(screen.getByRole("button", { name: "Yes, close it" }));
    expect(await screen.findByText(/This account is closed: it takes no more/)).toBeInTheDocument();
    expect(screen.queryByRole("form", { name: "Withdraw" })).not.toBeInTheDocument();
    expect(screen.queryByText("Withdrew 42.00 EUR.")).not.toBeInTheDocument(); // no stale success
    expect(screen.getByText(/Its history stays in the log/)).toBeInTheDocument();
    expect(api.find("POST", /close$/)).toHaveLength(1);
  });

  it("shows a change pushed over the live stream without a reload, and announces it", async () => {
    ledger();
    renderApp(<AccountPage id={ACCOUNT_ID} />);
    window.location.hash = `#/accounts/${ACCOUNT_ID}`;
    await screen.findByRole("heading", { level: 1, name: /Alan Turing/ });
    const source = FakeEventSource.latest();
    act(() => {
      source.open();
      source.emit("account", account({ currentBalance: "99.00", version: 9 }), "0.40");
    });
    await waitFor(() => expect(balanceCard()).toHaveTextContent("99.00 EUR"));
    expect(screen.getByTestId("live-announcer")).toHaveTextContent("Alan Turing: balance now 99.00 EUR.");
  });

  it("says so when no account has the id, having asked once", async () => {
    const api = fakeApi({
      "GET /api/query/accounts/:id": () => problem(404, "account-not-found", "Unknown account", "no account"),
    });
    renderApp(<AccountPage id="nope" />);
    expect(await screen.findByRole("heading", { name: "No such account" })).toBeInTheDocument();
    expect(screen.getByRole("alert")).toHaveTextContent("No account has this id.");
    expect(api.calls.map((c) => c.path)).toEqual(["/api/query/accounts/nope"]);
  });

  it("refetches once per command: the live event of the same write starts nothing more", async () => {
    const { api } = ledger();
    const user = userEvent.setup();
    renderApp(<AccountPage id={ACCOUNT_ID} />);
    await screen.findByRole("table", { name: /Transactions/ });
    await screen.findByRole("img", { name: /Balance over time/ });
    const before = api.calls.length;
    const deposit = form("Deposit");
    await user.type(within(deposit).getByLabelText("Amount (EUR)"), "8");
    await user.click(within(deposit).getByRole("button", { name: "Deposit" }));
    await within(deposit).findByText("Deposited 8.00 EUR.");
    act(() => {
      FakeEventSource.latest().emit("account", account({ currentBalance: "50.00", version: 3 }), "0.21");
    });
    await waitFor(() =>
      expect(screen.getByRole("img", { name: /Balance over time/ })).toHaveAttribute("data-points", "3"),
    );
    const after = api.calls.slice(before).map((c) => `${c.method} ${c.path}?${c.query.toString()}`);
    const reads = after.filter((c) => c.startsWith("GET"));
    expect(reads.filter((c) => c.includes(`/accounts/${ACCOUNT_ID}?`))).toHaveLength(1);
    expect(reads.filter((c) => c.includes("/transactions?order=desc&limit=25"))).toHaveLength(1);
    expect(reads.filter((c) => c.includes("/events?"))).toHaveLength(1);
    // The chart gets the one new transaction, not its whole series again.
    expect(reads.filter((c) => c.includes("order=asc"))).toHaveLength(0);
    expect(reads.filter((c) => c.includes("/transactions?order=desc&limit=1&"))).toHaveLength(1);
  });

  it("refreshes only what a live event touched", async () => {
    const { api } = ledger();
    renderApp(<AccountPage id={ACCOUNT_ID} />);
    await screen.findByRole("table", { name: /Transactions/ });
    await screen.findByRole("img", { name: /Balance over time/ });
    await screen.findByRole("list", { name: /Events/ });
    const before = api.calls.length;
    // Closed elsewhere: a new version, no money moved.
    act(() => {
      FakeEventSource.latest().emit("account", account({ status: "closed", version: 3 }), "0.30");
    });
    await screen.findByText(/This account is closed: it takes no more/);
    await waitFor(() => expect(api.calls.length).toBeGreaterThan(before));
    const reads = api.calls.slice(before).map((c) => c.path);
    expect(reads).toEqual([`/api/query/accounts/${ACCOUNT_ID}/events`]);
  });

  it("lists the events newest first", async () => {
    const { api } = ledger();
    renderApp(<AccountPage id={ACCOUNT_ID} />);
    await screen.findByRole("list", { name: "Events, newest first" });
    expect(api.find("GET", /\/events$/)[0]?.query.get("order")).toBe("desc");
  });

  it("travels to a moment: the state then, and the slider at its version", async () => {
    const { api } = ledger({ version: 3, transactionCount: 2, currentBalance: "52.00" });
    const user = userEvent.setup();
    renderApp(<AccountPage id={ACCOUNT_ID} />);
    await screen.findByRole("img", { name: /Balance over time/ });
    const field = screen.getByLabelText("Or go to a moment");
    fireEvent.change(field, { target: { value: "2026-01-02T10:30:00" } });
    await user.click(screen.getByRole("button", { name: "Go" }));
    expect(await screen.findByTestId("time-travel-when")).toHaveTextContent("the account was at version 2");
    const asked = api.find("GET", /\/state$/)[0];
    expect(asked?.query.get("asOf")).toBe(new Date("2026-01-02T10:30:00").toISOString());
    expect(screen.getByRole("slider", { name: "Time travel" })).toHaveValue("2");
    expect(screen.getByTestId("time-travel-state")).toHaveTextContent("42.00 EUR");
  });

  it("says when the moment is before the account was opened", async () => {
    ledger();
    const user = userEvent.setup();
    renderApp(<AccountPage id={ACCOUNT_ID} />);
    await screen.findByRole("img", { name: /Balance over time/ });
    fireEvent.change(screen.getByLabelText("Or go to a moment"), { target: { value: "2020-01-01T00:00" } });
    await user.click(screen.getByRole("button", { name: "Go" }));
    expect(await screen.findByTestId("time-travel-when")).toHaveTextContent("the account did not exist yet");
  });

  it("exports every transaction as CSV", async () => {
    ledger();
    const user = userEvent.setup();
    const blobs: Blob[] = [];
    // jsdom has no object URLs: these two stand in for the browser's, for this test only.
    Object.defineProperty(URL, "createObjectURL", {
      configurable: true,
      value: (blob: Blob) => (blobs.push(blob), "blob:csv"),
    });
    Object.defineProperty(URL, "revokeObjectURL", { configurable: true, value: () => undefined });
    const clicked = vi.spyOn(HTMLAnchorElement.prototype, "click").mockImplementation(() => undefined);
    renderApp(<AccountPage id={ACCOUNT_ID} />);
    await user.click(await screen.findByRole("button", { name: "Download CSV" }));
    await waitFor(() => expect(clicked).toHaveBeenCalled());
    const text = await new Promise<string>((resolve) => {
      const reader = new FileReader();
      reader.onload = () => resolve(String(reader.result));
      reader.readAsText(blobs[0] as Blob);
    });
    expect(text.split("\r\n")[1]).toBe("2,2026-01-02T10:00:00Z,deposit,42.00,EUR,42.00,salary,event-2,11");
    clicked.mockRestore();
    Reflect.deleteProperty(URL, "createObjectURL");
    Reflect.deleteProperty(URL, "revokeObjectURL");
  });
});
