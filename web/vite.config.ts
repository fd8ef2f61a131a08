/// <reference types="vitest/config" />
import react from "@vitejs/plugin-react";
import { defineConfig } from "vite";

// The API serves the built dashboard from the Python package (see DASHBOARD in
// eventvault_ledger/api/app.py), so the build goes straight there.
export default defineConfig({
  plugins: [react()],
  base: "./",
  build: {
    outDir: "../src/eventvault_ledger/web",
    emptyOutDir: true,
    target: "es2022",
    sourcemap: false,
  },
  server: {
    // `npm run dev` talks to `eventvault serve` on its default port.
    proxy: { "/api": "http://127.0.0.1:8000", "/healthz": "http://127.0.0.1:8000" },
  },
  test: {
    environment: "jsdom",
    globals: true,
    setupFiles: ["./src/test/setup.ts"],
    include: ["src/**/*.test.{ts,tsx}"],
    restoreMocks: true,
    env: { TZ: "UTC" },
    // Generous bounds, so a machine busy with other work slows the tests down
    // without failing them: each wait still ends as soon as its condition holds.
    testTimeout: 60_000,
    hookTimeout: 60_000,
  },
});
