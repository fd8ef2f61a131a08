import { type ReactNode, useEffect, useRef, useState } from "react";

import { useLive } from "../api/LiveProvider";
import { useAuthRefused } from "../api/auth";
import type { LiveState } from "../api/live";
import { useReach } from "../api/reach";
import { useToken } from "../api/token";
import { formatTime } from "../lib/time";
import { type Route, href } from "../lib/router";
import { TokenPanel } from "./TokenPanel";

const LIVE_TEXT: Record<LiveState, { label: string; title: string }> = {
  connecting: { label: "Connecting…", title: "Opening the live event stream" },
  live: { label: "Live", title: "Changes arrive over Server-Sent Events as they happen" },
  reconnecting: { label: "Reconnecting…", title: "The live stream dropped; reconnecting" },
  polling: {
    label: "Polling",
    title: "The live stream is down: refreshing every 5 seconds until it is back",
  },
  unauthorized: { label: "Token needed", title: "The server refused the live stream: paste a token" },
};

const UNREACHABLE = {
  label: "Server unreachable, retrying",
  title: "The server does not answer: what the page shows is not refreshing; it retries by itself",
};

/** Whether the page shows data it cannot refresh: the stream is down and the server silent. */
function useUnreachable(): boolean {
  const { state } = useLive();
  const { reachable } = useReach();
  return !reachable && state !== "live" && state !== "unauthorized";
}

function LiveIndicator() {
  const { state } = useLive();
  const unreachable = useUnreachable();
  const text = unreachable ? UNREACHABLE : LIVE_TEXT[state];
  return (
    <span
      className={`live live-${unreachable ? "unreachable" : state}`}
      title={text.title}
      data-testid="live-state"
    >
      <span className="live-dot" aria-hidden="true" />
      {text.label}
    </span>
  );
}

function UnreachableBanner() {
  const unreachable = useUnreachable();
  const { lastAnswer } = useReach();
  if (!unreachable) return null;
  return (
    <div className="banner banner-warn" role="status" data-testid="unreachable">
      <p>
        <strong>The server cannot be reached.</strong>{" "}
        {lastAnswer === null
          ? "Nothing could be loaded yet."
          : `What you see is as of ${formatTime(lastAnswer)} and may be out of date.`}{" "}
        Retrying by itself; the page refreshes once the server answers.
      </p>
    </div>
  );
}

function NavLink({ to, current, children }: { to: Route; current: boolean; children: ReactNode }) {
  return (
    <a href={href(to)} className="nav-link" aria-current={current ? "page" : undefined}>
      {children}
    </a>
  );
}

export function Layout({ route, children }: { route: Route; children: ReactNode }) {
  const [tokenOpen, setTokenOpen] = useState(false);
  const token = useToken();
  const refused = useAuthRefused();
  const main = useRef<HTMLElement>(null);
  const tokenButton = useRef<HTMLButtonElement>(null);
  const first = useRef(true);
  const routeKey = route.name === "account" ? `account:${route.id}` : route.name;

  // A new page: move focus to it, so keyboard and screen reader users start there.
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    main.current?.focus();
    window.scrollTo({ top: 0 });
  }, [routeKey]);

  const closeToken = (): void => {
    setTokenOpen(false);
    tokenButton.current?.focus();
  };

  return (
    <div className="app">
      <a className="skip-link" href="#main" onClick={(e) => (e.preventDefault(), main.current?.focus())}>
        Skip to content
      </a>
      <header className="topbar">
        <div className="topbar-inner">
          <a className="brand" href={href({ name: "accounts" })}>
            <span className="brand-mark" aria-hidden="true" />
            <span>
              eventvault <span className="brand-sub">ledger</span>
            </span>
          </a>
          <nav aria-label="Main" className="nav">
            <NavLink
              to={{ name: "accounts" }}
              current={route.name === "accounts" || route.name === "account"}
            >
              Accounts
            </NavLink>
            <NavLink to={{ name: "operations" }} current={route.name === "operations"}>
              Operations
            </NavLink>
          </nav>
          <div className="topbar-tools">
            <LiveIndicator />
            <button
              ref={tokenButton}
              type="button"
              className={`button button-small ${token ? "button-token-set" : ""}`}
              aria-expanded={tokenOpen}
              aria-controls="token-panel"
              onClick={() => setTokenOpen((open) => !open)}
            >
              {token ? "Token ✓" : "Token"}
            </button>
          </div>
        </div>
        {tokenOpen ? (
          <div id="token-panel" className="topbar-panel">
            <TokenPanel onDone={closeToken} />
          </div>
        ) : null}
      </header>
      {refused && !tokenOpen ? (
        <div className="banner" role="alert">
          <p>
            <strong>Authentication required.</strong> This server was started with <code>--tokens</code>:
            paste a bearer token to see and move money.
          </p>
          <button
            type="button"
            className="button button-primary button-small"
            onClick={() => setTokenOpen(true)}
          >
            Enter token
          </button>
        </div>
      ) : null}
      <UnreachableBanner />
      <main id="main" ref={main} tabIndex={-1} className="main">
        {children}
      </main>
      <footer className="footer">
        <span>Every balance here is a replay of an append-only event log.</span>
        <a href="/docs">API reference</a>
      </footer>
    </div>
  );
}
