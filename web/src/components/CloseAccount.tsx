import { useId, useRef, useState } from "react";

import { describeError } from "../api/problems";
import { useCloseAccount } from "../api/queries";
import { newKey } from "../lib/ids";
import { compareDecimal } from "../lib/money";

/** Closing takes a second, deliberate click, and only an empty account can be closed. */
export function CloseAccount({
  accountId,
  balance,
  currency,
  closed,
}: {
  accountId: string;
  balance: string;
  currency: string;
  closed: boolean;
}) {
  const close = useCloseAccount(accountId);
  const [confirming, setConfirming] = useState(false);
  const confirmButton = useRef<HTMLButtonElement>(null);
  const startButton = useRef<HTMLButtonElement>(null);
  const id = useId();

  if (closed) {
    return (
      <p className="hint" role="status">
        This account is closed. Its history stays in the log for good.
      </p>
    );
  }
  const empty = compareDecimal(balance, "0") === 0;
  return (
    <div className="close-account">
      <p className="hint" id={`${id}-reason`}>
        {empty
          ? "The balance is zero: the account can be closed. A closed account takes no more commands."
          : `The account still holds ${balance} ${currency}: withdraw it all first, since the ledger closes only empty accounts.`}
      </p>
      {confirming && empty ? (
        <div className="confirm" role="group" aria-label="Confirm closing">
          <button
            ref={confirmButton}
            type="button"
            className="button button-danger"
            disabled={close.isPending}
            onClick={() => close.mutate({ key: newKey() }, { onSettled: () => setConfirming(false) })}
          >
            {close.isPending ? "Closing…" : "Yes, close it"}
          </button>
          <button
            type="button"
            className="button"
            onClick={() => {
              setConfirming(false);
              requestAnimationFrame(() => startButton.current?.focus());
            }}
          >
            Cancel
          </button>
        </div>
      ) : (
        <button
          ref={startButton}
          type="button"
          className="button button-danger-outline"
          disabled={!empty}
          aria-describedby={`${id}-reason`}
          onClick={() => {
            close.reset();
            setConfirming(true);
            requestAnimationFrame(() => confirmButton.current?.focus());
          }}
        >
          Close account…
        </button>
      )}
      {close.isError ? (
        <p className="form-error" role="alert">
          {describeError(close.error)}
        </p>
      ) : null}
    </div>
  );
}
