/**
 * Server state through TanStack Query: one hook per read, one per command.
 *
 * Commands remember their position (noteWrite) before invalidating, so the refetch
 * carries consistentWith and shows the write at once; live changes from the SSE
 * stream invalidate the same keys (see LiveProvider).
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
import { PollingContext } from "./polling";
import type { AccountFilters, CommandResult, Transaction } from "./types";

export const keys = {
  accountLists: ["accounts"] as const,
  accounts: (filters: AccountFilters) => ["accounts", filters] as const,
  account: (id: string) => ["account", id] as const,
  transactions: (id: string) => ["transactions", id] as const,
  series: (id: string) => ["series", id] as const,
  events: (id: string) => ["events", id] as const,
  state: (id: string, version: number) => ["state", id, version] as const,
  totals: ["totals"] as const,
  projections: ["projections"] as const,
};

/** Everything a change to account ``id`` may have made stale. */
export function invalidateAccount(client: QueryClient, id: string): Promise<unknown> {
  return Promise.all([
    client.invalidateQueries({ queryKey: keys.account(id) }),
    client.invalidateQueries({ queryKey: keys.transactions(id) }),
    client.invalidateQueries({ queryKey: keys.series(id) }),
    client.invalidateQueries({ queryKey: keys.events(id) }),
    client.invalidateQueries({ queryKey: keys.accountLists }),
    client.invalidateQueries({ queryKey: keys.totals }),
  ]);
}

function usePolling(): number | false {
  return useContext(PollingContext);
}

export function useAccounts(filters: AccountFilters) {
  return useInfiniteQuery({
    queryKey: keys.accounts(filters),
    queryFn: ({ pageParam, signal }) => api.listAccounts(filters, pageParam, signal),
    initialPageParam: null as string | null,
    getNextPageParam: (page) => page.nextCursor,
    placeholderData: keepPreviousData,
    refetchInterval: usePolling(),
  });
}

export function useAccount(id: string) {
  return useQuery({
    queryKey: keys.account(id),
    queryFn: ({ signal }) => api.account(id, signal),
    refetchInterval: usePolling(),
  });
}

export function useTransactions(id: string) {
  return useInfiniteQuery({
    queryKey: keys.transactions(id),
    queryFn: ({ pageParam, signal }) => api.transactions(id, { order: "desc", cursor: pageParam }, signal),
    initialPageParam: null as string | null,
    getNextPageParam: (page) => page.nextCursor,
    refetchInterval: usePolling(),
  });
}

/** The chart's points: the oldest transactions first, at most ``SERIES_LIMIT`` of them. */
export const SERIES_LIMIT = 2000;

export function useBalanceSeries(id: string) {
  return useQuery({
    queryKey: keys.series(id),
    queryFn: async ({ signal }) => {
      const items: Transaction[] = [];
      let cursor: string | null = null;
      do {
        const page = await api.transactions(id, { order: "asc", cursor, limit: 500 }, signal);
        items.push(...page.items);
        cursor = page.nextCursor;
      } while (cursor !== null && items.length < SERIES_LIMIT);
      return { items, truncated: cursor !== null };
    },
    refetchInterval: usePolling(),
  });
}

export function useEvents(id: string) {
  return useInfiniteQuery({
    queryKey: keys.events(id),
    queryFn: ({ pageParam, signal }) => api.events(id, pageParam, signal),
    initialPageParam: null as string | null,
    getNextPageParam: (page) => page.nextCursor,
    refetchInterval: usePolling(),
  });
}

export function useStateAt(id: string, version: number | null) {
  return useQuery({
    queryKey: keys.state(id, version ?? 0),
    queryFn: ({ signal }) => api.stateAt(id, version ?? 1, signal),
    enabled: version !== null,
    placeholderData: keepPreviousData,
    staleTime: Number.POSITIVE_INFINITY, // the past does not change
  });
}

export function useTotals() {
  return useQuery({
    queryKey: keys.totals,
    queryFn: ({ signal }) => api.totals(signal),
    refetchInterval: usePolling(),
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
      // Awaited: the form stays busy until the page shows the write.
      await invalidateAccount(client, result.accountId);
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

export function useRebuild() {
  const client = useQueryClient();
  return useMutation({
    mutationFn: (name: string) => api.rebuild(name),
    onSuccess: () => client.invalidateQueries({ queryKey: keys.projections }),
  });
}
