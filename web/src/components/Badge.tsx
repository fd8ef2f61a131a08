import type { ReactNode } from "react";

export type Tone = "good" | "warn" | "bad" | "neutral" | "info";

export function Badge({ tone, children }: { tone: Tone; children: ReactNode }) {
  return <span className={`badge badge-${tone}`}>{children}</span>;
}

export function AccountStatus({ status }: { status: string }) {
  return <Badge tone={status === "open" ? "good" : "neutral"}>{status === "open" ? "Open" : "Closed"}</Badge>;
}

const PROJECTION_TONES: Record<string, Tone> = {
  live: "good",
  idle: "good",
  catching_up: "info",
  starting: "info",
  failed: "bad",
  stopped: "warn",
  paused: "warn",
};

export function ProjectionState({ state }: { state: string }) {
  return <Badge tone={PROJECTION_TONES[state] ?? "neutral"}>{state.replace(/_/g, " ")}</Badge>;
}
