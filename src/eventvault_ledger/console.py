"""The ``eventvault`` console script.

The command line is built on Typer and Rich, which come with the ``cli`` extra
(``server`` includes it). A plain ``pip install eventvault`` has the toolkit
without them: then the command says so in one line instead of a traceback.
"""

from __future__ import annotations

import sys
from typing import Final

__all__ = ["main"]

_CLI_PACKAGES: Final = frozenset({"typer", "rich", "shellingham"})
EXIT_FAILED: Final = 1


def main() -> None:
    """Run the command line, or name the extra to install when its packages are missing."""
    try:
        from eventvault_ledger.cli import main as cli_main  # noqa: PLC0415 - the check is the point
    except ModuleNotFoundError as exc:
        package = (exc.name or "").partition(".")[0]
        if package not in _CLI_PACKAGES:
            raise
        sys.stderr.write(
            f"error: the eventvault command needs {package}, which comes with the cli extra: "
            "pip install 'eventvault[cli]' (or 'eventvault[server]' to serve the ledger too)\n"
        )
        raise SystemExit(EXIT_FAILED) from None
    cli_main()


if __name__ == "__main__":  # pragma: no cover
    main()
