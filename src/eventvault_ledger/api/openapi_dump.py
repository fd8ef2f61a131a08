"""Write the API's OpenAPI document to a file, without a server: the dashboard's types come from it.

    python -m eventvault_ledger.api.openapi_dump web/openapi.json
    python -m eventvault_ledger.api.openapi_dump -        # to standard output

The document is the one ``/openapi.json`` serves when the server has tokens
(``--tokens``), so it declares the bearer scheme and the 401 and 403 answers the
dashboard has to handle; the placeholder token's secret appears nowhere in it.
Keys are sorted and the file ends in a newline, so the same API always gives
the same bytes: ``scripts/build-web --test`` compares the committed file with it.
The file is written only when its content changes (its time stamp tells the
dashboard's build whether anything is new).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from eventvault_ledger.api.app import create_app
from eventvault_ledger.api.settings import SCOPES, Settings, Token

__all__ = ["document", "main", "render"]

# Any valid secret does: the document names the scheme, never a token.
_PLACEHOLDER = Token("openapi-document-placeholder", "openapi", SCOPES)


def document() -> dict[str, Any]:
    """The OpenAPI document of an app with tokens (the store is never opened)."""
    app = create_app(Settings(tokens=(_PLACEHOLDER,)))
    return app.openapi()


def render(doc: dict[str, Any]) -> str:
    """``doc`` as stable JSON text: sorted keys, two-space indents, a final newline."""
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write the document to the path in ``argv`` (``-``: standard output); the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] in {"-h", "--help"}:
        sys.stderr.write("usage: python -m eventvault_ledger.api.openapi_dump PATH  (- for stdout)\n")
        return 2
    text = render(document())
    if args[0] == "-":
        sys.stdout.write(text)
        return 0
    target = Path(args[0])
    if not target.is_file() or target.read_text(encoding="utf-8") != text:
        target.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
