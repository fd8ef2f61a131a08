"""The store's status and its snapshots through the admin API (GET /api/store, /api/store/snapshots)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from eventvault import ANY, Snapshot, StreamDeleted
from eventvault_ledger.domain import AccountClosed


async def _save_snapshots(api, *stream_ids: str) -> None:
    for n, stream_id in enumerate(stream_ids, start=1):
        await api.services.store.save_snapshot(Snapshot(stream_id, n, 1, b"{}" * n, datetime.now(UTC)))


async def test_store_status_shows_counts_head_size_and_each_read_models_lag(api):
    """The figures of `eventvault db status`, without the store's URL."""
    account = await api.open()
    last = await api.deposit(account, "5.00")
    await api.settled(last.json()["position"])

    r = await api.get("/api/store")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["backend"] in ("sqlite", "postgresql")
    assert doc["schemaVersion"] >= 1
    assert doc["events"] == 2
    assert doc["streams"] == 1
    assert doc["head"] == str(await api.head())
    assert doc["sizeBytes"] > 0
    assert "store" not in doc  # where the store lives may carry a password
    names = [m["name"] for m in doc["readModels"]]
    assert "accounts" in names
    accounts = next(m for m in doc["readModels"] if m["name"] == "accounts")
    assert accounts["lagEvents"] == 0
    assert set(accounts) == {"name", "state", "checkpoint", "lagEvents", "lagSeconds"}


async def test_snapshots_are_listed_with_their_type_and_by_type(api):
    await _save_snapshots(api, "account-2", "account-1", "transfer-1")

    r = await api.get("/api/store/snapshots")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert [i["streamId"] for i in doc["items"]] == ["account-1", "account-2", "transfer-1"]
    assert doc["types"] == {"account": 2, "transfer": 1}
    assert doc["truncated"] is False
    first = doc["items"][0]
    shown = (first["type"], first["schemaVersion"], first["streamVersion"], first["size"])
    assert shown == ("account", 1, 2, 4)
    assert datetime.fromisoformat(first["createdAt"]).tzinfo is not None

    only = await api.get("/api/store/snapshots", params={"type": "transfer"})
    assert [i["streamId"] for i in only.json()["items"]] == ["transfer-1"]
    few = await api.get("/api/store/snapshots", params={"limit": 2})
    assert (len(few.json()["items"]), few.json()["truncated"]) == (2, True)


async def test_snapshots_drop_by_stream_by_type_or_all(api):
    await _save_snapshots(api, "account-1", "account-2", "transfer-1", "transfer-2")

    r = await api.client.delete("/api/store/snapshots", params={"stream": "account-1"})
    assert (r.status_code, r.json()) == (200, {"dropped": 1})
    r = await api.client.delete("/api/store/snapshots", params={"type": "transfer"})
    assert r.json() == {"dropped": 2}
    left = await api.get("/api/store/snapshots")
    assert [i["streamId"] for i in left.json()["items"]] == ["account-2"]
    r = await api.client.delete("/api/store/snapshots")
    assert r.json() == {"dropped": 1}
    assert (await api.get("/api/store/snapshots")).json()["items"] == []


async def test_snapshot_routes_refuse_bad_selections_with_problems(api):
    both = await api.client.delete("/api/store/snapshots", params={"type": "account", "stream": "account-1"})
    api.problem(both, 422, "validation")
    api.problem(await api.get("/api/store/snapshots", params={"type": ""}), 422, "validation")
    api.problem(await api.get("/api/store/snapshots", params={"limit": 0}), 422, "validation")
    api.problem(await api.get("/api/store/snapshots", params={"stream": "x"}), 422, "validation")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/store"),
        ("GET", "/api/store/snapshots"),
        ("DELETE", "/api/store/snapshots"),
        ("POST", "/api/store/scavenge"),
    ],
)
async def test_store_routes_need_an_admin_token(make_api, tokens, method, path):
    """No token is 401 (with a challenge), a writer's is 403, an admin's is served."""
    api = await make_api(tokens=("admin", "writer"))
    r = await api.client.request(method, path)
    api.problem(r, 401, "unauthorized")
    assert r.headers["www-authenticate"].startswith("Bearer")
    r = await api.client.request(method, path, headers={"Authorization": tokens["writer"]})
    api.problem(r, 403, "forbidden")
    r = await api.client.request(method, path, headers={"Authorization": tokens["admin"]})
    assert r.status_code == 200, r.text


async def test_store_status_answers_on_a_server_that_runs_no_projections(make_api):
    """Read models kept by workers elsewhere still show their lag here (read from the database)."""
    writer = await make_api()
    last = await writer.deposit(await writer.open(), "1.00")
    await writer.settled(last.json()["position"])
    api = await make_api(run_projections=False)
    r = await api.get("/api/store")
    assert r.status_code == 200, r.text
    assert r.json()["events"] == 2
    assert "accounts" in [m["name"] for m in r.json()["readModels"]]


# -- deleting streams and scavenging ------------------------------------------------------


async def _funded(api, amount: str) -> str:
    """A new account holding ``amount``, once the read models show it."""
    account_id = await api.open()
    r = await api.deposit(account_id, amount)
    assert r.status_code == 200, r.text
    await api.settled(r.json()["position"])
    return str(account_id)


async def _totals(api) -> dict[str, object]:
    r = await api.get("/api/query/totals")
    assert r.status_code == 200, r.text
    [eur] = [t for t in r.json()["items"] if t["currency"] == "EUR"]
    return dict(eur)


