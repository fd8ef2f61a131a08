/** The operations page's store panels: the store's status, and its snapshots (admin scope). */
import { useState } from "react";

import { describeError } from "../api/problems";
import { useDropSnapshots, useSnapshots, useStoreStatus } from "../api/queries";
import { ErrorNotice, Loading } from "./Notice";
import { formatDateTime, formatDuration } from "../lib/time";

export function formatBytes(bytes: number | null): string {
  if (bytes === null) return "—";
  const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0
    ? `${bytes.toLocaleString()} bytes`
    : `${value.toLocaleString(undefined, { maximumFractionDigits: 1 })} ${units[unit]}`;
}

/** Schema version, events, streams, head, size on disk and each read model's lag: `eventvault db status`. */
export function StorePanel() {
  const query = useStoreStatus();
  return (
    <section className="card" aria-labelledby="store-title" data-testid="store-panel">
      <div className="card-head">
        <h2 id="store-title" className="card-title">
          Store
        </h2>
        <span className="hint">
          What <code>eventvault db status</code> shows; needs an admin token.
        </span>
      </div>
      {query.isPending ? (
        <Loading>Loading the store's status…</Loading>
      ) : query.isError && query.data === undefined ? (
        <ErrorNotice error={query.error} onRetry={() => void query.refetch()} />
      ) : query.data ? (
        <>
          <dl className="kv kv-wide">
            <div>
              <dt>Backend</dt>
              <dd>
                {query.data.backend}
                {query.data.schemaVersion !== null ? ` (schema v${query.data.schemaVersion})` : ""}
              </dd>
            </div>
            <div>
              <dt>Events</dt>
              <dd data-testid="store-events">{query.data.events.toLocaleString()}</dd>
            </div>
            <div>
              <dt>Streams</dt>
              <dd data-testid="store-streams">{query.data.streams.toLocaleString()}</dd>
            </div>
            <div>
              <dt>Head</dt>
              <dd className="mono">{query.data.head}</dd>
            </div>
            <div>
              <dt>Size on disk</dt>
              <dd data-testid="store-size">{formatBytes(query.data.sizeBytes)}</dd>
            </div>
          </dl>
          <table className="table">
            <caption className="hint">Read-model lag</caption>
            <thead>
              <tr>
                <th scope="col">Read model</th>
                <th scope="col">State</th>
                <th scope="col">Checkpoint</th>
                <th scope="col">Lag</th>
              </tr>
            </thead>
            <tbody>
              {query.data.readModels.map((m) => (
                <tr key={m.name}>
                  <th scope="row">{m.name}</th>
                  <td data-label="State">{m.state}</td>
                  <td className="mono" data-label="Checkpoint">
                    {m.checkpoint}
                  </td>
                  <td data-label="Lag">
                    {m.lagEvents.toLocaleString()} event{m.lagEvents === 1 ? "" : "s"} ·{" "}
                    {formatDuration(m.lagSeconds)}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </>
      ) : null}
    </section>
  );
}

/** The stored snapshots, by aggregate type; dropping asks first (aggregates then replay their events). */
export function SnapshotsPanel() {
  const [type, setType] = useState<string | null>(null);
  const [confirming, setConfirming] = useState<{ type?: string; stream?: string } | null>(null);
  const query = useSnapshots(type);
  const drop = useDropSnapshots();
  const [dropped, setDropped] = useState<number | null>(null);
  // The types of the unfiltered list, to choose from (a filtered list knows only its own).
  const all = useSnapshots(null);
  const types = Object.keys(all.data?.types ?? {}).sort();
  const which = confirming?.stream
    ? `the snapshots of stream ${confirming.stream}`
    : confirming?.type
      ? `the snapshots of type ${confirming.type}`
      : "every snapshot";
  return (
    <section className="card" aria-labelledby="snapshots-title" data-testid="snapshots-panel">
      <div className="card-head">
        <h2 id="snapshots-title" className="card-title">
          Snapshots
        </h2>
        <span className="hint">A cache: without one, an aggregate loads by replaying its events.</span>
      </div>
      <div className="controls-row">
        <label htmlFor="snapshot-type">Type</label>
        <select
          id="snapshot-type"
          value={type ?? ""}
          onChange={(event) => {
            setType(event.target.value === "" ? null : event.target.value);
            setConfirming(null);
          }}
        >
          <option value="">all types</option>
          {types.map((t) => (
            <option key={t} value={t}>
              {t} ({all.data?.types[t]})
            </option>
          ))}
        </select>
        <button
          type="button"
          className="button button-danger"
          disabled={drop.isPending || (query.data?.items.length ?? 0) === 0}
          onClick={() => {
            drop.reset();
            setDropped(null);
            setConfirming(type === null ? {} : { type });
          }}
        >
          {type === null ? "Drop all…" : `Drop every ${type} snapshot…`}
        </button>
      </div>
      {confirming ? (
        <div className="confirm" role="group" aria-label="Confirm the drop">
          <p className="hint">
            Drop {which}? The aggregates load by replaying their events until new snapshots are taken.
          </p>
          <button
            type="button"
            className="button button-danger"
            disabled={drop.isPending}
            onClick={() =>
              drop.mutate(confirming, {
                onSuccess: (result) => {
                  setDropped(result.dropped);
                  setConfirming(null);
                },
              })
            }
          >
            Drop them
          </button>
          <button type="button" className="button" onClick={() => setConfirming(null)}>
            Cancel
          </button>
        </div>
      ) : null}
      {dropped !== null ? (
        <p className="hint" role="status">
          Dropped {dropped} snapshot{dropped === 1 ? "" : "s"}.
        </p>
      ) : null}
      {drop.isError ? (
        <p className="form-error" role="alert">
          {describeError(drop.error)}
        </p>
      ) : null}
      {query.isPending ? (
        <Loading>Loading the snapshots…</Loading>
      ) : query.isError ? (
        <ErrorNotice error={query.error} onRetry={() => void query.refetch()} />
      ) : query.data.items.length === 0 ? (
        <p className="empty">No snapshots{type === null ? "" : ` of type ${type}`}.</p>
      ) : (
        <table className="table">
          <thead>
            <tr>
              <th scope="col">Stream</th>
              <th scope="col">Schema</th>
              <th scope="col">Version</th>
              <th scope="col">Size</th>
              <th scope="col">Taken</th>
              <th scope="col">
                <span className="sr-only">Drop</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {query.data.items.map((s) => (
              <tr key={`${s.streamId}/${s.schemaVersion}`}>
                <th scope="row" className="mono">
                  {s.streamId}
                </th>
                <td data-label="Schema">v{s.schemaVersion}</td>
                <td data-label="Version">{s.streamVersion}</td>
                <td data-label="Size">{formatBytes(s.size)}</td>
                <td data-label="Taken">{formatDateTime(s.createdAt, true)}</td>
                <td data-label="Drop">
                  <button
                    type="button"
                    className="button button-small"
                    aria-label={`Drop the snapshots of ${s.streamId}`}
                    disabled={drop.isPending}
                    onClick={() => {
                      drop.reset();
                      setDropped(null);
                      setConfirming({ stream: s.streamId });
                    }}
                  >
                    Drop
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {query.data?.truncated ? (
        <p className="hint">Only the first {query.data.items.length} are listed.</p>
      ) : null}
    </section>
  );
}
