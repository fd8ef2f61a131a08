import { screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";

import { AccountsPage } from "./AccountsPage";
import { FakeEventSource, account, fakeApi, json, problem } from "../test/fakeApi";
import { renderApp } from "../test/render";

const NEW_ID = "01a2185b-0000-7000-8000-000000000001";

function server() {
  return fakeApi({
    "GET /api/query/accounts": () =>
      json({
        items: [
          account(),
          account({
            accountId: "01a2185b-1d9c-728b-a2f4-000000000002",
            ownerName: "Grace Hopper",
            currentBalance: "4020.26",
            currency: "USD",
            transactionCount: 4,
            status: "closed",
          }),
        ],
        nextCursor: null,
      }),
    "GET /api/query/totals": () =>
      json({
        items: [
          {
            currency: "EUR",
            totalBalance: "42.00",
            accounts: 1,
            openAccounts: 1,
            totalDeposited: "42.00",
            totalWithdrawn: "0.00",
            transactionCount: 1,
          },
          {
            currency: "USD",
            totalBalance: "4020.26",
            accounts: 1,
            openAccounts: 0,
            totalDeposited: "5000.00",
            totalWithdrawn: "979.74",
            transactionCount: 4,
          },
        ],
      }),
    "POST /api/command/accounts": (call) =>
      (call.body as { currency: string }).currency === "XYZ"
        ? problem(422, "unknown-currency", "Unknown currency", "'XYZ' is not an active ISO 4217 currency")
        : json({ accountId: NEW_ID, version: 1, position: 99, checkpoint: "0.99" }, 201),
  });
}

beforeEach(() => FakeEventSource.install());

describe("AccountsPage", () => {
  it("lists owner, balance, currency, transactions, last activity and status", async () => {
    server();
    renderApp(<AccountsPage />);
    const table = await screen.findByRole("table", { name: /accounts/i });
    const rows = within(table).getAllByRole("row").slice(1);
    expect(rows).toHaveLength(2);
    const grace = rows[1] as HTMLElement;
    expect(within(grace).getByRole("link", { name: "Grace Hopper" })).toHaveAttribute(
      "href",
      "#/accounts/01a2185b-1d9c-728b-a2f4-000000000002",
    );
    expect(grace).toHaveTextContent("4020.26");
    expect(grace).toHaveTextContent("USD");
    expect(grace).toHaveTextContent("4");
    expect(grace).toHaveTextContent("Closed");
    expect(within(rows[0] as HTMLElement).getByText(/ago|yesterday|Jan/)).toHaveAttribute(
      "datetime",
      "2026-01-02T10:00:00Z",
    );
    expect(screen.getByText("EUR held")).toBeInTheDocument();
  });

  it("sends the balance range and currency filter to the API", async () => {
    const api = server();
    const user = userEvent.setup();
    renderApp(<AccountsPage />);
    await screen.findByRole("table");
    await user.type(screen.getByLabelText("Min balance"), "10.50");
    await user.type(screen.getByLabelText("Max balance"), "100");
    await user.selectOptions(await screen.findByLabelText("Currency"), "USD");
    await user.click(screen.getByRole("button", { name: "Apply" }));
    await waitFor(() => {
      const last = api.find("GET", "/api/query/accounts").at(-1);
      expect(last?.query.get("minBalance")).toBe("10.50");
      expect(last?.query.get("maxBalance")).toBe("100");
      expect(last?.query.get("currency")).toBe("USD");
    });
  });

  it("refuses a range whose maximum is below its minimum, without asking the API", async () => {
    const api = server();
    const user = userEvent.setup();
    renderApp(<AccountsPage />);
    await screen.findByRole("table");
    const before = api.find("GET", "/api/query/accounts").length;
    await user.type(screen.getByLabelText("Min balance"), "100");
    await user.type(screen.getByLabelText("Max balance"), "99.99");
    await user.click(screen.getByRole("button", { name: "Apply" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("The maximum is below the minimum.");
    expect(screen.getByLabelText("Max balance")).toHaveAttribute("aria-invalid", "true");
    expect(api.find("GET", "/api/query/accounts")).toHaveLength(before);
  });

  it("opens an account and goes to its page", async () => {
    const api = server();
    const user = userEvent.setup();
    renderApp(<AccountsPage />);
    await user.click(screen.getByRole("button", { name: "Open account" }));
    await user.type(screen.getByLabelText("Owner name"), "Ada Lovelace");
    await user.clear(screen.getByLabelText("Currency", { selector: "input" }));
    await user.type(screen.getByLabelText("Currency", { selector: "input" }), "gbp");
    await user.click(screen.getByRole("button", { name: "Open account" }));
    await waitFor(() => expect(window.location.hash).toBe(`#/accounts/${NEW_ID}`));
    const post = api.find("POST", "/api/command/accounts")[0];
    expect(post?.body).toEqual({ ownerName: "Ada Lovelace", currency: "GBP" });
    expect(post?.headers.get("idempotency-key")).toMatch(/^[0-9a-f-]{36}$/);
  });

  it("shows the ledger's refusal when it does not know the currency", async () => {
    server();
    const user = userEvent.setup();
    renderApp(<AccountsPage />);
    await user.click(screen.getByRole("button", { name: "Open account" }));
    await user.type(screen.getByLabelText("Owner name"), "Ada");
    await user.clear(screen.getByLabelText("Currency", { selector: "input" }));
    await user.type(screen.getByLabelText("Currency", { selector: "input" }), "XYZ");
    await user.click(screen.getByRole("button", { name: "Open account" }));
    expect(await screen.findByRole("alert")).toHaveTextContent(
      "Unknown currency: 'XYZ' is not an active ISO 4217 currency.",
    );
    expect(window.location.hash).toBe("");
  });

  it("says when the API cannot be reached, with a way to retry", async () => {
    vi.stubGlobal(
      "fetch",
      vi.fn(() => Promise.reject(new TypeError("Failed to fetch"))),
    );
    renderApp(<AccountsPage />);
    expect(await screen.findByRole("alert")).toHaveTextContent("Cannot reach the server");
    expect(screen.getByRole("button", { name: "Retry" })).toBeInTheDocument();
  });
});
