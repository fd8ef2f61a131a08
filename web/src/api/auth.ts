/**
 * Whether the server turned us away for want of a (valid) token. Set from any 401;
 * cleared when the user saves another token. While set, the live stream stays shut
 * (it would only be refused again).
 */
import { useSyncExternalStore } from "react";

import { ApiError } from "./client";

const listeners = new Set<() => void>();
let refused = false;

function emit(): void {
  for (const listener of listeners) listener();
}

export function reportError(error: unknown): void {
  if (error instanceof ApiError && error.status === 401 && !refused) {
    refused = true;
    emit();
  }
}

export function clearAuthRefusal(): void {
  if (refused) {
    refused = false;
    emit();
  }
}

export function isAuthRefused(): boolean {
  return refused;
}

export function useAuthRefused(): boolean {
  return useSyncExternalStore(
    (listener) => {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    () => refused,
  );
}
