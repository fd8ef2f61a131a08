import { MutationCache, QueryCache, QueryClient } from "@tanstack/react-query";

import { reportError } from "./auth";
import { ApiError } from "./client";

/** Retry what may pass on a second try (network, 5xx, 503 not-consistent-yet); never a refusal. */
export function shouldRetry(failures: number, error: unknown): boolean {
  if (!(error instanceof ApiError)) return false;
  return (error.status === 0 || error.status >= 500) && failures < 3;
}

export function createQueryClient(): QueryClient {
  return new QueryClient({
    queryCache: new QueryCache({ onError: reportError }),
    mutationCache: new MutationCache({ onError: reportError }),
    defaultOptions: {
      queries: {
        staleTime: 10_000, // live changes invalidate; no need to refetch on every mount
        retry: shouldRetry,
        retryDelay: (attempt) => Math.min(4000, 500 * 2 ** attempt),
      },
      mutations: { retry: false },
    },
  });
}
