import { type FormEvent, useId, useRef, useState } from "react";

import { useLive } from "../api/LiveProvider";
import { describeError } from "../api/problems";
import { useAccounts, useOpenAccount, useTotals } from "../api/queries";
import type { AccountFilters, CurrencyTotal } from "../api/types";
import { AccountStatus } from "../components/Badge";
import { Money } from "../components/Money";
import { Empty, ErrorNotice, Loading } from "../components/Notice";
import { newKey } from "../lib/ids";
import { checkBound, compareDecimal } from "../lib/money";
import { href, navigate } from "../lib/router";
import { formatDateTime, formatRelative } from "../lib/time";

const NO_FILTERS: AccountFilters = { minBalance: "", maxBalance: "", currency: "" };
const COMMON_CURRENCIES = [
  "EUR",
  "USD",
  "GBP",
  "JPY",
  "CHF",
  "CAD",
  "AUD",
  "SEK",
  "NOK",
  "DKK",
  "PLN",
  "INR",
];

function Totals({ items }: { items: CurrencyTotal[] }) {
  if (items.length === 0) return null;
  return (
    <section aria-labelledby="totals-title" className="totals">
      <h2 id="totals-title" className="sr-only">
        Totals per currency
      </h2>
      <ul className="stat-grid">
        {items.map((t) => (
          <li key={t.currency} className="stat">
            <span className="stat-label">{t.currency} held</span>
            <Money className="stat-value" amount={t.totalBalance} currency={t.currency} />
            <span className="stat-foot">
              {t.openAccounts} open account{t.openAccounts === 1 ? "" : "s"} · {t.transactionCount}{" "}
              transactions
            </span>
          </li>
        ))}
      </ul>
    </section>
  );
}

function Filters({
  value,
  currencies,
  onChange,
}: {
  value: AccountFilters;
  currencies: string[];
  onChange: (filters: AccountFilters) => void;
}) {
  const [min, setMin] = useState(value.minBalance);
  const [max, setMax] = useState(value.maxBalance);
  const [currency, setCurrency] = useState(value.currency);
  const [errors, setErrors] = useState<{ min?: string; max?: string }>({});
  const id = useId();

  const submit = (event: FormEvent): void => {
    event.preventDefault();
    const low = checkBound(min);
    const high = checkBound(max);
    const next: { min?: string; max?: string } = {};
    if (!low.ok) next.min = low.message;
    if (!high.ok) next.max = high.message;
    if (low.ok && high.ok && low.value && high.value && compareDecimal(low.value, high.value) > 0) {
      next.max = "The maximum is below the minimum.";
    }
    setErrors(next);
    if (next.min || next.max || !low.ok || !high.ok) return;
    onChange({ minBalance: low.value, maxBalance: high.value, currency });
  };

  const reset = (): void => {
    setMin("");
    setMax("");
    setCurrency("");
    setErrors({});
    onChange(NO_FILTERS);
  };

  return (
    <form className="filters" onSubmit={submit} aria-label="Filter accounts" noValidate>
      <div className="field">
        <label htmlFor={`${id}-min`}>Min balance</label>
        <input
          id={`${id}-min`}
          inputMode="decimal"
          autoComplete="off"
          placeholder="0.00"
          value={min}
          aria-invalid={errors.min ? true : undefined}
          aria-describedby={errors.min ? `${id}-min-error` : undefined}
          onChange={(e) => setMin(e.target.value)}
        />
        {errors.min ? (
          <p className="field-error" id={`${id}-min-error`} role="alert">
            {errors.min}
          </p>
        ) : null}
      </div>
      <div className="field">
        <label htmlFor={`${id}-max`}>Max balance</label>
        <input
          id={`${id}-max`}
          inputMode="decimal"
          autoComplete="off"
          placeholder="any"
          value={max}
          aria-invalid={errors.max ? true : undefined}
          aria-describedby={errors.max ? `${id}-max-error` : undefined}
          onChange={(e) => setMax(e.target.value)}
        />
        {errors.max ? (
          <p className="field-error" id={`${id}-max-error`} role="alert">
            {errors.max}
          </p>
        ) : null}
      </div>
      <div className="field">
        <label htmlFor={`${id}-currency`}>Currency</label>
        <select id={`${id}-currency`} value={currency} onChange={(e) => setCurrency(e.target.value)}>
          <option value="">All currencies</option>
          {currencies.map((c) => (
            <option key={c} value={c}>
              {c}
            </option>
          ))}
        </select>
      </div>
      <div className="field-actions">
        <button type="submit" className="button button-primary">
          Apply
        </button>
        <button type="button" className="button" onClick={reset}>
          Reset
        </button>
      </div>
    </form>
  );
}

