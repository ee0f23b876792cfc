"""Private control flow. Derives from BaseException so user ``except Exception`` can't catch it."""

from __future__ import annotations

from celery_steps.store.base import Suspension


class Interrupt(BaseException):
    """Base of every engine interrupt."""


class Suspend(Interrupt):
    """Stop executing now; ``suspension`` says what wakes the run."""

    def __init__(self, suspension: Suspension) -> None:
        super().__init__(suspension.status)
        self.suspension = suspension


class Stop(Interrupt):
    """Stop executing and write nothing more: the lease was lost or the run was cancelled."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BranchDone(Interrupt):
    """A parallel branch task has checkpointed its one step."""


class Planned(Interrupt):
    """Raised by ``step.run`` while ``parallel`` discovers each branch's step key."""

    def __init__(self, step_id: str) -> None:
        super().__init__(step_id)
        self.step_id = step_id
