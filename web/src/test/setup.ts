import "@testing-library/jest-dom/vitest";
import { cleanup, configure } from "@testing-library/react";
import { afterEach, beforeEach, expect } from "vitest";

import { clearAuthRefusal } from "../api/auth";
import { forgetWrites } from "../api/client";
import { resetReach } from "../api/reach";

// findBy* and waitFor wait for a condition; on a busy machine the default second is
// too short a bound for a page's first render.
configure({ asyncUtilTimeout: 5000 });

// findBy* and waitFor return as soon as their condition holds; the bound only
// decides when a test gives up, so it is generous (a loaded machine is slow).
configure({ asyncUtilTimeout: 20_000 });

// Like the e2e run in Chromium, a component test fails on any console error
// (React's act() and key warnings included).
const originalError = console.error;
let consoleErrors: unknown[][] = [];

beforeEach(() => {
  consoleErrors = [];
  console.error = (...args: unknown[]) => {
    consoleErrors.push(args);
    originalError(...args);
  };
});

afterEach(() => {
  cleanup();
  console.error = originalError;
  window.sessionStorage.clear();
  window.location.hash = "";
  forgetWrites();
  clearAuthRefusal();
  resetReach();
  expect(consoleErrors, "console.error was called").toEqual([]);
});
