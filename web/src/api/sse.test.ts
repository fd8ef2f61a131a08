import { SseParser } from "./sse";

describe("SseParser", () => {
  it("completes messages across arbitrary chunk boundaries, CRLF split included", () => {
    const parser = new SseParser();
    const text = 'retry: 2000\r\n\r\nid: 0.22\r\nevent: account\r\ndata: {"a":1}\r\n\r\n';
    const messages = [...text].flatMap((char) => parser.push(char));
    expect(messages).toEqual([{ event: "account", data: '{"a":1}', id: "0.22" }]);
  });

  it("joins multi-line data, skips comments and keeps the last id for later messages", () => {
    const parser = new SseParser();
    const messages = parser.push(": keep-alive\n\nid: 7\ndata: one\ndata:two\n\ndata: three\n\n");
    expect(messages).toEqual([
      { event: "message", data: "one\ntwo", id: "7" },
      { event: "message", data: "three", id: "7" },
    ]);
  });

  it("dispatches nothing for a message without data", () => {
    const parser = new SseParser();
    expect(parser.push("event: account\nid: 3\n\n")).toEqual([]);
  });
});
