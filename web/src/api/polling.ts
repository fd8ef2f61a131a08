import { createContext } from "react";

export interface Reads {
  /** How often read-model queries poll: false while live updates arrive over SSE. */
  poll: number | false;
  /**
   * Whether reads may start. The first reads wait (briefly) for the live stream to
   * open: a read made after it opened misses no change, so none needs repeating.
   */
  ready: boolean;
}

/** Without a LiveProvider (a component on its own) reads start at once and never poll. */
export const ReadsContext = createContext<Reads>({ poll: false, ready: true });

/** The fallback rate while the event stream is down. */
export const POLL_MS = 5000;

/** How long the first reads wait for the live stream before they start without it. */
export const STREAM_GRACE_MS = 1000;
