/** What to tell the user when the API says no: one sentence per problem type. */
import { ApiError } from "./client";

function text(value: unknown): string | null {
  return typeof value === "string" && value !== "" ? value : null;
}

function sentence(value: string): string {
  const trimmed = value.trim();
  if (!trimmed) return trimmed;
  const first = trimmed.charAt(0).toUpperCase() + trimmed.slice(1);
  return /[.!?]$/.test(first) ? first : `${first}.`;
}

/** A message fit to show for ``error`` (usually an ApiError from the client). */
export function describeError(error: unknown): string {
  if (!(error instanceof ApiError)) {
    return error instanceof Error ? sentence(error.message) : "Something went wrong.";
  }
  const extra = error.problem ?? {};
  const balance = text(extra["balance"]);
  const requested = text(extra["requested"]);
  const currency = text(extra["currency"]);
  switch (error.code) {
    case "insufficient-funds":
      return balance && requested && currency
        ? `Insufficient funds: the balance is ${balance} ${currency}, less than the ${requested} ${currency} asked for.`
        : `Insufficient funds: ${error.detail}`;
    case "account-closed":
      return "This account is closed: it takes no more deposits or withdrawals.";
    case "account-not-empty":
      return balance && currency
        ? `The account still holds ${balance} ${currency}: withdraw it all before closing the account.`
        : sentence(error.detail);
    case "too-many-open-accounts": {
      const most = extra["maxOpenAccounts"];
      return currency && typeof most === "number"
        ? `This owner holds ${most} open ${currency} accounts already, the most allowed: close one before opening another.`
        : sentence(error.detail);
    }
    case "unauthorized":
      return "Authentication required: paste a bearer token with the Token button at the top of the page.";
    case "forbidden":
      return `Not allowed: ${error.detail || "this token may not do that"}. Use a token with that scope.`;
    case "not-consistent-yet":
      return "The read model is still catching up with the latest write; try again in a moment.";
    case "network":
      return "Cannot reach the server. Check that `eventvault serve` is running, then retry.";
    case "account-not-found":
      return "No account has this id.";
    default:
      return error.detail ? `${error.title}: ${error.detail.replace(/\.$/, "")}.` : `${error.title}.`;
  }
}

export function isAuthError(error: unknown): boolean {
  return error instanceof ApiError && (error.status === 401 || error.status === 403);
}
