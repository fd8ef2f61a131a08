"""Idempotency-Key and If-Match: retried commands land once, stale ones not at all."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time

import pytest

from eventvault import SchemaVersionError
from eventvault.projections import open_read_models
from eventvault_ledger.api.idempotency import IDEMPOTENCY, IdempotencyStore


def _key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


async def test_a_retry_with_the_same_key_and_body_gets_the_first_answer_and_appends_nothing(api):
    """The same key and body again: the same status and body, Idempotent-Replayed: true, no new event."""
    account_id = await api.funded("10.00")

    first = await api.deposit(account_id, "2.50", headers=_key("dep-1"))
    size = await api.log_size()
    again = await api.deposit(account_id, "2.50", headers=_key("dep-1"))

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["etag"] == first.headers["etag"]
    assert await api.log_size() == size
    assert await api.version(account_id) == 3


async def test_opening_with_a_key_twice_opens_one_account(api):
    """A retried open with the same key answers the same account id and opens nothing more."""
    body = {"ownerName": "Grace Hopper", "currency": "USD"}
    first = await api.post("/api/command/accounts", json=body, headers=_key("open-grace"))
    size = await api.log_size()
    again = await api.post("/api/command/accounts", json=body, headers=_key("open-grace"))

    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert await api.log_size() == size


async def test_the_same_key_with_another_body_is_refused(api):
    """A key reused for another amount, account or command is 422 idempotency-key-reused."""
    account_id = await api.funded("10.00")
    other = await api.funded("10.00")
    assert (await api.deposit(account_id, "1.00", headers=_key("k"))).status_code == 200
    size = await api.log_size()

    api.problem(await api.deposit(account_id, "2.00", headers=_key("k")), 422, "idempotency-key-reused")
    api.problem(await api.deposit(other, "1.00", headers=_key("k")), 422, "idempotency-key-reused")
    api.problem(await api.withdraw(account_id, "1.00", headers=_key("k")), 422, "idempotency-key-reused")
    r = await api.deposit(account_id, "1.00", headers={**_key("k"), "If-Match": "3"})
    api.problem(r, 422, "idempotency-key-reused")
    assert await api.log_size() == size


async def test_a_refused_command_is_refused_again_on_retry(api):
    """A keyed command that was refused gets the same refusal on retry, even once it could succeed."""
    account_id = await api.funded("1.00")

    first = await api.withdraw(account_id, "5.00", headers=_key("w"))
    api.problem(first, 422, "insufficient-funds")
    assert (await api.deposit(account_id, "10.00")).status_code == 200
    size = await api.log_size()
    again = await api.withdraw(account_id, "5.00", headers=_key("w"))

    api.problem(again, 422, "insufficient-funds")
    assert again.json()["detail"] == first.json()["detail"]
    assert again.headers["idempotent-replayed"] == "true"
    assert await api.log_size() == size


async def test_concurrent_retries_with_one_key_append_once(api):
    """Twenty copies of one keyed deposit sent at once: one event, and twenty identical answers."""
    account_id = await api.funded("1.00")
    size = await api.log_size()

    answers = await asyncio.gather(
        *(api.deposit(account_id, "3.00", headers=_key("burst")) for _ in range(20))
    )

    assert {r.status_code for r in answers} == {200}
    assert len({r.text for r in answers}) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in answers) == 19
    assert await api.log_size() == size + 1
    assert (await api.account(account_id, answers[0].json()["position"]))["currentBalance"] == "4.00"


async def test_concurrent_retries_through_two_servers_append_once(make_api):
    """The same keyed withdrawal sent at once to two servers on one store lands once; both answer 200."""
    one = await make_api()
    two = await make_api()
    account_id = await one.funded("5.00")
    size = await one.log_size()

    answers = await asyncio.gather(
        *(server.withdraw(account_id, "5.00", headers=_key("all-of-it")) for server in (one, two, one, two))
    )

    assert {r.status_code for r in answers} == {200}, [r.text for r in answers]
    assert len({(r.json()["version"], r.json()["position"]) for r in answers}) == 1
    assert await one.log_size() == size + 1


async def test_a_retry_after_a_lost_answer_returns_what_landed(api):
    """If a first attempt landed but its answer was lost (a crash), the retry answers what landed."""
    account_id = await api.funded("5.00")
    first = await api.withdraw(account_id, "5.00", headers=_key("lost"))
    assert first.status_code == 200
    # The crash: the event is in the log, the kept answer is gone.
    db = api.services.idempotency.db
    with db.transaction() as conn:
        db.execute(conn, "UPDATE ev_idempotency SET status = NULL, body = NULL")
    size = await api.log_size()

    again = await api.withdraw(account_id, "5.00", headers=_key("lost"))

    assert again.status_code == 200, again.text
    assert (again.json()["version"], again.json()["position"]) == (
        first.json()["version"],
        first.json()["position"],
    )
    assert await api.log_size() == size


async def test_keys_belong_to_their_caller(make_api, tokens):
    """Two callers who pick the same key both get their deposit: a key is scoped to its token."""
    api = await make_api(tokens=("writer", "admin"))
    account_id = await api.open(headers={"Authorization": tokens["writer"]})

    mine = await api.deposit(account_id, "1.00", headers={**_key("1"), "Authorization": tokens["writer"]})
    theirs = await api.deposit(account_id, "1.00", headers={**_key("1"), "Authorization": tokens["admin"]})

    assert mine.status_code == theirs.status_code == 200
    assert "idempotent-replayed" not in theirs.headers
    assert [mine.json()["version"], theirs.json()["version"]] == [2, 3]


async def test_the_key_is_recorded_in_the_event_metadata(api):
    """The event of a keyed command carries its Idempotency-Key in the metadata's extra."""
    account_id = await api.open()
    await api.deposit(account_id, "1.00", headers=_key("audit-me"))

    events = (await api.get(f"/api/query/accounts/{account_id}/events")).json()["items"]

    assert events[-1]["metadata"]["extra"] == {"idempotency_key": "audit-me"}


