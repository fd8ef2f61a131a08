"""eventvault_ledger.numbers: every number a request carries is read one way, with one range and message."""

from __future__ import annotations

import pytest

from eventvault_ledger.errors import InvalidQuery, VersionMismatch
from eventvault_ledger.numbers import (
    MAX_LIMIT,
    MAX_SQL_INT,
    check_expected_version,
    check_int,
    check_limit,
    parse_if_match,
    parse_position,
    parse_whole_number,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0), ("7", 7), ("007", 7), (str(MAX_SQL_INT), MAX_SQL_INT), ("0" * 63 + "1", 1)],
)
def test_whole_numbers_are_ascii_digits(text, value):
    """Digits, leading zeros allowed, give their int."""
    assert parse_whole_number(text) == value


@pytest.mark.parametrize(
    "text", ["", " 1", "1 ", "+1", "-1", "1_000", "1.0", "\u0661", "\uff11", "0" * 65, "1e3"]
)
def test_anything_else_is_no_whole_number(text):
    """Signs, spaces, underscores, non-ASCII digits and very long texts are not numbers here."""
    assert parse_whole_number(text) is None


@pytest.mark.parametrize("bad", [0, -1, MAX_SQL_INT + 1, True, False, 1.0, "1", None])
def test_check_int_refuses_bools_floats_text_and_out_of_range(bad):
    """An int in range passes; anything else is InvalidQuery naming the parameter and the range."""
    with pytest.raises(InvalidQuery, match=r"^version: must be an int >= 1, got "):
        check_int(bad, "version")
    assert check_int(MAX_SQL_INT, "version") == MAX_SQL_INT


def test_a_limit_is_from_one_to_the_page_maximum():
    """Page sizes are 1 to MAX_LIMIT, and the message says so."""
    assert check_limit(1) == 1
    assert check_limit(MAX_LIMIT) == MAX_LIMIT
    for bad in (0, MAX_LIMIT + 1, True):
        with pytest.raises(InvalidQuery, match=rf"^limit: must be an int from 1 to {MAX_LIMIT}, got "):
            check_limit(bad)


def test_a_position_is_a_bigint_from_one():
    """Digits make a position in 1..2^63-1; other digits are refused; a non-number is None (a checkpoint?)."""
    assert parse_position("42", "consistentWith") == 42
    assert parse_position("1.5", "consistentWith") is None
    for bad in ("0", str(MAX_SQL_INT + 1), "9" * 40):
        with pytest.raises(InvalidQuery, match="consistentWith: is a position from 1 to"):
            parse_position(bad, "consistentWith")


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("*", None), ("3", 3), ('"3"', 3), ('W/"3"', 3), (" 12 ", 12), ("0", 0)],
)
def test_if_match_names_the_expected_version(header, expected):
    """If-Match is *, or a version bare, quoted or weak; no header and * expect any version."""
    assert parse_if_match(header) == expected


@pytest.mark.parametrize("header", ["", "abc", "-1", "1" * 19, '"1", "2"', "W/3x"])
def test_a_malformed_if_match_is_refused(header):
    """Anything else is InvalidQuery on If-Match, in words."""
    with pytest.raises(InvalidQuery, match=r'^If-Match: must be a version number like "3", or \*$'):
        parse_if_match(header)


def test_the_expected_version_rule():
    """No expectation, or the account at it, passes; another version is VersionMismatch with both."""
    check_expected_version(None, 7)
    check_expected_version(7, 7)
    with pytest.raises(VersionMismatch) as caught:
        check_expected_version(6, 7)
    assert (caught.value.expected, caught.value.actual) == (6, 7)
    assert "version 6" in str(caught.value)
    assert "version 7" in str(caught.value)
