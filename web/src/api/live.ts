/**
 * Live account changes over the API's Server-Sent Events, reconnecting with backoff.
 *
 * Without a token the browser's EventSource reads the stream; with one, fetch does
 * (EventSource cannot send Authorization). Either way a reconnect resumes after the
 * last event id received, so no change is missed; while the stream is down the
 * state goes to "polling", and the caller polls the read models until it is back.
 */
import { buildUrl } from "./client";
import { noteAnswered, noteUnreachable } from "./reach";
import { SseParser } from "./sse";
import type { Account } from "./types";

export type LiveState = "connecting" | "live" | "reconnecting" | "polling" | "unauthorized";

export interface LiveOptions {
  url: string;
  token: string | null;
  onAccount: (account: Account) => void;
  onState: (state: LiveState) => void;
  /**
   * On each open: refetch what may have changed before the stream started (``first``
   * tells the first open of this connection from a reconnect).
   */
  onResync?: (first: boolean) => void;
  /** Failed attempts in a row before falling back to polling. */
  fallbackAfter?: number;
  /** Milliseconds to wait before attempt ``n`` (1-based) of reconnecting. */
  backoff?: (attempt: number) => number;
}

export function defaultBackoff(attempt: number): number {
  return Math.min(15_000, 1000 * 2 ** (attempt - 1));
}

function parseAccount(data: string): Account | null {
  try {
    const value = JSON.parse(data) as Partial<Account>;
    return typeof value.accountId === "string" && typeof value.version === "number"
      ? (value as Account)
      : null;
  } catch {
    return null;
  }
}

/** Connect; returns a function that disconnects for good. */
export function connectLive(options: LiveOptions): () => void {
  const fallbackAfter = options.fallbackAfter ?? 2;
  const backoff = options.backoff ?? defaultBackoff;
  let stopped = false;
  let failures = 0;
  let everOpened = false;
  let lastId: string | null = null;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let teardown: () => void = () => undefined;

  const deliver = (data: string, id: string | null): void => {
    if (id) lastId = id;
    const account = parseAccount(data);
    if (account) options.onAccount(account);
  };

  const opened = (): void => {
    // The stream starts at the head of the log (or resumes after lastId): whatever
    // changed before that, since the read models were fetched, is refetched.
    noteAnswered();
    options.onResync?.(!everOpened);
    everOpened = true;
    failures = 0;
    options.onState("live");
  };

  const retry = (): void => {
    teardown();
    teardown = () => undefined;
    if (stopped) return;
    failures += 1;
    options.onState(failures >= fallbackAfter ? "polling" : "reconnecting");
    timer = setTimeout(open, backoff(failures));
  };

  const openEventSource = (): void => {
    const source = new EventSource(buildUrl(options.url, { lastEventId: lastId }));
    let done = false;
    teardown = () => {
      done = true;
      source.close();
    };
    source.onopen = opened;
    source.addEventListener("account", (event: MessageEvent<string>) => {
      deliver(event.data, event.lastEventId || null);
    });
    // The browser would retry by itself, but without our backoff, resume point or
    // fallback: take over.
    source.onerror = () => {
      if (!done) retry();
    };
  };

  const openFetch = (token: string): void => {
    const controller = new AbortController();
    teardown = () => controller.abort();
    const headers: Record<string, string> = { Accept: "text/event-stream", Authorization: `Bearer ${token}` };
    if (lastId) headers["Last-Event-ID"] = lastId;
    let answered = false;
    void (async () => {
      try {
        const response = await fetch(options.url, { headers, signal: controller.signal, cache: "no-store" });
        answered = true;
        noteAnswered();
        if (response.status === 401 || response.status === 403) {
          // A new token is needed: retrying with this one cannot help.
          teardown = () => undefined;
          options.onState("unauthorized");
          return;
        }
        if (!response.ok || response.body === null) {
          retry();
          return;
        }
        opened();
        const parser = new SseParser();
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          for (const message of parser.push(value)) {
            if (message.event === "account") deliver(message.data, message.id);
          }
        }
        retry(); // the server ended the stream (restart, deploy): come back
      } catch {
        if (controller.signal.aborted) return;
        if (!answered) noteUnreachable(); // no answer at all, not a stream cut short
        retry();
      }
    })();
  };

  function open(): void {
    if (stopped) return;
    if (!everOpened && failures === 0) options.onState("connecting");
    if (options.token) openFetch(options.token);
    else openEventSource();
  }

  open();
  return () => {
    stopped = true;
    clearTimeout(timer);
    teardown();
  };
}
