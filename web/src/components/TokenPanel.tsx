import { useQueryClient } from "@tanstack/react-query";
import { type FormEvent, useEffect, useId, useRef, useState } from "react";

import { clearAuthRefusal } from "../api/auth";
import { setToken, useToken } from "../api/token";

/** Paste a bearer token (kept in sessionStorage for this tab only). */
export function TokenPanel({ onDone }: { onDone: () => void }) {
  const token = useToken();
  const client = useQueryClient();
  const [value, setValue] = useState(token ?? "");
  const input = useRef<HTMLInputElement>(null);
  const id = useId();

  useEffect(() => input.current?.focus(), []);

  const apply = (next: string | null): void => {
    setToken(next);
    clearAuthRefusal();
    // Every answer so far was given to the old credentials.
    void client.resetQueries();
    onDone();
  };

  const submit = (event: FormEvent): void => {
    event.preventDefault();
    apply(value);
  };

  return (
    <form className="token-panel" onSubmit={submit} aria-labelledby={`${id}-title`}>
      <h2 id={`${id}-title`} className="token-title">
        API token
      </h2>
      <p className="hint" id={`${id}-hint`}>
        Servers started with <code>--tokens</code> need <code>Authorization: Bearer &lt;token&gt;</code>. The
        token stays in this tab (sessionStorage) and is sent only to this server.
      </p>
      <div className="token-row">
        <label htmlFor={`${id}-token`}>Bearer token</label>
        <input
          ref={input}
          id={`${id}-token`}
          type="password"
          autoComplete="off"
          spellCheck={false}
          value={value}
          aria-describedby={`${id}-hint`}
          onChange={(e) => setValue(e.target.value)}
          onKeyDown={(e) => {
            if (e.key === "Escape") onDone();
          }}
        />
        <button type="submit" className="button button-primary">
          Save token
        </button>
        {token ? (
          <button type="button" className="button" onClick={() => apply(null)}>
            Forget token
          </button>
        ) : null}
      </div>
    </form>
  );
}
