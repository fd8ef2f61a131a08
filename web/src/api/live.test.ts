import { type LiveState, connectLive } from "./live";
import { FakeEventSource, account } from "../test/fakeApi";

function recorder() {
  const states: LiveState[] = [];
  const accounts: string[] = [];
  const resyncs: number[] = [];
  return {
    states,
    accounts,
    resyncs,
    options: {
      onState: (s: LiveState) => states.push(s),
      onAccount: (a: { currentBalance: string }) => accounts.push(a.currentBalance),
      onResync: () => resyncs.push(1),
      backoff: () => 1000,
    },
  };
}

describe("connectLive over EventSource", () => {
  beforeEach(() => {
    FakeEventSource.install();
    vi.useFakeTimers();
  });
  afterEach(() => vi.useRealTimers());

  it("delivers account events once open and says it is live", () => {
    const r = recorder();
    const close = connectLive({ url: "/api/query/accounts/changes", token: null, ...r.options });
    const source = FakeEventSource.latest();
    expect(source.url).toBe("/api/query/accounts/changes");
    source.open();
    source.emit("account", account({ currentBalance: "43.00" }), "0.22");
    expect(r.states).toEqual(["connecting", "live"]);
    expect(r.accounts).toEqual(["43.00"]);
    close();
    expect(source.readyState).toBe(FakeEventSource.CLOSED);
  });

  it("reconnects after the last event id, falls back to polling, then resyncs once back", () => {
    const r = recorder();
    const close = connectLive({ url: "/changes", token: null, ...r.options });
    FakeEventSource.latest().open();
    FakeEventSource.latest().emit("account", account(), "0.22");
    FakeEventSource.latest().fail();
    expect(r.states.at(-1)).toBe("reconnecting");
    vi.advanceTimersByTime(1000);
    expect(FakeEventSource.instances).toHaveLength(2);
    expect(FakeEventSource.latest().url).toBe("/changes?lastEventId=0.22");
    FakeEventSource.latest().fail();
    expect(r.states.at(-1)).toBe("polling");
    vi.advanceTimersByTime(1000);
    FakeEventSource.latest().open();
    expect(r.states.at(-1)).toBe("live");
    expect(r.resyncs).toHaveLength(2); // the first open, and the return after the gap
    close();
  });

  it("never reconnects once closed", () => {
    const r = recorder();
    const close = connectLive({ url: "/changes", token: null, ...r.options });
    const source = FakeEventSource.latest();
    close();
    source.fail();
    vi.advanceTimersByTime(60_000);
    expect(FakeEventSource.instances).toHaveLength(1);
  });
});

function streamResponse(chunks: string[], status = 200): Response {
  const body = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(new TextEncoder().encode(chunk));
      controller.close();
    },
  });
  return new Response(body, { status, headers: { "content-type": "text/event-stream" } });
}

describe("connectLive with a bearer token (fetch)", () => {
  beforeEach(() => FakeEventSource.install());

  it("sends the token, parses the stream and resumes with Last-Event-ID", async () => {
    const r = recorder();
    const event = `id: 0.31\nevent: account\ndata: ${JSON.stringify(account({ currentBalance: "50.00" }))}\n\n`;
    const fetchMock = vi
      .fn()
      .mockResolvedValueOnce(streamResponse(["retry: 2000\n\n", event.slice(0, 20), event.slice(20)]))
      .mockReturnValue(new Promise(() => undefined));
    vi.stubGlobal("fetch", fetchMock);
    const close = connectLive({
      url: "/changes",
      token: "tok-0123456789abcdef",
      ...r.options,
      backoff: () => 0,
    });
    await vi.waitFor(() => expect(fetchMock).toHaveBeenCalledTimes(2));
    const [firstUrl, first] = fetchMock.mock.calls[0] as [string, RequestInit];
    const [, second] = fetchMock.mock.calls[1] as [string, RequestInit];
    expect(firstUrl).toBe("/changes");
    expect(first.headers).toMatchObject({ Authorization: "Bearer tok-0123456789abcdef" });
    expect(second.headers).toMatchObject({ "Last-Event-ID": "0.31" });
    expect(r.accounts).toEqual(["50.00"]);
    expect(FakeEventSource.instances).toHaveLength(0);
    close();
  });

  it("stops on 401 and says a token is needed instead of retrying", async () => {
    const r = recorder();
    const fetchMock = vi.fn().mockResolvedValue(new Response("", { status: 401 }));
    vi.stubGlobal("fetch", fetchMock);
    vi.useFakeTimers();
    const close = connectLive({
      url: "/changes",
      token: "tok-0123456789abcdef",
      ...r.options,
      backoff: () => 0,
    });
    await vi.waitFor(() => expect(r.states.at(-1)).toBe("unauthorized"));
    vi.runAllTimers(); // a scheduled retry would call fetch again here
    expect(fetchMock).toHaveBeenCalledTimes(1);
    close();
    vi.useRealTimers();
  });
});
