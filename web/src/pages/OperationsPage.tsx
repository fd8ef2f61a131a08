import { describeError } from "../api/problems";
import { useState } from "react";

import { useProjectionControl, useProjections, useRebuild } from "../api/queries";
import type { ProjectionStatus } from "../api/types";
import { ProjectionState } from "../components/Badge";
import { SnapshotsPanel, StorePanel } from "../components/StorePanels";
import { Empty, ErrorNotice, Loading } from "../components/Notice";
import { formatDuration } from "../lib/time";

function rate(value: number | null): string {
  if (value === null) return "— (runs elsewhere)";
  return `${value.toLocaleString(undefined, { maximumFractionDigits: 1 })} events/s`;
}

function Rebuild({ projection }: { projection: ProjectionStatus }) {
  const rebuild = useRebuild();
  // A rebuild this server ran that a newer generation has replaced since (one rebuilt
  // elsewhere, by `eventvault rebuild`) is history: the card shows what serves.
  const progress =
    projection.rebuild && projection.rebuild.generation >= projection.generation ? projection.rebuild : null;
  const running = progress?.state === "running";
  const label = `Rebuild ${projection.name}`;
  return (
    <div className="rebuild">
      <button
        type="button"
        className="button"
        aria-label={label}
        disabled={running || rebuild.isPending}
        onClick={() => rebuild.mutate(projection.name)}
      >
        {running ? "Rebuilding…" : rebuild.isPending ? "Starting…" : "Rebuild"}
      </button>
      <span className="hint">
        Needs an admin token when the server has tokens. The old tables serve until the swap.
      </span>
      {progress ? (
        <div className="rebuild-progress" data-testid={`rebuild-${projection.name}`}>
          <label htmlFor={`rebuild-${projection.name}-bar`} className="rebuild-label">
            Rebuild of generation {progress.generation}: <strong>{progress.state}</strong>
          </label>
          <progress
            id={`rebuild-${projection.name}-bar`}
            max={Math.max(progress.total, 1)}
            value={progress.state === "done" ? Math.max(progress.total, 1) : progress.done}
          />
          <span className="hint">
            {progress.done.toLocaleString()} of {progress.total.toLocaleString()} events
            {progress.state === "running"
              ? ` · ${rate(progress.eventsPerSecond)} · ${formatDuration(progress.etaSeconds)} left`
              : progress.state === "done"
                ? ` at ${rate(progress.eventsPerSecond)}; generation ${progress.generation} serves`
                : ""}
          </span>
          {progress.error ? (
            <p className="form-error" role="alert">
              The rebuild failed: {progress.error}
            </p>
          ) : null}
        </div>
      ) : null}
      {rebuild.isError ? (
        <p className="form-error" role="alert">
          {describeError(rebuild.error)}
        </p>
      ) : null}
    </div>
  );
}

/**
 * Pause, resume and reset: the same controls as the admin API's (and
 * `eventvault projections pause|resume|reset`). A reset skips events, so it asks
 * for the checkpoint and a confirmation first; it takes only a paused projection.
 */
function Controls({ projection: p }: { projection: ProjectionStatus }) {
  const control = useProjectionControl();
  const [resetting, setResetting] = useState(false);
  const [to, setTo] = useState("");
  const busy = control.isPending;
  const run = (v: Parameters<typeof control.mutate>[0]) => {
    control.reset();
    control.mutate(v, { onSuccess: () => setResetting(false) });
  };
  return (
    <div className="controls" role="group" aria-label={`Controls of ${p.name}`}>
      <div className="controls-row">
        {p.paused ? (
          <button
            type="button"
            className="button"
            aria-label={`Resume ${p.name}`}
            disabled={busy}
            onClick={() => run({ name: p.name, action: "resume" })}
          >
            Resume
          </button>
        ) : (
          <button
            type="button"
            className="button"
            aria-label={`Pause ${p.name}`}
            disabled={busy}
            onClick={() => run({ name: p.name, action: "pause" })}
          >
            Pause
          </button>
        )}
        <button
          type="button"
          className="button button-danger"
          aria-label={`Reset ${p.name}`}
          aria-expanded={resetting}
          disabled={busy || !p.paused || resetting}
          title={p.paused ? undefined : "Pause the projection first"}
          onClick={() => {
            control.reset();
            setTo(p.checkpoint);
            setResetting(true);
          }}
        >
          Reset to…
        </button>
        <span className="hint" data-testid={`paused-${p.name}`}>
          {p.paused ? "Paused: no worker applies events; the read model serves as it stands." : "Running."}
        </span>
      </div>
      {resetting ? (
        <form
          className="confirm"
          aria-label={`Confirm the reset of ${p.name}`}
          onSubmit={(event) => {
            event.preventDefault();
            run({ name: p.name, action: "reset", to: to.trim() });
          }}
        >
          <label htmlFor={`reset-${p.name}-to`}>Move {p.name} forward to checkpoint</label>
          <input
            id={`reset-${p.name}-to`}
            className="mono"
            value={to}
            onChange={(event) => setTo(event.target.value)}
            required
          />
          <p className="hint">
            The events between checkpoint {p.checkpoint} and this one are skipped: the read model never
            applies them. This cannot be undone, except by a rebuild.
          </p>
          <button type="submit" className="button button-danger" disabled={busy || to.trim() === ""}>
            Skip to this checkpoint
          </button>
          <button type="button" className="button" onClick={() => setResetting(false)}>
            Cancel
          </button>
        </form>
      ) : null}
      {control.isError ? (
        <p className="form-error" role="alert">
          {describeError(control.error)}
        </p>
      ) : null}
    </div>
  );
}

