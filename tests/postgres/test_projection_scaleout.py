"""Projection workers in real processes on PostgreSQL: partitions shared by leases, kill -9, takeover.

Workers run tests/projection_worker.py. Its ``applied`` table records, for every
event, the worker and the partition's fencing token of the transaction that
applied it, with the event id as primary key: a lost event is missing there, a
double apply fails the worker loudly, and the tokens show who owned what when.
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
import sys
from collections import defaultdict
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlencode, urlsplit

from eventvault import ANY, StoreError
from eventvault.projections import ProjectionRunner
from eventvault.projections._db import PostgresReadModels


def _load_worker_module() -> ModuleType:
    path = Path(__file__).resolve().parent.parent / "projection_worker.py"
    spec = importlib.util.spec_from_file_location("projection_worker", path)
    assert spec is not None
    assert spec.loader is not None
    module = sys.modules.get("projection_worker") or importlib.util.module_from_spec(spec)
    if "projection_worker" not in sys.modules:
        sys.modules["projection_worker"] = module
        spec.loader.exec_module(module)
    return module


pw = _load_worker_module()

PARTITIONS = 8
LEASE = 1.5


def with_query(url: str, **params: object) -> str:
    """``url`` with these query parameters added."""
    joiner = "&" if urlsplit(url).query else "?"
    return url + joiner + urlencode(params)


def leases(db: PostgresReadModels) -> dict[int, tuple[str | None, int]]:
    """Partition -> (owner, token) of the serving generation."""
    try:
        rows = db.query(
            "SELECT p.part, p.owner, p.token FROM ev_partition p JOIN ev_projection j "
            "ON j.name = p.name AND j.generation = p.generation WHERE p.name = 'sums'"
        )
    except StoreError:
        return {}  # no worker has created the tables yet
    return {int(part): (owner, int(token)) for part, owner, token in rows}


def assert_one_owner_at_a_time(rows: list[tuple[int, str, int, str]]) -> None:
    """Per partition, along the log: each token is one worker's, and tokens never go back.

    A token going back would be a batch committed under a lease already taken
    over, which the fencing check must make impossible.
    """
    owner_of_token: dict[tuple[int, int], set[str]] = defaultdict(set)
    last_token: dict[int, int] = {}
    for part, worker, token, stream in rows:
        assert part == pw.partition_of(stream, PARTITIONS)
        owner_of_token[part, token].add(worker)
        assert token >= last_token.get(part, 0), (
            f"partition {part}: an older lease committed after a newer one"
        )
        last_token[part] = token
    assert all(len(ws) == 1 for ws in owner_of_token.values()), dict(owner_of_token)


async def test_three_workers_share_partitions_and_survive_a_kill_9_without_loss_or_duplicates(
    pg_url, schema, open_store, eventually, tmp_path: Path
) -> None:
    """Three processes split 8 partitions while a writer appends; one is SIGKILLed; its share moves on.

    At the end every event is applied exactly once, the totals equal the log's, and
    per partition each fencing token belongs to one worker and tokens only grow
    along the log: no two workers ever committed for one partition at the same time.
    """
    store = await open_store(registry=pw.REGISTRY, poll_interval=0.05)
    db = PostgresReadModels(pg_url, schema=schema)
    store_url = with_query(pg_url, schema=schema, poll_interval=0.05)
    models_url = with_query(pg_url, schema=schema)

    def args(worker: str) -> tuple[str, ...]:
        return (store_url, "--read-models", models_url, "--worker-id", worker, "--lease", str(LEASE))

    def start(worker: str) -> Any:  # a Worker of the module loaded above
        return pw.Worker(
            tmp_path / f"{worker}.log", *args(worker), "--partitions", str(PARTITIONS), "--batch", "50"
        )

    workers = {name: start(name) for name in ("w1", "w2", "w3")}
    stop_writing = asyncio.Event()
    rng = random.Random("scale-out")

    async def write() -> int:
        written = 0
        while not stop_writing.is_set() and written < 20_000:
            n = rng.randint(1, 5)
            await store.append(
                f"acct-{rng.randrange(100)}",
                [pw.Added(rng.randint(1, 100)) for _ in range(n)],
                expected_version=ANY,
            )
            written += n
        return written

    try:
        # Fair shares: 3 + 3 + 2.
        await eventually(
            lambda: asyncio.to_thread(leases, db),
            lambda ls: sorted(sum(1 for o, _ in ls.values() if o == w) for w in workers) == [2, 3, 3],
            within=30,
            what="the three workers to share the partitions",
        )
        writer = asyncio.create_task(write())
        await pw.progress_past(db, 300, list(workers.values()))

        before = await asyncio.to_thread(leases, db)
        victim_parts = {p for p, (owner, _) in before.items() if owner == "w2"}
        workers.pop("w2").kill()
        # After its lease runs out, the survivors take w2's partitions, each with a new token.
        after = await eventually(
            lambda: asyncio.to_thread(leases, db),
            lambda ls: all(ls[p][0] in {"w1", "w3"} for p in victim_parts),
            within=30,
            what="w2's partitions to be taken over",
        )
        assert all(after[p][1] > before[p][1] for p in victim_parts)
        await pw.progress_past(db, (await store.head()).position, list(workers.values()))
        stop_writing.set()
        written = await writer
        assert written > 0

        head = await store.head()
        await eventually(
            lambda: asyncio.to_thread(pw.checkpoint, db),
            lambda cp: cp >= head,
            within=30,
            what="the survivors to catch up",
        )
        for name, worker in workers.items():
            assert worker.stop() == 0, f"{name} did not stop cleanly"

        assert not await asyncio.to_thread(pw.recorded_errors, db)
        sums, applied = await asyncio.to_thread(pw.read_model, db)
        expected_sums, expected_ids = await pw.expected_from_log(store)
        assert applied == expected_ids  # none lost; the primary key already forbids twice
        assert sums == expected_sums

        rows = await asyncio.to_thread(
            db.query, "SELECT part, worker, token, stream FROM applied ORDER BY position"
        )
        assert_one_owner_at_a_time(rows)
        for p in victim_parts:
            late = [w for part, w, token, _ in rows if part == p and token >= after[p][1]]
            assert late
            assert "w2" not in late
        assert {w for _, w, _, _ in rows} == {"w1", "w2", "w3"}
    finally:
        stop_writing.set()
        for worker in workers.values():
            worker.kill()
        db.close()


async def test_kill_9_mid_batch_repeatedly_on_postgresql_then_it_equals_a_fresh_rebuild(
    pg_url, schema, open_store, tmp_path: Path
) -> None:
    """SIGKILLs at random moments of a catch-up on PostgreSQL: every event once, and a rebuild agrees."""
    store = await open_store(registry=pw.REGISTRY, poll_interval=0.05)
    rng = random.Random("pg-crash")
    for s in range(40):
        await store.append(
            f"acct-{s}", [pw.Added(rng.randint(1, 1000)) for _ in range(50)], expected_version=ANY
        )
    head = await store.head()
    db = PostgresReadModels(pg_url, schema=schema)
    try:
        args = (
            with_query(pg_url, schema=schema, poll_interval=0.05),
            "--read-models",
            with_query(pg_url, schema=schema),
            "--worker-id",
            "crashy",
            "--partitions",
            "4",
            "--batch",
            "50",
            "--pace",
            "0.0002",
        )
        kills, reached = await pw.kill_repeatedly(
            db, args, log=tmp_path / "worker.log", kills=6, head=head.position, rng=rng, jitter=0.02
        )
        assert kills == 6
        assert 0 < reached < head.position

        cls = pw.sums_class(4, 50)
        async with ProjectionRunner(store, [cls("final")], worker_id="crashy", read_models=db) as runner:
            assert await runner.catch_up(timeout=30)
            assert (await runner.status())[0].last_error is None
            sums, applied = await asyncio.to_thread(pw.read_model, db)
            assert (sums, applied) == await pw.expected_from_log(store)
            await runner.rebuild("sums")
            assert await runner.wait_rebuilt("sums", timeout=30)
            assert await asyncio.to_thread(pw.read_model, db) == (sums, applied)
    finally:
        db.close()
