"""Process managers: coordinate several aggregates by reacting to events, exactly once.

::

    class Fulfilment(ProcessManager[Order]):
        name = "fulfilment"
        process = Order

        @reacts_to(OrderPlaced, instance=lambda e: e.data.order_id, starts=True)
        async def placed(self, step: Step[Order], e: RecordedEvent) -> None:
            outcome = await step.command(Stock, e.data.sku, lambda s: s.reserve(e.data.order_id, 1))
            ...

    async with ProcessRunner(store, [Fulfilment()]) as runner:
        await runner.wait_for(result.checkpoint, timeout=5)

See ``docs/processes.md``.
"""

from eventvault.processes._process import (
    DeadlineCancelled,
    DeadlineFired,
    DeadlineScheduled,
    Outcome,
    Process,
    ProcessEnded,
    ProcessManager,
    ProcessStopped,
    Step,
    StepDone,
    on_deadline,
    reacts_to,
    step_event_id,
)
from eventvault.processes._runner import InstanceStatus, ProcessRunner, fire_deadline, react
from eventvault.processes._steps import StepOutcome, run_step

__all__ = [
    "DeadlineCancelled",
    "DeadlineFired",
    "DeadlineScheduled",
    "InstanceStatus",
    "Outcome",
    "Process",
    "ProcessEnded",
    "ProcessManager",
    "ProcessRunner",
    "ProcessStopped",
    "Step",
    "StepDone",
    "StepOutcome",
    "fire_deadline",
    "on_deadline",
    "react",
    "reacts_to",
    "run_step",
    "step_event_id",
]
