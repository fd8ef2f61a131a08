import { href, listRoute, parseRoute, rememberListQuery } from "./router";

describe("routes", () => {
  it("parses the hash routes the dashboard links to", () => {
    expect(parseRoute("")).toEqual({ name: "accounts" });
    expect(parseRoute("#/")).toEqual({ name: "accounts" });
    expect(parseRoute("#/operations")).toEqual({ name: "operations" });
    expect(parseRoute("#/accounts/abc-1/")).toEqual({ name: "account", id: "abc-1" });
    expect(parseRoute("#/nowhere")).toEqual({ name: "not-found", path: "/nowhere" });
    expect(parseRoute("#/?currency=EUR&order=desc")).toEqual({
      name: "accounts",
      query: "currency=EUR&order=desc",
    });
  });

  it("builds links that parse back to the same route", () => {
    const route = { name: "account", id: "a b/c" } as const;
    expect(parseRoute(href(route))).toEqual(route);
    const list = { name: "accounts", query: "search=grace%20h" } as const;
    expect(parseRoute(href(list))).toEqual(list);
  });

  it("remembers the list's filters for the way back to it", () => {
    rememberListQuery("currency=EUR");
    expect(href(listRoute())).toBe("#/?currency=EUR");
    rememberListQuery("");
    expect(href(listRoute())).toBe("#/");
  });
});
