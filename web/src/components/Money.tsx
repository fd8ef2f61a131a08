/** An amount exactly as the API wrote it, with its currency. */
export function Money({
  amount,
  currency,
  sign,
  className,
}: {
  amount: string;
  currency: string;
  sign?: "+" | "−" | undefined;
  className?: string | undefined;
}) {
  return (
    <span className={["money", className].filter(Boolean).join(" ")}>
      <span className="money-amount">
        {sign}
        {amount}
      </span>{" "}
      <span className="money-currency">{currency}</span>
    </span>
  );
}
