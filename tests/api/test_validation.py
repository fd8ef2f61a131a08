"""Bad input: each gets a specific problem document, none a 500, and none changes the log."""

from __future__ import annotations

import json
import random
import re
import uuid

import pytest

JSON = {"content-type": "application/json"}

# (raw body of a deposit, expected status, expected problem type)
BAD_DEPOSITS = [
    (b'{"amount": "-1.00"}', 422, "invalid-amount"),
    (b'{"amount": -1}', 422, "invalid-amount"),
    (b'{"amount": "0"}', 422, "invalid-amount"),
    (b'{"amount": 0}', 422, "invalid-amount"),
    (b'{"amount": 0.0}', 422, "invalid-amount"),
    (b'{"amount": "-0"}', 422, "invalid-amount"),
    (b'{"amount": "1.001"}', 422, "invalid-amount"),
    (b'{"amount": 1.001}', 422, "invalid-amount"),
    (b'{"amount": "abc"}', 422, "invalid-amount"),
    (b'{"amount": ""}', 422, "invalid-amount"),
    (b'{"amount": "1e2"}', 422, "invalid-amount"),
    (b'{"amount": "1,00"}', 422, "invalid-amount"),
    (b'{"amount": "NaN"}', 422, "invalid-amount"),
    (b'{"amount": "Infinity"}', 422, "invalid-amount"),
    (b'{"amount": 1e400}', 422, "invalid-amount"),
    (b'{"amount": 1e-400}', 422, "invalid-amount"),
    (b'{"amount": "1000000000.01"}', 422, "invalid-amount"),
    (b'{"amount": "' + b"9" * 5000 + b'"}', 422, "invalid-amount"),
    (b'{"amount": ' + b"9" * 5000 + b"}", 422, "invalid-amount"),
    (b'{"amount": 0.' + b"0" * 5000 + b"1}", 422, "invalid-amount"),
    (b'{"amount": NaN}', 422, "validation"),
    (b'{"amount": Infinity}', 422, "validation"),
    (b'{"amount": -Infinity}', 422, "validation"),
    (b'{"amount": true}', 422, "validation"),
    (b'{"amount": false}', 422, "validation"),
    (b'{"amount": null}', 422, "validation"),
    (b'{"amount": {"value": "1.00"}}', 422, "validation"),
    (b'{"amount": ["1.00"]}', 422, "validation"),
    (b"{}", 422, "validation"),
    (b'{"description": "no amount"}', 422, "validation"),
    (b'{"amount": "1.00", "currency": "EUR"}', 422, "validation"),
    (b'{"amount": "1.00", "description": 5}', 422, "validation"),
    (b'{"amount": "1.00", "description": null}', 422, "validation"),
    (b'{"amount": "1.00", "description": "' + b"x" * 501 + b'"}', 422, "invalid-description"),
    (b'{"amount": "1.00", "description": "line\\nbreak"}', 422, "invalid-description"),
    (b'{"amount": "1.00", "description": "\\ud800"}', 422, "invalid-description"),
    (b'{"amount": "1.00"', 422, "validation"),
    (b"{bad json}", 422, "validation"),
    (b"", 422, "validation"),
    (b"null", 422, "validation"),
    (b'"1.00"', 422, "validation"),
    (b'[{"amount": "1.00"}]', 422, "validation"),
    (b"\xff\xfe\x00garbage", 422, "validation"),
    (b"[" * 20000 + b"]" * 20000, 422, "validation"),
    (b'{"a":' * 5000 + b"1" + b"}" * 5000, 422, "validation"),
]

