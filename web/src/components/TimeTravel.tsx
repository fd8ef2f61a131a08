import { useId } from "react";

import { useStateAt } from "../api/queries";
import type { Account } from "../api/types";
import { AccountStatus } from "./Badge";
import { Money } from "./Money";
import { ErrorNotice } from "./Notice";

/**
 * A slider over the account's versions: the state shown is replayed from the event
 * log up to that version by the API (not read from the read model).
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
  const state = version === null ? account : past.data;
  const label = `Version ${shown} of ${latest}: ${describe(shown)}`;

  return (
    <div className="time-travel">
      <div className="time-travel-head">
        <label htmlFor={`${id}-slider`}>Time travel</label>
        {version !== null ? (
          <button type="button" className="button button-small" onClick={() => onChange(null)}>
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
          onChange(next >= latest ? null : next);
        }}
      />
      <output id={`${id}-output`} htmlFor={`${id}-slider`} className="time-travel-output" aria-live="polite">
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
