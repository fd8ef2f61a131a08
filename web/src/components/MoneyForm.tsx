import { type FormEvent, useId, useRef, useState } from "react";

import { describeError } from "../api/problems";
import { type MoveKind, useMoveMoney } from "../api/queries";
import { ApiError } from "../api/client";
import { newKey } from "../lib/ids";
import { checkAmount, withUnits } from "../lib/money";

const WORDS: Record<MoveKind, { title: string; verb: string; busy: string; done: string }> = {
  deposit: { title: "Deposit", verb: "Deposit", busy: "Depositing…", done: "Deposited" },
  withdraw: { title: "Withdraw", verb: "Withdraw", busy: "Withdrawing…", done: "Withdrew" },
};

/** Deposit or withdraw: checked here first, then by the ledger, whose refusals are shown as said. */
export function MoneyForm({
  accountId,
  kind,
  currency,
  units,
}: {
  accountId: string;
  kind: MoveKind;
  currency: string;
  units: number | null;
}) {
  const words = WORDS[kind];
  const move = useMoveMoney(accountId, kind);
  const [amount, setAmount] = useState("");
  const [description, setDescription] = useState("");
  const [fieldError, setFieldError] = useState<string | null>(null);
  const [done, setDone] = useState<string | null>(null);
  const amountInput = useRef<HTMLInputElement>(null);
  const id = useId();

  const submit = (event: FormEvent): void => {
    event.preventDefault();
    setDone(null);
    move.reset();
    const checked = checkAmount(amount, currency, units);
    if (!checked.ok) {
      setFieldError(checked.message);
      amountInput.current?.focus();
      return;
    }
    setFieldError(null);
    move.mutate(
      { amount: checked.value, description: description.trim(), key: newKey() },
      {
        onSuccess: () => {
          setDone(`${words.done} ${withUnits(checked.value, units)} ${currency}.`);
          setAmount("");
          setDescription("");
        },
      },
    );
  };

  // The ledger's word on the amount itself belongs beside the amount field.
  const apiError = move.isError ? move.error : null;
  const amountProblem =
    apiError instanceof ApiError && apiError.code === "invalid-amount" ? describeError(apiError) : null;
  const amountMessage = fieldError ?? amountProblem;
  const formMessage = apiError && !amountProblem ? describeError(apiError) : null;
  const describedBy = [`${id}-hint`, amountMessage ? `${id}-error` : null].filter(Boolean).join(" ");

  return (
    <form
      className={`money-form money-form-${kind}`}
      onSubmit={submit}
      aria-labelledby={`${id}-title`}
      noValidate
    >
      <h3 id={`${id}-title`}>{words.title}</h3>
      <div className="field">
        <label htmlFor={`${id}-amount`}>Amount ({currency})</label>
        <input
          ref={amountInput}
          id={`${id}-amount`}
          name="amount"
          inputMode="decimal"
          autoComplete="off"
          value={amount}
          aria-invalid={amountMessage ? true : undefined}
          aria-describedby={describedBy}
          onChange={(e) => setAmount(e.target.value)}
        />
        <p className="hint" id={`${id}-hint`}>
          {units === 0 ? "Whole units, e.g. 500" : `Up to ${units ?? 2} decimals, e.g. 25.00`}
        </p>
        {amountMessage ? (
          <p className="field-error" id={`${id}-error`} role="alert">
            {amountMessage}
          </p>
        ) : null}
      </div>
      <div className="field">
        <label htmlFor={`${id}-description`}>
          Description <span className="optional">(optional)</span>
        </label>
        <input
          id={`${id}-description`}
          name="description"
          autoComplete="off"
          maxLength={500}
          value={description}
          onChange={(e) => setDescription(e.target.value)}
        />
      </div>
      <button type="submit" className="button button-primary" disabled={move.isPending}>
        {move.isPending ? words.busy : words.verb}
      </button>
      {formMessage ? (
        <p className="form-error" role="alert">
          {formMessage}
        </p>
      ) : null}
      <p className="form-done" role="status">
        {done}
      </p>
    </form>
  );
}
