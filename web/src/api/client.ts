/**
 * The HTTP client: every request of the dashboard goes through ``request``.
 *
 * Errors come back as ApiError, built from the API's problem documents (RFC 9457);
 * a command's position is remembered and sent as consistentWith on later reads, so
 * the user always sees their own writes (read-your-writes).
 */
import { noteAnswered, noteUnreachable } from "./reach";
import { getToken } from "./token";
import type {
  Account,
  AccountFilters,
  AccountState,
  Answer,
  Body,
  CatchingUp,
  CommandResult,
  CurrencyTotal,
  Page,
  ProjectionStatus,
  RebuildProgress,
  SnapshotList,
  StoredEvent,
  StoreStatus,
  Transaction,
  TransferAccepted,
  TransferView,
} from "./types";

export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  [extra: string]: unknown;
}

export class ApiError extends Error {
  readonly status: number;
  /** The problem type's last segment ("insufficient-funds"), or "network" / "http-error". */
  readonly code: string;
  readonly title: string;
  readonly detail: string;
  readonly problem: Problem | null;

  constructor(status: number, code: string, title: string, detail: string, problem: Problem | null = null) {
    super(detail ? `${title}: ${detail}` : title);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.title = title;
    this.detail = detail;
    this.problem = problem;
  }
}

type Query = Record<string, string | number | null | undefined>;

export interface RequestOptions {
  query?: Query;
  body?: unknown;
  headers?: Record<string, string>;
  signal?: AbortSignal | undefined;
  /** Called with the headers of a successful answer, before its body is read. */
  onHeaders?: (headers: Headers) => void;
}

export function buildUrl(path: string, query: Query = {}): string {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query)) {
    if (value !== null && value !== undefined && value !== "") params.set(name, String(value));
  }
  const search = params.toString();
  return search ? `${path}?${search}` : path;
}

