/**
 * Whether the server answers at all: set by every request (any HTTP answer is an
 * answer, even an error; a failed connection is not). The top bar says "server
 * unreachable, retrying" from this, rather than "polling" over data that no longer
 * refreshes.
 */
import { useSyncExternalStore } from "react";

export interface Reach {
  reachable: boolean;
  /** When the server last answered (ms since the epoch), or null if never. */
  lastAnswer: number | null;
}

const listeners = new Set<() => void>();
let reach: Reach = { reachable: true, lastAnswer: null };

function set(next: Reach): void {
  if (next.reachable === reach.reachable && next.lastAnswer === reach.lastAnswer) return;
  reach = next;
  for (const listener of listeners) listener();
}

export function noteAnswered(now: number = Date.now()): void {
  // Only a change of state is announced: a steady flow of answers re-renders nothing.
  if (!reach.reachable || reach.lastAnswer === null) set({ reachable: true, lastAnswer: now });
  else reach = { reachable: true, lastAnswer: now };
}

export function noteUnreachable(): void {
  if (reach.reachable) set({ reachable: false, lastAnswer: reach.lastAnswer });
}

export function resetReach(): void {
  set({ reachable: true, lastAnswer: null });
}

export function currentReach(): Reach {
  return reach;
}

export function useReach(): Reach {
  return useSyncExternalStore(
    (listener) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    () => reach,
  );
}
