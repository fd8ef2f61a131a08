import { type FormEvent, useId, useState } from "react";
import { useQuery } from "@tanstack/react-query";

import { api } from "../api/client";
import { describeError } from "../api/problems";
import { useRequestTransfer, useTransfer } from "../api/queries";
import { newKey } from "../lib/ids";
import { checkAmount, withUnits } from "../lib/money";
import { OwnerName } from "./OwnerName";

const STEPS = ["requested", "debited", "completed"] as const;

/** Send money to another account of the same currency; then the transfer's progress, step by step. */
export function TransferForm({
  accountId,
  currency,
  units,
}: {
  accountId: string;
  currency: string;
  units: number | null;
}) {
  const id = useId();
  const [target, setTarget] = useState("");
  const [search, setSearch] = useState("");
  const [amount, setAmount] = useState("");
  const [description, setDescription] = useState("");
  const [fieldError, setFieldError] = useState<string | null>(null);
  const [transferId, setTransferId] = useState<string | null>(null);
  const request = useRequestTransfer(accountId);
  const transfer = useTransfer(transferId);
  // Target search by owner name or the start of an id, among accounts of this currency.
  const term = search.trim();
  const found = useQuery({
    queryKey: ["transfer-targets", currency, term],
    enabled: term.length > 0,
    queryFn: ({ signal }) =>
      api.listAccounts(
        { minBalance: "", maxBalance: "", currency, search: term, order: "asc" },
        null,
        signal,
      ),
  });
  const candidates = (found.data?.items ?? []).filter(
    (a) => a.accountId !== accountId && a.status === "open",
  );

  const submit = (event: FormEvent): void => {
    event.preventDefault();
    request.reset();
    if (!target.trim()) {
      setFieldError("Choose the account to send to.");
      return;
    }
    const checked = checkAmount(amount, currency, units);
    if (!checked.ok) {
      setFieldError(checked.message);
      return;
    }
    setFieldError(null);
    request.mutate(
      {
        targetAccountId: target.trim(),
        amount: checked.value,
        description: description.trim(),
        key: newKey(),
      },
      {
        onSuccess: (result) => {
          setTransferId(result.transferId);
          setAmount("");
          setDescription("");
        },
      },
    );
  };

  const t = transfer.data;
  const message = fieldError ?? (request.isError ? describeError(request.error) : null);
  return (
    <form className="money-form transfer-form" onSubmit={submit} aria-labelledby={`${id}-title`} noValidate>
      <h3 id={`${id}-title`}>Transfer</h3>
      <div className="field">
        <label htmlFor={`${id}-search`}>Find the account (owner or id)</label>
        <input id={`${id}-search`} value={search} onChange={(e) => setSearch(e.target.value)} />
        {candidates.length > 0 && (
          <ul className="transfer-candidates" aria-label="Matching accounts">
            {candidates.slice(0, 5).map((a) => (
              <li key={a.accountId}>
                <button type="button" onClick={() => setTarget(a.accountId)}>
                  <OwnerName name={a.ownerName} /> <span className="muted">{a.accountId.slice(0, 8)}…</span>
                </button>
              </li>
            ))}
          </ul>
        )}
      </div>
      <div className="field">
        <label htmlFor={`${id}-target`}>To account</label>
        <input id={`${id}-target`} name="target" value={target} onChange={(e) => setTarget(e.target.value)} />
      </div>
      <div className="field">
        <label htmlFor={`${id}-amount`}>Amount ({currency})</label>
        <input
          id={`${id}-amount`}
          name="amount"
          inputMode="decimal"
          value={amount}
          onChange={(e) => setAmount(e.target.value)}
        />
      </div>
      <div className="field">
        <label htmlFor={`${id}-description`}>Description</label>
        <input
          id={`${id}-description`}
          value={description}
          onChange={(e) => setDescription(e.target.value)}
        />
      </div>
      {message && (
        <p className="field-error" role="alert">
          {message}
        </p>
      )}
      <button type="submit" disabled={request.isPending}>
        {request.isPending ? "Sending…" : "Send"}
      </button>
      {t && (
        <div className="transfer-progress" role="status" aria-label="Transfer progress">
          <ol>
            {STEPS.map((step) => {
              const reached = t.steps.some((s) => s.step === step);
              return (
                <li key={step} className={reached ? "step-done" : "step-pending"}>
                  {step}
                </li>
              );
            })}
            {t.state === "failed" && <li className="step-failed">failed</li>}
          </ol>
          {t.state === "completed" && (
            <p>
              Sent {withUnits(t.amount, units)} {t.currency}.
            </p>
          )}
          {t.failure && (
            <p className="field-error">
              {t.failure.reason}
              {t.failure.refunded ? " (the money came back)" : ""}
            </p>
          )}
        </div>
      )}
    </form>
  );
}
