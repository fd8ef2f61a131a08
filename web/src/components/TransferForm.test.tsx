import { screen } from "@testing-library/react";
import userEvent from "@testing-library/user-event";

import { TransferForm } from "./TransferForm";
import { ACCOUNT_ID, FakeEventSource, account, fakeApi, json, problem } from "../test/fakeApi";
import { renderApp } from "../test/render";

const BOB = "01940000-0000-7000-8000-0000000000b0";
const TRANSFER = "7f000000-0000-4000-8000-000000000001";

function transferAt(steps: string[], extra: Record<string, unknown> = {}) {
  return {
    transferId: TRANSFER,
    sourceAccountId: ACCOUNT_ID,
    targetAccountId: BOB,
    amount: "12.50",
    currency: "EUR",
    description: "",
    state: steps[steps.length - 1],
    version: steps.length,
    steps: steps.map((step, i) => ({ step, position: 30 + i, recordedAt: "2026-12-02T06:00:00Z" })),
    ...extra,
  };
}

beforeEach(() => FakeEventSource.install());

describe("TransferForm", () => {
  it("finds the target by owner, sends, and shows the transfer's progress to its end", async () => {
    let reads = 0;
    const api = fakeApi({
      "GET /api/query/accounts": () =>
        json({ items: [account({ accountId: BOB, ownerName: "Bob Builder" })], nextCursor: null }),
      "POST /api/command/transfers": () =>
        json({ transferId: TRANSFER, state: "requested", version: 1, position: 30, checkpoint: "0.30" }, 202),
      "GET /api/query/transfers/:id": () => {
        reads += 1;
        return json(transferAt(reads < 2 ? ["requested", "debited"] : ["requested", "debited", "completed"]));
      },
    });
    renderApp(<TransferForm accountId={ACCOUNT_ID} currency="EUR" units={2} />);
    const user = userEvent.setup();

    await user.type(screen.getByLabelText(/find the account/i), "Bob");
    await user.click(await screen.findByRole("button", { name: /Bob Builder/ }));
    expect(screen.getByLabelText(/to account/i)).toHaveValue(BOB);
    await user.type(screen.getByLabelText(/amount/i), "12.5");
    await user.click(screen.getByRole("button", { name: "Send" }));

    expect(await screen.findByText("Sent 12.50 EUR.", {}, { timeout: 5000 })).toBeInTheDocument();
    const [sent] = api.find("POST", "/api/command/transfers");
    expect(sent?.body).toEqual({
      sourceAccountId: ACCOUNT_ID,
      targetAccountId: BOB,
      amount: "12.5",
      description: "",
    });
    expect(sent?.headers.get("Idempotency-Key")).toBeTruthy();
    expect(reads).toBeGreaterThanOrEqual(2);
  });

  it("asks for a target, then shows the ledger's refusal", async () => {
    fakeApi({
      "GET /api/query/accounts": () => json({ items: [], nextCursor: null }),
      "POST /api/command/transfers": () =>
        problem(422, "currency-mismatch", "Currency mismatch", "account x holds USD, not EUR"),
    });
    renderApp(<TransferForm accountId={ACCOUNT_ID} currency="EUR" units={2} />);
    const user = userEvent.setup();
    await user.click(screen.getByRole("button", { name: "Send" }));
    expect(screen.getByRole("alert")).toHaveTextContent(/choose the account/i);
    await user.type(screen.getByLabelText(/to account/i), BOB);
    await user.type(screen.getByLabelText(/amount/i), "1");
    await user.click(screen.getByRole("button", { name: "Send" }));
    expect(await screen.findByRole("alert")).toHaveTextContent(/holds USD, not EUR/);
  });
});
