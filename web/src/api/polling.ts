import { createContext } from "react";

/** How often read-model queries poll: false while live updates arrive over SSE. */
export const PollingContext = createContext<number | false>(false);

/** The fallback rate while the event stream is down. */
export const POLL_MS = 5000;
