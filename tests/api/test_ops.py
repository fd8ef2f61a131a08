"""Operations: health, readiness, metrics, projection status and rebuild, the OpenAPI document."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from eventvault.processes import ProcessRunner
from eventvault_ledger.read_models import process_managers
from eventvault_ledger.read_models import projections as ledger_projections


async def test_healthz_answers_ok(api):
    """/healthz is 200 {"status": "ok"} while the process serves."""
    r = await api.get("/healthz")

    assert (r.status_code, r.json()) == (200, {"status": "ok"})


async def test_readyz_is_ready_when_the_store_answers_and_projections_run(api):
    """/readyz is 200 with the head of the log and the projections it runs."""
    r = await api.get("/readyz")

    assert r.status_code == 200, r.text
    assert r.json()["status"] == "ready"
    assert "accounts" in r.json()["projections"]


async def test_readyz_is_503_once_the_store_is_gone(api):
    """With the store closed under it, /readyz is 503 not-ready with Retry-After."""
    await api.services.store.close()

    r = await api.get("/readyz")

    api.problem(r, 503, "not-ready")
    assert r.headers["retry-after"].isdigit()


async def test_readyz_is_503_when_this_server_should_run_projections_and_does_not(api):
    """A server that runs projections but whose workers stopped is not ready."""
    await api.services.runner.stop()

    api.problem(await api.get("/readyz"), 503, "not-ready")


async def test_queries_and_keyed_commands_still_answer_after_the_runner_stopped_under_them(make_api):
    """The runner stops (closing its read-model connections) while the sweep runs: reads and keys go on."""
    api = await make_api(idempotency_ttl=1e-6)  # the sweep runs without pause
    account_id = await api.open()
    await api.account(account_id, (await api.deposit(account_id, "10.00")).json()["checkpoint"])

    await api.services.runner.stop()
    r = await api.deposit(account_id, "1.00", headers={"Idempotency-Key": "after-the-stop"})
    again = await api.deposit(account_id, "1.00", headers={"Idempotency-Key": "after-the-stop"})

    assert r.status_code == 200, r.text
    assert (again.status_code, again.json()) == (200, r.json())
    listing = await api.get("/api/query/accounts")
    assert listing.status_code == 200, listing.text
    assert account_id in {a["accountId"] for a in listing.json()["items"]}


async def test_metrics_are_prometheus_text_with_appends_latency_lag_and_rate(api):
    """/metrics has commands, appends, command and request latency, projection lag and rate."""
    account_id = await api.open()
    await api.deposit(account_id, "1.00")
    await api.withdraw(account_id, "5.00")  # refused: counted by its outcome, not as an append

    r = await api.get("/metrics")

    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name in (
        "eventvault_commands",
        "eventvault_appends",
        "eventvault_command_seconds",
        "eventvault_http_request_seconds",
        "eventvault_projection_lag_events",
        "eventvault_projection_lag_seconds",
        "eventvault_projection_events_per_second",
    ):
        assert name in families, sorted(families)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples
    }
    assert samples[("eventvault_appends_total", ())] == 2
    assert samples[("eventvault_commands_total", (("command", "deposit"), ("outcome", "ok")))] == 1
    assert (
        samples[("eventvault_commands_total", (("command", "withdraw"), ("outcome", "insufficient-funds")))]
        == 1
    )
    assert ("eventvault_projection_lag_events", (("projection", "accounts"),)) in samples


async def test_projection_status_lists_each_projection(api):
    """GET /api/projections shows each projection's state, checkpoint, head, lag and rate."""
    r = await api.deposit(await api.open(), "1.00")
    await api.account(r.json()["accountId"], r.json()["checkpoint"])

    items = (await api.get("/api/projections")).json()["items"]

    [accounts] = [p for p in items if p["name"] == "accounts"]
    assert accounts["state"] in ("starting", "catching_up", "live", "idle")
    assert {"checkpoint", "head", "lagEvents", "lagSeconds", "eventsPerSecond", "lastError"} <= set(accounts)
    assert accounts["lastError"] is None


async def test_rebuild_answers_202_then_swaps_in_a_read_model_equal_to_the_old(api):
    """POST rebuild is 202 with its progress; it completes, and the read model still says the same."""
    account_id = await api.funded("12.34")
    before = await api.account(account_id, (await api.deposit(account_id, "0.01")).json()["checkpoint"])

    r = await api.post("/api/projections/accounts/rebuild")

    assert r.status_code == 202, r.text
    assert {"generation", "state", "done", "total"} <= set(r.json())
    assert await api.services.runner.wait_rebuilt("accounts", timeout=30)
    after = (await api.get(f"/api/query/accounts/{account_id}")).json()
    assert after == before
    [status] = [p for p in (await api.get("/api/projections")).json()["items"] if p["name"] == "accounts"]
    assert status["generation"] == r.json()["generation"]


async def test_rebuilding_an_unknown_projection_is_404(api):
    """A rebuild of a projection that does not exist is 404 projection-not-found."""
    api.problem(await api.post("/api/projections/nope/rebuild"), 404, "projection-not-found")


