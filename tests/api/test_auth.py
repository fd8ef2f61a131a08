"""Bearer tokens and scopes, who did what, request ids, CORS and the body size limit."""

from __future__ import annotations

import pytest

SCRAPE = "scrape-token-0123456789"


@pytest.fixture
async def secured(make_api):
    """A server with a reader, a writer, an admin and a write-only token."""
    return await make_api(tokens=("reader", "writer", "admin", "write-only"))


def _as(tokens, name):
    return {"Authorization": tokens[name]}


async def test_without_a_token_every_api_call_is_401_with_a_challenge(secured, tokens):
    """No Authorization (or not a Bearer one): 401 unauthorized with WWW-Authenticate: Bearer."""
    account_id = await secured.open(headers=_as(tokens, "writer"))
    size = await secured.log_size()
    calls = [
        ("POST", "/api/command/accounts", {"ownerName": "Eve", "currency": "EUR"}),
        ("POST", f"/api/command/accounts/{account_id}/deposit", {"amount": "1.00"}),
        ("POST", f"/api/command/accounts/{account_id}/close", None),
        ("GET", f"/api/query/accounts/{account_id}", None),
        ("GET", "/api/query/accounts", None),
        ("GET", "/api/projections", None),
        ("POST", "/api/projections/accounts/rebuild", None),
    ]
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"}):
        for method, url, body in calls:
            r = await secured.client.request(method, url, json=body, headers=headers)
            secured.problem(r, 401, "unauthorized")
            assert r.headers["www-authenticate"].startswith("Bearer"), (url, r.headers)
    assert await secured.log_size() == size


async def test_an_unknown_token_is_401_invalid_token(secured):
    """A bearer token the server does not know is 401 with error="invalid_token"."""
    r = await secured.get("/api/query/accounts", headers={"Authorization": "Bearer not-a-known-token-at-all"})

    secured.problem(r, 401, "unauthorized")
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


async def test_each_scope_allows_exactly_its_calls(secured, tokens):
    """Read reads, write commands, admin rebuilds; anything else is 403 forbidden naming the missing scope."""
    account_id = await secured.open(headers=_as(tokens, "writer"))
    size = await secured.log_size()

    r = await secured.deposit(account_id, "1.00", headers=_as(tokens, "reader"))
    body = secured.problem(r, 403, "forbidden")
    assert "write" in body["detail"]
    assert 'error="insufficient_scope"' in r.headers["www-authenticate"]
    r = await secured.post(
        "/api/command/accounts", json={"ownerName": "A", "currency": "EUR"}, headers=_as(tokens, "reader")
    )
    secured.problem(r, 403, "forbidden")
    assert await secured.log_size() == size

    secured.problem(
        await secured.get("/api/query/accounts", headers=_as(tokens, "write-only")), 403, "forbidden"
    )
    secured.problem(
        await secured.post("/api/projections/accounts/rebuild", headers=_as(tokens, "writer")),
        403,
        "forbidden",
    )

    deposited = await secured.deposit(account_id, "1.00", headers=_as(tokens, "write-only"))
    assert deposited.status_code == 200
    read = await secured.get(
        f"/api/query/accounts/{account_id}",
        params={"consistentWith": deposited.json()["checkpoint"]},
        headers=_as(tokens, "reader"),
    )
    assert read.status_code == 200
    assert (await secured.get("/api/projections", headers=_as(tokens, "reader"))).status_code == 200
    assert (
        await secured.post("/api/projections/accounts/rebuild", headers=_as(tokens, "admin"))
    ).status_code == 202


async def test_probes_and_documents_need_no_token(secured):
    """/healthz, /readyz (GET and HEAD), /openapi.json and /docs need no token: probes have none."""
    for url in ("/healthz", "/readyz", "/openapi.json", "/docs"):
        assert (await secured.get(url)).status_code == 200, url
    for url in ("/healthz", "/readyz"):
        assert (await secured.client.head(url)).status_code == 200, url


