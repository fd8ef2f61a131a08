import { screen, within } from "@testing-library/react";
import userEvent from "@testing-library/user-event";
import { vi } from "vitest";

import { OperationsPage } from "./OperationsPage";
import { FakeEventSource, fakeApi, json, problem, projection } from "../test/fakeApi";
import { renderApp } from "../test/render";

beforeEach(() => FakeEventSource.install());

function storeStatus(overrides: object = {}) {
  return {
    backend: "sqlite",
    schemaVersion: 7,
    events: 1234,
    streams: 56,
    head: "0.1234",
    sizeBytes: 3 * 1024 * 1024,
    readModels: [{ name: "accounts", state: "live", checkpoint: "0.1230", lagEvents: 4, lagSeconds: 0.5 }],
    ...overrides,
  };
}

function snapshot(streamId: string, size = 120) {
  return {
    streamId,
    type: streamId.split("-")[0] ?? streamId,
    schemaVersion: 1,
    streamVersion: 10,
    size,
    createdAt: "2026-01-02T10:00:00Z",
  };
}

/** The store panels' routes, answered quietly: the projection tests are about the projections. */
const STORE = {
  "GET /api/store": () => json(storeStatus()),
  "GET /api/store/snapshots": () => json({ items: [], types: {}, truncated: false }),
};