BAD_OPENS = [
    ({"ownerName": "Ada", "currency": "XYZ"}, "unknown-currency"),
    ({"ownerName": "Ada", "currency": "eur"}, "unknown-currency"),
    ({"ownerName": "Ada", "currency": ""}, "unknown-currency"),
    ({"ownerName": "Ada", "currency": "XAU"}, "unknown-currency"),
    ({"ownerName": "Ada", "currency": "E" * 10_000}, "unknown-currency"),
    ({"ownerName": "", "currency": "EUR"}, "invalid-owner-name"),
    ({"ownerName": "   ", "currency": "EUR"}, "invalid-owner-name"),
    ({"ownerName": "x" * 201, "currency": "EUR"}, "invalid-owner-name"),
    ({"ownerName": "Ada\x00", "currency": "EUR"}, "invalid-owner-name"),
    ({"ownerName": "Ada", "currency": 978}, "validation"),
    ({"ownerName": "Ada", "currency": None}, "validation"),
    ({"ownerName": 5, "currency": "EUR"}, "validation"),
    ({"ownerName": ["Ada"], "currency": "EUR"}, "validation"),
    ({"currency": "EUR"}, "validation"),
    ({"ownerName": "Ada"}, "validation"),
    ({"ownerName": "Ada", "currency": "EUR", "balance": "1000000"}, "validation"),
]


async def test_every_bad_amount_or_body_is_a_specific_422_and_records_nothing(api):
    """Negative, zero, too precise, non-numeric, huge, NaN, boolean, nested or malformed: 422, no event."""
    account_id = await api.funded("5.00")
    size = await api.log_size()

    for body, status, code in BAD_DEPOSITS:
        r = await api.post(f"/api/command/accounts/{account_id}/deposit", content=body, headers=JSON)
        assert r.status_code == status, (body[:60], r.text)
        api.problem(r, status, code)

    assert await api.log_size() == size
    assert (await api.account(account_id))["currentBalance"] == "5.00"


async def test_too_many_decimals_depend_on_the_currency(api):
    """JPY takes no decimals and BHD three: 1.5 JPY and 0.0001 BHD are 422, 0.001 BHD is fine."""
    yen = await api.open(currency="JPY")
    dinar = await api.open(currency="BHD")

    api.problem(await api.deposit(yen, "1.5"), 422, "invalid-amount")
    api.problem(await api.deposit(dinar, "0.0001"), 422, "invalid-amount")
    assert (await api.deposit(dinar, "0.001")).status_code == 200
    assert await api.version(yen) == 1


async def test_every_bad_open_is_a_specific_422_and_records_nothing(api):
    """An unknown currency, a bad owner name, a missing or extra field: 422, and no account appears."""
    size = await api.log_size()

    for body, code in BAD_OPENS:
        api.problem(await api.post("/api/command/accounts", json=body), 422, code)

    assert await api.log_size() == size


async def test_a_body_that_is_not_json_is_415(api):
    """A form or text body is 415 unsupported-media-type, whatever it holds."""
    account_id = await api.funded("1.00")
    size = await api.log_size()

    for content_type in ("text/plain", "application/x-www-form-urlencoded", "application/xml"):
        r = await api.post(
            f"/api/command/accounts/{account_id}/deposit",
            content=b'{"amount": "1.00"}',
            headers={"content-type": content_type},
        )
        api.problem(r, 415, "unsupported-media-type")
    assert await api.log_size() == size


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Idempotency-Key", "has space"),
        ("Idempotency-Key", "k" * 201),
        ("Idempotency-Key", "café"),
        ("If-Match", "abc"),
        ("If-Match", "-1"),
        ("If-Match", "1" * 19),
        ("If-Match", '"1", "2"'),
    ],
)
async def test_malformed_command_headers_are_422(api, header, value):
    """An Idempotency-Key or If-Match that cannot be one is 422 validation, and the command does not run."""
    account_id = await api.funded("1.00")
    size = await api.log_size()

    r = await api.post(
        f"/api/command/accounts/{account_id}/deposit",
        json={"amount": "1.00"},
        headers={header: value.encode("utf-8") if not value.isascii() else value},
    )

    body = api.problem(r, 422, "validation")
    assert body["parameter"] == header, body
    assert not _REGEX.search(body["detail"]), body  # words, not the pattern behind them
    assert body["detail"].startswith(header), body
    if header == "If-Match":
        assert 'a version number like "3"' in body["detail"], body
    assert await api.log_size() == size


