/** A scripted API for component tests: fetch is replaced, every call is recorded. */
import { vi } from "vitest";

import type { Account, ProjectionStatus, Transaction } from "../api/types";

export interface Call {
  method: string;
  path: string;
  query: URLSearchParams;
  body: unknown;
  headers: Headers;
}

export type Handler = (call: Call) => Response | Promise<Response>;

export function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

export function problem(
  status: number,
  code: string,
  title: string,
  detail: string,
  extra: object = {},
): Response {
  return new Response(
    JSON.stringify({ type: `https://eventvault.dev/problems/${code}`, title, status, detail, ...extra }),
    { status, headers: { "content-type": "application/problem+json" } },
  );
}

/**
 * Routes like "GET /api/query/accounts/:id"; unmatched calls answer 599 so a test
 * that forgot a route fails loudly instead of hanging.
 */
export function fakeApi(routes: Record<string, Handler>) {
  const calls: Call[] = [];
  const compiled = Object.entries(routes).map(([route, handler]) => {
    const [method, pattern = ""] = route.split(" ");
    const regex = new RegExp(`^${pattern.replace(/:[a-zA-Z]+/g, "[^/]+")}$`);
    return { method, regex, handler };
  });
  const fetchMock = vi.fn(async (input: RequestInfo | URL, init: RequestInit = {}) => {
    const url = new URL(String(input), "http://dashboard.test");
    const call: Call = {
      method: (init.method ?? "GET").toUpperCase(),
      path: url.pathname,
      query: url.searchParams,
      body: typeof init.body === "string" ? JSON.parse(init.body) : undefined,
      headers: new Headers(init.headers),
    };
    calls.push(call);
    const route = compiled.find((r) => r.method === call.method && r.regex.test(call.path));
    if (!route) return problem(599, "unrouted", "No route in the test", `${call.method} ${call.path}`);
    return route.handler(call);
  });
  vi.stubGlobal("fetch", fetchMock);
  return {
    calls,
    fetchMock,
    find: (method: string, path: string | RegExp) =>
      calls.filter(
        (c) => c.method === method && (typeof path === "string" ? c.path === path : path.test(c.path)),
      ),
  };
}

/** A stand-in for the browser's EventSource, driven by the test. */
export class FakeEventSource {
  static instances: FakeEventSource[] = [];
  static readonly CONNECTING = 0;
  static readonly OPEN = 1;
  static readonly CLOSED = 2;

  readonly url: string;
  readyState = FakeEventSource.CONNECTING;
  onopen: ((event: Event) => void) | null = null;
  onerror: ((event: Event) => void) | null = null;
  private listeners = new Map<string, ((event: MessageEvent<string>) => void)[]>();

  /** Whether a new source opens by itself (as a reachable server's stream does). */
  static autoOpen = true;

  constructor(url: string) {
    this.url = url;
    FakeEventSource.instances.push(this);
    if (FakeEventSource.autoOpen) {
      queueMicrotask(() => {
        if (this.readyState === FakeEventSource.CONNECTING) this.open();
      });
    }
  }

  static latest(): FakeEventSource {
    const last = FakeEventSource.instances.at(-1);
    if (!last) throw new Error("no EventSource was opened");
    return last;
  }

  static install({ autoOpen = true }: { autoOpen?: boolean } = {}): void {
    FakeEventSource.instances = [];
    FakeEventSource.autoOpen = autoOpen;
    vi.stubGlobal("EventSource", FakeEventSource);
  }

  addEventListener(type: string, listener: (event: MessageEvent<string>) => void): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }

  close(): void {
    this.readyState = FakeEventSource.CLOSED;
  }

  open(): void {
    if (this.readyState === FakeEventSource.OPEN) return;
    this.readyState = FakeEventSource.OPEN;
    this.onopen?.(new Event("open"));
  }

  fail(): void {
    this.readyState = FakeEventSource.CONNECTING;
    this.onerror?.(new Event("error"));
  }

  emit(type: string, data: unknown, id: string): void {
    const event = new MessageEvent(type, { data: JSON.stringify(data), lastEventId: id });
    for (const listener of this.listeners.get(type) ?? []) listener(event);
  }
}

export const ACCOUNT_ID = "01a2185b-1d9c-728b-a2f4-23aac0dcf6f8";

export function account(overrides: Partial<Account> = {}): Account {
  return {
    accountId: ACCOUNT_ID,
    ownerName: "Alan Turing",
    currentBalance: "42.00",
    currency: "EUR",
    transactionCount: 1,
    lastTransactionDate: "2026-01-02T10:00:00Z",
    status: "open",
    version: 2,
    openedAt: "2026-01-01T09:00:00Z",
    ...overrides,
  };
}

export function transaction(overrides: Partial<Transaction> = {}): Transaction {
  return {
    version: 2,
    kind: "deposit",
    amount: "42.00",
    balanceAfter: "42.00",
    description: "salary",
    recordedAt: "2026-01-02T10:00:00Z",
    eventId: `event-${overrides.version ?? 2}`,
    position: 11,
    ...overrides,
  };
}

export function projection(overrides: Partial<ProjectionStatus> = {}): ProjectionStatus {
  return {
    name: "accounts",
    state: "live",
    generation: 1,
    version: 1,
    checkpoint: "0.21",
    head: "0.24",
    lagEvents: 3,
    lagSeconds: 0.25,
    eventsPerSecond: 120.5,
    applied: 21,
    partitions: 1,
    ownedPartitions: [0],
    lastError: null,
    rebuild: null,
    paused: false,
    ...overrides,
  };
}
