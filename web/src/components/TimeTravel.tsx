import { type FormEvent, useEffect, useId, useState } from "react";

import { ApiError } from "../api/client";
import { useStateAsOf, useStateAt } from "../api/queries";
import type { Account } from "../api/types";
import { formatDateTime } from "../lib/time";
import { AccountStatus } from "./Badge";
import { Money } from "./Money";
import { ErrorNotice } from "./Notice";

/** A datetime-local value ("2026-01-02T10:00" or with seconds) as ISO 8601 in UTC; null if not one. */
export function localToIso(value: string): string | null {
  if (!/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,3})?)?$/.test(value)) return null;
  const date = new Date(value); // read as local time, as the field shows it
  return Number.isNaN(date.getTime()) ? null : date.toISOString();
}

/**
 * A slider over the account's versions, and a date field: the state shown is
 * replayed from the event log up to that version, or that moment, by the API (not
 * read from the read model).
 */
export function TimeTravel({
  account,
  version,
  onChange,
  describe,
}: {
  account: Account;
  /** The version shown; null follows the present (and live changes). */
  version: number | null;
  onChange: (version: number | null) => void;
  describe: (version: number) => string;
}) {
  const id = useId();
  const latest = account.version;
  const shown = version === null ? latest : Math.min(version, latest);
  const past = useStateAt(account.accountId, version === null ? null : shown);
  const [date, setDate] = useState("");
  const [dateError, setDateError] = useState<string | null>(null);
  const [asOf, setAsOf] = useState<string | null>(null);
  const byDate = useStateAsOf(account.accountId, asOf);
  const before = byDate.isError && byDate.error instanceof ApiError && byDate.error.status === 404;
  const state = version === null ? account : past.data;
  const label = `Version ${shown} of ${latest}: ${describe(shown)}`;

  // The moment asked for lands on a version: the slider and the chart go there.
  const reached = byDate.data?.version;
  useEffect(() => {
    if (reached !== undefined) onChange(reached >= latest ? null : reached);
    // Only a new answer moves the slider; later slider moves are the user's own.
  }, [reached, asOf]);

  const go = (event: FormEvent): void => {
    event.preventDefault();
    const iso = localToIso(date);
    if (iso === null) {
      setDateError("Enter a date and a time, e.g. 2026-01-02 10:00.");
      return;
    }
    setDateError(null);
    setAsOf(iso);
  };

  return (
    <div className="time-travel">
      <div className="time-travel-head">
        <label htmlFor={`${id}-slider`}>Time travel</label>
        {version !== null || asOf !== null ? (
          <button
            type="button"
            className="button button-small"
            onClick={() => {
              setAsOf(null);
              setDate("");
              onChange(null);
            }}
          >
            Back to now
          </button>
        ) : null}
      </div>
      <input
        id={`${id}-slider`}
        type="range"
        min={1}
        max={Math.max(latest, 1)}
        step={1}
        value={shown}
        disabled={latest <= 1}
        aria-valuetext={label}
        aria-describedby={`${id}-output`}
        onChange={(e) => {
          const next = Number(e.target.value);
          setAsOf(null);
          onChange(next >= latest ? null : next);
        }}
      />
      <form className="time-travel-date" onSubmit={go} aria-label="Go to a date" noValidate>
        <label htmlFor={`${id}-date`}>Or go to a moment</label>
        <div className="time-travel-date-row">
          <input
            id={`${id}-date`}
            type="datetime-local"
            step={1}
            value={date}
            aria-invalid={dateError ? true : undefined}
            aria-describedby={dateError ? `${id}-date-error` : undefined}
            onChange={(e) => setDate(e.target.value)}
          />
          <button type="submit" className="button button-small">
            Go
          </button>
        </div>
        {dateError ? (
          <p className="field-error" id={`${id}-date-error`} role="alert">
            {dateError}
          </p>
        ) : null}
      </form>
      <output id={`${id}-output`} htmlFor={`${id}-slider`} className="time-travel-output" aria-live="polite">
        {asOf !== null && byDate.data ? (
          <span className="time-travel-when" data-testid="time-travel-when">
            On {formatDateTime(asOf, true)} the account was at version {byDate.data.version}.
          </span>
        ) : null}
        {before && asOf !== null ? (
          <span className="time-travel-when" data-testid="time-travel-when">
            On {formatDateTime(asOf, true)} the account did not exist yet (it was opened{" "}
            {formatDateTime(account.openedAt, true)}).
          </span>
        ) : byDate.isError && !before ? (
          <ErrorNotice error={byDate.error} onRetry={() => void byDate.refetch()} />
        ) : null}
        <span className="time-travel-version">{label}</span>
        {past.isError && version !== null ? (
          <ErrorNotice error={past.error} onRetry={() => void past.refetch()} />
        ) : state ? (
          <span className="time-travel-state" data-testid="time-travel-state">
            <Money amount={state.currentBalance} currency={state.currency} className="time-travel-balance" />
            <span>
              {state.transactionCount} transaction{state.transactionCount === 1 ? "" : "s"}
            </span>
            <AccountStatus status={state.status} />
            {version === null ? (
              <span className="badge badge-info">now</span>
            ) : (
              <span className="badge badge-warn">replayed</span>
            )}
          </span>
        ) : (
          <span className="hint">Replaying…</span>
        )}
      </output>
    </div>
  );
}