function ProjectionCard({ projection: p }: { projection: ProjectionStatus }) {
  const behind = p.lagEvents > 0;
  return (
    <article
      className="card projection"
      aria-labelledby={`projection-${p.name}`}
      data-testid={`projection-${p.name}`}
    >
      <div className="card-head">
        <h2 id={`projection-${p.name}`} className="card-title">
          {p.name}
        </h2>
        <ProjectionState state={p.state} />
      </div>
      <ul className="stat-grid stat-grid-compact">
        <li className={`stat ${behind ? "stat-warn" : ""}`}>
          <span className="stat-label">Lag</span>
          <span className="stat-value" data-testid="lag-events">
            {p.lagEvents.toLocaleString()} event{p.lagEvents === 1 ? "" : "s"}
          </span>
          <span className="stat-foot">{formatDuration(p.lagSeconds)} behind the head</span>
        </li>
        <li className="stat">
          <span className="stat-label">Rate</span>
          <span className="stat-value stat-value-small">{rate(p.eventsPerSecond)}</span>
        </li>
        <li className="stat">
          <span className="stat-label">Applied</span>
          <span className="stat-value stat-value-small">{p.applied.toLocaleString()} events</span>
        </li>
      </ul>
      <dl className="kv kv-wide">
        <div>
          <dt>Checkpoint</dt>
          <dd className="mono">{p.checkpoint}</dd>
        </div>
        <div>
          <dt>Head of the log</dt>
          <dd className="mono">{p.head}</dd>
        </div>
        <div>
          <dt>Generation</dt>
          <dd>
            {p.generation} (schema v{p.version})
          </dd>
        </div>
        <div>
          <dt>Partitions here</dt>
          <dd>
            {p.ownedPartitions.length} of {p.partitions}
          </dd>
        </div>
        <div>
          <dt>Last error</dt>
          <dd>
            {p.lastError ? (
              <span className="error-text" role="alert">
                {p.lastError.message}
                {p.lastError.position !== null ? ` (at position ${p.lastError.position}` : ""}
                {p.lastError.eventId
                  ? `, event ${p.lastError.eventId})`
                  : p.lastError.position !== null
                    ? ")"
                    : ""}
              </span>
            ) : (
              <span className="muted">none</span>
            )}
          </dd>
        </div>
      </dl>
      <Controls projection={p} />
      <Rebuild projection={p} />
    </article>
  );
}

export function OperationsPage() {
  const query = useProjections();
  return (
    <div className="page">
      <div className="page-head">
        <div>
          <h1>Operations</h1>
          <p className="lede">
            Projections read the event log and keep the read models current. Lag is how far each is behind the
            head of the log; this page refreshes every two seconds.
          </p>
        </div>
      </div>
      {query.isPending ? (
        <Loading>Loading projection status…</Loading>
      ) : query.isLoadingError ? (
        <ErrorNotice error={query.error} onRetry={() => void query.refetch()} />
      ) : query.data.items.length === 0 ? (
        <Empty>No projection runs against this store.</Empty>
      ) : (
        <div className="projections">
          {query.data.items.map((p) => (
            <ProjectionCard key={p.name} projection={p} />
          ))}
        </div>
      )}
      <div className="projections">
        <StorePanel />
        <SnapshotsPanel />
      </div>
    </div>
  );
}
