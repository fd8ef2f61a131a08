import { render, screen } from "@testing-library/react";

import { BalanceChart, niceTicks } from "./BalanceChart";

describe("BalanceChart", () => {
  it("picks round ticks that cover the whole range", () => {
    expect(niceTicks(0, 3929.6)).toEqual([0, 1000, 2000, 3000, 4000]);
    expect(niceTicks(0, 42)).toEqual([0, 20, 40, 60]);
    expect(niceTicks(-5, 5)).toEqual([-5, 0, 5]);
    expect(niceTicks(0, 0)).toEqual([0, 1]);
  });

  it("describes the series for screen readers and marks the version travelled to", () => {
    render(
      <BalanceChart
        currency="EUR"
        selectedVersion={2}
        points={[
          { version: 1, balance: "0.00", at: "2026-01-01T00:00:00Z" },
          { version: 2, balance: "100.00", at: "2026-01-02T00:00:00Z" },
          { version: 3, balance: "40.00", at: "2026-01-03T00:00:00Z" },
        ]}
      />,
    );
    const chart = screen.getByRole("img", { name: /Balance over time \(EUR\)/ });
    expect(chart).toHaveAccessibleName(
      "Balance over time (EUR) From 0.00 EUR at version 1 to 40.00 EUR at version 3; highest 100.00 EUR.",
    );
    expect(chart.querySelector(".chart-selected")).toHaveAttribute("data-version", "2");
    expect(chart.querySelectorAll(".chart-dot")).toHaveLength(3);
  });

  it("labels a one-point chart once, under its point", () => {
    render(
      <BalanceChart
        currency="EUR"
        selectedVersion={null}
        points={[{ version: 1, balance: "0.00", at: "2026-01-01T00:00:00Z" }]}
      />,
    );
    const chart = screen.getByRole("img", { name: /Balance over time/ });
    expect(chart.querySelectorAll(".chart-axis-label")).toHaveLength(1);
    expect(chart).toHaveAccessibleName("Balance over time (EUR) 0.00 EUR at version 1.");
  });
});
