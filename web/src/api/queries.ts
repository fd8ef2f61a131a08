/**
 * Server state through TanStack Query: one hook per read, one per command.
 *
 * Commands remember their position (noteWrite) before refreshing, so the refetch
 * carries consistentWith and shows the write at once. A write is refreshed once:
 * the command and the live event of the same write (see LiveProvider) share one
 * round of refetches, and a live event refreshes only what it touched.
 */
import {
  type QueryClient,
  keepPreviousData,
  useInfiniteQuery,
  useMutation,
  useQuery,
  useQueryClient,
} from "@tanstack/react-query";
import { useContext } from "react";

import { api, noteWrite } from "./client";
import { ReadsContext } from "./polling";
import type {
  Account,
  AccountFilters,
  AccountState,
  CommandResult,
  Transaction,
  TransferView,
} from "./types";

export const keys = {
  accountLists: ["accounts"] as const,
  accounts: (filters: AccountFilters) => ["accounts", filters] as const,
  account: (id: string) => ["account", id] as const,
  transactions: (id: string) => ["transactions", id] as const,
  series: (id: string) => ["series", id] as const,
  events: (id: string) => ["events", id] as const,
  state: (id: string, version: number) => ["state", id, version] as const,
  stateAsOf: (id: string, asOf: string) => ["state-as-of", id, asOf] as const,
  totals: ["totals"] as const,
  projections: ["projections"] as const,
  store: ["store"] as const,
  snapshots: (type: string | null) => ["snapshots", type] as const,
};

/** The chart's points: the oldest transactions first, at most ``SERIES_LIMIT`` of them. */
export const SERIES_LIMIT = 2000;

export interface Series {
  items: Transaction[];
  /** More transactions exist than the chart holds. */
  truncated: boolean;
}

// Per query client: the highest version of each account a refresh round has started for.
const refreshedUpTo = new WeakMap<QueryClient, Map<string, number>>();

function refreshed(client: QueryClient): Map<string, number> {
  let versions = refreshedUpTo.get(client);
  if (versions === undefined) {
    versions = new Map();
    refreshedUpTo.set(client, versions);
  }
  return versions;
}

function observed(client: QueryClient, key: readonly unknown[]): boolean {
  return (client.getQueryCache().find({ queryKey: key, exact: true })?.getObserversCount() ?? 0) > 0;
}

/**
 * Add the transactions after the chart's last point up to ``version``, instead of
 * reading the whole series again; a series nobody shows is only marked stale.
 */
async function extendSeries(client: QueryClient, id: string, version: number): Promise<unknown> {
  const key = keys.series(id);
  const cached = client.getQueryData<Series>(key);
  const last = cached?.items.at(-1)?.version ?? 1;
  const missing = version - last;
  if (cached === undefined || cached.truncated || !observed(client, key) || missing > 500) {
    return client.invalidateQueries({ queryKey: key });
  }
  if (missing <= 0) return undefined;
  try {
    const page = await api.transactions(id, { order: "desc", limit: missing });
    client.setQueryData<Series>(key, (old) => {
      if (old === undefined) return old;
      const tail = old.items.at(-1)?.version ?? 1;
      const added = page.items.filter((t) => t.version > tail).reverse();
      const items = [...old.items, ...added];
      return items.length > SERIES_LIMIT
        ? { items: items.slice(0, SERIES_LIMIT), truncated: true }
        : { items, truncated: old.truncated };
    });
    return undefined;
  } catch {
    return client.invalidateQueries({ queryKey: key });
  }
}

export interface Change {
  /** The account's summary after the change, when known (a live event carries it). */
  account?: Account;
  /** The summary the page had before, to tell which parts changed. */
  previous?: Account | undefined;
}

/**
 * Refresh what a change of account ``id`` up to ``version`` made stale, once per
 * version: null when a round for this version (or a later one) already started.
 */
export function refreshAccount(
  client: QueryClient,
  id: string,
  version: number,
  change: Change = {},
): Promise<unknown> | null {
  const versions = refreshed(client);
  if ((versions.get(id) ?? 0) >= version) return null;
  versions.set(id, version);
  const { account, previous } = change;
  const rounds: Promise<unknown>[] = [];
  if (account === undefined) rounds.push(client.invalidateQueries({ queryKey: keys.account(id) }));
  // A change that moved no money (closing) leaves the history and the chart as they are.
  const moved =
    account === undefined || previous === undefined || account.transactionCount !== previous.transactionCount;
  if (moved) {
    rounds.push(client.invalidateQueries({ queryKey: keys.transactions(id) }));
    rounds.push(extendSeries(client, id, version));
  }
  rounds.push(client.invalidateQueries({ queryKey: keys.events(id) }));
  rounds.push(client.invalidateQueries({ queryKey: keys.accountLists }));
  rounds.push(client.invalidateQueries({ queryKey: keys.totals }));
  return Promise.all(rounds);
}

