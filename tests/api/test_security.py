"""Security at the edge: loopback without tokens, authentication first, redirects, headers, names, limits."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import socket
import subprocess
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest

from eventvault_ledger.api import commands
from eventvault_ledger.api.app import create_app
from eventvault_ledger.api.settings import Settings, Token, parse_tokens
from eventvault_ledger.domain import Account
from eventvault_ledger.errors import InvalidOwnerName
from server_process import stop, wait_healthy


def _as(tokens, name):
    return {"Authorization": tokens[name]}


# -- 1. without tokens, the app itself serves this machine only ------------------------------


@pytest.mark.parametrize(
    ("client", "served"),
    [
        (("127.0.0.1", 5000), True),
        (("127.8.9.10", 5000), True),
        (("::1", 5000), True),
        (("::ffff:127.0.0.1", 5000), True),
        (("203.0.113.7", 5000), False),
        (("2001:db8::1", 5000), False),
        (("::ffff:203.0.113.7", 5000), False),
        (("testclient", 50000), False),  # not an address: nothing says it is this machine
    ],
)
async def test_without_tokens_the_app_serves_only_loopback_clients(tmp_path, client, served):
    """create_app without tokens answers 403 loopback-only to any caller not on this machine, on any path."""
    app = create_app(Settings(db=f"sqlite:///{tmp_path / 'ledger.db'}"))
    transport = httpx.ASGITransport(app=app, client=client)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as http,
    ):
        answers = [
            await http.get("/healthz"),
            await http.get("/api/query/accounts"),
            await http.post("/api/command/accounts", json={"ownerName": "Eve", "currency": "EUR"}),
            await http.get("/metrics"),
        ]
        size = len(await app.state.services.store.read_all())

    for r in answers:
        if served:
            assert r.status_code in (200, 201), r.text
        else:
            assert r.status_code == 403, r.text
            assert r.json()["type"] == "https://eventvault.dev/problems/loopback-only"
            assert "--tokens" in r.json()["detail"]
    if not served:
        assert size == 0


async def test_with_tokens_any_address_is_served_with_a_token(make_api, tokens):
    """With tokens the loopback rule gives way to the tokens: another machine's caller with one is served."""
    api = await make_api(tokens=("reader",))
    transport = httpx.ASGITransport(app=api.app, client=("203.0.113.7", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        allowed = await http.get("/api/query/accounts", headers=_as(tokens, "reader"))
        anonymous = await http.get("/api/query/accounts")

    assert allowed.status_code == 200, allowed.text
    api.problem(anonymous, 401, "unauthorized")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _this_machines_other_address() -> str | None:
    """An IPv4 address of this machine that is not loopback (None when it has none)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the outgoing interface
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if ipaddress.ip_address(address).is_loopback or address == "0.0.0.0" else address  # noqa: S104


@contextlib.contextmanager
def _uvicorn_factory(tmp_path: Path, port: int) -> Iterator[None]:
    """``uvicorn --factory eventvault_ledger.api.app:create_app --host 0.0.0.0``, as anyone could run it."""
    out = tmp_path / "uvicorn.log"
    with out.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603 - fixed arguments
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "eventvault_ledger.api.app:create_app",
                "--host",
                "0.0.0.0",  # noqa: S104 - listening beyond loopback is the point
                "--port",
                str(port),
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, "NO_COLOR": "1"},
        )
        try:
            wait_healthy(f"http://127.0.0.1:{port}", process, out)
            yield
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):
                stop(process)


def test_the_factory_under_uvicorn_on_every_address_refuses_other_hosts(tmp_path):
    """Served by plain uvicorn on 0.0.0.0 without tokens, the app answers loopback and refuses the rest."""
    address = _this_machines_other_address()
    if address is None:
        pytest.skip("this machine has no address but loopback to connect from")
    port = _free_port()
    (tmp_path / "var").mkdir()  # where the default settings keep the store

    with _uvicorn_factory(tmp_path, port):
        local = httpx.get(f"http://127.0.0.1:{port}/api/query/accounts", timeout=10)
        other = httpx.get(f"http://{address}:{port}/api/query/accounts", timeout=10)
        opened = httpx.post(
            f"http://{address}:{port}/api/command/accounts",
            json={"ownerName": "Mallory", "currency": "EUR"},
            timeout=10,
        )

    assert local.status_code == 200, local.text
    assert other.status_code == 403, other.text
    assert other.json()["type"] == "https://eventvault.dev/problems/loopback-only"
    assert opened.status_code == 403, opened.text


# -- 3. authentication first ---------------------------------------------------------------------


async def test_without_a_valid_token_every_api_request_is_401_whatever_it_holds(make_api, tokens):
    """Query strings, odd headers, bodies too large or malformed, unknown paths: 401 before anything else."""
    api = await make_api(tokens=("writer",), max_body_bytes=1024)
    account_id = await api.open(headers=_as(tokens, "writer"))
    size = await api.log_size()
    deposit = f"/api/command/accounts/{account_id}/deposit"
    json_type = {"content-type": "application/json"}
    requests: list[tuple[str, str, dict[str, str], dict[str, Any]]] = [
        ("POST", f"{deposit}?x=1", {}, {"json": {"amount": "1.00"}}),
        ("POST", deposit, {"If-Match": "abc", "Idempotency-Key": "has space"}, {"json": {"amount": "1.00"}}),
        ("POST", deposit, {"content-type": "text/plain"}, {"content": b"not json"}),
        ("POST", deposit, json_type, {"content": b"x" * 100_000}),
        ("GET", "/api/query/accounts?limit=0&nonsense=1", {}, {}),
        ("GET", "/api/query/accounts/", {}, {}),
        ("GET", "/api/no/such/route", {}, {}),
        ("DELETE", "/api/command/accounts", {}, {}),
        ("GET", "/api", {}, {}),
    ]
    for credentials in ({}, {"Authorization": "Bearer not-a-known-token-at-all"}):
        for method, url, headers, options in requests:
            r = await api.client.request(method, url, headers={**headers, **credentials}, **options)
            api.problem(r, 401, "unauthorized")
            assert r.headers["www-authenticate"].startswith("Bearer"), (method, url)
    assert await api.log_size() == size


async def test_two_authorization_headers_are_refused(make_api, tokens):
    """A request may not carry two tokens (which one would be meant?): 401."""
    api = await make_api(tokens=("reader", "writer"))

    r = await api.get(
        "/api/query/accounts",
        headers=[("Authorization", tokens["reader"]), ("Authorization", tokens["writer"])],
    )

    api.problem(r, 401, "unauthorized")


# -- 4. idempotency per token, identities from the secret ----------------------------------------


async def test_two_tokens_with_one_subject_never_share_idempotency_keys(make_api):
    """Same subject, same key, same request: each token's command runs; neither gets the other's answer."""
    api = await make_api()
    first = Token("first-secret-0123456789", "shared", frozenset({"read", "write"}))
    second = Token("second-secret-012345678", "shared", frozenset({"read", "write"}))
    api = await _secured(api, (first, second))
    account_id = await api.open(headers={"Authorization": f"Bearer {first.secret}"})

    answers = [
        await api.deposit(
            account_id, "5.00", headers={"Authorization": f"Bearer {t.secret}", "Idempotency-Key": "same-key"}
        )
        for t in (first, second, first)
    ]

    assert [r.status_code for r in answers] == [200, 200, 200]
    assert "idempotent-replayed" not in answers[1].headers
    assert answers[2].headers["idempotent-replayed"] == "true"
    assert answers[2].json() == answers[0].json()
    assert await api.version(account_id) == 3  # opened, then one deposit per token


async def _secured(api, tokens: tuple[Token, ...]):
    """The same store served by a new app that has ``tokens``."""
    app = create_app(Settings(db=api.services.settings.db, tokens=tokens))
    stack = contextlib.AsyncExitStack()
    await stack.enter_async_context(app.router.lifespan_context(app))
    client = await stack.enter_async_context(
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    )
    _STACKS.append(stack)
    return type(api)(app, client)


_STACKS: list[contextlib.AsyncExitStack] = []


@pytest.fixture(autouse=True)
async def _close_secured_apps():
    yield
    while _STACKS:
        await _STACKS.pop().aclose()


def test_a_token_without_subject_is_known_by_its_secret_not_its_place():
    """Reordering the token file changes nobody's identity; a subject-less token's name is no secret."""
    a, b = "alpha-secret-0123456789", "bravo-secret-0123456789"

    forward = {t.secret: t for t in parse_tokens(f"{a}:read;{b}:read,write")}
    backward = {t.secret: t for t in parse_tokens(f"{b}:read,write;{a}:read")}

    for secret in (a, b):
        assert forward[secret].subject == backward[secret].subject
        assert forward[secret].id == backward[secret].id
        assert re.fullmatch(r"token-[0-9a-f]{16}", forward[secret].subject)
        assert secret not in forward[secret].subject
    assert forward[a].subject != forward[b].subject
    named = parse_tokens(f"{a}:read:ops")[0]
    assert (named.subject, named.id) == ("ops", forward[a].id)


async def test_the_actor_of_a_subject_less_token_is_its_identity(make_api):
    """Events recorded with a token given without a subject name the token's derived identity."""
    api = await make_api()
    (token,) = parse_tokens("anonymous-ish-token-0123:read,write")
    api = await _secured(api, (token,))

    account_id = await api.open(headers={"Authorization": f"Bearer {token.secret}"})

    (opened,) = await api.events(account_id)
    assert opened.metadata.actor == token.subject == token.id


# -- 5. no redirect from the Host header ----------------------------------------------------------


@pytest.fixture
def dashboard(tmp_path: Path) -> Path:
    """A built dashboard: an index and a folder of assets."""
    root = tmp_path / "web"
    (root / "assets").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>ledger</title>", encoding="utf-8")
    (root / "assets" / "index.html").write_text("<!doctype html><title>assets</title>", encoding="utf-8")
    (root / "assets" / "app.js").write_text("console.log(1)", encoding="utf-8")
    return root


async def test_no_redirect_is_built_from_the_host_header(make_api, tokens, dashboard):
    """A path with a stray slash is 404; a folder of the dashboard redirects to a relative path."""
    secured = await make_api(tokens=("reader",), static_dir=dashboard)
    evil = {"Host": "evil.example"}

    slash = await secured.get("/api/query/accounts/", headers={**evil, **_as(tokens, "reader")})
    folder = await secured.get("/assets", headers=evil)
    doubled = await secured.get("//evil.example/assets", headers=evil)

    secured.problem(slash, 404, "not-found")
    assert "location" not in slash.headers
    assert folder.status_code in (301, 307, 308), folder.text
    assert folder.headers["location"] == "/assets/"
    assert "evil" not in doubled.headers.get("location", ""), doubled.headers


# -- 7. names that cannot spoof -------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "Ada \u202egnp.exe",  # right-to-left override
        "Ada \u202a",
        "Ada \u2066Lovelace\u2069",  # isolates
        "Ada\u200bLovelace",  # zero-width space
        "Ada\u200dLovelace",  # zero-width joiner
        "\ufeffAda",
        "Ada\x07",
        "Ada\u0085",
    ],
)
async def test_names_and_descriptions_refuse_invisible_and_direction_characters(api, text):
    """Control, bidi or zero-width characters in ownerName or description: 422 naming the field."""
    opened = await api.post("/api/command/accounts", json={"ownerName": text, "currency": "EUR"})
    account_id = await api.open()
    size = await api.log_size()
    deposited = await api.post(
        f"/api/command/accounts/{account_id}/deposit", json={"amount": "1.00", "description": text}
    )

    assert api.problem(opened, 422, "invalid-owner-name")["field"] == "ownerName"
    assert api.problem(deposited, 422, "invalid-description")["field"] == "description"
    assert await api.log_size() == size


