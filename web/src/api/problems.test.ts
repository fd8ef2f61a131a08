import { ApiError } from "./client";
import { describeError } from "./problems";

function apiError(status: number, code: string, title: string, detail: string, extra: object = {}): ApiError {
  return new ApiError(status, code, title, detail, { type: `x/${code}`, title, status, detail, ...extra });
}

describe("describeError", () => {
  it("states insufficient funds with the balance and the amount asked for", () => {
    const error = apiError(422, "insufficient-funds", "Insufficient funds", "insufficient funds: ...", {
      balance: "42.00",
      requested: "100.00",
      currency: "EUR",
    });
    expect(describeError(error)).toBe(
      "Insufficient funds: the balance is 42.00 EUR, less than the 100.00 EUR asked for.",
    );
  });

  it("explains a closed account and a close refused for a non-zero balance", () => {
    expect(describeError(apiError(409, "account-closed", "Account closed", "account x is closed"))).toBe(
      "This account is closed: it takes no more deposits or withdrawals.",
    );
    expect(
      describeError(
        apiError(422, "account-not-empty", "Account not empty", "...", { balance: "5.00", currency: "GBP" }),
      ),
    ).toBe("The account still holds 5.00 GBP: withdraw it all before closing the account.");
  });

  it("explains the open-account limit, with or without its figures", () => {
    const extra = { currency: "EUR", maxOpenAccounts: 3 };
    expect(
      describeError(apiError(409, "too-many-open-accounts", "Too many open accounts", "...", extra)),
    ).toBe(
      "This owner holds 3 open EUR accounts already, the most allowed: close one before opening another.",
    );
    expect(
      describeError(apiError(409, "too-many-open-accounts", "Too many open accounts", "ada holds 3 already")),
    ).toBe("Ada holds 3 already.");
  });

  it("tells the user what to do about 401 and 403", () => {
    expect(describeError(apiError(401, "unauthorized", "Authentication required", "send it"))).toMatch(
      /paste a bearer token/,
    );
    expect(
      describeError(apiError(403, "forbidden", "Not allowed", "this token lacks the 'admin' scope")),
    ).toBe("Not allowed: this token lacks the 'admin' scope. Use a token with that scope.");
  });

  it("falls back to the problem's title and detail", () => {
    expect(
      describeError(
        apiError(
          422,
          "invalid-amount",
          "Invalid amount",
          "EUR amounts have at most 2 decimal places, got 1.001",
        ),
      ),
    ).toBe("Invalid amount: EUR amounts have at most 2 decimal places, got 1.001.");
    expect(describeError(new Error("boom"))).toBe("Boom.");
  });
});