export function authHeaders(): Record<string, string> {
  const token = getToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function problemOf(response: Response): Promise<ApiError> {
  const type = response.headers.get("content-type") ?? "";
  let text = "";
  try {
    text = await response.text();
  } catch {
    // The body is gone with the connection: the status line is all there is.
  }
  if (type.includes("json")) {
    try {
      const problem = JSON.parse(text) as Problem;
      const code = (problem.type ?? "").split("/").filter(Boolean).pop() ?? "http-error";
      return new ApiError(
        response.status,
        code,
        problem.title ?? (response.statusText || "Request failed"),
        problem.detail ?? "",
        problem,
      );
    } catch {
      // Not JSON after all: fall through to the plain-text error.
    }
  }
  return new ApiError(
    response.status,
    "http-error",
    response.statusText || `HTTP ${response.status}`,
    text.slice(0, 200).trim(),
  );
}

export async function request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
  const headers: Record<string, string> = {
    Accept: "application/json",
    ...authHeaders(),
    ...options.headers,
  };
  const init: RequestInit = { method, headers };
  if (options.body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  if (options.signal) init.signal = options.signal;
  let response: Response;
  try {
    response = await fetch(buildUrl(path, options.query), init);
  } catch (error) {
    if (error instanceof DOMException && error.name === "AbortError") throw error;
    noteUnreachable();
    throw new ApiError(0, "network", "Cannot reach the server", "check that `eventvault serve` is running");
  }
  // A proxy's "bad gateway" or "gateway timeout" means the server behind it is not answering.
  if (response.status === 502 || response.status === 504) noteUnreachable();
  else noteAnswered();
  if (!response.ok) throw await problemOf(response);
  options.onHeaders?.(response.headers);
  if (response.status === 204) return undefined as T;
  return (await response.json()) as T;
}

// -- read-your-writes -----------------------------------------------------------------

let lastWrite: number | null = null;

/** Remember a command's position: reads of the read models wait until they have it. */
export function noteWrite(position: number): void {
  lastWrite = lastWrite === null ? position : Math.max(lastWrite, position);
}

export function consistencyToken(): number | null {
  return lastWrite;
}

export function forgetWrites(): void {
  lastWrite = null;
}

/** Where a read of one account came from, when the read model trailed its stream; else null. */
export function catchingUpOf(headers: Headers): CatchingUp | null {
  const source = headers.get("X-Read-Source");
  if (source === null || source === "read-model") return null;
  return {
    source,
    accountVersion: Number(headers.get("X-Account-Version") ?? 0),
    readModelVersion: Number(headers.get("X-Read-Model-Version") ?? 0),
  };
}

// -- the endpoints ----------------------------------------------------------------------

const ACCOUNTS = "/api/query/accounts";
const COMMANDS = "/api/command/accounts";

/** The currency is any text here: the server answers a code it does not know with a clear 422. */
type OpenAccountBody = Omit<Body<"/api/command/accounts", "post">, "currency"> & { currency: string };
type MoneyBody<K extends "deposit" | "withdraw"> = Body<`/api/command/accounts/{account_id}/${K}`, "post">;

function account(id: string): string {
  return `${ACCOUNTS}/${encodeURIComponent(id)}`;
}

function command(id: string, action: string): string {
  return `${COMMANDS}/${encodeURIComponent(id)}/${action}`;
}

function keyed(key: string | undefined): Record<string, string> {
  return key ? { "Idempotency-Key": key } : {};
}

export const api = {
  listAccounts(filters: AccountFilters, cursor: string | null, signal?: AbortSignal): Promise<Page<Account>> {
    return request<Answer<"/api/query/accounts", "get">>("GET", ACCOUNTS, {
      query: {
        minBalance: filters.minBalance,
        maxBalance: filters.maxBalance,
        currency: filters.currency,
        search: filters.search.trim(),
        order: filters.order === "desc" ? "desc" : undefined,
        limit: 25,
        cursor,
        consistentWith: consistencyToken(),
      },
      signal,
    });
  },
  async account(id: string, signal?: AbortSignal): Promise<Account> {
    let catchingUp: CatchingUp | null = null;
    const found: Account = await request<Answer<"/api/query/accounts/{account_id}", "get">>(
      "GET",
      account(id),
      {
        query: { consistentWith: consistencyToken() },
        signal,
        onHeaders: (headers) => {
          catchingUp = catchingUpOf(headers);
        },
      },
    );
    return catchingUp ? { ...found, catchingUp } : found;
  },
  transactions(
    id: string,
    options: { order: "asc" | "desc"; cursor?: string | null; limit?: number },
    signal?: AbortSignal,
  ): Promise<Page<Transaction>> {
    return request<Answer<"/api/query/accounts/{account_id}/transactions", "get">>(
      "GET",
      `${account(id)}/transactions`,
      {
        query: {
          order: options.order,
          cursor: options.cursor,
          limit: options.limit ?? 25,
          consistentWith: consistencyToken(),
        },
        signal,
      },
    );
  },
  // The audit log and time travel read the event log itself: no read model to wait for.
  events(id: string, cursor: string | null, signal?: AbortSignal): Promise<Page<StoredEvent>> {
    return request<Answer<"/api/query/accounts/{account_id}/events", "get">>("GET", `${account(id)}/events`, {
      query: { order: "desc", limit: 20, cursor },
      signal,
    });
  },
  /** The account replayed to a version, or to a moment (ISO 8601 with an offset). */
  stateAt(
    id: string,
    at: { version: number } | { asOf: string },
    signal?: AbortSignal,
  ): Promise<AccountState> {
    return request<Answer<"/api/query/accounts/{account_id}/state", "get">>("GET", `${account(id)}/state`, {
      query: { ...at },
      signal,
    });
  },
  totals(signal?: AbortSignal): Promise<{ items: CurrencyTotal[] }> {
    return request<Answer<"/api/query/totals", "get">>("GET", "/api/query/totals", {
      query: { consistentWith: consistencyToken() },
      signal,
    });
  },
  projections(signal?: AbortSignal): Promise<{ items: ProjectionStatus[] }> {
    return request<Answer<"/api/projections", "get">>("GET", "/api/projections", { signal });
  },
  openAccount(body: OpenAccountBody, key?: string): Promise<CommandResult> {
    return request<Answer<"/api/command/accounts", "post">>("POST", COMMANDS, { body, headers: keyed(key) });
  },
  deposit(id: string, body: MoneyBody<"deposit">, key?: string): Promise<CommandResult> {
    return request<Answer<"/api/command/accounts/{account_id}/deposit", "post">>(
      "POST",
      command(id, "deposit"),
      { body, headers: keyed(key) },
    );
  },
  withdraw(id: string, body: MoneyBody<"withdraw">, key?: string): Promise<CommandResult> {
    return request<Answer<"/api/command/accounts/{account_id}/withdraw", "post">>(
      "POST",
      command(id, "withdraw"),
      { body, headers: keyed(key) },
    );
  },
  close(id: string, key?: string): Promise<CommandResult> {
    return request<Answer<"/api/command/accounts/{account_id}/close", "post">>("POST", command(id, "close"), {
      headers: keyed(key),
    });
  },
  transfer(
    body: { sourceAccountId: string; targetAccountId: string; amount: string; description: string },
    key?: string,
  ): Promise<TransferAccepted> {
    return request<TransferAccepted>("POST", "/api/command/transfers", { body, headers: keyed(key) });
  },
  // A transfer is read from its stream: never stale, nothing to wait for.
  getTransfer(id: string, signal?: AbortSignal): Promise<TransferView> {
    return request<Answer<"/api/query/transfers/{transfer_id}", "get">>(
      "GET",
      `/api/query/transfers/${encodeURIComponent(id)}`,
      { signal },
    );
  },
  rebuild(name: string): Promise<RebuildProgress> {
    return request<Answer<"/api/projections/{name}/rebuild", "post">>(
      "POST",
      `/api/projections/${encodeURIComponent(name)}/rebuild`,
    );
  },
  pause(name: string): Promise<Answer<"/api/projections/{name}/pause", "post">> {
    return request("POST", `/api/projections/${encodeURIComponent(name)}/pause`);
  },
  resume(name: string): Promise<Answer<"/api/projections/{name}/resume", "post">> {
    return request("POST", `/api/projections/${encodeURIComponent(name)}/resume`);
  },
  store(signal?: AbortSignal): Promise<StoreStatus> {
    return request<Answer<"/api/store", "get">>("GET", "/api/store", { signal });
  },
  snapshots(type: string | null, signal?: AbortSignal): Promise<SnapshotList> {
    return request<Answer<"/api/store/snapshots", "get">>("GET", "/api/store/snapshots", {
      query: { type },
      signal,
    });
  },
  /** Drop every snapshot, one aggregate type's or one stream's (not both). */
  dropSnapshots(which: {
    type?: string;
    stream?: string;
  }): Promise<Answer<"/api/store/snapshots", "delete">> {
    return request("DELETE", "/api/store/snapshots", { query: which });
  },
  /** Move a paused projection forward to ``to`` (a checkpoint): the events before it are skipped. */
  reset(name: string, to: string): Promise<Answer<"/api/projections/{name}/reset", "post">> {
    const body: Body<"/api/projections/{name}/reset", "post"> = { to };
    return request("POST", `/api/projections/${encodeURIComponent(name)}/reset`, { body });
  },
};