async def test_name_lengths_count_the_text_as_sent(api):
    """Over 200 characters as sent is refused, even when it would strip to fewer (as the document says)."""
    account_id = await api.open()

    long_name = await api.post(
        "/api/command/accounts", json={"ownerName": "A" * 199 + " " * 5, "currency": "EUR"}
    )
    long_text = await api.post(
        f"/api/command/accounts/{account_id}/deposit", json={"amount": "1.00", "description": "d" * 501}
    )

    assert api.problem(long_name, 422, "invalid-owner-name")["field"] == "ownerName"
    assert api.problem(long_text, 422, "invalid-description")["field"] == "description"


def test_the_documented_name_rules_are_the_accounts_rules():
    """The refused ranges are the Unicode categories the account refuses, and the patterns agree with it.

    A JSON Schema validator in another regex dialect (jsonschema-rs, schemathesis's) reads them alike.
    """
    refused = {"Cc", "Cs", "Zl", "Zp", "Cf"}
    ranges = [(a, b) for a, b in commands.REFUSED_RANGES]
    surrogates = set(range(0xD800, 0xE000))  # refused by the account, not named by the pattern
    in_ranges = {cp for a, b in ranges for cp in range(a, b + 1)} | surrogates
    by_category = {cp for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)) in refused}
    assert in_ranges == by_category

    owner = re.compile(commands.OWNER_NAME_PATTERN)
    description = re.compile(commands.DESCRIPTION_PATTERN)
    # As a JSON Schema validator reads them (ECMA-262 regexes, in Rust): the same answers.
    owner_rs = jsonschema_rs.validator_for({"type": "string", "pattern": commands.OWNER_NAME_PATTERN})
    description_rs = jsonschema_rs.validator_for({"type": "string", "pattern": commands.DESCRIPTION_PATTERN})
    samples = [chr(cp) for cp in range(0x3100)] + [
        "\U000110bd",
        "\U000e0041",
        "\U0001f4b0",
        "\u3000",
        "\ufeff",
    ]
    for ch in samples:
        name = f"Ada{ch}"
        try:
            Account.open(name, "EUR")
            accepted = True
        except InvalidOwnerName:
            accepted = False
        assert bool(owner.match(name)) == owner_rs.is_valid(name) == accepted, hex(ord(ch))
        assert bool(description.match(name)) == description_rs.is_valid(name) == accepted, hex(ord(ch))
    for blank in (" ", "\u00a0 \u3000", "\u2000\u200a"):
        assert not owner.match(blank), repr(blank)
        assert not owner_rs.is_valid(blank), repr(blank)
    assert not description.match("Ada\n")
    assert not description_rs.is_valid("Ada\n")


