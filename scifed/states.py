"""Job, study and task states, and the structured phase of a running job, defined once.

The coordinator stores them, the researcher's client and CLI read them; nothing parses
free text to learn where a job is.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class JobStatus(StrEnum):
    SUBMITTED = "submitted"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # the coordinator restarted under a job that can go on (`scifed job resume`)
    INTERRUPTED = "interrupted"
    # the officer's output review at the release node withheld the result
    WITHHELD = "withheld"

    @property
    def final(self) -> bool:
        """Never changes again."""
        return self in FINAL

    @property
    def stopped(self) -> bool:
        """Nothing runs the job (an interrupted one may resume)."""
        return self in STOPPED


FINAL = frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED,
                   JobStatus.WITHHELD})
STOPPED = FINAL | {JobStatus.INTERRUPTED}


class StudyStatus(StrEnum):
    PENDING = "pending"  # fewer than min_nodes officers have accepted
    KEYING = "keying"    # the lead node is making (or rotating) the study key
    ACTIVE = "active"    # jobs may run


class TaskState(StrEnum):
    """One node's progress in one phase of a job."""

    PENDING = "pending"
    RUNNING = "running"
    WAITING = "waiting"  # held in the node officer's approval queue
    DONE = "done"
    FAILED = "failed"


# The phase of a job whose result waits for an officer's output review (node/review.py).
IN_OUTPUT_REVIEW = "in output review"


@dataclass(frozen=True)
class Phase:
    """Where a job is: a named step, and for multi-round steps which round of how many
    (``rounds`` 0 when the number is not known in advance, as in a quantile search)."""

    name: str
    round: int = 0
    rounds: int = 0

    def __str__(self) -> str:
        if not self.round:
            return self.name
        return f"{self.name} {self.round}/{self.rounds}" if self.rounds else \
            f"{self.name} {self.round}"