_REGEX = re.compile(r"[\^$\\]|\{\d|\[[^\]]*-")  # ^, $, a backslash, {1, or [a-z]: a pattern's marks
_SNAKE = re.compile(r"\b[a-z]+_[a-z_]+\b")

# (path after /api/query/accounts, parameters, the parameter to blame, words its detail holds)
BAD_QUERY_PARAMETERS = [
    ("", {"limit": "ten"}, "limit", "limit must be a whole number"),
    ("", {"limit": "0"}, "limit", "limit must be at least 1"),
    ("", {"limit": "501"}, "limit", "limit must be at most 500"),
    ("", {"currency": "EURO"}, "currency", "currency must be at most 3 characters"),
    ("", {"minBalance": "10", "maxBalance": "5"}, "minBalance", "10 is greater than maxBalance 5"),
    ("", {"maxBalance": "-1"}, "maxBalance", "not an amount"),
    ("", {"maxBalance": "1" * 41}, "maxBalance", "maxBalance must be at most 40 characters"),
    ("", {"cursor": "zz"}, "cursor", "not a cursor this listing returned"),
    ("", {"consistentWith": "soon"}, "consistentWith", "position (or checkpoint) a command returned"),
    ("/{id}/transactions", {"order": "up"}, "order", "order must be asc or desc"),
    ("/{id}/transactions", {"limit": "-3"}, "limit", "limit must be at least 1"),
    ("/{id}/state", {"version": "two"}, "version", "version must be a whole number"),
    ("/{id}/state", {"version": 1, "asOf": "2030-01-01T00:00:00Z"}, "version", "give version or asOf"),
    ("/{id}/state", {"asOf": "soon"}, "asOf", "asOf is an ISO 8601 time"),
    ("/{id}/state", {"asOf": "1" * 65}, "asOf", "asOf must be at most 64 characters"),
    ("/{id}/events", {"cursor": "x" * 513}, "cursor", "cursor must be at most 512 characters"),
]


@pytest.mark.parametrize(("path", "params", "parameter", "words"), BAD_QUERY_PARAMETERS)
async def test_a_bad_query_parameter_is_named_as_the_api_spells_it_in_words(
    api, path, params, parameter, words
):
    """422 validation with ``parameter`` in camelCase, and a sentence: no as_of, no query.limit, no regex."""
    account_id = await api.open()

    r = await api.get("/api/query/accounts" + path.format(id=account_id), params=params)

    body = api.problem(r, 422, "validation")
    assert body["parameter"] == parameter, body
    assert words in body["detail"], body
    assert not _SNAKE.search(body["detail"]), body
    assert not _REGEX.search(body["detail"]), body
    assert "query." not in body["detail"], body


async def test_an_unknown_query_parameter_or_body_field_is_named(api):
    """A misspelt parameter is blamed as ``parameter``, an unknown body field as ``field``."""
    account_id = await api.funded("1.00")
    size = await api.log_size()

    unknown = api.problem(
        await api.get("/api/query/accounts", params={"max_balance": "5"}), 422, "validation"
    )
    opened = await api.post("/api/command/accounts", json={"ownerName": "A", "currency": "EUR", "balance": 1})
    deposit = await api.post(f"/api/command/accounts/{account_id}/deposit", json={"amount": "1", "memo": "x"})
    close = await api.post(f"/api/command/accounts/{account_id}/close", json={"reason": "moving"})

    assert unknown["parameter"] == "max_balance"
    assert "maxBalance" in unknown["detail"]
    for r, field in ((opened, "balance"), (deposit, "memo"), (close, "reason")):
        body = api.problem(r, 422, "validation")
        assert body["field"] == field, body
        assert f"unknown field(s): {field!r}" in body["detail"], body
    assert await api.log_size() == size