async def test_a_server_without_projections_rebuilds_and_the_workers_elsewhere_follow_the_swap(make_api):
    """A server with --no-projections builds the new tables itself (202), and a worker elsewhere follows.

    The worker keeps the old tables current until the swap, then applies new events to the new ones.
    """
    api = await make_api(run_projections=False)
    elsewhere = ProcessRunner(api.services.store, process_managers(), projections=ledger_projections())
    async with elsewhere:
        account_id = await api.funded("12.34")
        before = await api.account(account_id, (await api.deposit(account_id, "0.01")).json()["checkpoint"])

        r = await api.post("/api/projections/accounts/rebuild")

        assert r.status_code == 202, r.text
        assert await api.services.runner.wait_rebuilt("accounts", timeout=60)
        assert (await api.get(f"/api/query/accounts/{account_id}")).json() == before
        later = await api.account(account_id, (await api.deposit(account_id, "1.00")).json()["checkpoint"])
        assert (before["currentBalance"], later["currentBalance"]) == ("12.35", "13.35"), later
        [status] = [p for p in (await api.get("/api/projections")).json()["items"] if p["name"] == "accounts"]
        assert status["generation"] == r.json()["generation"]


async def test_the_openapi_document_describes_commands_queries_and_problems(make_api):
    """/openapi.json lists every route, the bearer scheme and the problem document of errors."""
    api = await make_api(tokens=("admin",))
    doc = (await api.get("/openapi.json")).json()

    for path in (
        "/api/command/accounts",
        "/api/command/accounts/{account_id}/deposit",
        "/api/command/accounts/{account_id}/withdraw",
        "/api/command/accounts/{account_id}/close",
        "/api/query/accounts",
        "/api/query/accounts/{account_id}",
        "/api/query/accounts/{account_id}/transactions",
        "/api/query/accounts/{account_id}/events",
        "/api/query/accounts/{account_id}/state",
        "/api/query/accounts/changes",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/projections",
        "/api/projections/{name}/rebuild",
    ):
        assert path in doc["paths"], path
    deposit = doc["paths"]["/api/command/accounts/{account_id}/deposit"]["post"]
    assert deposit["security"] == [{"bearer": []}]
    assert deposit["responses"]["412"]["content"]["application/problem+json"]["schema"]["$ref"].endswith(
        "/ProblemDocument"
    )
    assert {p["name"] for p in deposit["parameters"]} >= {"account_id", "Idempotency-Key", "If-Match"}
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert doc["paths"]["/metrics"]["get"]["security"] == [{"bearer": []}]
    for open_path in ("/healthz", "/readyz"):
        assert "security" not in doc["paths"][open_path]["get"], open_path
        assert "401" not in doc["paths"][open_path]["get"]["responses"], open_path


async def test_without_tokens_the_document_asks_for_none(api):
    """A server without tokens declares no bearer scheme and no 401 anywhere: it asks nobody for one."""
    doc = (await api.get("/openapi.json")).json()

    assert "securitySchemes" not in doc.get("components", {})
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            assert "security" not in operation, (method, path)
            assert "401" not in operation["responses"], (method, path)


async def test_healthz_and_readyz_answer_head(make_api):
    """Probes may use HEAD: /healthz and /readyz answer 200 without a token."""
    api = await make_api(tokens=("reader",))

    for url in ("/healthz", "/readyz"):
        r = await api.client.head(url)
        assert r.status_code == 200, (url, r.text)


async def test_unknown_paths_and_methods_are_problems_too(api):
    """An unknown path is 404 and a wrong method 405, both as problem documents."""
    api.problem(await api.get("/api/nothing/here"), 404, "not-found")
    r = await api.client.delete("/api/command/accounts")
    api.problem(r, 405, "method-not-allowed")
    assert "POST" in r.headers["allow"]


async def test_pause_reset_and_resume_a_projection_through_the_admin_api(api):
    """POST pause shows it paused; reset moves it forward only; resume runs it on to the head."""
    first = await api.deposit(await api.open(), "1.00")
    await api.account(first.json()["accountId"], first.json()["checkpoint"])

    paused = await api.post("/api/projections/accounts/pause")
    assert paused.status_code == 200, paused.text
    assert (paused.json()["state"], paused.json()["paused"]) == ("paused", True)
    later = await api.deposit(first.json()["accountId"], "2.00")
    target = later.json()["checkpoint"]
    r = await api.post("/api/projections/accounts/reset", json={"to": target})
    assert r.status_code == 200, r.text
    assert r.json()["checkpoint"] == target
    conflict = "projection-state-conflict"
    api.problem(await api.post("/api/projections/accounts/reset", json={"to": "0.0"}), 409, conflict)
    api.problem(await api.post("/api/projections/accounts/reset", json={"to": "soon"}), 422, "validation")
    api.problem(await api.post("/api/projections/accounts/reset", content=b"{"), 422, "validation")

    resumed = await api.post("/api/projections/accounts/resume")
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["paused"] is False
    api.problem(await api.post("/api/projections/accounts/reset", json={"to": target}), 409, conflict)


async def test_projection_controls_need_the_admin_scope_and_a_known_name(make_api, tokens):
    """A reader may not pause (403); an unknown projection is 404 projection-not-found."""
    api = await make_api(tokens=("admin", "reader"))
    r = await api.post("/api/projections/accounts/pause", headers={"Authorization": tokens["reader"]})
    api.problem(r, 403, "forbidden")
    r = await api.post("/api/projections/nope/resume", headers={"Authorization": tokens["admin"]})
    api.problem(r, 404, "projection-not-found")
