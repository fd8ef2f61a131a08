"""The numbers a request carries, read in one place: positions, versions, page sizes, If-Match.

Each kind has one range and one message wherever it arrives (a query function's
argument, a query parameter, a header, a part of a cursor), and a bad one is
:class:`~eventvault_ledger.errors.InvalidQuery` naming the parameter (422 over HTTP).

The expected-version rule lives here too: a command sent with ``If-Match: <version>``
runs only while the account is at that version; otherwise it is
:class:`~eventvault_ledger.errors.VersionMismatch` (412), never a retry.
"""

from __future__ import annotations

import re
from typing import Final

from eventvault_ledger.errors import InvalidQuery, VersionMismatch

__all__ = [
    "IF_MATCH_PATTERN",
    "MAX_LIMIT",
    "MAX_SQL_INT",
    "MAX_VERSION_ASKED",
    "check_expected_version",
    "check_int",
    "check_limit",
    "parse_if_match",
    "parse_position",
    "parse_whole_number",
]

MAX_SQL_INT: Final = 2**63 - 1
"""The largest position, version or transaction id: they are BIGINT in every store."""

MAX_LIMIT: Final = 500
"""The most items one page of a listing holds."""

MAX_VERSION_ASKED: Final = 2**62
"""The highest version a state query may name: far above any stream's, with room below BIGINT's end."""

IF_MATCH_PATTERN: Final = r'^\s*(\*|(W/)?"?([0-9]{1,18})"?)\s*$'
"""What If-Match may be: ``*`` (any version), or a version as ``3``, ``"3"`` or ``W/"3"``."""

_IF_MATCH: Final = re.compile(IF_MATCH_PATTERN)
_MAX_DIGITS: Final = 64  # leading zeros allowed; int() of a longer text is refused before it is made


def _range(low: int, high: int) -> str:
    return f">= {low}" if high == MAX_SQL_INT else f"from {low} to {high}"


def check_int(value: object, parameter: str, *, low: int = 1, high: int = MAX_SQL_INT) -> int:
    """``value`` if it is an int from ``low`` to ``high`` (never a bool); else InvalidQuery."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidQuery(parameter, f"must be an int {_range(low, high)}, got {value!r}")
    return value


def check_limit(value: object, parameter: str = "limit") -> int:
    """A page size: an int from 1 to :data:`MAX_LIMIT`."""
    return check_int(value, parameter, high=MAX_LIMIT)


def parse_whole_number(text: str) -> int | None:
    """The int that ``text`` spells in ASCII digits (at most 64), else None: no sign, space or ``_``."""
    if 0 < len(text) <= _MAX_DIGITS and text.isascii() and text.isdigit():
        return int(text)
    return None


def parse_position(text: str, parameter: str) -> int | None:
    """The position ``text`` spells (1 to :data:`MAX_SQL_INT`); None if it is not a number at all.

    A number outside the range is InvalidQuery: no event can have it.
    """
    if not (text.isascii() and text.isdigit()):
        return None
    position = parse_whole_number(text)
    if position is None or not 1 <= position <= MAX_SQL_INT:
        raise InvalidQuery(parameter, f"is a position from 1 to {MAX_SQL_INT}, got {text}")
    return position


def parse_if_match(header: str | None) -> int | None:
    """The version an If-Match header expects; None for no header or ``*`` (any version)."""
    if header is None:
        return None
    m = _IF_MATCH.fullmatch(header)
    if m is None:
        raise InvalidQuery("If-Match", 'must be a version number like "3", or *')
    return None if m[3] is None else int(m[3])


def check_expected_version(expected: int | None, actual: int) -> None:
    """The expected-version rule: an account at another version than ``expected`` is VersionMismatch."""
    if expected is not None and expected != actual:
        raise VersionMismatch(expected, actual)
