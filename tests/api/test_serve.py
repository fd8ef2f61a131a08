"""``eventvault serve`` as a real process on a real socket, and the addresses it refuses."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from eventvault_ledger import cli
from server_process import stop, wait_healthy

EVENTVAULT = Path(sys.executable).with_name("eventvault")
TOKEN = "serve-test-token-0123456789"  # noqa: S105 - a test token, nothing it guards


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _command(*args: str) -> list[str]:
    if EVENTVAULT.exists():
        return [str(EVENTVAULT), *args]
    return [sys.executable, "-m", "eventvault_ledger.cli", *args]


@contextlib.contextmanager
def serving(tmp_path: Path, *args: str, port: int, host: str = "127.0.0.1") -> Iterator[tuple[str, Path]]:
    """``eventvault serve ARGS`` running until the block ends; its base URL and its output file."""
    out = tmp_path / "serve.log"
    with out.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603 - our own console script, fixed arguments
            # At info: uvicorn's start and stop lines, which the checks below read.
            _command("serve", "--host", host, "--port", str(port), "--log-level", "info", *args),
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
            env={**os.environ, "NO_COLOR": "1"},
        )
        base = f"http://127.0.0.1:{port}"
        try:
            wait_healthy(base, process, out)
            yield base, out
        finally:
            code = stop(process)
    # uvicorn shuts down cleanly, then re-raises the signal so the exit status tells of it.
    assert code in (0, -signal.SIGTERM), out.read_text()
    assert "Application shutdown complete" in out.read_text()


def test_serve_runs_the_api_on_a_real_socket(tmp_path):
    """The server starts with --demo, prints its URL, takes commands and queries, and stops on SIGTERM."""
    port = _free_port()
    db = f"sqlite:///{tmp_path / 'ledger.db'}"

    with (
        serving(tmp_path, "--db", db, "--demo", port=port) as (base, out),
        httpx.Client(base_url=base) as client,
    ):
        assert f"http://127.0.0.1:{port}/" in out.read_text()
        demo = client.get("/api/query/accounts", params={"limit": 100}).json()["items"]
        opened = client.post("/api/command/accounts", json={"ownerName": "Real Socket", "currency": "EUR"})
        account_id = opened.json()["accountId"]
        deposited = client.post(
            f"/api/command/accounts/{account_id}/deposit",
            content=b'{"amount": 0.1}',
            headers={"content-type": "application/json", "X-Request-ID": "over-tcp"},
        )
        summary = client.get(
            f"/api/query/accounts/{account_id}", params={"consistentWith": deposited.json()["position"]}
        )
        refused = client.post(f"/api/command/accounts/{account_id}/withdraw", json={"amount": "1.00"})
        ready = client.get("/readyz")

    assert len(demo) >= 6
    assert opened.status_code == 201
    assert deposited.headers["x-request-id"] == "over-tcp"
    assert (summary.status_code, summary.json()["currentBalance"]) == (200, "0.10")
    assert (refused.status_code, refused.headers["content-type"]) == (422, "application/problem+json")
    assert ready.status_code == 200


def test_serve_with_tokens_listens_beyond_loopback_and_asks_for_them(tmp_path):
    """With --tokens the server may listen on 0.0.0.0, and then a call without a token is 401."""
    port = _free_port()
    db = f"sqlite:///{tmp_path / 'ledger.db'}"

    everywhere = "0.0.0.0"  # noqa: S104 - listening beyond loopback is the point of the test
    spec = f"{TOKEN}:read,write:ci"
    with serving(tmp_path, "--db", db, "--tokens", spec, port=port, host=everywhere) as (base, _):
        anonymous = httpx.get(f"{base}/api/query/accounts")
        allowed = httpx.get(f"{base}/api/query/accounts", headers={"Authorization": f"Bearer {TOKEN}"})

    assert anonymous.status_code == 401
    assert allowed.status_code == 200


def test_serve_refuses_to_listen_beyond_loopback_without_tokens(tmp_path):
    """Without tokens, --host 0.0.0.0 exits 2 with a one-line reason, before opening or binding anything."""
    r = subprocess.run(  # noqa: S603
        _command("serve", "--host", "0.0.0.0", "--db", f"sqlite:///{tmp_path / 'x.db'}"),  # noqa: S104
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )

    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("error: refusing to listen on 0.0.0.0 without tokens")
    assert "--tokens" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "x.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "::"], "refusing to listen on :: without tokens"),
        (["--host", "192.0.2.1"], "refusing to listen on 192.0.2.1 without tokens"),
        (["--host", "example.com"], "refusing to listen on example.com without tokens"),
        (["--tokens", "short:read"], "a token is 16-256 URL-safe characters"),
        (["--tokens", "long-enough-token-1234:fly"], "scopes are a comma-separated subset"),
        (["--db", "nosql://x"], "unknown store scheme"),
    ],
)
def test_serve_refuses_bad_options_with_exit_2(tmp_path, monkeypatch, args, message):
    """A non-loopback host without tokens, a malformed token spec or store URL: exit 2, a clear message."""
    monkeypatch.chdir(tmp_path)

    r = CliRunner().invoke(cli.app, ["serve", *args])

    assert r.exit_code == 2, r.output
    assert message in r.stderr
    assert "Traceback" not in r.output


def test_a_body_far_over_the_limit_gets_a_readable_413_over_a_real_socket(tmp_path):
    """A 10 MB deposit body is answered 413 too-large as a problem document, not a connection reset."""
    port = _free_port()
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    spec = f"{TOKEN}:read,write:ci"

    with serving(tmp_path, "--db", db, "--tokens", spec, port=port) as (base, _):
        auth = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=base, headers=auth, timeout=60) as client:
            account_id = client.post(
                "/api/command/accounts", json={"ownerName": "Big Body", "currency": "EUR"}
            ).json()["accountId"]
            big = b'{"amount": "1.00", "description": "' + b"x" * 10_000_000 + b'"}'
            r = client.post(
                f"/api/command/accounts/{account_id}/deposit",
                content=big,
                headers={"content-type": "application/json", "X-Request-ID": "too-big-1"},
            )
            after = client.get(f"/api/query/accounts/{account_id}")
            head = client.head("/healthz")

    assert r.status_code == 413, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers.get_list("x-request-id") == ["too-big-1"]
    body = r.json()
    assert body["type"] == "https://eventvault.dev/problems/too-large"
    assert body["requestId"] == "too-big-1"
    assert (after.status_code, after.json()["version"]) == (200, 1)
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["x-content-type-options"] == "nosniff"


def test_serve_refuses_a_metrics_token_without_tokens(tmp_path, monkeypatch):
    """--metrics-token alone means nothing (without tokens all is open on loopback): exit 2, one line."""
    monkeypatch.chdir(tmp_path)

    r = CliRunner().invoke(cli.app, ["serve", "--metrics-token", "scrape-token-0123456789"])

    assert r.exit_code == 2, r.output
    assert "--metrics-token needs --tokens" in r.stderr


def test_serve_takes_a_metrics_token_for_metrics(tmp_path):
    """With --tokens and --metrics-token (a file), /metrics takes that token and refuses none."""
    port = _free_port()
    db = f"sqlite:///{tmp_path / 'ledger.db'}"
    scrape = tmp_path / "metrics-token"
    scrape.write_text("scrape-token-0123456789\n", encoding="utf-8")

    with serving(
        tmp_path, "--db", db, "--tokens", f"{TOKEN}:read", "--metrics-token", str(scrape), port=port
    ) as (base, _):
        anonymous = httpx.get(f"{base}/metrics")
        scraped = httpx.get(f"{base}/metrics", headers={"Authorization": "Bearer scrape-token-0123456789"})

    assert anonymous.status_code == 401
    assert scraped.status_code == 200


def test_serve_bounds_the_connections_it_holds(tmp_path):
    """With --max-connections 2, a live stream and more callers at once: the ones beyond get 503."""
    port = _free_port()
    db = f"sqlite:///{tmp_path / 'ledger.db'}"

    with (
        serving(tmp_path, "--db", db, "--max-connections", "2", port=port) as (base, _),
        contextlib.ExitStack() as held,
    ):
        stream = held.enter_context(httpx.stream("GET", f"{base}/api/query/accounts/changes", timeout=30))
        first = next(stream.iter_lines())
        callers = [held.enter_context(httpx.Client(base_url=base, timeout=30)) for _ in range(4)]
        statuses = [caller.get("/healthz").status_code for caller in callers]

    assert (stream.status_code, first[:6]) == (200, "retry:")
    assert 503 in statuses, statuses


# An app that answers how many objects were frozen at its start and at the request.
_FREEZE_COUNTER = """
import gc
from eventvault_ledger import serving

counts = {}

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                counts["startup"] = gc.get_freeze_count()
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = f"{counts['startup']} {gc.get_freeze_count()}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})

sock = serving.listen("127.0.0.1", int(__import__("sys").argv[1]))
serving.run(app, sock, log_level="warning")
"""


def test_what_starting_made_is_frozen_out_of_the_collectors_way_before_requests(tmp_path):
    """serving.run freezes the started app's heap (decision 39): nothing while it starts, all of it after."""
    port = _free_port()
    out = tmp_path / "server.log"
    with out.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603 - this interpreter and a fixed script
            [sys.executable, "-c", _FREEZE_COUNTER, str(port)], stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, process, out)
        at_startup, serving_ = map(int, httpx.get(base).text.split())
    finally:
        stop(process)

    assert at_startup == 0
    assert serving_ > 10_000, serving_  # the modules, uvicorn, the app: tens of thousands of objects
