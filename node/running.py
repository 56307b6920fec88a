"""The jobs this node is computing, so that an ended job stops computing here.

A job ends unreleased when the researcher cancels it, a node times out, or the
coordinator restarts; the coordinator then sends each node a cancel notice. Python
cannot kill a worker thread, but every read of a dataset goes through one DuckDB
connection (:class:`node.data.DataFile`), and DuckDB can interrupt a running query from
another thread. So a notice marks the job ended and interrupts its open reads: the
running query stops at once, every later read of the task refuses, and the task ends
with a refusal before it charges or releases anything (its transaction rolls back).
A task of an ended job that arrives late is refused before it opens the data.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Protocol

from scifed.errors import UserError

# Ended job ids remembered (a late task of an older one is refused by its budget
# reservation having gone, or recomputes an exact answer the node already released).
_REMEMBER = 4096


class Stopped(UserError):
    """The task's job ended while it ran: not a refusal of the query (it does not count
    toward the researcher's allowance), only the end of the work."""


class Interruptible(Protocol):
    def interrupt(self, why: str) -> None: ...


class RunningJobs:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, set[Interruptible]] = {}
        self._ended: OrderedDict[str, str] = OrderedDict()

    def refuse_if_ended(self, job_id: str) -> None:
        with self._lock:
            why = self._ended.get(job_id)
        if why is not None:
            raise Stopped(f"job {job_id} has ended ({why}): nothing is computed")

    def opened(self, job_id: str, reader: Interruptible) -> None:
        """A task of ``job_id`` opened ``reader``; refuses if the job has ended."""
        with self._lock:
            why = self._ended.get(job_id)
            if why is None:
                self._open.setdefault(job_id, set()).add(reader)
        if why is not None:
            reader.interrupt(why)
            raise Stopped(f"job {job_id} has ended ({why}): nothing is computed")

    def closed(self, job_id: str, reader: Interruptible) -> None:
        with self._lock:
            readers = self._open.get(job_id)
            if readers is not None:
                readers.discard(reader)
                if not readers:
                    del self._open[job_id]

    def end(self, job_id: str, why: str) -> int:
        """Mark the job ended and interrupt its open reads; how many were interrupted."""
        with self._lock:
            self._ended[job_id] = why
            self._ended.move_to_end(job_id)
            while len(self._ended) > _REMEMBER:
                self._ended.popitem(last=False)
            readers = list(self._open.pop(job_id, ()))
        for reader in readers:
            reader.interrupt(why)
        return len(readers)

    def end_all(self, why: str) -> int:
        """The node is stopping: interrupt every open read."""
        with self._lock:
            jobs = list(self._open)
        return sum(self.end(job_id, why) for job_id in jobs)
