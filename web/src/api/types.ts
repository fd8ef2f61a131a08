/** The API's JSON shapes (camelCase), as the ledger's HTTP API documents them. */

export interface Account {
  accountId: string;
  ownerName: string;
  currentBalance: string;
  currency: string;
  transactionCount: number;
  lastTransactionDate: string | null;
  status: string;
  version: number;
  openedAt: string | null;
  /** Set on a read of one account that the read model trailed (from its X-Read-* headers). */
  catchingUp?: CatchingUp;
}

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

export interface Transaction {
  version: number;
  kind: string;
  amount: string;
  balanceAfter: string;
  description: string;
  recordedAt: string | null;
  eventId: string;
  position: number;
  /** The other account of a transfer leg (kind transfer_out, transfer_in or transfer_refund). */
  counterpartyAccountId?: string;
  transferId?: string;
}

export interface TransferAccepted {
  transferId: string;
  state: string;
  version: number;
  position: number;
  checkpoint: string;
}

export type TransferState = "requested" | "debited" | "completed" | "failed";

export interface TransferView {
  transferId: string;
  sourceAccountId: string;
  targetAccountId: string;
  amount: string;
  currency: string;
  description: string;
  state: TransferState;
  version: number;
  steps: { step: TransferState; position: number; recordedAt: string }[];
  failure?: { code: string; reason: string; refunded: boolean };
}

export interface StoredEvent {
  eventId: string;
  streamId: string;
  version: number;
  position: number;
  checkpoint: string;
  eventType: string;
  schemaVersion: number;
  occurredAt: string | null;
  recordedAt: string | null;
  data: Record<string, unknown>;
  metadata: Record<string, unknown>;
}

export interface AccountState {
  accountId: string;
  version: number;
  /** The time asked for with asOf, as sent; null when asked by version. */
  asOf?: string | null;
  ownerName: string;
  currency: string;
  currentBalance: string;
  status: string;
  transactionCount: number;
}

export interface CurrencyTotal {
  currency: string;
  totalBalance: string;
  accounts: number;
  openAccounts: number;
  totalDeposited: string;
  totalWithdrawn: string;
  transactionCount: number;
}

export interface CommandResult {
  accountId: string;
  version: number;
  /** The consistency token: a query with consistentWith=position sees this write. */
  position: number;
  checkpoint: string;
}

export interface RebuildProgress {
  generation: number;
  state: string;
  done: number;
  total: number;
  eventsPerSecond: number;
  etaSeconds: number | null;
  error: string | null;
}

export interface ProjectionError {
  message: string;
  position: number | null;
  checkpoint: string | null;
  eventId: string | null;
  at: number | null;
}

export interface ProjectionStatus {
  name: string;
  state: string;
  generation: number;
  version: number;
  checkpoint: string;
  head: string;
  lagEvents: number;
  lagSeconds: number;
  eventsPerSecond: number | null;
  applied: number;
  partitions: number;
  ownedPartitions: number[];
  lastError: ProjectionError | null;
  rebuild: RebuildProgress | null;
}

export interface AccountFilters {
  minBalance: string;
  maxBalance: string;
  currency: string;
  /** Part of the owner's name, or the start of the account id. */
  search: string;
  /** By balance: lowest or highest first. */
  order: "asc" | "desc";
}