@pytest.mark.parametrize(
    ("amount", "valid"),
    [
        ("1", True),
        ("0.01", True),
        ("+10.50", True),
        (" 007 ", True),
        ("0", False),
        ("0.00", False),
        ("-1", False),
        ("-0.5", False),
        ("+0", False),
        (".5", False),
        ("1e3", False),
    ],
)
def test_the_documented_amount_pattern_excludes_zero_and_negatives(amount, valid):
    """What the document's amount pattern takes is what the account takes, zero and negatives excluded."""
    assert bool(re.match(commands._AMOUNT_PATTERN, amount)) == valid


# -- 8. headers a browser acts on -----------------------------------------------------------------


async def test_the_dashboard_and_the_api_send_nosniff_and_a_strict_policy(make_api, dashboard):
    """Every answer has nosniff and a CSP without inline script that no page may frame."""
    api = await make_api(static_dir=dashboard)

    answers = {
        "dashboard": await api.get("/"),
        "asset": await api.get("/assets/app.js"),
        "query": await api.get("/api/query/accounts"),
        "problem": await api.get("/api/query/accounts/nope"),
        "health": await api.get("/healthz"),
    }

    for what, r in answers.items():
        assert r.headers["x-content-type-options"] == "nosniff", what
        policy = {
            part.split()[0]: part.split()[1:] for part in r.headers["content-security-policy"].split("; ")
        }
        assert policy["frame-ancestors"] == ["'none'"], what
        assert policy["script-src"] == ["'self'"], what
        assert "'unsafe-inline'" not in policy.get("style-src", []), what
    docs = await api.get("/docs")
    assert "frame-ancestors 'none'" in docs.headers["content-security-policy"]


# -- 9. bounded work per caller ---------------------------------------------------------------------


async def test_a_body_that_stalls_is_408(make_api):
    """A body that stops arriving is refused after body_timeout with 408 request-timeout; nothing recorded."""
    api = await make_api(body_timeout=0.2)
    account_id = await api.funded("1.00")
    size = await api.log_size()
    never = asyncio.Event()

    async def stalled():
        yield b'{"amount": '
        await never.wait()  # the rest never comes
        yield b'"1.00"}'

    r = await api.post(
        f"/api/command/accounts/{account_id}/deposit",
        content=stalled(),
        headers={"content-type": "application/json"},
    )

    api.problem(r, 408, "request-timeout")
    assert await api.log_size() == size


def test_a_metrics_token_without_tokens_is_refused(tmp_path):
    """A metrics token only means something where tokens are asked for: create_app refuses it alone."""
    with pytest.raises(ValueError, match="needs tokens"):
        create_app(Settings(db=f"sqlite:///{tmp_path / 'x.db'}", metrics_token="x" * 20))