describe("OperationsPage", () => {
  it("shows each projection's lag, rate, state and last error", async () => {
    fakeApi({
      ...STORE,
      "GET /api/projections": () =>
        json({
          items: [
            projection(),
            projection({
              name: "totals",
              state: "failed",
              lagEvents: 1,
              lastError: {
                message: "ValueError: bad amount",
                position: 17,
                checkpoint: "0.17",
                eventId: "ev-17",
                at: 1,
              },
            }),
          ],
        }),
    });
    renderApp(<OperationsPage />);
    const accounts = await screen.findByRole("article", { name: "accounts" });
    expect(within(accounts).getByTestId("lag-events")).toHaveTextContent("3 events");
    expect(accounts).toHaveTextContent("250 ms behind the head");
    expect(accounts).toHaveTextContent("120.5 events/s");
    expect(within(accounts).getByText("live")).toHaveClass("badge-good");
    expect(accounts).toHaveTextContent("none");
    const totals = screen.getByRole("article", { name: "totals" });
    expect(within(totals).getByText("failed")).toHaveClass("badge-bad");
    expect(within(totals).getByRole("alert")).toHaveTextContent(
      "ValueError: bad amount (at position 17, event ev-17)",
    );
  });

  it("starts a rebuild and shows its progress", async () => {
    let rebuilding = false;
    const api = fakeApi({
      ...STORE,
      "GET /api/projections": () =>
        json({
          items: [
            projection(
              rebuilding
                ? {
                    rebuild: {
                      generation: 2,
                      state: "running",
                      done: 120,
                      total: 300,
                      eventsPerSecond: 600,
                      etaSeconds: 0.3,
                      error: null,
                    },
                  }
                : {},
            ),
          ],
        }),
      "POST /api/projections/:name/rebuild": () => {
        rebuilding = true;
        return json(
          {
            generation: 2,
            state: "running",
            done: 0,
            total: 300,
            eventsPerSecond: 0,
            etaSeconds: null,
            error: null,
          },
          202,
        );
      },
    });
    const user = userEvent.setup();
    renderApp(<OperationsPage />);
    await user.click(await screen.findByRole("button", { name: "Rebuild accounts" }));
    const progress = await screen.findByRole("progressbar");
    expect(progress).toHaveAttribute("value", "120");
    expect(progress).toHaveAttribute("max", "300");
    expect(screen.getByTestId("rebuild-accounts")).toHaveTextContent(
      "120 of 300 events · 600 events/s · 300 ms left",
    );
    expect(screen.getByRole("button", { name: "Rebuild accounts" })).toBeDisabled();
    expect(api.find("POST", "/api/projections/accounts/rebuild")).toHaveLength(1);
  });

  it("says plainly when the token may not rebuild", async () => {
    fakeApi({
      ...STORE,
      "GET /api/projections": () => json({ items: [projection()] }),
      "POST /api/projections/:name/rebuild": () =>
        problem(403, "forbidden", "Not allowed", "this token lacks the 'admin' scope"),
    });
    const user = userEvent.setup();
    renderApp(<OperationsPage />);
    await user.click(await screen.findByRole("button", { name: "Rebuild accounts" }));
    expect(await screen.findByRole("alert")).toHaveTextContent(
      "Not allowed: this token lacks the 'admin' scope. Use a token with that scope.",
    );
  });

  it("shows a finished rebuild with its final rate, and not one a newer generation replaced", async () => {
    const done = {
      state: "done",
      done: 300,
      total: 300,
      eventsPerSecond: 750,
      etaSeconds: null,
      error: null,
    };
    fakeApi({
      ...STORE,
      "GET /api/projections": () =>
        json({
          items: [
            projection({ generation: 2, rebuild: { generation: 2, ...done } }),
            // Rebuilt since by `eventvault rebuild` in another process: generation 5 serves.
            projection({ name: "totals", generation: 5, rebuild: { generation: 3, ...done } }),
          ],
        }),
    });
    renderApp(<OperationsPage />);
    const accounts = await screen.findByRole("article", { name: "accounts" });
    expect(within(accounts).getByTestId("rebuild-accounts")).toHaveTextContent(
      "300 of 300 events at 750 events/s; generation 2 serves",
    );
    const totals = screen.getByRole("article", { name: "totals" });
    expect(within(totals).queryByTestId("rebuild-totals")).not.toBeInTheDocument();
    expect(totals).toHaveTextContent("5 (schema v1)");
  });

  it("pauses and resumes a projection, reading its status again after each", async () => {
    let paused = false;
    const api = fakeApi({
      ...STORE,
      "GET /api/projections": () => json({ items: [projection({ paused })] }),
      "POST /api/projections/:name/pause": () => {
        paused = true;
        return json(projection({ paused }));
      },
      "POST /api/projections/:name/resume": () => {
        paused = false;
        return json(projection({ paused }));
      },
    });
    const user = userEvent.setup();
    renderApp(<OperationsPage />);
    await user.click(await screen.findByRole("button", { name: "Pause accounts" }));
    const resume = await screen.findByRole("button", { name: "Resume accounts" });
    expect(screen.getByTestId("paused-accounts")).toHaveTextContent("Paused");
    expect(api.find("POST", "/api/projections/accounts/pause")).toHaveLength(1);
    await user.click(resume);
    await screen.findByRole("button", { name: "Pause accounts" });
    expect(screen.getByTestId("paused-accounts")).toHaveTextContent("Running");
    expect(api.find("POST", "/api/projections/accounts/resume")).toHaveLength(1);
  });

  it("resets only a paused projection, and only once confirmed", async () => {
    const api = fakeApi({
      ...STORE,
      "GET /api/projections": () =>
        json({ items: [projection({ paused: true }), projection({ name: "totals" })] }),
      "POST /api/projections/:name/reset": (call) =>
        json(projection({ paused: true, checkpoint: String((call.body as { to: string }).to) })),
    });
    const user = userEvent.setup();
    renderApp(<OperationsPage />);
    expect(await screen.findByRole("button", { name: "Reset totals" })).toBeDisabled();
    await user.click(screen.getByRole("button", { name: "Reset accounts" }));
    const confirm = screen.getByRole("form", { name: "Confirm the reset of accounts" });
    expect(confirm).toHaveTextContent("skipped");
    // Nothing is sent before the confirmation; cancelling sends nothing either.
    await user.click(within(confirm).getByRole("button", { name: "Cancel" }));
    expect(screen.queryByRole("form", { name: "Confirm the reset of accounts" })).not.toBeInTheDocument();
    expect(api.find("POST", /reset$/)).toHaveLength(0);
    await user.click(screen.getByRole("button", { name: "Reset accounts" }));
    const input = screen.getByLabelText("Move accounts forward to checkpoint");
    expect(input).toHaveValue("0.21");
    await user.clear(input);
    await user.type(input, "0.23");
    await user.click(screen.getByRole("button", { name: "Skip to this checkpoint" }));
    await vi.waitFor(() =>
      expect(screen.queryByRole("form", { name: "Confirm the reset of accounts" })).not.toBeInTheDocument(),
    );
    const sent = api.find("POST", "/api/projections/accounts/reset");
    expect(sent).toHaveLength(1);
    expect(sent[0]?.body).toEqual({ to: "0.23" });
  });

  it("shows the API's problem when a reset is refused, and keeps the form", async () => {
    fakeApi({
      ...STORE,
      "GET /api/projections": () => json({ items: [projection({ paused: true })] }),
      "POST /api/projections/:name/reset": () =>
        problem(422, "validation", "Invalid checkpoint", "0.1 is behind the projection's checkpoint 0.21", {
          field: "to",
        }),
    });
    const user = userEvent.setup();
    renderApp(<OperationsPage />);
    await user.click(await screen.findByRole("button", { name: "Reset accounts" }));
    const input = screen.getByLabelText("Move accounts forward to checkpoint");
    await user.clear(input);
    await user.type(input, "0.1");
    await user.click(screen.getByRole("button", { name: "Skip to this checkpoint" }));
    expect(await screen.findByRole("alert")).toHaveTextContent("behind the projection's checkpoint 0.21");
    expect(screen.getByRole("form", { name: "Confirm the reset of accounts" })).toBeInTheDocument();
  });

  it("says what a missing admin token means when pausing", async () => {
    fakeApi({
      ...STORE,
      "GET /api/projections": () => json({ items: [projection()] }),
      "POST /api/projections/:name/pause": () =>
        problem(401, "unauthorized", "Not signed in", "this server needs a bearer token"),
    });
    const user = userEvent.setup();
    renderApp(<OperationsPage />);
    await user.click(await screen.findByRole("button", { name: "Pause accounts" }));
    expect(await screen.findByRole("alert")).toHaveTextContent(
      "Authentication required: paste a bearer token",
    );
    expect(screen.getByRole("button", { name: "Pause accounts" })).toBeEnabled();
  });

  it("shows the store's status: backend, counts, head, size and read-model lag", async () => {
    fakeApi({ ...STORE, "GET /api/projections": () => json({ items: [] }) });
    renderApp(<OperationsPage />);
    const store = await screen.findByTestId("store-panel");
    await within(store).findByText("0.1234");
    expect(store).toHaveTextContent("sqlite (schema v7)");
    expect(within(store).getByTestId("store-events")).toHaveTextContent("1,234");
    expect(within(store).getByTestId("store-streams")).toHaveTextContent("56");
    expect(within(store).getByTestId("store-size")).toHaveTextContent("3 MiB");
    const row = within(store).getByRole("row", { name: /accounts/ });
    expect(row).toHaveTextContent("4 events · 500 ms");
  });

  it("says the store panel needs an admin token when the token lacks the scope", async () => {
    fakeApi({
      ...STORE,
      "GET /api/projections": () => json({ items: [] }),
      "GET /api/store": () => problem(403, "forbidden", "Not allowed", "this token lacks the 'admin' scope"),
    });
    renderApp(<OperationsPage />);
    const store = await screen.findByTestId("store-panel");
    expect(await within(store).findByRole("alert")).toHaveTextContent(
      "Not allowed: this token lacks the 'admin' scope. Use a token with that scope.",
    );
  });

  it("lists snapshots by type and drops one type's only once confirmed", async () => {
    let items = [snapshot("account-1"), snapshot("account-2", 2048), snapshot("transfer-1")];
    const api = fakeApi({
      ...STORE,
      "GET /api/projections": () => json({ items: [] }),
      "GET /api/store/snapshots": (call) => {
        const type = call.query.get("type");
        const shown = items.filter((i) => type === null || i.type === type);
        const types: Record<string, number> = {};
        for (const i of shown) types[i.type] = (types[i.type] ?? 0) + 1;
        return json({ items: shown, types, truncated: false });
      },
      "DELETE /api/store/snapshots": (call) => {
        const type = call.query.get("type");
        const before = items.length;
        items = items.filter((i) => i.type !== type);
        return json({ dropped: before - items.length });
      },
    });
    const user = userEvent.setup();
    renderApp(<OperationsPage />);
    const panel = await screen.findByTestId("snapshots-panel");
    await within(panel).findByText("account-2");
    expect(within(panel).getByRole("row", { name: /account-2/ })).toHaveTextContent("2 KiB");
    await user.selectOptions(within(panel).getByLabelText("Type"), "account (2)");
    await vi.waitFor(() => expect(within(panel).queryByText("transfer-1")).not.toBeInTheDocument());
    expect(api.find("GET", "/api/store/snapshots").some((c) => c.query.get("type") === "account")).toBe(true);

    await user.click(within(panel).getByRole("button", { name: "Drop every account snapshot…" }));
    const confirm = within(panel).getByRole("group", { name: "Confirm the drop" });
    expect(confirm).toHaveTextContent("Drop the snapshots of type account?");
    expect(api.find("DELETE", "/api/store/snapshots")).toHaveLength(0);
    await user.click(within(confirm).getByRole("button", { name: "Drop them" }));
    expect(await within(panel).findByRole("status")).toHaveTextContent("Dropped 2 snapshots.");
    const sent = api.find("DELETE", "/api/store/snapshots");
    expect(sent).toHaveLength(1);
    expect(sent[0]?.query.get("type")).toBe("account");
    expect(await within(panel).findByText("No snapshots of type account.")).toBeInTheDocument();
  });

  it("drops one stream's snapshots, and cancelling drops nothing", async () => {
    const api = fakeApi({
      ...STORE,
      "GET /api/projections": () => json({ items: [] }),
      "GET /api/store/snapshots": () =>
        json({ items: [snapshot("account-1")], types: { account: 1 }, truncated: false }),
      "DELETE /api/store/snapshots": () => json({ dropped: 1 }),
    });
    const user = userEvent.setup();
    renderApp(<OperationsPage />);
    const panel = await screen.findByTestId("snapshots-panel");
    await user.click(await within(panel).findByRole("button", { name: "Drop the snapshots of account-1" }));
    await user.click(within(panel).getByRole("button", { name: "Cancel" }));
    expect(within(panel).queryByRole("group", { name: "Confirm the drop" })).not.toBeInTheDocument();
    expect(api.find("DELETE", "/api/store/snapshots")).toHaveLength(0);
    await user.click(within(panel).getByRole("button", { name: "Drop the snapshots of account-1" }));
    expect(within(panel).getByRole("group", { name: "Confirm the drop" })).toHaveTextContent(
      "Drop the snapshots of stream account-1?",
    );
    await user.click(within(panel).getByRole("button", { name: "Drop them" }));
    expect(await within(panel).findByRole("status")).toHaveTextContent("Dropped 1 snapshot.");
    expect(api.find("DELETE", "/api/store/snapshots")[0]?.query.get("stream")).toBe("account-1");
  });
});
