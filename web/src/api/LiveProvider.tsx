import { useQueryClient } from "@tanstack/react-query";
import { type ReactNode, createContext, useContext, useEffect, useRef, useState } from "react";

import { useRoute } from "../lib/router";
import { useAuthRefused } from "./auth";
import { type LiveState, connectLive } from "./live";
import { POLL_MS, PollingContext } from "./polling";
import { invalidateAccount, keys } from "./queries";
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

  useEffect(() => {
    if (refused) {
      setState("unauthorized");
      return undefined;
    }
    const timers = new Set<ReturnType<typeof setTimeout>>();
    const onAccount = (account: Account): void => {
      client.setQueryData<Account>(keys.account(account.accountId), (old) =>
        old === undefined || account.version >= old.version ? account : old,
      );
      void invalidateAccount(client, account.accountId);
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
      onResync: () => void client.invalidateQueries(),
    });
    return () => {
      disconnect();
      for (const timer of timers) clearTimeout(timer);
    };
  }, [client, token, refused, url]);

  return (
    <LiveContext.Provider value={{ state, recent }}>
      <PollingContext.Provider value={state === "polling" ? POLL_MS : false}>
        {children}
        <div className="sr-only" role="status" aria-live="polite" data-testid="live-announcer">
          {announcement}
        </div>
      </PollingContext.Provider>
    </LiveContext.Provider>
  );
}
