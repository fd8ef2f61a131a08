/**
 * Money as the API writes it: exact decimal strings ("42.00", JPY "150000").
 *
 * The dashboard never turns an amount into a float to show or send it; numbers
 * appear only where a chart needs a coordinate.
 */

const DECIMAL = /^\d+(?:\.\d+)?$/;
/** The ledger's per-operation cap (eventvault_ledger.domain.MAX_AMOUNT). */
export const MAX_AMOUNT = "1000000000";

/** Decimal places the API uses for a currency, read off one of its amounts ("42.00" -> 2). */
export function minorUnitsOf(sample: string): number {
  const dot = sample.indexOf(".");
  return dot < 0 ? 0 : sample.length - dot - 1;
}

function parts(value: string): { whole: string; fraction: string; negative: boolean } {
  const negative = value.startsWith("-");
  const digits = negative ? value.slice(1) : value;
  const [whole = "0", fraction = ""] = digits.split(".");
  return { whole: whole.replace(/^0+(?=\d)/, ""), fraction: fraction.replace(/0+$/, ""), negative };
}

/** -1, 0 or 1 as decimal string ``a`` is below, equal to or above ``b``, exactly. */
export function compareDecimal(a: string, b: string): number {
  const x = parts(a);
  const y = parts(b);
  const xZero = /^0*$/.test(x.whole + x.fraction);
  const yZero = /^0*$/.test(y.whole + y.fraction);
  const xSign = xZero ? 0 : x.negative ? -1 : 1;
  const ySign = yZero ? 0 : y.negative ? -1 : 1;
  if (xSign !== ySign) return Math.sign(xSign - ySign);
  if (xSign === 0) return 0;
  let magnitude: number;
  if (x.whole.length !== y.whole.length) {
    magnitude = x.whole.length < y.whole.length ? -1 : 1;
  } else {
    const width = Math.max(x.fraction.length, y.fraction.length);
    const left = x.whole + x.fraction.padEnd(width, "0");
    const right = y.whole + y.fraction.padEnd(width, "0");
    magnitude = left === right ? 0 : left < right ? -1 : 1;
  }
  return magnitude * xSign;
}

export type Checked = { ok: true; value: string } | { ok: false; message: string };

/** Whether ``raw`` is an amount the ledger takes for ``currency`` (the server checks again). */
export function checkAmount(raw: string, currency: string, units: number | null): Checked {
  const text = raw.trim();
  const example = units === 0 ? "e.g. 25" : "e.g. 25.00";
  if (text === "") return { ok: false, message: `Enter an amount, ${example}.` };
  if (/^\d+,\d+$/.test(text)) return { ok: false, message: `Use a dot for decimals, ${example}.` };
  if (text.startsWith("-")) return { ok: false, message: "The amount must be positive." };
  if (!DECIMAL.test(text)) return { ok: false, message: `Enter a number, ${example}.` };
  if (compareDecimal(text, "0") <= 0) return { ok: false, message: "The amount must be more than zero." };
  const places = minorUnitsOf(text);
  if (units !== null && places > units) {
    return {
      ok: false,
      message:
        units === 0
          ? `${currency} amounts are whole numbers.`
          : `${currency} amounts have at most ${units} decimal place${units === 1 ? "" : "s"}.`,
    };
  }
  if (compareDecimal(text, MAX_AMOUNT) > 0) {
    return { ok: false, message: `At most ${MAX_AMOUNT} ${currency} per transaction.` };
  }
  return { ok: true, value: text.replace(/^0+(?=\d)/, "") };
}

/** Whether ``raw`` is empty or a non-negative decimal, for the balance filters. */
export function checkBound(raw: string): Checked {
  const text = raw.trim();
  if (text === "") return { ok: true, value: "" };
  if (/^\d+,\d+$/.test(text)) return { ok: false, message: "Use a dot for decimals, e.g. 100.50." };
  if (!DECIMAL.test(text)) return { ok: false, message: "Enter a number of at least 0, e.g. 100.50." };
  return { ok: true, value: text };
}

/** A plotting coordinate for an amount: charts only, never arithmetic on money. */
export function toChartNumber(amount: string): number {
  return Number(amount);
}

/**
 * ``amount`` written with the currency's ``units`` decimals, as the ledger shows it:
 * "10" becomes "10.00" in EUR. Text only (padding zeros), never arithmetic.
 */
export function withUnits(amount: string, units: number | null): string {
  if (units === null || units === 0) return amount;
  const [whole = "0", fraction = ""] = amount.split(".");
  return fraction.length >= units ? amount : `${whole}.${fraction.padEnd(units, "0")}`;
}