/** A live event: the summary goes straight into the cache, then what it touched is refreshed. */
export function applyLiveAccount(client: QueryClient, account: Account): void {
  const key = keys.account(account.accountId);
  const previous = client.getQueryData<Account>(key);
  client.setQueryData<Account>(key, (old) =>
    old === undefined || account.version >= old.version ? account : old,
  );
  void refreshAccount(client, account.accountId, account.version, { account, previous });
}

function useReads() {
  return useContext(ReadsContext);
}

export function useAccounts(filters: AccountFilters) {
  const { poll, ready } = useReads();
  return useInfiniteQuery({
    queryKey: keys.accounts(filters),
    queryFn: ({ pageParam, signal }) => api.listAccounts(filters, pageParam, signal),
    initialPageParam: null as string | null,
    getNextPageParam: (page) => page.nextCursor,
    placeholderData: keepPreviousData,
    refetchInterval: poll,
    enabled: ready,
  });
}

export function useAccount(id: string) {
  const { poll, ready } = useReads();
  return useQuery({
    queryKey: keys.account(id),
    queryFn: ({ signal }) => api.account(id, signal),
    refetchInterval: poll,
    enabled: ready,
  });
}

export function useTransactions(id: string) {
  const { poll, ready } = useReads();
  return useInfiniteQuery({
    queryKey: keys.transactions(id),
    queryFn: ({ pageParam, signal }) => api.transactions(id, { order: "desc", cursor: pageParam }, signal),
    initialPageParam: null as string | null,
    getNextPageParam: (page) => page.nextCursor,
    refetchInterval: poll,
    enabled: ready,
  });
}

/** Every transaction of the account, oldest first, page by page (the CSV export). */
export async function allTransactions(id: string): Promise<Transaction[]> {
  const items: Transaction[] = [];
  let cursor: string | null = null;
  do {
    const page = await api.transactions(id, { order: "asc", cursor, limit: 500 });
    items.push(...page.items);
    cursor = page.nextCursor;
  } while (cursor !== null);
  return items;
}

/**
 * The chart's series. ``enabled`` is false until the account is known: a missing
 * account is then asked for once, not once per panel.
 */
export function useBalanceSeries(id: string, enabled: boolean) {
  const { poll, ready } = useReads();
  return useQuery({
    queryKey: keys.series(id),
    queryFn: async ({ signal }): Promise<Series> => {
      const items: Transaction[] = [];
      let cursor: string | null = null;
      do {
        const page = await api.transactions(id, { order: "asc", cursor, limit: 500 }, signal);
        items.push(...page.items);
        cursor = page.nextCursor;
      } while (cursor !== null && items.length < SERIES_LIMIT);
      return {
        items: items.slice(0, SERIES_LIMIT),
        truncated: cursor !== null || items.length > SERIES_LIMIT,
      };
    },
    refetchInterval: poll,
    enabled: ready && enabled,
  });
}

/** The account's events as stored, newest first. */
export function useEvents(id: string) {
  const { poll, ready } = useReads();
  return useInfiniteQuery({
    queryKey: keys.events(id),
    queryFn: ({ pageParam, signal }) => api.events(id, pageParam, signal),
    initialPageParam: null as string | null,
    getNextPageParam: (page) => page.nextCursor,
    refetchInterval: poll,
    enabled: ready,
  });
}

export function useStateAt(id: string, version: number | null) {
  return useQuery({
    queryKey: keys.state(id, version ?? 0),
    queryFn: ({ signal }) => api.stateAt(id, { version: version ?? 1 }, signal),
    enabled: version !== null,
    placeholderData: keepPreviousData,
    staleTime: Number.POSITIVE_INFINITY, // the past does not change
  });
}

/** The account as it was at a moment (ISO 8601 with an offset); null asks nothing. */
export function useStateAsOf(id: string, asOf: string | null) {
  const client = useQueryClient();
  return useQuery({
    queryKey: keys.stateAsOf(id, asOf ?? ""),
    queryFn: async ({ signal }): Promise<AccountState> => {
      const state = await api.stateAt(id, { asOf: asOf ?? "" }, signal);
      // The same state by its version: the slider, moved there, asks nothing more.
      client.setQueryData(keys.state(id, state.version), state);
      return state;
    },
    enabled: asOf !== null,
    staleTime: Number.POSITIVE_INFINITY,
  });
}

