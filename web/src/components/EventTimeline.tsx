import { useEvents } from "../api/queries";
import type { StoredEvent } from "../api/types";
import { formatDateTime } from "../lib/time";
import { Empty, ErrorNotice, Loading } from "./Notice";

function show(value: unknown): string {
  if (value === null || value === undefined) return "—";
  return typeof value === "string" ? value : JSON.stringify(value);
}

const TYPE_CLASS: Record<string, string> = {
  AccountOpened: "event-opened",
  MoneyDeposited: "event-deposit",
  MoneyWithdrawn: "event-withdraw",
  AccountClosed: "event-closed",
};

function EventItem({ event }: { event: StoredEvent }) {
  const meta = event.metadata;
  return (
    <li className={`event ${TYPE_CLASS[event.eventType] ?? ""}`}>
      <div className="event-head">
        <span className="event-type">{event.eventType}</span>
        <span className="event-where">
          v{event.version} · position {event.position}
        </span>
        <time className="event-time" dateTime={event.recordedAt ?? undefined}>
          {formatDateTime(event.recordedAt, true)}
        </time>
      </div>
      <dl className="kv">
        {Object.entries(event.data).map(([name, value]) => (
          <div key={name}>
            <dt>{name}</dt>
            <dd>{show(value)}</dd>
          </div>
        ))}
        <div>
          <dt>actor</dt>
          <dd>{show(meta["actor"])}</dd>
        </div>
      </dl>
      <details className="event-details">
        <summary>Envelope and metadata</summary>
        <dl className="kv kv-mono">
          <div>
            <dt>eventId</dt>
            <dd>{event.eventId}</dd>
          </div>
          <div>
            <dt>streamId</dt>
            <dd>{event.streamId}</dd>
          </div>
          <div>
            <dt>checkpoint</dt>
            <dd>{event.checkpoint}</dd>
          </div>
          <div>
            <dt>schemaVersion</dt>
            <dd>{event.schemaVersion}</dd>
          </div>
          <div>
            <dt>occurredAt</dt>
            <dd>{show(event.occurredAt)}</dd>
          </div>
          <div>
            <dt>recordedAt</dt>
            <dd>{show(event.recordedAt)}</dd>
          </div>
          {Object.entries(meta).map(([name, value]) => (
            <div key={name}>
              <dt>metadata.{name}</dt>
              <dd>{show(value)}</dd>
            </div>
          ))}
        </dl>
      </details>
    </li>
  );
}

/** The account's stream as stored: every event with its envelope, newest first. */
export function EventTimeline({ accountId }: { accountId: string }) {
  const query = useEvents(accountId);
  if (query.isPending) return <Loading>Loading events…</Loading>;
  if (query.isLoadingError) return <ErrorNotice error={query.error} onRetry={() => void query.refetch()} />;
  const events = query.data.pages.flatMap((page) => page.items);
  if (events.length === 0) return <Empty>No events.</Empty>;
  return (
    <>
      <ol className="timeline" aria-label="Events, newest first">
        {events.map((e) => (
          <EventItem key={e.eventId} event={e} />
        ))}
      </ol>
      {query.hasNextPage ? (
        <div className="more">
          <button
            type="button"
            className="button"
            disabled={query.isFetchingNextPage}
            onClick={() => void query.fetchNextPage()}
          >
            {query.isFetchingNextPage ? "Loading…" : "Older events"}
          </button>
        </div>
      ) : null}
    </>
  );
}
