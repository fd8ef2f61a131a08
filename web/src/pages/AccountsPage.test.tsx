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
    // Grouped by currency (no currency chosen): a heading row, then its accounts.
    expect(rows.map((r) => r.className === "group-row")).toEqual([true, false, true, false]);
    expect(rows[2]).toHaveTextContent("USD");
    const grace = rows[3] as HTMLElement;
    expect(grace).toHaveTextContent("01a2185b-1d9c-728b-a2f4-000000000002"); // the id column
    expect(within(grace).getByRole("link", { name: "Grace Hopper" })).toHaveAttribute(
      "href",
      "#/accounts/01a2185b-1d9c-728b-a2f4-000000000002",
    );
    expect(grace).toHaveTextContent("4020.26");
    expect(grace).toHaveTextContent("USD");
    expect(grace).toHaveTextContent("4");
    expect(grace).toHaveTextContent("Closed");
    expect(within(rows[1] as HTMLElement).getByText(/ago|yesterday|Jan/)).toHaveAttribute(
      "datetime",
      "2026-01-02T10:00:00Z",
    );
    expect(screen.getByText("EUR held")).toBeInTheDocument();
  });

  it("marks an owner whose personal data was erased", async () => {
    fakeApi({
      "GET /api/query/accounts": () =>
        json({ items: [account({ ownerName: "[redacted]" })], nextCursor: null }),
      "GET /api/query/totals": () => json({ items: [] }),
    });
    renderApp(<AccountsPage />);
    const table = await screen.findByRole("table", { name: /accounts/i });
    const link = within(table).getByRole("link", { name: /\[redacted\] erased/ });
    expect(within(link).getByTitle("The owner's personal data was erased")).toHaveClass("owner-redacted");
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
    await user.selectOptions(await screen.findByLabelText("Currency"), "EUR");
    await user.type(screen.getByLabelText("Min balance"), "100");
    await user.type(screen.getByLabelText("Max balance"), "99.99");
    await user.click(screen.getByRole("button", { name: "Apply" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("The maximum is below the minimum.");
    expect(screen.getByLabelText("Max balance")).toHaveAttribute("aria-invalid", "true");
    expect(api.find("GET", "/api/query/accounts")).toHaveLength(before);
  });

  it("refuses a balance range without a currency, without asking the API", async () => {
    const api = server();
    const user = userEvent.setup();
    renderApp(<AccountsPage />);
    await screen.findByRole("table");
    const before = api.find("GET", "/api/query/accounts").length;
    await user.type(screen.getByLabelText("Min balance"), "100");
    await user.click(screen.getByRole("button", { name: "Apply" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("Choose a currency to filter by balance");
    expect(api.find("GET", "/api/query/accounts")).toHaveLength(before);
  });

  it("keeps search, currency, range and order in the URL, and reads them back from it", async () => {
    const api = server();
    const user = userEvent.setup();
    renderApp(<AccountsPage />);
    await screen.findByRole("table");
    await user.type(screen.getByLabelText("Search"), " grace ");
    await user.selectOptions(screen.getByLabelText("Currency"), "USD");
    await user.selectOptions(screen.getByLabelText("Order"), "desc");
    await user.type(screen.getByLabelText("Min balance"), "5");
    await user.click(screen.getByRole("button", { name: "Apply" }));
    await waitFor(() =>
      expect(window.location.hash).toBe("#/?search=grace&currency=USD&minBalance=5&order=desc"),
    );
    await waitFor(() => {
      const last = api.find("GET", "/api/query/accounts").at(-1);
      expect(last?.query.get("search")).toBe("grace");
      expect(last?.query.get("order")).toBe("desc");
      expect(last?.query.get("currency")).toBe("USD");
      expect(last?.query.get("minBalance")).toBe("5");
    });
    const table = screen.getByRole("table", { name: /highest balance first/ });
    expect(within(table).queryByText("USD", { selector: ".group-row th" })).not.toBeInTheDocument();
  });

  it("opens with the filters of the URL and fetches the list and the totals once", async () => {
    window.location.hash = "#/?currency=EUR&maxBalance=50&search=ada";
    const api = server();
    renderApp(<AccountsPage />);
    await screen.findByRole("table");
    expect(screen.getByLabelText("Search")).toHaveValue("ada");
    expect(screen.getByLabelText("Max balance")).toHaveValue("50");
    await waitFor(() => expect(screen.getByLabelText("Currency")).toHaveValue("EUR"));
    const lists = api.find("GET", "/api/query/accounts");
    expect(lists).toHaveLength(1);
    expect(lists[0]?.query.toString()).toBe("maxBalance=50&currency=EUR&search=ada&limit=25");
    expect(api.find("GET", "/api/query/totals")).toHaveLength(1);
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
