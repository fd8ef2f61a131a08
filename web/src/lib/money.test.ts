import { checkAmount, checkBound, compareDecimal, minorUnitsOf, withUnits } from "./money";

describe("compareDecimal", () => {
  it("compares decimal strings exactly, beyond what a float can hold", () => {
    expect(compareDecimal("0.10", "0.1")).toBe(0);
    expect(compareDecimal("10", "9.99")).toBe(1);
    expect(compareDecimal("100.49", "100.5")).toBe(-1);
    expect(compareDecimal("12345678901234567.01", "12345678901234567.00")).toBe(1);
    expect(compareDecimal("007.50", "7.5")).toBe(0);
    expect(compareDecimal("0.00", "0")).toBe(0);
    expect(compareDecimal("-1", "0")).toBe(-1);
  });
});

describe("minorUnitsOf", () => {
  it("reads a currency's decimal places off an amount the API wrote", () => {
    expect(minorUnitsOf("42.00")).toBe(2);
    expect(minorUnitsOf("150000")).toBe(0);
    expect(minorUnitsOf("1.000")).toBe(3);
  });
});

describe("checkAmount", () => {
  it("accepts a positive amount within the currency's decimals and drops leading zeros", () => {
    expect(checkAmount(" 0025.50 ", "EUR", 2)).toEqual({ ok: true, value: "25.50" });
    expect(checkAmount("500", "JPY", 0)).toEqual({ ok: true, value: "500" });
  });

  it.each([
    ["", "Enter an amount, e.g. 25.00."],
    ["12,50", "Use a dot for decimals, e.g. 25.00."],
    ["-5", "The amount must be positive."],
    ["ten", "Enter a number, e.g. 25.00."],
    ["1e3", "Enter a number, e.g. 25.00."],
    ["0.00", "The amount must be more than zero."],
    ["1.001", "EUR amounts have at most 2 decimal places."],
    ["1000000000.01", "At most 1000000000 EUR per transaction."],
  ])("refuses %j with a message saying why", (raw, message) => {
    expect(checkAmount(raw, "EUR", 2)).toEqual({ ok: false, message });
  });

  it("says whole numbers for a currency without minor units", () => {
    expect(checkAmount("1.5", "JPY", 0)).toEqual({ ok: false, message: "JPY amounts are whole numbers." });
  });
});

describe("checkBound", () => {
  it("takes an empty bound as no bound and refuses what is not a non-negative number", () => {
    expect(checkBound("  ")).toEqual({ ok: true, value: "" });
    expect(checkBound("100.5")).toEqual({ ok: true, value: "100.5" });
    expect(checkBound("-1")).toMatchObject({ ok: false });
    expect(checkBound("1,5")).toEqual({ ok: false, message: "Use a dot for decimals, e.g. 100.50." });
  });
});

describe("withUnits", () => {
  it("writes an amount with the currency's decimals, as the ledger echoes it", () => {
    expect(withUnits("10", 2)).toBe("10.00");
    expect(withUnits("10.5", 2)).toBe("10.50");
    expect(withUnits("10.25", 2)).toBe("10.25");
    expect(withUnits("1.5", 3)).toBe("1.500");
    expect(withUnits("500", 0)).toBe("500");
    expect(withUnits("7", null)).toBe("7");
  });
});
