import { type FormEvent, useEffect, useId, useMemo, useRef, useState } from "react";

import { useLive } from "../api/LiveProvider";
import { describeError } from "../api/problems";
import { useAccounts, useOpenAccount, useTotals } from "../api/queries";
import type { Account, AccountFilters, CurrencyTotal } from "../api/types";
import { AccountStatus } from "../components/Badge";
import { Money } from "../components/Money";
import { Empty, ErrorNotice, Loading } from "../components/Notice";
import { newKey } from "../lib/ids";
import { checkBound, compareDecimal } from "../lib/money";
import { href, navigate, rememberListQuery, useRoute } from "../lib/router";
import { formatDateTime, formatRelative } from "../lib/time";
import { OwnerName } from "../components/OwnerName";

const NO_FILTERS: AccountFilters = { minBalance: "", maxBalance: "", currency: "", search: "", order: "asc" };

/**
 * The list's filters as the URL carries them (#/?currency=EUR&minBalance=10&order=desc),
 * so a filtered list can be linked, reloaded and gone back to. What is not valid is
 * dropped, as are balance bounds without a currency (100 is not the same sum in EUR
 * and JPY).
 */
export function filtersOf(query: string | undefined): AccountFilters {
  const params = new URLSearchParams(query ?? "");
  const currency = /^[A-Z]{3}$/.test(params.get("currency") ?? "") ? (params.get("currency") ?? "") : "";
  const bound = (name: string): string => {
    const checked = checkBound(params.get(name) ?? "");
    return currency && checked.ok ? checked.value : "";
  };
  return {
    minBalance: bound("minBalance"),
    maxBalance: bound("maxBalance"),
    currency,
    search: (params.get("search") ?? "").trim().slice(0, 200),
    order: params.get("order") === "desc" ? "desc" : "asc",
  };
}

export function queryOf(filters: AccountFilters): string {
  const params = new URLSearchParams();
  if (filters.search) params.set("search", filters.search);
  if (filters.currency) params.set("currency", filters.currency);
  if (filters.minBalance) params.set("minBalance", filters.minBalance);
  if (filters.maxBalance) params.set("maxBalance", filters.maxBalance);
  if (filters.order === "desc") params.set("order", "desc");
  return params.toString();
}

