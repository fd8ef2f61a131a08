import { useQueryClient } from "@tanstack/react-query";
import { type ReactNode, createContext, useContext, useEffect, useMemo, useRef, useState } from "react";

import { useRoute } from "../lib/router";
import { useAuthRefused } from "./auth";
import { type LiveState, connectLive } from "./live";
import { POLL_MS, ReadsContext, STREAM_GRACE_MS } from "./polling";
import { applyLiveAccount } from "./queries";
import { useToken } from "./token";
import type { Account } from "./types";

export interface Live {
  state: LiveState;
  /** Accounts changed by another client a moment ago (to highlight them). */
  recent: ReadonlySet<string>;
}

const LiveContext = createContext<Live>({ state: "connecting", recent: new Set() });

export function useLive(): Live {
  return useContext(LiveContext);
}

const HIGHLIGHT_MS = 2500;
const LIST_ANNOUNCE_MS = 10_000;

export function LiveProvider({
  children,
  url = "/api/query/accounts/changes",
}: {
  children: ReactNode;
  url?: string;
}) {
  const client = useQueryClient();
  const token = useToken();
  const refused = useAuthRefused();
  const route = useRoute();
  const routeRef = useRef(route);
  routeRef.current = route;
  const [state, setState] = useState<LiveState>("connecting");
  const [recent, setRecent] = useState<ReadonlySet<string>>(new Set());
  const [announcement, setAnnouncement] = useState("");
  const lastListAnnouncement = useRef(0);
  // Reads start once the stream is open (or has failed, or is slow to open); from
  // then on they stay on.
  const [readsOn, setReadsOn] = useState(false);
  const readsOnRef = useRef(false);
  readsOnRef.current = readsOn;

  useEffect(() => {
    if (state !== "connecting") setReadsOn(true);
  }, [state]);

  useEffect(() => {
    const timer = setTimeout(() => setReadsOn(true), STREAM_GRACE_MS);
    return () => clearTimeout(timer);
  }, []);

  useEffect(() => {
    if (refused) {
      setState("unauthorized");
      return undefined;
    }
    const timers = new Set<ReturnType<typeof setTimeout>>();
    const onAccount = (account: Account): void => {
      applyLiveAccount(client, account);
      setRecent((old) => new Set(old).add(account.accountId));
      const timer = setTimeout(() => {
        timers.delete(timer);
        setRecent((old) => {
          const next = new Set(old);
          next.delete(account.accountId);
          return next;
        });
      }, HIGHLIGHT_MS);
      timers.add(timer);
      const current = routeRef.current;
      if (current.name === "account" && current.id === account.accountId) {
        setAnnouncement(`${account.ownerName}: balance now ${account.currentBalance} ${account.currency}.`);
      } else if (
        current.name === "accounts" &&
        Date.now() - lastListAnnouncement.current > LIST_ANNOUNCE_MS
      ) {
        lastListAnnouncement.current = Date.now();
        setAnnouncement("Accounts updated.");
      }
    };
    const disconnect = connectLive({
      url,
      token,
      onAccount,
      onState: setState,
      // Reads made after the stream opened miss nothing; only reads from before (a
      // reconnect, or a stream slow to open the first time) are made again.
      onResync: (first) => {
        if (!first || readsOnRef.current) void client.invalidateQueries();
      },
    });
    return () => {
      disconnect();
      for (const timer of timers) clearTimeout(timer);
    };
  }, [client, token, refused, url]);

  const live = useMemo(() => ({ state, recent }), [state, recent]);
  const polling = state === "polling";
  const reads = useMemo(
    () => ({ poll: polling ? POLL_MS : (false as const), ready: readsOn }),
    [polling, readsOn],
  );
  return (
    <LiveContext.Provider value={live}>
      <ReadsContext.Provider value={reads}>
        {children}
        <div className="sr-only" role="status" aria-live="polite" data-testid="live-announcer">
          {announcement}
        </div>
      </ReadsContext.Provider>
    </LiveContext.Provider>
  );
}
