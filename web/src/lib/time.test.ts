import { formatDuration, formatRelative } from "./time";

describe("time formatting", () => {
  it("says how long ago recent activity was, and 'never' without any", () => {
    const now = Date.parse("2026-01-02T12:00:00Z");
    expect(formatRelative("2026-01-02T11:59:50Z", now)).toBe("just now");
    expect(formatRelative("2026-01-02T11:55:00Z", now)).toMatch(/5 min/);
    expect(formatRelative("2026-01-01T12:00:00Z", now)).toBe("yesterday");
    expect(formatRelative(null, now)).toBe("never");
  });

  it("formats durations in the unit that reads best", () => {
    expect(formatDuration(0.25)).toBe("250 ms");
    expect(formatDuration(3.21)).toBe("3.2 s");
    expect(formatDuration(600)).toBe("10 min");
    expect(formatDuration(null)).toBe("—");
  });
});
