import { useMemo, useState } from "react";

import { ApiError } from "../api/client";
import { useLive } from "../api/LiveProvider";
import { useAccount, useBalanceSeries } from "../api/queries";
import { AccountStatus } from "../components/Badge";
import { type BalancePoint, BalanceChart } from "../components/BalanceChart";
import { CloseAccount } from "../components/CloseAccount";
import { EventTimeline } from "../components/EventTimeline";
import { Money } from "../components/Money";
import { MoneyForm } from "../components/MoneyForm";
import { TransferForm } from "../components/TransferForm";
import { ErrorNotice, Loading } from "../components/Notice";
import { TimeTravel } from "../components/TimeTravel";
import { TransactionHistory } from "../components/TransactionHistory";
import { minorUnitsOf } from "../lib/money";
import { href, listRoute } from "../lib/router";
import { formatDateTime, formatRelative } from "../lib/time";
import { OwnerName } from "../components/OwnerName";

function Back() {
  return (
    <a className="back" href={href(listRoute())}>
      ← All accounts
    </a>
  );
}

export function AccountPage({ id }: { id: string }) {
  const account = useAccount(id);
  // Asked for once the account is known: an unknown id is asked about once, not per panel.
  const series = useBalanceSeries(id, account.isSuccess);
  const { recent } = useLive();
  const [travel, setTravel] = useState<number | null>(null);

  const points = useMemo<BalancePoint[]>(() => {
    if (!account.data) return [];
    const zero = account.data.currentBalance.replace(/\d/g, "0");
    const opened: BalancePoint = { version: 1, balance: zero, at: account.data.openedAt };
    return [
      opened,
      ...(series.data?.items ?? []).map((t) => ({
        version: t.version,
        balance: t.balanceAfter,
        at: t.recordedAt,
      })),
    ];
  }, [account.data, series.data]);

  const describe = useMemo(() => {
    const byVersion = new Map((series.data?.items ?? []).map((t) => [t.version, t]));
    const currency = account.data?.currency ?? "";
    return (version: number): string => {
      if (version === 1) return "account opened";
      const t = byVersion.get(version);
      if (t) return `${t.kind === "deposit" ? "deposit" : "withdrawal"} of ${t.amount} ${currency}`;
      return account.data?.status === "closed" && version === account.data.version
        ? "account closed"
        : "event";
    };
  }, [series.data, account.data]);

  if (account.isPending) {
    return (
      <div className="page">
        <Back />
        <h1 className="placeholder-title">Account</h1>
        <Loading>Loading the account…</Loading>
      </div>
    );
  }
  if (account.isLoadingError) {
    const missing = account.error instanceof ApiError && account.error.status === 404;
    return (
      <div className="page">
        <Back />
        <h1>{missing ? "No such account" : "Account"}</h1>
        <ErrorNotice error={account.error} onRetry={missing ? undefined : () => void account.refetch()} />
      </div>
    );
  }

  const a = account.data;
  const closed = a.status !== "open";
  const units = minorUnitsOf(a.currentBalance);
  return (
    <div className="page">
      <Back />
      <div className="page-head">
        <div>
          <h1>
            <OwnerName name={a.ownerName} /> <AccountStatus status={a.status} />
          </h1>
          <p className="lede mono" title="Account id">
            {a.accountId}
          </p>
        </div>
      </div>
      {a.catchingUp ? (
        <p className="notice" role="status" data-testid="catching-up">
          {a.catchingUp.readModelVersion === 0
            ? `Catching up: the read model has not reached this account yet; version ${a.catchingUp.accountVersion} is shown from the event log.`
            : `Catching up: the read model has this account at version ${a.catchingUp.readModelVersion}; version ${a.catchingUp.accountVersion} is shown, its later events read from the event log.`}
        </p>
      ) : null}

      <section aria-label="Summary">
        <ul className="stat-grid">
          <li className={`stat stat-hero ${recent.has(a.accountId) ? "flash" : ""}`}>
            <span className="stat-label">Balance</span>
            <Money className="stat-value" amount={a.currentBalance} currency={a.currency} />
            <span className="stat-foot" data-testid="balance-version">
              version {a.version}
            </span>
          </li>
          <li className="stat">
            <span className="stat-label">Transactions</span>
            <span className="stat-value">{a.transactionCount}</span>
          </li>
          <li className="stat">
            <span className="stat-label">Last activity</span>
            <span className="stat-value stat-value-small" title={formatDateTime(a.lastTransactionDate)}>
              {formatRelative(a.lastTransactionDate)}
            </span>
          </li>
          <li className="stat stat-wide">
            <span className="stat-label">Opened</span>
            <span className="stat-value stat-value-small">{formatDateTime(a.openedAt)}</span>
          </li>
        </ul>
      </section>

      <div className="split">
        <section className="card" aria-labelledby="move-title">
          <h2 id="move-title" className="card-title">
            Move money
          </h2>
          {closed ? (
            <p className="notice">This account is closed: it takes no more deposits or withdrawals.</p>
          ) : (
            <div className="money-forms">
              <MoneyForm accountId={a.accountId} kind="deposit" currency={a.currency} units={units} />
              <MoneyForm accountId={a.accountId} kind="withdraw" currency={a.currency} units={units} />
              <TransferForm accountId={a.accountId} currency={a.currency} units={units} />
            </div>
          )}
        </section>

        <section className="card" aria-labelledby="chart-title">
          <h2 id="chart-title" className="card-title">
            Balance over time
          </h2>
          {series.isLoadingError ? (
            <ErrorNotice error={series.error} onRetry={() => void series.refetch()} />
          ) : series.isPending ? (
            <Loading>Loading the history…</Loading>
          ) : (
            <>
              <BalanceChart points={points} currency={a.currency} selectedVersion={travel} />
              {series.data.truncated ? (
                <p className="hint">The chart shows the first {series.data.items.length} transactions.</p>
              ) : null}
            </>
          )}
          <TimeTravel account={a} version={travel} onChange={setTravel} describe={describe} />
        </section>
      </div>

      <section className="card" aria-labelledby="history-title">
        <h2 id="history-title" className="card-title">
          Transactions
        </h2>
        <TransactionHistory accountId={a.accountId} currency={a.currency} />
      </section>

      <section className="card" aria-labelledby="events-title">
        <h2 id="events-title" className="card-title">
          Event timeline
        </h2>
        <p className="hint">
          The account's stream exactly as stored in the log, with each event's envelope and metadata.
        </p>
        <EventTimeline accountId={a.accountId} />
      </section>

      <section className="card card-danger" aria-labelledby="close-title">
        <h2 id="close-title" className="card-title">
          Close the account
        </h2>
        <CloseAccount
          accountId={a.accountId}
          balance={a.currentBalance}
          currency={a.currency}
          closed={closed}
        />
      </section>
    </div>
  );
}
