import { csvField, transactionsCsv } from "./csv";

describe("transactionsCsv", () => {
  it("writes a header and one row per transaction, amounts as the API wrote them", () => {
    const csv = transactionsCsv(
      [
        {
          version: 2,
          kind: "deposit",
          amount: "10.00",
          balanceAfter: "10.00",
          description: 'rent, "May"',
          recordedAt: "2026-01-02T10:00:00Z",
          eventId: "e-2",
          position: 11,
        },
      ],
      "EUR",
    );
    expect(csv.split("\r\n")).toEqual([
      "version,recordedAt,kind,amount,currency,balanceAfter,description,eventId,position",
      '2,2026-01-02T10:00:00Z,deposit,10.00,EUR,10.00,"rent, ""May""",e-2,11',
      "",
    ]);
  });

  it("keeps text a spreadsheet would run as a formula from running", () => {
    expect(csvField("=HYPERLINK(1)")).toBe("'=HYPERLINK(1)");
    expect(csvField("-2")).toBe("'-2");
    expect(csvField("line\nbreak")).toBe('"line\nbreak"');
    expect(csvField(null)).toBe("");
    expect(csvField(7)).toBe("7");
  });
});
