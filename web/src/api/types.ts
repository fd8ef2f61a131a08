/**
 * The API's JSON shapes (camelCase), taken from its OpenAPI document.
 *
 * schema.gen.ts is generated from web/openapi.json, which the API itself writes
 * (scripts/build-web regenerates both; `scripts/build-web --test` fails when they
 * trail the API). Everything here is derived from it, so a field the API renames,
 * drops or retypes is a type error wherever the dashboard uses it.
 */
import type { components, paths } from "./schema.gen";

type Schemas = components["schemas"];

/**
 * A schema's declared fields. Every schema of the document also admits other
 * keys (additionalProperties), which would type a misspelt or removed field as
 * `unknown` instead of an error; this drops that index signature.
 */
export type Fields<T> = { [K in keyof T as string extends K ? never : K]: T[K] };

type Operation<P extends keyof paths, M extends keyof paths[P]> = paths[P][M];
type Success = 200 | 201 | 202;

/** What Answer gives for an operation without a JSON answer: assignable to no shape the client returns. */
interface NoJsonAnswer<P> {
  readonly "the OpenAPI document gives no JSON answer for": P;
}

/** The JSON body of an operation's successful answer, as documented. */
export type Answer<P extends keyof paths, M extends keyof paths[P]> =
  Operation<P, M> extends { responses: infer R }
    ? R[Extract<keyof R, Success>] extends { content: { "application/json": infer B } }
      ? B
      : NoJsonAnswer<P>
    : NoJsonAnswer<P>;

/** The JSON body an operation takes, as documented. */
export type Body<P extends keyof paths, M extends keyof paths[P]> =
  Operation<P, M> extends { requestBody?: { content: { "application/json": infer B } } } ? B : never;

export type Account = Fields<Schemas["AccountSummary"]> & {
  /** Set on a read of one account that the read model trailed (from its X-Read-* headers). */
  catchingUp?: CatchingUp;
};

/** A read of one account served past the read model: its later events came from the log. */
export interface CatchingUp {
  /** "read-model+log" (the read model's rows, then the log's) or "log" (the log alone). */
  source: string;
  /** The account stream's version when it was read (the version shown). */
  accountVersion: number;
  /** The version the read model had of the account (0: none yet). */
  readModelVersion: number;
}

export interface Page<T> {
  items: T[];
  nextCursor: string | null;
}

export type Transaction = Fields<Schemas["Transaction"]>;

/** What POST /api/command/transfers answers (202): the transfer runs in the background. */
export type TransferAccepted = Answer<"/api/command/transfers", "post">;

export type TransferView = Fields<Schemas["TransferView"]>;

export type TransferState = TransferView["state"];

export type StoredEvent = Fields<Schemas["AuditEvent"]>;

/** asOf: the time asked for, as sent; null when asked by version. */
export type AccountState = Fields<Schemas["AccountState"]>;

export type CurrencyTotal = Fields<Schemas["CurrencyTotal"]>;

/** position is the consistency token: a query with consistentWith=position sees this write. */
export type CommandResult = Fields<Schemas["CommandResult"]>;

export type RebuildProgress = Fields<Schemas["RebuildProgress"]>;

export type ProjectionError = Fields<Schemas["ProjectionErrorDoc"]>;

export type ProjectionStatus = Omit<Fields<Schemas["ProjectionStatusDoc"]>, "lastError" | "rebuild"> & {
  lastError: ProjectionError | null;
  rebuild: RebuildProgress | null;
};

export type ReadModelLag = Fields<Schemas["ReadModelLag"]>;

export type StoreStatus = Omit<Fields<Schemas["StoreStatus"]>, "readModels"> & { readModels: ReadModelLag[] };

export type SnapshotInfo = Fields<Schemas["SnapshotDoc"]>;

export type SnapshotList = Omit<Fields<Schemas["SnapshotList"]>, "items"> & { items: SnapshotInfo[] };

export interface AccountFilters {
  minBalance: string;
  maxBalance: string;
  currency: string;
  /** Part of the owner's name, or the start of the account id. */
  search: string;
  /** By balance: lowest or highest first. */
  order: "asc" | "desc";
}