function filtered(filters: AccountFilters): boolean {
  return Boolean(filters.minBalance || filters.maxBalance || filters.currency || filters.search);
}
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
  const [search, setSearch] = useState(value.search);
  const [min, setMin] = useState(value.minBalance);
  const [max, setMax] = useState(value.maxBalance);
  const [currency, setCurrency] = useState(value.currency);
  const [order, setOrder] = useState(value.order);
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
    if (!currency && ((low.ok && low.value) || (high.ok && high.value))) {
      next.min = "Choose a currency to filter by balance: 100 is not the same sum in EUR and in JPY.";
    }
    setErrors(next);
    if (next.min || next.max || !low.ok || !high.ok) return;
    onChange({ minBalance: low.value, maxBalance: high.value, currency, search: search.trim(), order });
  };

  const reset = (): void => {
    setSearch("");
    setMin("");
    setMax("");
    setCurrency("");
    setOrder("asc");
    setErrors({});
    onChange(NO_FILTERS);
  };

  return (
    <form className="filters" onSubmit={submit} aria-label="Filter accounts" noValidate>
      <div className="field field-search">
        <label htmlFor={`${id}-search`}>Search</label>
        <input
          id={`${id}-search`}
          type="search"
          autoComplete="off"
          maxLength={200}
          placeholder="Owner name or account id"
          value={search}
          onChange={(e) => setSearch(e.target.value)}
        />
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
      <div className="field">
        <label htmlFor={`${id}-order`}>Order</label>
        <select
          id={`${id}-order`}
          value={order}
          onChange={(e) => setOrder(e.target.value === "desc" ? "desc" : "asc")}
        >
          <option value="asc">Lowest balance first</option>
          <option value="desc">Highest balance first</option>
        </select>
      </div>
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

function AccountRow({ account: a, flash }: { account: Account; flash: boolean }) {
  return (
    <tr className={flash ? "flash" : undefined}>
      <th scope="row" data-label="Owner">
        <a href={href({ name: "account", id: a.accountId })}>
          <OwnerName name={a.ownerName} />
        </a>
      </th>
      <td data-label="Account id">
        <span className="account-id">{a.accountId}</span>
      </td>
      <td className="num" data-label="Balance">
        <span className="money-amount">{a.currentBalance}</span>
      </td>
      <td data-label="Currency">{a.currency}</td>
      <td className="num" data-label="Transactions">
        {a.transactionCount}
      </td>
      <td data-label="Last activity">
        <time dateTime={a.lastTransactionDate ?? undefined} title={formatDateTime(a.lastTransactionDate)}>
          {formatRelative(a.lastTransactionDate)}
        </time>
      </td>
      <td data-label="Status">
        <AccountStatus status={a.status} />
      </td>
    </tr>
  );
}

const COLUMNS = 7;

/**
 * The accounts by balance. Balances in different currencies do not compare, so with
 * no currency chosen the rows are grouped by currency, each group by balance.
 */
function AccountsTable({ filters }: { filters: AccountFilters }) {
  const query = useAccounts(filters);
  const { recent } = useLive();
  if (query.isPending) return <Loading>Loading accounts…</Loading>;
  if (query.isLoadingError) return <ErrorNotice error={query.error} onRetry={() => void query.refetch()} />;
  const accounts = query.data.pages.flatMap((page) => page.items);
  if (accounts.length === 0) {
    return (
      <Empty>
        {filtered(filters) ? "No account matches these filters." : "No accounts yet: open the first one."}
      </Empty>
    );
  }
  const order = filters.order === "desc" ? "highest balance first" : "lowest balance first";
  const groups = new Map<string, Account[]>();
  for (const a of accounts) groups.set(a.currency, [...(groups.get(a.currency) ?? []), a]);
  const grouped = filters.currency === "";
  return (
    <>
      <div className="table-wrap">
        <table className="table table-accounts" aria-busy={query.isFetching}>
          <caption className="sr-only">
            Accounts, {order}
            {grouped ? ", by currency" : ""}
          </caption>
          <thead>
            <tr>
              <th scope="col">Owner</th>
              <th scope="col">Account id</th>
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
          {grouped ? (
            [...groups.entries()]
              .sort(([x], [y]) => x.localeCompare(y))
              .map(([currency, rows]) => (
                <tbody key={currency} data-currency={currency}>
                  <tr className="group-row">
                    <th scope="colgroup" colSpan={COLUMNS}>
                      {currency}
                    </th>
                  </tr>
                  {rows.map((a) => (
                    <AccountRow key={a.accountId} account={a} flash={recent.has(a.accountId)} />
                  ))}
                </tbody>
              ))
          ) : (
            <tbody>
              {accounts.map((a) => (
                <AccountRow key={a.accountId} account={a} flash={recent.has(a.accountId)} />
              ))}
            </tbody>
          )}
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
  const route = useRoute();
  const query = route.name === "accounts" ? (route.query ?? "") : "";
  const filters = useMemo(() => filtersOf(query), [query]);
  useEffect(() => rememberListQuery(query), [query]);
  const [opening, setOpening] = useState(false);
  const totals = useTotals();
  const openButton = useRef<HTMLButtonElement>(null);
  const known = (totals.data?.items ?? []).map((t) => t.currency);
  const currencies =
    filters.currency && !known.includes(filters.currency) ? [...known, filters.currency] : known;

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
      {totals.isLoadingError ? null : <Totals items={totals.data?.items ?? []} />}
      <section className="card" aria-labelledby="list-title">
        <div className="card-head">
          <h2 id="list-title" className="card-title">
            All accounts
          </h2>
        </div>
        {/* Keyed by the URL: going back to other filters shows them in the form too. */}
        <Filters
          key={query}
          value={filters}
          currencies={currencies}
          onChange={(next) => navigate({ name: "accounts", query: queryOf(next) })}
        />
        <AccountsTable filters={filters} />
      </section>
    </div>
  );
}
