import { act, screen, waitFor, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";

import { App } from "./App";
import { FakeEventSource, account, fakeApi, json, problem } from "./test/fakeApi";
import { renderApp } from "./test/render";

const TOKEN = "reader-token-0123456789";

function securedServer() {
  return fakeApi({
    "GET /api/query/accounts": (call) =>
      call.headers.get("authorization") === `Bearer ${TOKEN}`
        ? json({ items: [account()], nextCursor: null })
        : problem(401, "unauthorized", "Authentication required", "send Authorization: Bearer <token>"),
    "GET /api/query/totals": (call) =>
      call.headers.get("authorization") === `Bearer ${TOKEN}`
        ? json({ items: [] })
        : problem(401, "unauthorized", "Authentication required", "send Authorization: Bearer <token>"),
  });
}

beforeEach(() => FakeEventSource.install());

describe("App", () => {
  it("asks for a token on 401, keeps it in sessionStorage and then shows the accounts", async () => {
    const api = securedServer();
    const user = userEvent.setup();
    renderApp(<App />);
    const banner = await screen.findByText(/This server was started with/);
    expect(banner.closest("[role=alert]")).toBeInTheDocument();
    expect(screen.getByTestId("live-state")).toHaveTextContent("Token needed");
    await user.click(screen.getByRole("button", { name: "Enter token" }));
    await user.type(screen.getByLabelText("Bearer token"), TOKEN);
    await user.click(screen.getByRole("button", { name: "Save token" }));
    expect(await screen.findByRole("link", { name: "Alan Turing" })).toBeInTheDocument();
    expect(window.sessionStorage.getItem("eventvault.token")).toBe(TOKEN);
    expect(api.find("GET", "/api/query/accounts").at(-1)?.headers.get("authorization")).toBe(
      `Bearer ${TOKEN}`,
    );
    expect(screen.queryByText(/This server was started with/)).not.toBeInTheDocument();
  });

  it("routes by the URL hash and marks the current page in the navigation", async () => {
    fakeApi({
      "GET /api/query/accounts": () => json({ items: [account()], nextCursor: null }),
      "GET /api/query/totals": () => json({ items: [] }),
      "GET /api/projections": () => json({ items: [] }),
    });
    const user = userEvent.setup();
    renderApp(<App />);
    const nav = screen.getByRole("navigation", { name: "Main" });
    expect(within(nav).getByRole("link", { name: "Accounts" })).toHaveAttribute("aria-current", "page");
    await user.click(within(nav).getByRole("link", { name: "Operations" }));
    expect(await screen.findByRole("heading", { level: 1, name: "Operations" })).toBeInTheDocument();
    expect(within(nav).getByRole("link", { name: "Operations" })).toHaveAttribute("aria-current", "page");
    await waitFor(() => expect(screen.getByRole("main")).toHaveFocus());
  });

  it("falls back to polling while the live stream is down, and says so", async () => {
    fakeApi({
      "GET /api/query/accounts": () => json({ items: [account()], nextCursor: null }),
      "GET /api/query/totals": () => json({ items: [] }),
    });
    FakeEventSource.install({ autoOpen: false });
    vi.useFakeTimers({ shouldAdvanceTime: true });
    try {
      renderApp(<App />);
      act(() => FakeEventSource.latest().open());
      await screen.findByRole("link", { name: "Alan Turing" });
      act(() => FakeEventSource.latest().fail());
      expect(screen.getByTestId("live-state")).toHaveTextContent("Reconnecting…");
      await act(async () => {
        await vi.advanceTimersByTimeAsync(1000);
      });
      act(() => FakeEventSource.latest().fail());
      expect(screen.getByTestId("live-state")).toHaveTextContent("Polling");
      act(() => FakeEventSource.latest().open());
      expect(screen.getByTestId("live-state")).toHaveTextContent("Live");
    } finally {
      vi.useRealTimers();
    }
  });

  it("says the server is unreachable instead of polling over old data, and recovers by itself", async () => {
    let up = true;
    const answer = vi.fn(async (input: RequestInfo | URL) => {
      if (!up) throw new TypeError("Failed to fetch");
      const path = new URL(String(input), "http://dashboard.test").pathname;
      return path === "/api/query/totals"
        ? json({ items: [] })
        : json({ items: [account({ currentBalance: up ? "42.00" : "0" })], nextCursor: null });
    });
    vi.stubGlobal("fetch", answer);
    FakeEventSource.install({ autoOpen: false });
    vi.useFakeTimers({ shouldAdvanceTime: true });
    try {
      renderApp(<App />);
      act(() => FakeEventSource.latest().open());
      await screen.findByRole("link", { name: "Alan Turing" });
      up = false;
      act(() => FakeEventSource.latest().fail());
      await act(async () => {
        await vi.advanceTimersByTimeAsync(1000);
      });
      act(() => FakeEventSource.latest().fail()); // polling now, and the polls fail
      await act(async () => {
        await vi.advanceTimersByTimeAsync(6000);
      });
      expect(screen.getByTestId("live-state")).toHaveTextContent("Server unreachable, retrying");
      expect(screen.getByTestId("unreachable")).toHaveTextContent("The server cannot be reached.");
      expect(screen.getByRole("link", { name: "Alan Turing" })).toBeInTheDocument(); // the old data stays

      up = true;
      await act(async () => {
        await vi.advanceTimersByTimeAsync(6000); // the next poll gets an answer
      });
      expect(screen.queryByTestId("unreachable")).not.toBeInTheDocument();
      act(() => FakeEventSource.latest().open());
      expect(screen.getByTestId("live-state")).toHaveTextContent("Live");
    } finally {
      vi.useRealTimers();
    }
  });
});
