/** What an erased owner name reads as (the API refuses it as a name, so it always means erased). */
export const REDACTED = "[redacted]";

export function isRedacted(name: string): boolean {
  return name === REDACTED;
}

/**
 * An account owner's name; an erased one (its personal data deleted, docs/data-protection.md)
 * as a muted, struck-through placeholder with an "erased" badge, so it is never taken for a name.
 */
export function OwnerName({ name }: { name: string }) {
  if (!isRedacted(name)) return <>{name}</>;
  return (
    <span className="owner-redacted" title="The owner's personal data was erased">
      <span className="owner-redacted-text">{REDACTED}</span>{" "}
      <span className="badge badge-neutral">erased</span>
    </span>
  );
}