# -- If-Match ----------------------------------------------------------------------------------


async def test_if_match_with_the_current_version_runs_the_command(api):
    """If-Match naming the account's version (bare, quoted, weak, or the ETag given back) runs the command."""
    account_id = await api.open()
    etag = '"1"'
    for form in ("{v}", '"{v}"', 'W/"{v}"', "ETAG"):
        version = int(etag.strip('"'))
        value = etag if form == "ETAG" else form.format(v=version)
        r = await api.deposit(account_id, "1.00", headers={"If-Match": value})
        assert r.status_code == 200, (value, r.text)
        assert r.json()["version"] == version + 1
        etag = r.headers["etag"]
    assert (await api.deposit(account_id, "1.00", headers={"If-Match": "*"})).status_code == 200


async def test_if_match_with_a_stale_version_is_412_and_appends_nothing(api):
    """If-Match naming an older (or future) version is 412 precondition-failed with the current version."""
    account_id = await api.funded("10.00")
    size = await api.log_size()

    for stale in ("1", "3", "999"):
        for command in (api.deposit, api.withdraw):
            body = api.problem(
                await command(account_id, "1.00", headers={"If-Match": stale}), 412, "precondition-failed"
            )
            assert body["currentVersion"] == 2
    r = await api.post(f"/api/command/accounts/{account_id}/close", headers={"If-Match": "1"})
    api.problem(r, 412, "precondition-failed")
    assert await api.log_size() == size


async def test_of_two_writers_with_the_same_if_match_exactly_one_wins(api):
    """Ten deposits sent at once with the same If-Match: one lands, nine get 412."""
    account_id = await api.funded("1.00")

    answers = await asyncio.gather(
        *(api.deposit(account_id, "1.00", headers={"If-Match": "2"}) for _ in range(10))
    )

    assert sorted(r.status_code for r in answers) == [200] + [412] * 9
    assert await api.version(account_id) == 3


async def test_if_match_on_an_unknown_account_is_404(api):
    """If-Match does not hide that the account does not exist."""
    r = await api.deposit("00000000-0000-0000-0000-000000000000", "1.00", headers={"If-Match": "1"})
    api.problem(r, 404, "account-not-found")


async def test_an_expired_key_is_forgotten_and_a_retry_after_it_still_lands_once(api):
    """Keys expire; a retry after that runs the command anew, and its events' ids still land it once."""
    account_id = await api.funded("10.00")
    first = await api.deposit(account_id, "2.50", headers=_key("dep-expiring"))
    size = await api.log_size()
    keys = api.app.state.services.idempotency

    assert await asyncio.to_thread(keys.expire, time.time() - 3600) == 0  # too young to go
    assert await asyncio.to_thread(keys.expire, time.time() + 1) >= 1
    again = await api.deposit(account_id, "2.50", headers=_key("dep-expiring"))

    assert again.status_code == 200
    assert "idempotent-replayed" not in again.headers  # answered anew, not from the record
    assert await api.log_size() == size
    assert await api.version(account_id) == 3
    assert again.json() == first.json()
    # The account is as the events say, in the server's cache too: 12.50, not 15.00.
    api.problem(await api.withdraw(account_id, "12.51"), 422, "insufficient-funds")
    assert (await api.withdraw(account_id, "12.50")).status_code == 200
    replayed = await api.deposit(account_id, "2.50", headers=_key("dep-expiring"))
    assert replayed.headers["idempotent-replayed"] == "true"  # recorded again
    assert replayed.json() == first.json()


def test_a_key_table_from_before_versions_were_kept_is_adopted_with_its_keys(tmp_path):
    """ev_idempotency made before its version was recorded: setup keeps its keys and records version 1."""
    path = tmp_path / "keys.db"
    with contextlib.closing(sqlite3.connect(path)) as conn, conn:
        # As the code before decision 0034 made it, with one answered key.
        conn.execute(
            "CREATE TABLE IF NOT EXISTS ev_idempotency ("
            " key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, status INTEGER, body TEXT,"
            " headers TEXT, media_type TEXT, created_at DOUBLE PRECISION NOT NULL)"
        )
        conn.execute("CREATE INDEX IF NOT EXISTS ev_idempotency_created ON ev_idempotency (created_at)")
        conn.execute(
            "INSERT INTO ev_idempotency VALUES ('k', 'f', 200, '{}', '{}', 'application/json', ?)",
            (time.time(),),
        )
    db = open_read_models(f"sqlite:///{path}")
    try:
        keys = IdempotencyStore(db)
        keys.setup()
        assert db.schema_versions() == {IDEMPOTENCY.name: IDEMPOTENCY.version}
        assert keys.claim("k", "other").status == 200  # the answer on record, not a new claim
        keys.setup()
        db.execute(
            db.connection(), "UPDATE eventvault_schema SET version = 2 WHERE component = 'idempotency'"
        )
        with pytest.raises(SchemaVersionError, match="idempotency key schema version 2, newer than the 1"):
            keys.setup()
    finally:
        db.close()
