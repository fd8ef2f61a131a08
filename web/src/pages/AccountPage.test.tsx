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
    "GET /api/query/accounts/:id/state": (call) =>
      json({
        accountId: ACCOUNT_ID,
        version: Number(call.query.get("version")),
        ownerName: "Alan Turing",
        currency: "EUR",
        currentBalance: call.query.get("version") === "1" ? "0.00" : "42.00",
        status: "open",
        transactionCount: Number(call.query.get("version")) - 1,
      }),
    "POST /api/command/accounts/:id/deposit": (call) =>
      move("deposit", (call.body as { amount: string }).amount),
    "POST /api/command/accounts/:id/withdraw": (call) =>
      move("withdraw", (call.body as { amount: string }).amount),
    "POST /api/command/accounts/:id/close": () =>
      problem(422, "account-not-empty", "Account not empty", "still holds money", {
        balance: state.currentBalance,
        currency: state.currency,
      }),
  });
  return { api, current: () => state };
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

  it("disables the forms of a closed account and says why", async () => {
    ledger({ status: "closed", currentBalance: "0.00" });
    renderApp(<AccountPage id={ACCOUNT_ID} />);
    await screen.findByRole("heading", { level: 1, name: /Alan Turing/ });
    expect(screen.getAllByText(/This account is closed/)[0]).toBeInTheDocument();
    expect(within(form("Deposit")).getByRole("button", { name: "Deposit" })).toBeDisabled();
    expect(within(form("Withdraw")).getByLabelText("Amount (EUR)")).toBeDisabled();
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

  it("asks before closing and shows the ledger's refusal while money remains", async () => {
    ledger();
    const user = userEvent.setup();
    renderApp(<AccountPage id={ACCOUNT_ID} />);
    await user.click(await screen.findByRole("button", { name: "Close account…" }));
    await user.click(screen.getByRole("button", { name: "Yes, close it" }));
    expect(await screen.findByRole("alert")).toHaveTextContent(
      "The account still holds 42.00 EUR: withdraw it all before closing the account.",
    );
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

  it("says so when no account has the id", async () => {
    fakeApi({
      "GET /api/query/accounts/:id": () => problem(404, "account-not-found", "Unknown account", "no account"),
    });
    renderApp(<AccountPage id="nope" />);
    expect(await screen.findByRole("heading", { name: "No such account" })).toBeInTheDocument();
    expect(screen.getByRole("alert")).toHaveTextContent("No account has this id.");
  });
});
