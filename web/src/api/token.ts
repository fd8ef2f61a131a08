/**
 * The bearer token the user pasted, kept in sessionStorage: it lives as long as the
 * tab and never reaches localStorage or a cookie.
 */
import { useSyncExternalStore } from "react";

const KEY = "eventvault.token";
const listeners = new Set<() => void>();
let memory: string | null = null; // when storage is disabled (private modes, sandboxed frames)

function read(): string | null {
  try {
    return window.sessionStorage.getItem(KEY);
  } catch {
    return memory;
  }
}

export function getToken(): string | null {
  const value = read();
  return value && value.trim() ? value.trim() : null;
}

export function setToken(token: string | null): void {
  const value = token?.trim() || null;
  memory = value;
  try {
    if (value === null) window.sessionStorage.removeItem(KEY);
    else window.sessionStorage.setItem(KEY, value);
  } catch {
    // Storage refused: the in-memory copy serves until the tab closes.
  }
  for (const listener of listeners) listener();
}

export function subscribeToken(listener: () => void): () => void {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

export function useToken(): string | null {
  return useSyncExternalStore(subscribeToken, getToken);
}
