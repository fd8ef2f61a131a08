import { ApiError, api, buildUrl, noteWrite, request } from "./client";
import { setToken } from "./token";
import { ACCOUNT_ID, account, fakeApi, json, problem } from "../test/fakeApi";

describe("the API client", () => {
  it("leaves out empty query parameters", () => {
    expect(buildUrl("/x", { a: "", b: null, c: undefined, d: 0, e: "EUR" })).toBe("/x?d=0&e=EUR");
    expect(buildUrl("/x")).toBe("/x");
  });

  it("sends the saved bearer token, and no Authorization header without one", async () => {
    const server = fakeApi({ "GET /api/query/totals": () => json({ items: [] }) });
    await api.totals();
    setToken("  s3cret-token-0123456789  ");
    await api.totals();
    expect(server.calls[0]?.headers.has("authorization")).toBe(false);
    expect(server.calls[1]?.headers.get("authorization")).toBe("Bearer s3cret-token-0123456789");
    expect(window.sessionStorage.getItem("eventvault.token")).toBe("s3cret-token-0123456789");
  });

  it("turns a problem document into an ApiError with its type's code and extra fields", async () => {
    fakeApi({
      "POST /api/command/accounts/:id/withdraw": () =>
        problem(422, "insufficient-funds", "Insufficient funds", "insufficient funds: ...", {
          balance: "42.00",
          requested: "100.00",
          currency: "EUR",
        }),
    });
    const error = await api
      .withdraw(ACCOUNT_ID, { amount: "100.00", description: "" })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({ status: 422, code: "insufficient-funds", title: "Insufficient funds" });
    expect((error as ApiError).problem?.["requested"]).toBe("100.00");
  });

  it("reports an error body that is not JSON by its status", async () => {
    fakeApi({
      "GET /api/projections": () => new Response("upstream down", { status: 502, statusText: "Bad Gateway" }),
    });
    await expect(api.projections()).rejects.toMatchObject({
      status: 502,
      code: "http-error",
      detail: "upstream down",
    });
  });

  it("reports an unreachable server as a network error with status 0", async () => {
    vi.stubGlobal(
      "fetch",
      vi.fn(() => Promise.reject(new TypeError("Failed to fetch"))),
    );
    await expect(request("GET", "/api/projections")).rejects.toMatchObject({ status: 0, code: "network" });
  });

  it("sends a command's body as JSON with its Idempotency-Key", async () => {
    const server = fakeApi({
      "POST /api/command/accounts/:id/deposit": () =>
        json({ accountId: ACCOUNT_ID, version: 3, position: 30, checkpoint: "0.30" }),
    });
    const result = await api.deposit(ACCOUNT_ID, { amount: "10.00", description: "gift" }, "key-1");
    expect(result.position).toBe(30);
    const call = server.calls[0];
    expect(call?.body).toEqual({ amount: "10.00", description: "gift" });
    expect(call?.headers.get("idempotency-key")).toBe("key-1");
    expect(call?.headers.get("content-type")).toBe("application/json");
  });

  it("after a write, asks the read models for at least that position (read-your-writes)", async () => {
    const server = fakeApi({
      "GET /api/query/accounts/:id": () => json(account()),
      "GET /api/query/accounts/:id/events": () => json({ items: [], nextCursor: null }),
    });
    await api.account(ACCOUNT_ID);
    noteWrite(41);
    noteWrite(17); // an older write never lowers the bar
    await api.account(ACCOUNT_ID);
    await api.events(ACCOUNT_ID, null);
    expect(server.calls[0]?.query.has("consistentWith")).toBe(false);
    expect(server.calls[1]?.query.get("consistentWith")).toBe("41");
    // The audit log is read from the event log itself: there is nothing to wait for.
    expect(server.calls[2]?.query.has("consistentWith")).toBe(false);
  });
});