async def test_metrics_need_an_admin_token_or_the_metrics_token(make_api, tokens):
    """With tokens, /metrics is 401 without one, 403 for a token without admin; admin or metrics token 200."""
    api = await make_api(tokens=("reader", "admin"), metrics_token=SCRAPE)

    api.problem(await api.get("/metrics"), 401, "unauthorized")
    api.problem(await api.get("/metrics", headers=_as(tokens, "reader")), 403, "forbidden")
    api.problem(
        await api.get("/metrics", headers={"Authorization": "Bearer not-the-scrape-token-00"}),
        401,
        "unauthorized",
    )
    assert (await api.get("/metrics", headers=_as(tokens, "admin"))).status_code == 200
    scraped = await api.get("/metrics", headers={"Authorization": f"Bearer {SCRAPE}"})
    assert scraped.status_code == 200
    assert "eventvault_appends_total" in scraped.text
    # The metrics token is good for /metrics only.
    api.problem(
        await api.get("/api/query/accounts", headers={"Authorization": f"Bearer {SCRAPE}"}),
        401,
        "unauthorized",
    )


async def test_the_actor_and_request_id_of_each_command_are_in_its_event(secured, tokens):
    """Each event records the token's subject as actor and the request id, which the response echoes."""
    account_id = await secured.open(headers={**_as(tokens, "writer"), "X-Request-ID": "req-open-42"})
    r = await secured.deposit(
        account_id, "5.00", headers={**_as(tokens, "admin"), "X-Request-ID": "req-dep-43"}
    )

    assert r.headers["x-request-id"] == "req-dep-43"
    opened, deposited = await secured.events(account_id)
    assert (opened.metadata.actor, opened.metadata.request_id) == ("writer", "req-open-42")
    assert (deposited.metadata.actor, deposited.metadata.request_id) == ("admin", "req-dep-43")


async def test_every_response_carries_a_request_id(api):
    """Without a usable X-Request-ID the server makes one; a usable one is echoed, errors included."""
    made = await api.get("/healthz")
    junk = await api.get("/healthz", headers={"X-Request-ID": "no spaces or ünicode".encode()})
    echoed = await api.get("/api/query/accounts/nope", headers={"X-Request-ID": "trace-1"})

    assert len(made.headers["x-request-id"]) >= 16
    assert junk.headers["x-request-id"] not in ("no spaces or ünicode", "")
    assert echoed.headers["x-request-id"] == "trace-1"
    assert echoed.json()["requestId"] == "trace-1"


async def test_cors_is_closed_by_default(api):
    """Without --cors no response, preflight or not, allows another origin."""
    account_id = await api.open()
    origin = {"Origin": "https://evil.example"}

    preflight = await api.client.options(
        f"/api/command/accounts/{account_id}/deposit",
        headers={**origin, "Access-Control-Request-Method": "POST"},
    )
    read = await api.get(f"/api/query/accounts/{account_id}", headers=origin)

    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in read.headers


async def test_cors_allows_only_the_configured_origins(make_api):
    """With cors_origins, that origin is allowed and any other still is not."""
    api = await make_api(cors_origins=("https://dash.example",))

    allowed = await api.get("/api/query/accounts", headers={"Origin": "https://dash.example"})
    other = await api.get("/api/query/accounts", headers={"Origin": "https://evil.example"})

    assert allowed.headers["access-control-allow-origin"] == "https://dash.example"
    assert "access-control-allow-origin" not in other.headers


async def test_a_body_over_the_limit_is_413_and_records_nothing(make_api):
    """A body larger than max_body_bytes is 413 too-large, declared or streamed without a length."""
    api = await make_api(max_body_bytes=1024)
    account_id = await api.funded("1.00")
    size = await api.log_size()
    big = b'{"amount": "1.00", "description": "' + b"x" * 2000 + b'"}'

    declared = await api.post(
        f"/api/command/accounts/{account_id}/deposit",
        content=big,
        headers={"content-type": "application/json"},
    )

    async def chunks():
        for i in range(0, len(big), 100):
            yield big[i : i + 100]

    streamed = await api.post(
        f"/api/command/accounts/{account_id}/deposit",
        content=chunks(),
        headers={"content-type": "application/json"},
    )

    for refused in (declared, streamed):
        body = api.problem(refused, 413, "too-large")
        assert body["requestId"] == refused.headers["x-request-id"], body
        assert body["instance"] == f"/api/command/accounts/{account_id}/deposit"
        assert len(refused.headers.get_list("x-request-id")) == 1, refused.headers
    assert "content-length" not in streamed.request.headers
    assert await api.log_size() == size
