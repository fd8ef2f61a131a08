/** Transactions as CSV (RFC 4180), for a spreadsheet or an accountant. */
import type { Transaction } from "../api/types";

const HEADER = [
  "version",
  "recordedAt",
  "kind",
  "amount",
  "currency",
  "balanceAfter",
  "description",
  "eventId",
  "position",
];

/**
 * One field: quoted when it holds a comma, a quote or a line break. Text that a
 * spreadsheet would run as a formula (=, +, -, @ first) gets a leading apostrophe.
 */
export function csvField(value: string | number | null): string {
  let text = value === null ? "" : String(value);
  if (typeof value === "string" && /^[=+\-@\t\r]/.test(text)) text = `'${text}`;
  return /[",\r\n]/.test(text) ? `"${text.replace(/"/g, '""')}"` : text;
}

/** The transactions, one row each, amounts exactly as the API wrote them. */
export function transactionsCsv(items: readonly Transaction[], currency: string): string {
  const rows = items.map((t) => [
    t.version,
    t.recordedAt,
    t.kind,
    t.amount,
    currency,
    t.balanceAfter,
    t.description,
    t.eventId,
    t.position,
  ]);
  return [HEADER, ...rows].map((row) => row.map(csvField).join(",")).join("\r\n") + "\r\n";
}

/** Hand ``text`` to the browser as a file download named ``name``. */
export function download(name: string, text: string, type = "text/csv;charset=utf-8"): void {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.append(link);
  link.click();
  link.remove();
  // The click has started the download; the object URL is no longer needed after it.
  setTimeout(() => URL.revokeObjectURL(url), 0);
}