async def test_close_takes_no_body_or_an_empty_object_and_refuses_anything_else(api):
    """Close refuses unknown fields and non-objects like the other commands; no body and {} both close."""
    bare, empty = await api.open(), await api.open()
    size = await api.log_size()

    for content in (b'{"force": true}', b"[]", b"null", b"{bad"):
        r = await api.post(f"/api/command/accounts/{bare}/close", content=content, headers=JSON)
        api.problem(r, 422, "validation")
    assert await api.log_size() == size

    assert (await api.post(f"/api/command/accounts/{bare}/close")).status_code == 200
    assert (await api.post(f"/api/command/accounts/{empty}/close", json={})).status_code == 200
    assert await api.log_size() == size + 2


@pytest.mark.parametrize("command", ["deposit", "withdraw", "close"])
async def test_a_command_on_an_unknown_account_says_no_account_like_the_queries(api, command):
    """404 account-not-found with the detail the queries give: "no account <id>"."""
    missing = str(uuid.uuid4())
    body = {} if command == "close" else {"amount": "1.00"}

    refused = api.problem(
        await api.post(f"/api/command/accounts/{missing}/{command}", json=body), 404, "account-not-found"
    )
    queried = api.problem(await api.get(f"/api/query/accounts/{missing}"), 404, "account-not-found")

    assert refused["detail"] == queried["detail"] == f"no account {missing}"


def _junk(rng: random.Random, depth: int = 0) -> object:  # noqa: PLR0911 - one return per kind
    """A random JSON value, biased towards the shapes and edges that break parsers."""
    kinds = ["int", "float", "str", "bool", "null", "num_str"] + (["list", "dict"] if depth < 3 else [])
    kind = rng.choice(kinds)
    if kind == "int":
        return rng.choice([0, -1, 1, 2**63, -(2**63), 10**30, rng.randint(-(10**6), 10**6)])
    if kind == "float":
        return rng.choice([0.1, -0.0, 1e308, 5e-324, 123.456, rng.uniform(-1e6, 1e6)])
    if kind == "str":
        return "".join(
            rng.choice("aZ09 .-+eE\x00\n\u2028\u00e9\U0001f4b0") for _ in range(rng.randint(0, 12))
        )
    if kind == "num_str":
        return rng.choice(["1.00", "0.001", "-5", "1e3", " 7 ", "١٢٣", "1_000", "0x10", "+3", "00.10"])
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return [_junk(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    keys = ["amount", "description", "ownerName", "currency", "x", ""]
    return {rng.choice(keys): _junk(rng, depth + 1) for _ in range(rng.randint(0, 4))}


async def test_random_bodies_never_get_a_500_and_refusals_record_nothing(api):
    """Hundreds of random JSON bodies against every command: never a 5xx; refusals record nothing."""
    rng = random.Random(20260101)
    account_id = await api.funded("1000.00")
    paths = [
        "/api/command/accounts",
        f"/api/command/accounts/{account_id}/deposit",
        f"/api/command/accounts/{account_id}/withdraw",
    ]
    size = await api.log_size()
    accepted = 0
    for _ in range(300):
        body = _junk(rng)
        if rng.random() < 0.7:  # mostly the right shape, with a random value in it
            body = (
                {"amount": _junk(rng)} if rng.random() < 0.6 else {"ownerName": "A", "currency": _junk(rng)}
            )
        r = await api.post(rng.choice(paths), content=json.dumps(body).encode(), headers=JSON)
        assert r.status_code < 500, (body, r.text)
        if r.status_code >= 400:
            assert r.headers["content-type"] == "application/problem+json"
        else:
            accepted += 1
    # Each accepted command records exactly one event; the refused ones, none.
    assert await api.log_size() == size + accepted
    assert accepted > 0  # the generator does reach the accepting paths
