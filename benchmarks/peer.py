"""The peer: the eventsourcing library (9.5.6), configured as its documentation shows.

An ``Application`` subclass persists through the module named by
``PERSISTENCE_MODULE`` (``eventsourcing.sqlite`` or ``eventsourcing.postgres``);
aggregates are saved with ``app.save()``, loaded with ``app.repository.get()``,
and the global log is read with ``app.recorder.select_notifications()`` and
``app.mapper.to_domain_event()``, as its notification log readers do.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

from eventsourcing.sqlite import SQLiteApplicationRecorder

from benchmarks.backends import Backend, Place
from benchmarks.model import PeerAccount, PeerBank, PeerSnapshottingBank, account_args, deposit_args
from benchmarks.plan import Plan, Sizes, Stopwatch, Timing

__all__ = ["Peer", "check_synchronous"]


def check_synchronous(app: PeerBank) -> None:
    """Refuse to measure a SQLite peer that does not sync every commit (synchronous=FULL)."""
    recorder = app.recorder
    if not isinstance(recorder, SQLiteApplicationRecorder):
        return
    with recorder.datastore.transaction(commit=False) as cur:
        cur.execute("PRAGMA synchronous")
        level = cur.fetchone()[0]
        cur.execute("PRAGMA journal_mode")
        mode = cur.fetchone()[0]
    if level != 2 or str(mode).lower() != "wal":
        raise RuntimeError(
            f"the peer's SQLite runs at synchronous={level}, journal_mode={mode}, not FULL/WAL"
        )


class Peer:
    """The eventsourcing contender."""

    name = "peer"

    def __init__(self, backend: Backend, sizes: Sizes) -> None:
        self.backend = backend
        self.sizes = sizes

    def _app(self, place: Place, cls: type[PeerBank] = PeerBank, **env: str) -> PeerBank:
        app = cls(env={**self.backend.peer_env(place), **env})
        check_synchronous(app)
        return app

    # -- W1, W2 ----------------------------------------------------------------------------

    def write(self, place: Place, plan: Plan, *, per_event: bool) -> tuple[Timing, list[Any]]:
        """W1 (a save per event) or W2 (a save per account); returns the account ids too."""
        app = self._app(place)
        ids: list[uuid.UUID] = []
        watch = Stopwatch()
        try:
            with watch.running():
                for args, deposits in zip(plan.accounts, plan.deposits, strict=True):
                    account = app.open(args)
                    if per_event:
                        app.save(account)
                    for d in deposits:
                        account.deposit(d)
                        if per_event:
                            app.save(account)
                    if not per_event:
                        app.save(account)
                    ids.append(account.id)
        finally:
            app.close()
        return watch.timing(plan.events), ids

    # -- W3 ------------------------------------------------------------------------------------

    def load_each(self, place: Place, ids: list[Any]) -> tuple[Timing, Any]:
        """W3: load every account; returns the sum of balances as a check."""
        app = self._app(place)
        watch = Stopwatch()
        total: Any = 0
        try:
            with watch.running():
                for aid in ids:
                    account: PeerAccount = app.repository.get(aid)
                    total += account.balance
        finally:
            app.close()
        return watch.timing(len(ids)), total

    # -- W4 ------------------------------------------------------------------------------------

    def read_log(self, place: Place) -> tuple[Timing, Any]:
        """W4: read and decode every event of the global log, a page at a time."""
        app = self._app(place)
        watch = Stopwatch()
        n = 0
        page = self.sizes.page
        try:
            with watch.running():
                for _ in range(self.sizes.log_reads):
                    start = 1
                    while True:
                        notifications = app.recorder.select_notifications(start, limit=page)
                        for notification in notifications:
                            app.mapper.to_domain_event(notification)
                            n += 1
                        if len(notifications) < page:
                            break
                        start = notifications[-1].id + 1
        finally:
            app.close()
        return watch.timing(n), n

    # -- W5 ------------------------------------------------------------------------------------

    def build_long(self, place: Place, events: int) -> uuid.UUID:
        """Write one account of ``events`` events (saved every 500) and snapshot it at the end."""
        app = self._app(place, PeerSnapshottingBank)
        try:
            account = app.open(account_args(0))
            for k in range(1, events):
                account.deposit(deposit_args(0, k))
                if k % 500 == 0:
                    app.save(account)
            app.save(account)
            app.take_snapshot(account.id)
            return account.id
        finally:
            app.close()

    def load_long(self, place: Place, aid: uuid.UUID, loads: int, *, snapshot: bool) -> tuple[Timing, Any]:
        """W5: load the long account ``loads`` times, from its snapshot or from its events."""
        app = self._app(place, PeerSnapshottingBank if snapshot else PeerBank)
        watch = Stopwatch()
        last: Any = None
        try:
            with watch.running():
                for _ in range(loads):
                    last = app.repository.get(aid)
        finally:
            app.close()
        return watch.timing(loads), (last.version, last.balance)

    # -- W7 ------------------------------------------------------------------------------------

    def concurrent(self, place: Place, plan: Plan) -> Timing:
        """W7: one thread per account of ``plan``, all at once, a save per event."""
        n = len(plan.accounts)
        env: dict[str, str] = {}
        if self.backend.name == "postgresql":
            # A connection per writer, as eventvault and the limit get.
            env = {"POSTGRES_POOL_SIZE": str(n), "POSTGRES_MAX_OVERFLOW": "0"}
        app = self._app(place, PeerBank, **env)
        barrier = threading.Barrier(n + 1)
        errors: list[BaseException] = []

        def writer(i: int) -> None:
            barrier.wait()
            try:
                account = app.open(plan.accounts[i])
                app.save(account)
                for d in plan.deposits[i]:
                    account.deposit(d)
                    app.save(account)
            except Exception as exc:  # noqa: BLE001 - reported after the run
                errors.append(exc)

        threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        watch = Stopwatch()
        try:
            with watch.running():
                barrier.wait()
                for t in threads:
                    t.join()
        finally:
            app.close()
        if errors:
            raise RuntimeError(f"{len(errors)} peer writers failed: {errors[0]!r}") from errors[0]
        return watch.timing(plan.events)