function OpenAccountForm({ onClose }: { onClose: () => void }) {
  const [owner, setOwner] = useState("");
  const [currency, setCurrency] = useState("EUR");
  const [errors, setErrors] = useState<{ owner?: string; currency?: string }>({});
  const open = useOpenAccount();
  const ownerInput = useRef<HTMLInputElement>(null);
  const id = useId();

  const submit = (event: FormEvent): void => {
    event.preventDefault();
    const name = owner.trim();
    const code = currency.trim().toUpperCase();
    const next: { owner?: string; currency?: string } = {};
    if (!name) next.owner = "Enter the owner's name.";
    else if (name.length > 200) next.owner = "At most 200 characters.";
    if (!/^[A-Z]{3}$/.test(code)) next.currency = "Enter a three-letter ISO 4217 code, e.g. EUR.";
    setErrors(next);
    if (next.owner || next.currency) {
      if (next.owner) ownerInput.current?.focus();
      return;
    }
    open.mutate(
      { ownerName: name, currency: code, key: newKey() },
      { onSuccess: (result) => navigate({ name: "account", id: result.accountId }) },
    );
  };

  return (
    <form className="card open-form" onSubmit={submit} aria-labelledby={`${id}-title`} noValidate>
      <h2 id={`${id}-title`} className="card-title">
        Open an account
      </h2>
      <div className="form-row">
        <div className="field field-grow">
          <label htmlFor={`${id}-owner`}>Owner name</label>
          <input
            ref={ownerInput}
            id={`${id}-owner`}
            autoComplete="name"
            maxLength={200}
            value={owner}
            aria-invalid={errors.owner ? true : undefined}
            aria-describedby={errors.owner ? `${id}-owner-error` : undefined}
            onChange={(e) => setOwner(e.target.value)}
          />
          {errors.owner ? (
            <p className="field-error" id={`${id}-owner-error`} role="alert">
              {errors.owner}
            </p>
          ) : null}
        </div>
        <div className="field field-currency">
          <label htmlFor={`${id}-currency`}>Currency</label>
          <input
            id={`${id}-currency`}
            list={`${id}-currencies`}
            autoComplete="off"
            maxLength={3}
            value={currency}
            aria-invalid={errors.currency ? true : undefined}
            aria-describedby={errors.currency ? `${id}-currency-error` : undefined}
            onChange={(e) => setCurrency(e.target.value.toUpperCase())}
          />
          <datalist id={`${id}-currencies`}>
            {COMMON_CURRENCIES.map((c) => (
              <option key={c} value={c} />
            ))}
          </datalist>
          {errors.currency ? (
            <p className="field-error" id={`${id}-currency-error`} role="alert">
              {errors.currency}
            </p>
          ) : null}
        </div>
      </div>
      {open.isError ? (
        <p className="form-error" role="alert">
          {describeError(open.error)}
        </p>
      ) : null}
      <div className="form-actions">
        <button type="submit" className="button button-primary" disabled={open.isPending}>
          {open.isPending ? "Opening…" : "Open account"}
        </button>
        <button type="button" className="button" onClick={onClose}>
          Cancel
        </button>
      </div>
    </form>
  );
}

function AccountsTable({ filters }: { filters: AccountFilters }) {
  const query = useAccounts(filters);
  const { recent } = useLive();
  if (query.isPending) return <Loading>Loading accounts…</Loading>;
  if (query.isError) return <ErrorNotice error={query.error} onRetry={() => void query.refetch()} />;
  const accounts = query.data.pages.flatMap((page) => page.items);
  if (accounts.length === 0) {
    return (
      <Empty>
        {filters.minBalance || filters.maxBalance || filters.currency
          ? "No account matches these filters."
          : "No accounts yet: open the first one."}
      </Empty>
    );
  }
  return (
    <>
      <div className="table-wrap">
        <table className="table table-accounts" aria-busy={query.isFetching}>
          <caption className="sr-only">Accounts, by balance</caption>
          <thead>
            <tr>
              <th scope="col">Owner</th>
              <th scope="col" className="num">
                Balance
              </th>
              <th scope="col">Currency</th>
              <th scope="col" className="num">
                Transactions
              </th>
              <th scope="col">Last activity</th>
              <th scope="col">Status</th>
            </tr>
          </thead>
          <tbody>
            {accounts.map((a) => (
              <tr key={a.accountId} className={recent.has(a.accountId) ? "flash" : undefined}>
                <th scope="row" data-label="Owner">
                  <a href={href({ name: "account", id: a.accountId })}>{a.ownerName}</a>
                </th>
                <td className="num" data-label="Balance">
                  <span className="money-amount">{a.currentBalance}</span>
                </td>
                <td data-label="Currency">{a.currency}</td>
                <td className="num" data-label="Transactions">
                  {a.transactionCount}
                </td>
                <td data-label="Last activity">
                  <time
                    dateTime={a.lastTransactionDate ?? undefined}
                    title={formatDateTime(a.lastTransactionDate)}
                  >
                    {formatRelative(a.lastTransactionDate)}
                  </time>
                </td>
                <td data-label="Status">
                  <AccountStatus status={a.status} />
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {query.hasNextPage ? (
        <div className="more">
          <button
            type="button"
            className="button"
            onClick={() => void query.fetchNextPage()}
            disabled={query.isFetchingNextPage}
          >
            {query.isFetchingNextPage ? "Loading…" : "Load more accounts"}
          </button>
        </div>
      ) : null}
    </>
  );
}

export function AccountsPage() {
  const [filters, setFilters] = useState<AccountFilters>(NO_FILTERS);
  const [opening, setOpening] = useState(false);
  const totals = useTotals();
  const openButton = useRef<HTMLButtonElement>(null);
  const currencies = (totals.data?.items ?? []).map((t) => t.currency);

  return (
    <div className="page">
      <div className="page-head">
        <div>
          <h1>Accounts</h1>
          <p className="lede">Balances from the read model, kept current by projections of the event log.</p>
        </div>
        {!opening ? (
          <button
            ref={openButton}
            type="button"
            className="button button-primary"
            onClick={() => setOpening(true)}
          >
            Open account
          </button>
        ) : null}
      </div>
      {opening ? (
        <OpenAccountForm
          onClose={() => {
            setOpening(false);
            requestAnimationFrame(() => openButton.current?.focus());
          }}
        />
      ) : null}
      {totals.isError ? null : <Totals items={totals.data?.items ?? []} />}
      <section className="card" aria-labelledby="list-title">
        <div className="card-head">
          <h2 id="list-title" className="card-title">
            All accounts
          </h2>
        </div>
        <Filters value={filters} currencies={currencies} onChange={setFilters} />
        <AccountsTable filters={filters} />
      </section>
    </div>
  );
}
