import { QueryClientProvider } from "@tanstack/react-query";
import { render } from "@testing-library/react";
import type { ReactElement } from "react";

import { LiveProvider } from "../api/LiveProvider";
import { createQueryClient } from "../api/queryClient";

/** Render ``ui`` as the app does: a fresh query client and the live stream (a FakeEventSource). */
export function renderApp(ui: ReactElement) {
  const client = createQueryClient();
  client.setDefaultOptions({ queries: { ...client.getDefaultOptions().queries, retry: false } });
  const result = render(
    <QueryClientProvider client={client}>
      <LiveProvider>{ui}</LiveProvider>
    </QueryClientProvider>,
  );
  return { ...result, client };
}
