"""The OpenAPI document, fuzzed by schemathesis: no input gets a 5xx, and every answer is as documented.

Schemathesis reads /openapi.json from the app in-process and sends generated
requests (valid ones and invalid ones) to every operation but the event
streams, which never end by design (they have tests of their own). Each answer
must be a documented status, with a documented content type, matching its
documented schema; invalid requests must be refused with a 4xx, valid ones
accepted (but for the rules of schemathesis.toml beside this file), and a
request without its token refused with 401. This run is short; docs/security.md
gives the command of the long one.
"""

from __future__ import annotations

import asyncio
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    positive_data_acceptance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from eventvault import Repository, open_store
from eventvault_ledger.api.app import create_app
from eventvault_ledger.api.settings import Settings, Token
from eventvault_ledger.domain import Account
from eventvault_ledger.transfers import Transfer

ADMIN = Token("fuzz-admin-token-0123456789", "fuzzer", frozenset({"read", "write", "admin"}))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    positive_data_acceptance,
    missing_required_header,
    ignored_auth,
]
SETTINGS = Path(__file__).with_name("schemathesis.toml")


OPERATIONS = [
    ("POST", "/api/command/accounts"),
    ("POST", "/api/command/accounts/{account_id}/deposit"),
    ("POST", "/api/command/accounts/{account_id}/withdraw"),
    ("POST", "/api/command/accounts/{account_id}/close"),
    ("DELETE", "/api/command/accounts/{account_id}/personal-data"),
    ("GET", "/api/query/accounts"),
    ("GET", "/api/query/accounts/{account_id}"),
    ("GET", "/api/query/accounts/{account_id}/transactions"),
    ("GET", "/api/query/accounts/{account_id}/events"),
    ("GET", "/api/query/accounts/{account_id}/state"),
    ("GET", "/api/query/totals"),
    ("POST", "/api/command/transfers"),
    ("GET", "/api/query/transfers/{transfer_id}"),
    ("GET", "/api/query/accounts/{account_id}/transfers"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/api/projections"),
    ("POST", "/api/projections/{name}/rebuild"),
    ("GET", "/api/dcb/read"),
    ("POST", "/api/dcb/append"),
    ("POST", "/api/projections/{name}/pause"),
    ("POST", "/api/projections/{name}/resume"),
    ("POST", "/api/projections/{name}/reset"),
    ("GET", "/api/store"),
    ("GET", "/api/store/snapshots"),
    ("DELETE", "/api/store/snapshots"),
    ("DELETE", "/api/store/streams/{stream_id}"),
    ("POST", "/api/store/scavenge"),
    ("GET", "/api/store/streams/{stream_id}/retention"),
    ("PUT", "/api/store/streams/{stream_id}/retention"),
]
STREAMS = {
    ("GET", "/api/query/accounts/changes"),
    ("GET", "/api/query/accounts/{account_id}/changes"),
    ("GET", "/api/query/transfers/changes"),
    ("GET", "/api/query/transfers/{transfer_id}/changes"),
}


NO_INPUT = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")}  # nothing to send them wrong
CASES = [(method, path, GenerationMode.POSITIVE) for method, path in OPERATIONS] + [
    (method, path, GenerationMode.NEGATIVE) for method, path in OPERATIONS if (method, path) not in NO_INPUT
]


# Accounts the fuzzer aims at (besides random ids): open with money, open in yen, closed.
KNOWN = {
    "11111111-1111-4111-8111-111111111111": ("EUR", "100.00", False),
    "22222222-2222-4222-8222-222222222222": ("JPY", "5000", False),
    "33333333-3333-4333-8333-333333333333": ("USD", None, True),
}


KNOWN_TRANSFER = "44444444-4444-4444-8444-444444444444"  # from the first known account to the third


async def _seed(url: str) -> None:
    async with open_store(url) as store:
        repository = Repository(store)
        for account_id, (currency, amount, closed) in KNOWN.items():
            account = Account.open("Fuzz Target", currency, account_id=account_id)
            if amount is not None:
                account.deposit(Decimal(amount))
            if closed:
                account.close()
            await repository.save(account)
        euros, _, dollars = KNOWN
        await repository.save(
            Transfer.request(euros, dollars, Decimal("1.00"), "EUR", transfer_id=KNOWN_TRANSFER)
        )


@pytest.fixture
def ledger_api(tmp_path):
    """The schema of an app on a fresh SQLite file holding the KNOWN accounts, asking for tokens."""
    url = f"sqlite:///{tmp_path / 'fuzz.db'}"
    asyncio.run(_seed(url))
    app = create_app(Settings(db=url, tokens=(ADMIN,), consistency_timeout=0.2))
    # The generator knows the token, so that invalid requests may also leave it out on purpose.
    settings = tomllib.loads(SETTINGS.read_text(encoding="utf-8"))
    settings["auth"] = {"openapi": {"bearer": {"bearer": ADMIN.secret}}}
    config = schemathesis.Config.from_dict(settings)
    # Loading the document starts the app; schemathesis's pytest plugin stops it after the test.
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


def test_every_operation_is_fuzzed(ledger_api):
    """The operations fuzzed below are all the document has, but the never-ending event streams."""
    documented = {(op.ok().method.upper(), op.ok().path) for op in ledger_api.get_all_operations()}
    assert documented == set(OPERATIONS) | STREAMS


@pytest.mark.parametrize(
    ("method", "path", "mode"), CASES, ids=[f"{mode.value} {m} {p}" for m, p, mode in CASES]
)
def test_every_operation_answers_as_documented(ledger_api, method, path, mode):
    """Generated requests, valid and invalid, never get a 5xx and always get a documented answer."""
    operation = ledger_api[path][method]
    strategy = operation.as_strategy(generation_mode=mode)
    if "{account_id}" in path:
        strategy = st.one_of(
            strategy,
            *(operation.as_strategy(generation_mode=mode, path_parameters={"account_id": a}) for a in KNOWN),
        )
    if "{transfer_id}" in path:
        known = {"transfer_id": KNOWN_TRANSFER}
        strategy = st.one_of(strategy, operation.as_strategy(generation_mode=mode, path_parameters=known))

    @settings(
        max_examples=15,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def fuzz(case):
        statuses.append(case.call_and_validate(checks=CHECKS).status_code)

    statuses: list[int] = []
    fuzz()
    # The DCB routes cannot accept on the fuzzed app's SQLite store (501: no DCB support yet).
    accepting = not path.startswith("/api/dcb/")
    if mode is GenerationMode.POSITIVE and accepting and (method == "GET" or path == "/api/command/accounts"):
        # The fuzzer gets past validation, so the accepting paths are fuzzed too.
        assert any(status < 300 for status in statuses), statuses
