import { useState } from "react";

import { describeError } from "../api/problems";
import { allTransactions, useTransactions } from "../api/queries";
import { download, transactionsCsv } from "../lib/csv";
import { href } from "../lib/router";
import { formatDateTime } from "../lib/time";
import { Money } from "./Money";
import { Empty, ErrorNotice, Loading } from "./Notice";

/** Every transaction (not only the pages shown) as a CSV file. */
function ExportCsv({ accountId, currency }: { accountId: string; currency: string }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const run = async (): Promise<void> => {
    setBusy(true);
    setError(null);
    try {
      download(`transactions-${accountId}.csv`, transactionsCsv(await allTransactions(accountId), currency));
    } catch (failure) {
      setError(describeError(failure));
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="export">
      <button type="button" className="button button-small" disabled={busy} onClick={() => void run()}>
        {busy ? "Preparing CSV…" : "Download CSV"}
      </button>
      {error ? (
        <p className="form-error" role="alert">
          {error}
        </p>
      ) : null}
    </div>
  );
}

const LABELS: Record<string, string> = {
  deposit: "Deposit",
  withdrawal: "Withdrawal",
  transfer_out: "Transfer",
  transfer_in: "Transfer",
  transfer_refund: "Transfer refunded",
};

export function TransactionHistory({ accountId, currency }: { accountId: string; currency: string }) {
  const query = useTransactions(accountId);
  if (query.isPending) return <Loading>Loading transactions…</Loading>;
  if (query.isLoadingError) return <ErrorNotice error={query.error} onRetry={() => void query.refetch()} />;
  const items = query.data.pages.flatMap((page) => page.items);
  if (items.length === 0) return <Empty>No deposits or withdrawals yet.</Empty>;
  return (
    <>
      <ExportCsv accountId={accountId} currency={currency} />
      <div className="table-wrap">
        <table className="table table-history">
          <caption className="sr-only">Transactions, newest first</caption>
          <thead>
            <tr>
              <th scope="col" className="num">
                Version
              </th>
              <th scope="col">When</th>
              <th scope="col">Description</th>
              <th scope="col" className="num">
                Amount
              </th>
              <th scope="col" className="num">
                Balance after
              </th>
            </tr>
          </thead>
          <tbody>
            {items.map((t) => {
              // Money in: deposits, transfers received, transfers given back.
              const deposit =
                t.kind === "deposit" || t.kind === "transfer_in" || t.kind === "transfer_refund";
              const label = LABELS[t.kind] ?? (deposit ? "Deposit" : "Withdrawal");
              const other = t.counterpartyAccountId;
              return (
                <tr key={t.eventId}>
                  <td className="num" data-label="Version">
                    {t.version}
                  </td>
                  <td data-label="When">
                    <time dateTime={t.recordedAt ?? undefined}>{formatDateTime(t.recordedAt)}</time>
                  </td>
                  <td data-label="Description">
                    {t.description || <span className="muted">{label}</span>}
                    {other && (
                      <span className="transfer-leg">
                        {" "}
                        ({label} {t.kind === "transfer_in" ? "from" : "to"}{" "}
                        <a href={href({ name: "account", id: other })}>{other.slice(0, 8)}…</a>)
                      </span>
                    )}
                  </td>
                  <td className={`num ${deposit ? "credit" : "debit"}`} data-label="Amount">
                    <span className="sr-only">{`${label.toLowerCase()} of `}</span>
                    <Money amount={t.amount} currency={currency} sign={deposit ? "+" : "−"} />
                  </td>
                  <td className="num" data-label="Balance after">
                    <Money amount={t.balanceAfter} currency={currency} />
                  </td>
                </tr>
              );
            })}
          </tbody>
        </table>
      </div>
      {query.hasNextPage ? (
        <div className="more">
          <button
            type="button"
            className="button"
            disabled={query.isFetchingNextPage}
            onClick={() => void query.fetchNextPage()}
          >
            {query.isFetchingNextPage ? "Loading…" : "Older transactions"}
          </button>
        </div>
      ) : null}
    </>
  );
}
