/**
 * Hash routes (#/accounts/<id>): the API serves one index.html at "/", so deep links
 * and reloads work without server-side routing.
 */
import { useSyncExternalStore } from "react";

export type Route =
  /** ``query``: the list's filters, as the hash carries them ("currency=EUR&order=desc"). */
  | { name: "accounts"; query?: string }
  | { name: "account"; id: string }
  | { name: "operations" }
  | { name: "not-found"; path: string };

export function parseRoute(hash: string): Route {
  const [rawPath = "", query = ""] = hash.replace(/^#/, "").split("?", 2);
  const path = rawPath.replace(/\/+$/, "") || "/";
  if (path === "/" || path === "/accounts") return query ? { name: "accounts", query } : { name: "accounts" };
  if (path === "/operations") return { name: "operations" };
  const match = /^\/accounts\/([^/]+)$/.exec(path);
  if (match?.[1]) return { name: "account", id: decodeURIComponent(match[1]) };
  return { name: "not-found", path };
}

export function href(route: Route): string {
  switch (route.name) {
    case "accounts":
      return route.query ? `#/?${route.query}` : "#/";
    case "account":
      return `#/accounts/${encodeURIComponent(route.id)}`;
    case "operations":
      return "#/operations";
    case "not-found":
      return `#${route.path}`;
  }
}

let lastListQuery = "";

/** The list's filters last shown, so "All accounts" goes back to the same list. */
export function rememberListQuery(query: string): void {
  lastListQuery = query;
}

export function listRoute(): Route {
  return lastListQuery ? { name: "accounts", query: lastListQuery } : { name: "accounts" };
}

export function navigate(route: Route): void {
  window.location.hash = href(route);
}

function subscribe(onChange: () => void): () => void {
  window.addEventListener("hashchange", onChange);
  return () => window.removeEventListener("hashchange", onChange);
}

export function useHash(): string {
  return useSyncExternalStore(subscribe, () => window.location.hash);
}

export function useRoute(): Route {
  return parseRoute(useHash());
}