async def test_a_deleted_account_leaves_the_read_models_and_the_totals(api):
    """DELETE /api/store/streams/{id}: the account's $StreamDeleted event makes the read model drop it."""
    kept = await _funded(api, "10.00")
    before = await _totals(api)
    gone = await _funded(api, "25.00")
    assert (await api.withdraw(gone, "5.00")).status_code == 200
    stream = f"account-{gone}"

    r = await api.client.delete(f"/api/store/streams/{stream}", params={"expectedVersion": 3})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["streamId"], doc["version"], doc["tombstone"]) == (stream, 4, False)
    await api.settled(doc["position"])

    listed = (await api.get("/api/query/accounts")).json()["items"]
    assert [a["accountId"] for a in listed] == [kept]
    api.problem(await api.get(f"/api/query/accounts/{gone}"), 404, "account-not-found")
    assert await _totals(api) == before  # as if the account had never been
    api.problem(await api.deposit(gone, "1.00"), 404, "account-not-found")
    assert await api.version(gone) == 0


async def test_store_status_leaves_a_deleted_account_out_of_the_streams(api):
    """GET /api/store after a delete: the stream is no longer counted; its events and the delete's are."""
    kept = await api.open()
    gone = await api.funded("5.00")
    r = await api.client.delete(f"/api/store/streams/account-{gone}", params={"tombstone": "true"})
    assert r.status_code == 200, r.text
    await api.settled(r.json()["position"])

    doc = (await api.get("/api/store")).json()
    assert (doc["events"], doc["streams"]) == (4, 1)  # opened, opened, deposited and the delete's event
    listed = [s.stream_id for s in await api.services.store.list_streams()]
    assert listed == [f"account-{kept}"]


async def test_a_tombstoned_stream_refuses_deletes_and_appends_with_409(api):
    account = await api.open()
    stream = f"account-{account}"
    r = await api.client.delete(f"/api/store/streams/{stream}", params={"tombstone": "true"})
    assert (r.status_code, r.json()["tombstone"]) == (200, True)
    body = api.problem(await api.client.delete(f"/api/store/streams/{stream}"), 409, "stream-deleted")
    assert body["streamId"] == stream
    api.problem(await api.deposit(account, "1.00"), 404, "account-not-found")
    with pytest.raises(StreamDeleted):
        await api.services.store.append(stream, [AccountClosed()], expected_version=ANY)


async def test_a_command_on_an_account_another_process_deleted_is_404(api):
    """Deleted on the store itself (`eventvault streams delete`) while this server caches it: 404, not 409."""
    account = await api.funded("5.00")  # the server's repository holds its state now
    await api.services.store.delete_stream(f"account-{account}", expected_version=2)

    api.problem(await api.deposit(account, "1.00"), 404, "account-not-found")
    assert await api.version(account) == 0


async def test_deletes_refused_with_documented_problems(api):
    account = await api.open()
    stream = f"account-{account}"
    wrong = await api.client.delete(f"/api/store/streams/{stream}", params={"expectedVersion": 7})
    assert api.problem(wrong, 409, "concurrent-modification")["currentVersion"] == 1
    api.problem(await api.client.delete("/api/store/streams/account-nobody"), 404, "stream-not-found")
    bad = await api.client.delete(f"/api/store/streams/{stream}", params={"expectedVersion": 0})
    api.problem(bad, 422, "validation")
    assert await api.version(account) == 1  # nothing was deleted


async def test_scavenge_removes_a_deleted_accounts_events(api):
    account = await api.funded("3.00")
    r = await api.client.delete(f"/api/store/streams/account-{account}")
    assert r.status_code == 200, r.text
    size = await api.log_size()
    r = await api.post("/api/store/scavenge")
    assert r.status_code == 200, r.text
    assert r.json() == {"streams": 1, "eventsRemoved": 2}  # opened and deposited; its delete event stays
    assert await api.log_size() == size - 2
    again = await api.post("/api/store/scavenge")
    assert again.json() == {"streams": 1, "eventsRemoved": 0}


async def test_a_streams_retention_is_set_and_shown(api):
    """PUT /api/store/streams/{id}/retention: stream reads show only what the rules keep."""
    account = await _funded(api, "1.00")
    for amount in ("2.00", "3.00"):
        assert (await api.deposit(account, amount)).status_code == 200
    stream = f"account-{account}"
    url = f"/api/store/streams/{stream}/retention"
    shown = await api.get(url)
    assert shown.status_code == 200, shown.text
    assert (shown.json()["maxCount"], shown.json()["firstVersion"], shown.json()["version"]) == (None, 1, 4)

    r = await api.client.put(url, json={"maxCount": 2, "truncateBefore": 2})
    assert r.status_code == 200, r.text
    doc = r.json()
    rules = (doc["maxCount"], doc["maxAgeSeconds"], doc["truncateBefore"], doc["firstVersion"])
    assert rules == (2, None, 2, 3)
    assert [e.stream_version for e in await api.events(account)] == [3, 4]
    r = await api.client.put(url, json={"maxAgeSeconds": 86400, "truncateBefore": 0})
    assert (r.json()["maxCount"], r.json()["maxAgeSeconds"], r.json()["firstVersion"]) == (None, 86400.0, 1)
    assert len(await api.events(account)) == 4
    api.problem(await api.client.put(url, json={"maxCount": 0}), 422, "validation")
    api.problem(await api.client.put(url, json={"maxCount": 1, "extra": 1}), 422, "validation")
