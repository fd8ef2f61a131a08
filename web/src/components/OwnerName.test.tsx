import { render, screen } from "@testing-library/react";

import { OwnerName, isRedacted } from "./OwnerName";

describe("OwnerName", () => {
  it("shows a name as it is", () => {
    const { container } = render(<OwnerName name="Ada Lovelace" />);
    expect(container).toHaveTextContent(/^Ada Lovelace$/);
    expect(container.querySelector(".owner-redacted")).toBeNull();
  });

  it("marks an erased owner, with a badge and an explanation", () => {
    render(<OwnerName name="[redacted]" />);
    const marker = screen.getByTitle("The owner's personal data was erased");
    expect(marker).toHaveClass("owner-redacted");
    expect(marker).toHaveTextContent("[redacted] erased");
    expect(screen.getByText("erased")).toHaveClass("badge");
  });

  it("takes only the exact placeholder for an erased owner", () => {
    expect(isRedacted("[redacted]")).toBe(true);
    expect(isRedacted("[Redacted]")).toBe(false);
    expect(isRedacted("Ada [redacted]")).toBe(false);
  });
});
