"""kill -9 of a real projection process mid-batch, many times over, loses and duplicates nothing.

A worker process (tests/projection_worker.py) catches up a few thousand events on
SQLite; the test kills it with SIGKILL at random moments after it made progress
(seen by polling its checkpoint row, with a deadline), restarts it, and kills it
again. At the end the read model must hold every event exactly once and equal a
fresh rebuild of the same projection. ``EVENTVAULT_CRASH_SEED`` replays a run.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path

import projection_worker as pw
from eventvault import NO_STREAM, open_store
from eventvault.projections import ProjectionRunner, open_read_models

STREAMS = 80
EVENTS_PER_STREAM = 50  # 4,000 events
KILLS = 15
BATCH = 50
PACE = 0.0002  # seconds of handler work per event: a batch takes 10 ms and its commit
JITTER = 0.02  # so the kill lands anywhere in the next batch or two


async def test_kill_9_mid_batch_many_times_then_read_model_equals_a_fresh_rebuild(tmp_path: Path) -> None:
    """15 SIGKILLs at random moments of a catch-up: every event applied exactly once, and a rebuild agrees."""
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    rng = random.Random(os.environ.get("EVENTVAULT_CRASH_SEED", "crash"))
    async with open_store(url, registry=pw.REGISTRY) as store:
        for s in range(STREAMS):
            await store.append(
                f"acct-{s}",
                [pw.Added(rng.randint(1, 1000)) for _ in range(EVENTS_PER_STREAM)],
                expected_version=NO_STREAM,
            )
        head = (await store.head()).position
        db = open_read_models(url)
        try:
            kills, reached = await pw.kill_repeatedly(
                db,
                (
                    url,
                    "--worker-id",
                    "crashy",
                    "--partitions",
                    "4",
                    "--batch",
                    str(BATCH),
                    "--pace",
                    str(PACE),
                ),
                log=tmp_path / "worker.log",
                kills=KILLS,
                head=head,
                rng=rng,
                jitter=JITTER,
            )
            assert kills == KILLS
            assert 0 < reached < head, "the last kill should land before the catch-up is over"

            # Restarted under the same id, a runner takes the dead worker's partitions at
            # once (no lease wait) and finishes the catch-up.
            cls = pw.sums_class(4, BATCH)
            async with ProjectionRunner(store, [cls("final")], worker_id="crashy", read_models=db) as runner:
                assert await runner.catch_up(timeout=30)
                status = (await runner.status())[0]
                assert status.last_error is None
                assert status.applied == head
                sums, applied = await asyncio.to_thread(pw.read_model, db)
                expected_sums, expected_ids = await pw.expected_from_log(store)
                assert applied == expected_ids
                assert sums == expected_sums

                await runner.rebuild("sums")
                assert await runner.wait_rebuilt("sums", timeout=30)
                assert await asyncio.to_thread(pw.read_model, db) == (sums, applied)
        finally:
            db.close()