export function useTotals() {
  const { poll, ready } = useReads();
  return useQuery({
    queryKey: keys.totals,
    queryFn: ({ signal }) => api.totals(signal),
    refetchInterval: poll,
    enabled: ready,
  });
}

export function useProjections() {
  return useQuery({
    queryKey: keys.projections,
    queryFn: ({ signal }) => api.projections(signal),
    // Projection status has no stream of its own: lag and rate are sampled.
    refetchInterval: (query) =>
      query.state.data?.items.some((p) => p.rebuild?.state === "running") ? 500 : 2000,
  });
}

function useCommand<V>(run: (variables: V) => Promise<CommandResult>) {
  const client = useQueryClient();
  return useMutation({
    mutationFn: run,
    onSuccess: async (result) => {
      noteWrite(result.position);
      // Awaited: the form stays busy until the page shows the write (unless the live
      // event of this write came first and is refreshing it already).
      await refreshAccount(client, result.accountId, result.version);
    },
  });
}

export function useOpenAccount() {
  return useCommand((v: { ownerName: string; currency: string; key: string }) =>
    api.openAccount({ ownerName: v.ownerName, currency: v.currency }, v.key),
  );
}

export type MoveKind = "deposit" | "withdraw";

export function useMoveMoney(id: string, kind: MoveKind) {
  return useCommand((v: { amount: string; description: string; key: string }) =>
    (kind === "deposit" ? api.deposit : api.withdraw)(
      id,
      { amount: v.amount, description: v.description },
      v.key,
    ),
  );
}

export function useCloseAccount(id: string) {
  return useCommand((v: { key: string }) => api.close(id, v.key));
}

/** Request a transfer; the answer names it (it runs in the background: follow it with useTransfer). */
export function useRequestTransfer(sourceAccountId: string) {
  return useMutation({
    mutationFn: (v: { targetAccountId: string; amount: string; description: string; key: string }) =>
      api.transfer(
        { sourceAccountId, targetAccountId: v.targetAccountId, amount: v.amount, description: v.description },
        v.key,
      ),
    onSuccess: (result) => noteWrite(result.position),
  });
}

const ENDED = new Set(["completed", "failed"]);

/** A transfer's progress, read again until it has ended; then both accounts are refreshed. */
export function useTransfer(id: string | null) {
  const client = useQueryClient();
  return useQuery({
    queryKey: ["transfer", id] as const,
    enabled: id !== null,
    queryFn: async ({ signal }): Promise<TransferView> => {
      const transfer = await api.getTransfer(id ?? "", signal);
      if (ENDED.has(transfer.state)) {
        for (const account of [transfer.sourceAccountId, transfer.targetAccountId]) {
          void client.invalidateQueries({ queryKey: keys.account(account) });
          void client.invalidateQueries({ queryKey: keys.transactions(account) });
        }
      }
      return transfer;
    },
    refetchInterval: (query) => (query.state.data && ENDED.has(query.state.data.state) ? false : 300),
  });
}

export function useRebuild() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (name: string) => api.rebuild(name),
    onSuccess: () => client.invalidateQueries({ queryKey: keys.projections }),
  });
}

/** Pause, resume or reset a projection (admin scope); the status is read again after. */
export function useProjectionControl() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (
      v: { name: string; action: "pause" | "resume" } | { name: string; action: "reset"; to: string },
    ) => (v.action === "reset" ? api.reset(v.name, v.to) : api[v.action](v.name)),
    onSuccess: () => client.invalidateQueries({ queryKey: keys.projections }),
  });
}

/** What `eventvault db status` shows (admin scope): sampled, as the projections are. */
export function useStoreStatus() {
  return useQuery({
    queryKey: keys.store,
    queryFn: ({ signal }) => api.store(signal),
    refetchInterval: (query) => (query.state.error ? false : 5000),
  });
}

/** The stored snapshots, all or one aggregate type's (admin scope). */
export function useSnapshots(type: string | null) {
  return useQuery({
    queryKey: keys.snapshots(type),
    queryFn: ({ signal }) => api.snapshots(type, signal),
    placeholderData: keepPreviousData,
  });
}

export function useDropSnapshots() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (which: { type?: string; stream?: string }) => api.dropSnapshots(which),
    onSuccess: () => client.invalidateQueries({ queryKey: ["snapshots"] }),
  });
}
