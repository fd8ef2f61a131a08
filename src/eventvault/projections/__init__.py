"""The read side: projections keep SQL read models current from the event log.

::

    class Totals(Projection):
        name = "totals"
        tables = ("totals",)
        schema = ("CREATE TABLE {totals} (currency TEXT PRIMARY KEY, amount TEXT NOT NULL)",)

        @handles(MoneyDeposited)
        def _deposited(self, db: Session, e: RecordedEvent) -> None:
            ...

    async with ProjectionRunner(store, [Totals()]) as runner:
        await runner.wait_for(result.checkpoint, timeout=5)   # read-your-writes
        rows = runner.query("SELECT * FROM totals")
"""

from eventvault.projections._db import BOOKKEEPING, ReadModels, open_read_models, read_models_for
from eventvault.projections._projection import Projection, Session, handles, partition_of
from eventvault.projections._runner import ProjectionRunner
from eventvault.projections._status import ProjectionError, ProjectionStatus, RebuildProgress

__all__ = [
    "BOOKKEEPING",
    "Projection",
    "ProjectionError",
    "ProjectionRunner",
    "ProjectionStatus",
    "ReadModels",
    "RebuildProgress",
    "Session",
    "handles",
    "open_read_models",
    "partition_of",
    "read_models_for",
]
