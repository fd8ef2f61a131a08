import { Component, type ErrorInfo, type ReactNode } from "react";

import { Layout } from "./components/Layout";
import { useRoute } from "./lib/router";
import { AccountPage } from "./pages/AccountPage";
import { AccountsPage } from "./pages/AccountsPage";
import { OperationsPage } from "./pages/OperationsPage";

class ErrorBoundary extends Component<{ children: ReactNode }, { error: Error | null }> {
  override state = { error: null as Error | null };

  static getDerivedStateFromError(error: Error): { error: Error } {
    return { error };
  }

  override componentDidCatch(error: Error, info: ErrorInfo): void {
    // Kept for whoever debugs it; the page itself says what to do.
    console.warn("dashboard error", error, info.componentStack);
  }

  override render(): ReactNode {
    if (this.state.error) {
      return (
        <div className="notice notice-error" role="alert">
          <p>This page failed to render: {this.state.error.message}</p>
          <button type="button" className="button" onClick={() => this.setState({ error: null })}>
            Try again
          </button>
        </div>
      );
    }
    return this.props.children;
  }
}

/** The dashboard; main.tsx provides the query client and the live stream around it. */
export function App() {
  const route = useRoute();
  let page: ReactNode;
  switch (route.name) {
    case "accounts":
      page = <AccountsPage />;
      break;
    case "account":
      page = <AccountPage key={route.id} id={route.id} />;
      break;
    case "operations":
      page = <OperationsPage />;
      break;
    case "not-found":
      page = (
        <div className="page">
          <h1>Page not found</h1>
          <p>
            Nothing lives at <code>{route.path}</code>. <a href="#/">Back to the accounts</a>.
          </p>
        </div>
      );
      break;
  }
  return (
    <Layout route={route}>
      <ErrorBoundary key={route.name === "account" ? route.id : route.name}>{page}</ErrorBoundary>
    </Layout>
  );
}
